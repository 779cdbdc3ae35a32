#!/usr/bin/env bash
# scripts/vm/cross-vrf.sh — the seed's open question: can cross-VRF routing avoid the VRF `up`?
#
#   scripts/vm/run --timeout 400 -- scripts/vm/cross-vrf.sh --variant V [--without X]... [--quick] [--keep]
#
# Builds the lab of DESIGN.md section 1 like scripts/vm/vrf-lab.sh (same namespaces vt-*,
# same hosts, same probe counters, same checks), but the router's cross-domain routing is
# one of these variants (see docs/cross-vrf.md):
#   up      the seed's design (vrf-lab.sh): VRF up (table 10) holds muplink, blue/red leak `default dev up`
#   main    no VRF up: muplink in the default VRF (main table); blue/red tables hold
#           `default via <uplink gw> dev muplink` (v4+v6) and the other domain's v6 prefix `dev <vrf>`
#   nh      as main, but the defaults use nexthop objects (`ip nexthop add id N via .. dev muplink`)
#   lo      no VRF up: blue/red tables hold `default dev lo` (v4+v6), the "route to lo" idea
#   rule    no VRF up: blue/red tables hold no default; `ip rule pref 1500 iif <vrf> goto 32765`
#           (local, then main) between l3mdev (1000) and l3mdev unreachable (2000)
#   vrfmain no VRF for muplink, but a slave-less VRF device `vmain` bound to table 254 (main);
#           blue/red leak `default dev vmain`
# --without X drops one piece (ablation), X is one of:
#   local-move   leave the local rule at pref 0 (do not move it to 32765)
#   xleak        (main, nh) no cross-domain v6 leaks in the blue/red tables
#   own6         (main, nh, vrfmain) no `local 2001:db8:a::1 dev <vrf>` leak of the router's uplink v6 address
#   accept-local (lo) do not set accept_local=1 on lo
#   iif-fwmark   (lo) fwmark rules without `iif muplink`
#   snat-lo      (lo) SNAT on oifname "muplink" instead of "lo"
#   fwmark       no fwmark rules at all
#   v4-slave-iif (rule) IPv4 rules name the VRF (`iif blue`) like the IPv6 ones, not the slave
# Besides the checks it prints the cost (routes, rules, nft rules), the hooks a NATed packet
# and its reply pass (nft trace) and a relative latency/throughput figure; --quick skips these.
# Needs the vrf driver: run it inside scripts/vm/run. Exits 1 if a check failed.
set -uo pipefail

P=vt-
VARIANT=up KEEP=0 QUICK=0
declare -A WITHOUT=()
while (($#)); do
    case $1 in
        --variant) VARIANT=${2:-}; shift ;;
        --variant=*) VARIANT=${1#*=} ;;
        --without) WITHOUT[${2:-}]=1; shift ;;
        --without=*) WITHOUT[${1#*=}]=1 ;;
        --keep) KEEP=1 ;;
        --quick) QUICK=1 ;;
        *) echo "usage: $0 --variant up|main|nh|lo|rule|vrfmain [--without X]... [--quick] [--keep]" >&2; exit 2 ;;
    esac
    shift
done
case $VARIANT in up|main|nh|lo|rule|vrfmain) ;; *) echo "unknown variant '$VARIANT'" >&2; exit 2 ;; esac
without() { [[ -n ${WITHOUT[$1]:-} ]]; }

NSS=(uplink main blue_c1 blue_c2 red_c1)
ns() { local n=$1; shift; ip netns exec "$P$n" "$@"; }
say() { printf '\n### %s\n' "$*"; }
run() { echo "+ [$1] ${*:2}"; ns "$@"; }
# try: like run, but a failing command is reported and the script goes on (kernel refusals are findings)
try() { echo "+ [$1] ${*:2}"; ns "$@" || echo "!!! refused (rc=$?): ${*:2}"; }

T=$(mktemp -d "${TMPDIR:-/tmp}/vt-cross.XXXXXX")
cleanup() {
    rm -rf "$T"
    ((KEEP)) && return
    for n in "${NSS[@]}"; do ip netns del "$P$n" 2>/dev/null; done
    true
}
trap cleanup EXIT

ip netns add "${P}probe"
if ! ip -n "${P}probe" link add probe type vrf table 4242 2>/dev/null; then
    ip netns del "${P}probe"
    echo "this kernel has no VRF driver: run it as scripts/vm/run -- $0" >&2
    exit 2
fi
ip netns del "${P}probe"
for n in "${NSS[@]}"; do ip netns del "$P$n" 2>/dev/null; done

echo "variant: $VARIANT   without: ${!WITHOUT[*]}   kernel: $(uname -r)"

set -e
say "namespaces and sysctls"
for n in "${NSS[@]}"; do
    ip netns add "$P$n"
    ns "$n" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    ns "$n" ip link set lo up
done
run main sysctl -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
# diagnostics only: martian packets are reported in the kernel log (printed at the end)
ns main sysctl -qw net.ipv4.conf.all.log_martians=1
if [[ $VARIANT == lo ]] && ! without accept-local; then
    # packets looped through lo carry 100.64.0.1, an address of the router (muplink): martian otherwise
    run main sysctl -w net.ipv4.conf.lo.accept_local=1
fi

say "links"
ip link add client1 netns "${P}uplink" type veth peer name muplink netns "${P}main"
for c in blue_c1 blue_c2 red_c1; do
    ip link add cuplink netns "$P$c" type veth peer name "${c/_/-}" netns "${P}main"
done

say "main: VRFs, enslaving, addresses ($VARIANT)"
[[ $VARIANT == up ]] && run main ip link add name up type vrf table 10
run main ip link add name blue type vrf table 20
run main ip link add name red type vrf table 30
[[ $VARIANT == vrfmain ]] && run main ip link add name vmain type vrf table 254
for v in up blue red vmain; do ns main ip link show dev $v >/dev/null 2>&1 && run main ip link set dev $v up; done
run main ip link add br-blue type bridge forward_delay 0
run main ip link add br-red type bridge forward_delay 0
[[ $VARIANT == up ]] && run main ip link set dev muplink master up
run main ip link set dev br-blue master blue
run main ip link set dev br-red master red
run main ip link set dev blue-c1 master br-blue
run main ip link set dev blue-c2 master br-blue
run main ip link set dev red-c1 master br-red
for d in muplink br-blue br-red blue-c1 blue-c2 red-c1; do run main ip link set dev "$d" up; done
run main ip addr add 100.64.0.1/10 dev muplink
run main ip addr add 2001:db8:a::1/64 dev muplink
run main ip addr add 100.127.255.254/10 dev br-blue
run main ip addr add 2001:db8:b:10::ffff/64 dev br-blue
run main ip addr add 100.127.255.254/10 dev br-red
run main ip addr add 2001:db8:b:20::ffff/64 dev br-red

say "main: routes ($VARIANT)"
set +e   # from here a refused route is reported, not fatal
# UT: the table of the uplink domain (10 with VRF up, else main)
if [[ $VARIANT == up ]]; then UT=10; else UT=main; fi
try main ip route add default via 100.127.255.254 dev muplink table $UT
try main ip -6 route add default via 2001:db8:a::ffff dev muplink table $UT
try main ip -6 route add 2001:db8:b:10::/64 dev blue table $UT
try main ip -6 route add 2001:db8:b:20::/64 dev red table $UT
try main ip route add 192.0.2.2/32 dev blue table $UT
try main ip route add 192.0.2.2/32 dev br-blue table 20
case $VARIANT in
up|vrfmain)
    L=up; [[ $VARIANT == vrfmain ]] && L=vmain
    for t in 20 30; do try main ip route add default dev $L table $t; try main ip -6 route add default dev $L table $t; done ;;
main)
    for t in 20 30; do
        try main ip route add default via 100.127.255.254 dev muplink table $t
        try main ip -6 route add default via 2001:db8:a::ffff dev muplink table $t
    done ;;
nh)
    # a nexthop object is refused while its device has no carrier ("Carrier for nexthop device
    # is down"): the uplink's end of the veth must be up first
    run uplink ip link set dev client1 up
    try main ip nexthop add id 4 via 100.127.255.254 dev muplink
    try main ip nexthop add id 6 via 2001:db8:a::ffff dev muplink
    for t in 20 30; do try main ip route add default nhid 4 table $t; try main ip -6 route add default nhid 6 table $t; done ;;
lo)
    for t in 20 30; do try main ip route add default dev lo table $t; try main ip -6 route add default dev lo table $t; done ;;
rule)
    : ;;  # no default in the subscriber tables: the ip rule below sends misses to local + main
esac
if [[ $VARIANT == main || $VARIANT == nh ]] && ! without xleak; then
    # the default goes straight out of muplink, so v6 between the domains needs its own leaks
    try main ip -6 route add 2001:db8:b:20::/64 dev red table 20
    try main ip -6 route add 2001:db8:b:10::/64 dev blue table 30
fi
if [[ $VARIANT == main || $VARIANT == nh || $VARIANT == vrfmain ]] && ! without own6; then
    # the router's own uplink v6 address is local in the default VRF only: the default out of
    # muplink would send it to the uplink. Leak it as a local route (v6 only: in v4 the
    # router's 100.64.0.1 is a subscriber's address inside blue/red)
    try main ip -6 route add local 2001:db8:a::1 dev blue table 20
    try main ip -6 route add local 2001:db8:a::1 dev red table 30
fi

say "main: ip rules ($VARIANT)"
for f in -4 -6; do
    try main ip $f rule add pref 2000 l3mdev unreachable
    if ! without local-move; then
        try main ip $f rule add pref 32765 table local
        try main ip $f rule del pref 0 table local
    fi
    if [[ $VARIANT == rule ]]; then
        # IPv4 routes input with iif = the VRF slave (ip_rcv_finish keeps the device it had
        # before l3mdev_ip_rcv), IPv6 with iif = the VRF device: the rules differ per family
        B=blue R=red
        [[ $f == -4 ]] && ! without v4-slave-iif && B=br-blue R=br-red
        try main ip $f rule add pref 1500 iif $B goto 32765
        try main ip $f rule add pref 1501 iif $R goto 32765
    fi
done
if ! without fwmark; then
    FWIIF=()
    [[ $VARIANT == lo ]] && ! without iif-fwmark && FWIIF=(iif muplink)   # the lo pass carries the mark too
    try main ip rule add pref 500 fwmark 1 "${FWIIF[@]}" lookup 20
    try main ip rule add pref 501 fwmark 2 "${FWIIF[@]}" lookup 30
fi
set -e

say "uplink and subscribers"
run uplink ip addr add 192.0.2.1/32 dev lo
run uplink ip link set dev client1 up
run uplink ip addr add 100.127.255.254/10 dev client1
run uplink ip addr add 2001:db8:a::ffff/64 dev client1
run uplink ip -6 route add 2001:db8:b::/48 via 2001:db8:a::1
run uplink ip route add 192.0.2.2/32 via 100.64.0.1 src 192.0.2.1
declare -A V4=([blue_c1]=100.64.0.1 [blue_c2]=100.64.0.2 [red_c1]=100.64.0.1)
declare -A V6=([blue_c1]=2001:db8:b:10::1 [blue_c2]=2001:db8:b:10::2 [red_c1]=2001:db8:b:20::1)
declare -A GW6=([blue_c1]=2001:db8:b:10::ffff [blue_c2]=2001:db8:b:10::ffff [red_c1]=2001:db8:b:20::ffff)
for c in blue_c1 blue_c2 red_c1; do
    run "$c" ip link set dev cuplink up
    run "$c" ip addr add "${V4[$c]}/10" dev cuplink
    run "$c" ip addr add "${V6[$c]}/64" dev cuplink
    run "$c" ip route add default via 100.127.255.254
    run "$c" ip -6 route add default via "${GW6[$c]}"
done
run blue_c2 ip addr add 192.0.2.2/32 dev cuplink

ns uplink nft -f - <<'EOF'
table inet probe {
  chain input { type filter hook input priority filter; policy accept;
    icmp type echo-request ip saddr 100.64.0.1 counter comment "echo from 100.64.0.1 (NATed)"
    icmp type echo-request ip saddr 192.0.2.2 counter comment "echo from 192.0.2.2 (routed)"
    icmp type echo-request ip saddr != { 100.64.0.1, 192.0.2.2 } counter comment "echo from anything else"
    icmpv6 type echo-request ip6 saddr 2001:db8:b::/48 counter comment "echo6 from subscribers (not NATed)"
  }
}
EOF
for c in blue_c1 blue_c2 red_c1; do
    ns "$c" nft -f - <<'EOF'
table inet probe {
  chain pre { type filter hook prerouting priority -400; policy accept;
    ip daddr 100.64.0.2 icmp type echo-request counter comment "echo to 100.64.0.2"
    ip saddr 100.64.0.0/10 ip daddr 192.0.2.2 icmp type echo-request counter comment "echo to 192.0.2.2 from a subscriber"
    ip saddr 192.0.2.2 icmp type echo-reply counter comment "echo reply from 192.0.2.2"
  }
}
EOF
done

say "the ruleset (main)"
# the device the forward hook sees for traffic from the uplink, and the device SNAT matches
if [[ $VARIANT == up ]]; then INDEV=up; else INDEV=muplink; fi
SNATDEV=muplink
[[ $VARIANT == lo ]] && ! without snat-lo && SNATDEV=lo   # NAT is bound on the first POSTROUTING pass (oif lo)
sed "s/@INDEV@/$INDEV/; s/@SNATDEV@/$SNATDEV/" <<'EOF' | tee "$T/ruleset" | ns main nft -f -
table inet cgn {
  chain pre_raw { type filter hook prerouting priority raw; policy accept;
    ct original zone set iifname map { "br-blue" : 1, "br-red" : 2 }
  }
  chain pre_mangle { type filter hook prerouting priority mangle; policy accept;
    ct state new ct mark set iifname map { "br-blue" : 1, "br-red" : 2 }
    meta mark set ct mark
  }
  chain forward { type filter hook forward priority filter; policy accept;
    ct state established,related accept
    iifname "@INDEV@" meta nfproto ipv4 ip daddr != 192.0.2.2 counter drop comment "unsolicited v4 from uplink"
    iifname "red" meta nfproto ipv4 ip daddr 192.0.2.2 counter reject with icmp type admin-prohibited comment "red -> blue v4"
  }
  chain dstnat { type nat hook prerouting priority dstnat; policy accept; }
  chain srcnat { type nat hook postrouting priority srcnat; policy accept;
    oifname "@SNATDEV@" ct mark { 1, 2 } ip saddr 100.64.0.0/10 counter snat ip to 100.64.0.1
  }
}
EOF
cat "$T/ruleset"
set +e

say "state"
run main ip -br link
run main ip -br addr
for f in -4 -6; do run main ip $f rule; done
[[ $VARIANT == nh ]] && run main ip nexthop
for t in 10 20 30 main; do
    ns main ip route show table $t >/dev/null 2>&1 || continue
    run main ip route show table $t; run main ip -6 route show table $t
done

# ------------------------------------------------------------------ checks
pass=0 fail=0
okay() { echo "ok   - $*"; pass=$((pass + 1)); }
nok()  { echo "FAIL - $*"; fail=$((fail + 1)); }
check() {
    local expect=$1 name=$2 n=$3 out rc cmd; shift 3
    out=$(ns "$n" "$@" 2>&1); rc=$?
    cmd="$*"; [[ $cmd == *$'\n'* ]] && cmd="${cmd%%$'\n'*} ..."
    if { [[ $expect == ok ]] && ((rc == 0)); } || { [[ $expect == fail ]] && ((rc != 0)); }; then
        printf 'ok   - %-56s [%s] %s\n' "$name" "$n" "$cmd"; pass=$((pass + 1))
    else
        printf 'FAIL - %-56s [%s] %s (rc=%d)\n' "$name" "$n" "$cmd" "$rc"
        printf '%s\n' "$out" | tail -4 | sed 's/^/       /'
        fail=$((fail + 1))
    fi
}
counter() {
    ns "$1" nft list table inet probe | grep -F "comment \"$2\"" |
        sed -n 's/.*counter packets \([0-9]*\).*/\1/p' | head -1
}
PING="ping -c 2 -i 0.3 -W 3"
# main:up: the VRF up, or (without it) the router's default VRF
if [[ $VARIANT == up ]]; then UPPING=(ping -I up); UPEXEC=(ip vrf exec up); else UPPING=(ping); UPEXEC=(); fi

say "example pings (DESIGN.md section 1)"
check ok "blue_c2 -> 192.0.2.1 from 192.0.2.2 (routed, no NAT)" blue_c2 $PING -I 192.0.2.2 192.0.2.1
check ok "blue_c2 -> blue_c1 (same bridge)" blue_c2 $PING 100.64.0.1
check ok "blue_c2 -> blue_c1 v6" blue_c2 $PING 2001:db8:b:10::1
check ok "blue_c2 -> gateway br-blue" blue_c2 $PING 100.127.255.254
check ok "blue_c2 -> gateway br-blue v6" blue_c2 $PING 2001:db8:b:10::ffff
check ok "blue_c2 -> red_c1 v6 (across domains)" blue_c2 $PING 2001:db8:b:20::1
check ok "blue_c2 -> uplink v6" blue_c2 $PING 2001:db8:a::ffff
check ok "blue_c2 -> main:up muplink v6" blue_c2 $PING 2001:db8:a::1
n0=$(counter uplink "echo from 100.64.0.1 (NATed)"); o0=$(counter uplink "echo from anything else")
for c in blue_c1 blue_c2 red_c1; do
    check ok "$c -> 192.0.2.1 (NAT)" "$c" $PING 192.0.2.1
done
n1=$(counter uplink "echo from 100.64.0.1 (NATed)"); o1=$(counter uplink "echo from anything else")
((n1 - n0 == 6 && o1 == o0)) && okay "uplink saw the 6 NATed echoes with source 100.64.0.1, none other" ||
    nok "uplink source check: +$((n1 - n0)) from 100.64.0.1 (want 6), +$((o1 - o0)) from others (want 0)"
check ok "main:up -> 100.127.255.254 (${UPPING[*]})" main "${UPPING[@]}" -c 2 -i 0.3 -W 3 100.127.255.254
[[ $VARIANT == up ]] && check ok "main:up -> 100.127.255.254 (ip vrf exec up)" main ip vrf exec up $PING 100.127.255.254

say "more: IPv6 not NATed, inbound routed, router's own v6"
s0=$(counter uplink "echo6 from subscribers (not NATed)")
for c in blue_c1 red_c1; do
    check ok "$c -> uplink v6" "$c" $PING 2001:db8:a::ffff
done
s1=$(counter uplink "echo6 from subscribers (not NATed)")
((s1 - s0 == 4)) && okay "uplink saw the subscribers' own IPv6 sources (4 echoes)" ||
    nok "uplink v6 source check: +$((s1 - s0)) from 2001:db8:b::/48 (want 4)"
check ok "red_c1 -> blue_c2 v6" red_c1 $PING 2001:db8:b:10::2
check ok "uplink -> blue_c2 v6 (routed inbound)" uplink $PING 2001:db8:b:10::2
check ok "uplink -> 192.0.2.2 (routed inbound, from 192.0.2.1)" uplink $PING -I 192.0.2.1 192.0.2.2
check ok "main:up -> 2001:db8:a::ffff" main "${UPEXEC[@]}" $PING 2001:db8:a::ffff

say "ICMP errors: TTL exceeded from the router, port unreachable from the uplink (RELATED)"
for c in blue_c1 red_c1; do
    out=$(ns "$c" ping -c 1 -W 2 -t 1 192.0.2.1 2>&1)
    grep -q 'From 100.127.255.254 .*Time to live exceeded' <<<"$out" &&
        okay "$c ping -t 1 192.0.2.1: Time to live exceeded from its gateway" ||
        nok "$c ping -t 1: no TTL exceeded: $(sed -n 2p <<<"$out")"
done
udp_refused='
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 40001)); s.settimeout(3); s.connect(("192.0.2.1", 9)); s.send(b"x")
try: s.recv(100)
except ConnectionRefusedError: sys.exit(0)
except socket.timeout: print("no ICMP port unreachable"); sys.exit(1)'
for c in blue_c1 red_c1; do
    check ok "$c UDP 100.64.0.1:40001 -> 192.0.2.1:9 gets port unreachable" "$c" python3 -c "$udp_refused"
done

say "concurrent: blue_c1 and red_c1 (both 100.64.0.1) ping 192.0.2.1 at once"
ns blue_c1 ping -c 3 -i 0.3 -W 3 192.0.2.1 >"$T/cb" 2>&1 & pb=$!
ns red_c1 ping -c 3 -i 0.3 -W 3 192.0.2.1 >"$T/cr" 2>&1 & pr=$!
sleep 0.4; echo "--- conntrack -L -p icmp -d 192.0.2.1 (main) while both run:"
ns main conntrack -L -p icmp -d 192.0.2.1 2>&1
wait $pb; rb=$?; wait $pr; rr=$?
for x in "blue_c1:$rb:$T/cb" "red_c1:$rr:$T/cr"; do
    IFS=: read -r c r f <<<"$x"
    if ((r == 0)) && grep -q ' 0% packet loss' "$f"; then
        okay "concurrent ping from $c: 3/3"
    else
        nok "concurrent ping from $c (rc=$r)"; sed 's/^/       /' "$f"
    fi
done

say "same source port: UDP from blue_c1 and red_c1, both 100.64.0.1:40000 -> 192.0.2.1:5000"
ns uplink python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("192.0.2.1", 5000)); s.settimeout(8); seen = []
try:
    while len(seen) < 2:
        d, a = s.recvfrom(100); seen.append(a); s.sendto(d + (" seen-from %s:%d" % a).encode(), a)
except socket.timeout: pass
print("uplink saw:", seen)
sys.exit(0 if len(set(seen)) == 2 and all(a[0] == "100.64.0.1" for a in seen) else 1)
' >"$T/udp-srv" 2>&1 & srv=$!
sleep 0.5
udp_client='
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(("0.0.0.0", 40000)); s.settimeout(5)
s.sendto(sys.argv[1].encode(), ("192.0.2.1", 5000))
print(s.recvfrom(200)[0].decode())'
ns blue_c1 python3 -c "$udp_client" blue >"$T/udp-b" 2>&1 & cb=$!
ns red_c1 python3 -c "$udp_client" red >"$T/udp-r" 2>&1 & cr=$!
wait $cb; rb=$?; wait $cr; rr=$?; wait $srv; rs=$?
tail -n 2 "$T/udp-srv" "$T/udp-b" "$T/udp-r"
echo "--- conntrack -L -p udp --dport 5000 (main):"; ns main conntrack -L -p udp --dport 5000 2>&1
if ((rb == 0 && rr == 0 && rs == 0)) && grep -q '^blue ' "$T/udp-b" && grep -q '^red ' "$T/udp-r"; then
    okay "same-port UDP: two mapped ports at the uplink, each reply back to its sender"
else
    nok "same-port UDP (blue rc=$rb red rc=$rr server rc=$rs)"
fi

say "negatives"
b0=$(counter blue_c2 "echo to 192.0.2.2 from a subscriber"); r0=$(counter blue_c1 "echo reply from 192.0.2.2")
out=$(ns red_c1 ping -c 2 -i 0.3 -W 2 192.0.2.2 2>&1) && nok "red_c1 -> 192.0.2.2 succeeded" ||
    okay "red_c1 -> 192.0.2.2 fails: $(grep -m1 '^From' <<<"$out")"
b1=$(counter blue_c2 "echo to 192.0.2.2 from a subscriber"); r1=$(counter blue_c1 "echo reply from 192.0.2.2")
((b1 == b0 && r1 == r0)) && okay "nothing of it arrived at blue_c2 (request) or blue_c1 (reply)" ||
    nok "red's echo arrived in blue: blue_c2 +$((b1 - b0)) requests, blue_c1 +$((r1 - r0)) replies"
ns uplink ip route add 100.64.0.2/32 via 100.64.0.1
u0=$(counter blue_c2 "echo to 100.64.0.2")
check fail "uplink -> 100.64.0.2 (unsolicited v4) must fail" uplink ping -c 2 -i 0.3 -W 2 100.64.0.2
u1=$(counter blue_c2 "echo to 100.64.0.2")
((u1 == u0)) && okay "nothing from the uplink arrived at blue_c2" ||
    nok "uplink's echo arrived at blue_c2 (+$((u1 - u0)))"
ns uplink ip route del 100.64.0.2/32 via 100.64.0.1

say "counters (main)"
ns main nft list table inet cgn | grep -E 'counter'
echo "--- IP/ICMP error counters of main (nstat, absolute):"
ns main nstat -az 2>/dev/null | grep -E '^(IpInAddrErrors|IpOutNoRoutes|IpInHdrErrors|IpExtInNoRoutes|TcpExtIPReversePathFilter|Ip6InNoRoutes|Ip6InAddrErrors|IpInDiscards|IcmpOutTimeExcds|IcmpInEchoReps)\b' | awk '$2 != 0'

if ((!QUICK)); then
    say "cost"
    nroutes4=$(ns main ip -4 route show table all proto boot | wc -l)
    nroutes6=$(ns main ip -6 route show table all proto boot | wc -l)
    nnh=$(ns main ip nexthop 2>/dev/null | wc -l)
    nrules4=$(ns main ip -4 rule | wc -l); nrules6=$(ns main ip -6 rule | wc -l)
    nnft=$(ns main nft -a list table inet cgn | grep '# handle' | grep -cvE '^\s*(table|chain) ')
    nvrf=$(ns main ip -br link show type vrf | wc -l)
    echo "COST variant=$VARIANT vrfs=$nvrf static-routes v4=$nroutes4 v6=$nroutes6 nexthops=$nnh ip-rules v4=$nrules4 v6=$nrules6 nft-rules=$nnft"

    say "trace (main): one NATed echo blue_c1 -> 192.0.2.1 and its reply; one v6 echo blue_c2 -> red_c1"
    ns main nft -f - <<'EOF'
table inet vttrace {
  chain pre { type filter hook prerouting priority -400; policy accept;
    ip daddr 192.0.2.1 icmp type echo-request meta nftrace set 1
    ip saddr 192.0.2.1 icmp type echo-reply meta nftrace set 1
    ip6 daddr 2001:db8:b:20::1 icmpv6 type echo-request meta nftrace set 1
  }
  chain input { type filter hook input priority -400; policy accept; }
  chain forward { type filter hook forward priority -400; policy accept; }
  chain output { type filter hook output priority -400; policy accept; }
  chain postrouting { type filter hook postrouting priority -400; policy accept; }
}
EOF
    ns main nft monitor trace >"$T/trace" 2>&1 & tp=$!
    sleep 0.5
    ns blue_c1 ping -c 1 -W 2 192.0.2.1 >/dev/null
    ns blue_c2 ping -c 1 -W 2 2001:db8:b:20::1 >/dev/null
    sleep 0.5; kill $tp; wait $tp 2>/dev/null
    # one line per hook pass (vttrace chains) and the cgn rules that acted
    grep -E 'inet vttrace [a-z]+ packet:|inet cgn [a-z_]+ rule .*(snat|mark set iif)' "$T/trace" |
        sed -E 's/trace id ([0-9a-f]+) inet /\1 /; s/ether saddr [^ ]+ ether daddr [^ ]+ //;
                s/@(ll|th),[^ ]+ [^ ]+ //g; s/icmpv6 parameter-problem [0-9]+ //; s/ (ip|ip6) (dscp|flowlabel|length|hoplimit|ttl|id|nexthdr|protocol|ecn) [^ ]+//g;
                s/icmp(v6)? (code|id|sequence|type) [^ ]+//g; s/vttrace ([a-z]+) packet:/\1:/;
                s/counter packets [0-9]+ bytes [0-9]+ //; s/ +/ /g'
    echo "--- hook passes per traced packet (one packet per source/destination pair):"
    grep -E 'inet vttrace [a-z]+ packet:' "$T/trace" | sed -E 's/.*vttrace ([a-z]+) packet: (iif "([^"]+)" )?(oif "([^"]+)" )?.*ip6? saddr ([^ ]+) ip6? daddr ([^ ]+).*/\6 \7 \1(\3>\5)/' |
        awk '{k=$1 ">" $2; if (!(k in c)) o[++n]=k; c[k]++; p[k]=p[k] " " $3} END {for (i=1;i<=n;i++) print "PASSES " o[i] ": " c[o[i]] " =" p[o[i]]}'
    ns main nft delete table inet vttrace

    say "latency and throughput (TCG: compare between variants only; 3 rounds each)"
    for r in 1 2 3; do
        ns blue_c1 ping -c 200 -i 0.01 -q 192.0.2.1 | tail -1 | sed "s/^/PERF ping4-nat #$r: /"
        ns blue_c2 ping -c 200 -i 0.01 -q 2001:db8:b:20::1 | tail -1 | sed "s/^/PERF ping6-cross #$r: /"
    done
    for r in 1 2 3 4 5; do
        ns blue_c1 ping -c 1 -W 2 192.0.2.1 >/dev/null || { echo "PERF tcp4-nat: skipped (no NAT ping)"; break; }
        ns uplink python3 -c '
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("192.0.2.1", 5001)); s.listen(1); s.settimeout(30)
c, a = s.accept(); n = 0
while True:
    d = c.recv(65536)
    if not d: break
    n += len(d)
print("server got", n, "from", a)' >"$T/tcp-srv" 2>&1 & ts=$!
        sleep 0.5
        ns blue_c1 python3 -c '
import socket, time, sys
s = socket.create_connection(("192.0.2.1", 5001), timeout=20); b = b"x" * 65536; n = 32 * 1024 * 1024
t = time.monotonic(); sent = 0
while sent < n: s.sendall(b); sent += len(b)
s.shutdown(socket.SHUT_WR); s.recv(1); dt = time.monotonic() - t
print("PERF tcp4-nat #%s: %d MiB in %.2f s = %.1f Mbit/s" % (sys.argv[1], n >> 20, dt, n * 8 / dt / 1e6))' $r
        wait $ts; cat "$T/tcp-srv"
    done
fi

echo "--- martians in the kernel log:"; dmesg | sed "s/^\[[^]]*\] //" | grep -i martian | sort | uniq -c | head -5
echo
WO="${!WITHOUT[*]}"; echo "RESULT variant=$VARIANT without=${WO:-none}: $pass passed, $fail failed"
((fail == 0))
