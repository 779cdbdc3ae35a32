#!/usr/bin/env bash
# scripts/vm/vrf-lab.sh — reference recipe for the VRF backend, in plain ip/sysctl/nft.
#
#   scripts/vm/run --timeout 240 -- scripts/vm/vrf-lab.sh [--naive] [--keep] [--trace]
#
# Builds the lab of DESIGN.md section 1 the VRF way (section 4) in namespaces vt-uplink,
# vt-main, vt-blue_c1, vt-blue_c2, vt-red_c1, loads the working NAT ruleset (section 2/4)
# and runs the example pings plus the CGN checks. Needs a kernel with the vrf driver
# (>= 5.16): run it inside scripts/vm/run. Prints "N passed, N failed"; exits 1 on a
# failure. --naive loads the seed's rule instead (masquerade on oifname "up", no zones,
# no marks) and reports what happens. --keep leaves the namespaces (inside the VM
# nothing persists anyway); --trace adds nft trace output for the NAT pings.
# Only a reference for the Swift VRF backend: this is not used by cgnat itself.
set -uo pipefail

P=vt-                   # namespace prefix
MODE=nat KEEP=0 TRACE=0
for a in "$@"; do
    case $a in
        --naive) MODE=naive ;;
        --keep) KEEP=1 ;;
        --trace) TRACE=1 ;;
        *) echo "usage: $0 [--naive] [--keep] [--trace]" >&2; exit 2 ;;
    esac
done

NSS=(uplink main blue_c1 blue_c2 red_c1)
ns() { local n=$1; shift; ip netns exec "$P$n" "$@"; }
say() { printf '\n### %s\n' "$*"; }
run() { echo "+ [$1] ${*:2}"; ns "$@"; }      # show and run a command in a namespace

T=$(mktemp -d "${TMPDIR:-/tmp}/vt-lab.XXXXXX")
cleanup() {
    rm -rf "$T"
    ((KEEP)) && return
    for n in "${NSS[@]}"; do ip netns del "$P$n" 2>/dev/null; done
    true
}
trap cleanup EXIT

# probe for the vrf driver in a scratch namespace (never in the caller's own)
ip netns add "${P}probe"
if ! ip -n "${P}probe" link add probe type vrf table 4242 2>/dev/null; then
    ip netns del "${P}probe"
    echo "this kernel has no VRF driver: run it as scripts/vm/run -- $0" >&2
    exit 2
fi
ip netns del "${P}probe"
for n in "${NSS[@]}"; do ip netns del "$P$n" 2>/dev/null; done

set -e
# ------------------------------------------------------------------ namespaces + sysctls
say "namespaces and sysctls"
for n in "${NSS[@]}"; do
    ip netns add "$P$n"
    # before any link exists: no DAD (tentative addresses stall the first pings)
    ns "$n" sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0
    ns "$n" ip link set lo up
done
# the router: forwarding for both families (new namespaces start with it off)
run main sysctl -w net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1
# @SYSCTL_EXTRA@ (see docs/vrf-recipe.md: nothing else was needed)

# ------------------------------------------------------------------ links
say "links"
ip link add client1 netns "${P}uplink" type veth peer name muplink netns "${P}main"
for c in blue_c1 blue_c2 red_c1; do
    ip link add cuplink netns "$P$c" type veth peer name "${c/_/-}" netns "${P}main"
done

# ------------------------------------------------------------------ the router: VRFs
say "main: VRFs, enslaving, addresses, routes"
run main ip link add name up type vrf table 10     # 'name': "up" is a keyword of ip link
run main ip link add name blue type vrf table 20
run main ip link add name red type vrf table 30
run main ip link set dev up up
run main ip link set dev blue up
run main ip link set dev red up
run main ip link add br-blue type bridge forward_delay 0
run main ip link add br-red type bridge forward_delay 0
# enslave first, then addresses (enslaving restarts a link and drops its global IPv6)
run main ip link set dev muplink master up
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
# up (table 10)
run main ip route add default via 100.127.255.254 dev muplink table 10
run main ip -6 route add default via 2001:db8:a::ffff dev muplink table 10
run main ip -6 route add 2001:db8:b:10::/64 dev blue table 10
run main ip -6 route add 2001:db8:b:20::/64 dev red table 10
run main ip route add 192.0.2.2/32 dev blue table 10
# blue (table 20), red (table 30): defaults leaked into up
run main ip route add default dev up table 20
run main ip -6 route add default dev up table 20
run main ip route add 192.0.2.2/32 dev br-blue table 20
run main ip route add default dev up table 30
run main ip -6 route add default dev up table 30
# ip rules: 1000 l3mdev is the kernel's (added with the first VRF)
for f in -4 -6; do
    run main ip $f rule add pref 2000 l3mdev unreachable
    run main ip $f rule add pref 32765 table local
    run main ip $f rule del pref 0 table local
done

# ------------------------------------------------------------------ hosts
say "uplink and subscribers"
run uplink ip addr add 192.0.2.1/32 dev lo
run uplink ip link set dev client1 up
run uplink ip addr add 100.127.255.254/10 dev client1
run uplink ip addr add 2001:db8:a::ffff/64 dev client1
run uplink ip -6 route add 2001:db8:b::/48 via 2001:db8:a::1
# src 192.0.2.1: 100.127.255.254 is also br-blue's address (blue would drop it as a martian)
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

# probe counters at the uplink and at the subscribers (where packets arrive)
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

# ------------------------------------------------------------------ NAT
if [[ $MODE == nat ]]; then
say "the working ruleset (main)"
run main nft -f - <<'EOF'
table inet cgn {
  # original-direction zones, keyed on the VRF slave (first PREROUTING pass)
  chain pre_raw { type filter hook prerouting priority raw; policy accept;
    ct original zone set iifname map { "br-blue" : 1, "br-red" : 2 }
  }
  # mark new connections by ingress domain; every packet carries its connection's mark
  chain pre_mangle { type filter hook prerouting priority mangle; policy accept;
    ct state new ct mark set iifname map { "br-blue" : 1, "br-red" : 2 }
    meta mark set ct mark
  }
  chain forward { type filter hook forward priority filter; policy accept;
    ct state established,related accept
    # the forward hook sees VRF devices: inbound from the uplink is IN=up
    iifname "up" meta nfproto ipv4 ip daddr != 192.0.2.2 counter drop comment "unsolicited v4 from uplink"
    # no IPv4 between subscriber domains (the only leaked v4 destination is 192.0.2.2)
    iifname "red" meta nfproto ipv4 ip daddr 192.0.2.2 counter reject with icmp type admin-prohibited comment "red -> blue v4"
  }
  # a nat chain per family that uses zones (inet covers both), else clashing replies drop
  chain dstnat { type nat hook prerouting priority dstnat; policy accept; }
  chain srcnat { type nat hook postrouting priority srcnat; policy accept;
    oifname "muplink" ct mark { 1, 2 } ip saddr 100.64.0.0/10 counter snat ip to 100.64.0.1
  }
}
EOF
# replies to 100.64.0.1 are told apart by the mark only: route them to their domain
# ahead of l3mdev (1000) and of local (moved to 32765)
run main ip rule add pref 500 fwmark 1 lookup 20
run main ip rule add pref 501 fwmark 2 lookup 30
else
say "the seed's naive rule (main)"
run main nft -f - <<'EOF'
table ip nat {
  chain postrouting { type nat hook postrouting priority srcnat; policy accept;
    oifname "up" counter masquerade
  }
}
EOF
fi
set +e

say "state"
run main ip -br addr
for f in -4 -6; do run main ip $f rule; done
for t in 10 20 30; do run main ip route show table $t; run main ip -6 route show table $t; done

# ------------------------------------------------------------------ checks
pass=0 fail=0
okay() { echo "ok   - $*"; pass=$((pass + 1)); }
nok()  { echo "FAIL - $*"; fail=$((fail + 1)); }
# check EXPECT(ok|fail) NAME NS CMD... : the command must succeed (ok) or fail (fail)
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
counter() {  # counter NS COMMENT -> packets of the probe rule with that comment
    ns "$1" nft list table inet probe | grep -F "comment \"$2\"" |
        sed -n 's/.*counter packets \([0-9]*\).*/\1/p' | head -1
}
PING="ping -c 2 -i 0.3 -W 3"

if [[ $MODE == naive ]]; then
    say "naive rule: pings with conntrack -E running in main"
    ns main nstat -n                       # reset the ICMP counters of main
    ns main conntrack -E -o timestamp >"$T/ct-events" 2>&1 &
    ev=$!
    sleep 0.5
    check ok "naive: blue_c1 -> 192.0.2.1" blue_c1 $PING 192.0.2.1
    check ok "naive: red_c1 -> 192.0.2.1" red_c1 $PING 192.0.2.1
    check ok "naive: main:up -> 100.127.255.254 (ping -I up)" main $PING -I up 100.127.255.254
    sleep 0.5; kill $ev 2>/dev/null; wait $ev 2>/dev/null
    echo "--- conntrack -E (main):"; cat "$T/ct-events"
    echo "--- conntrack -L (main):"; ns main conntrack -L 2>&1
    echo "--- nft (main):"; ns main nft list ruleset
    echo "--- uplink probe counters:"; ns uplink nft list table inet probe | grep counter
    echo "--- ICMP counters of main since the pings (echo replies delivered to the router itself):"
    ns main nstat | grep -E 'IcmpInEchoReps|IcmpInMsgs|IcmpMsgInType0' || echo "(none)"
    echo "$pass passed, $fail failed (naive mode: the failures are the finding)"
    exit 0
fi

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
check ok "main:up -> 100.127.255.254 (ping -I up)" main $PING -I up 100.127.255.254
check ok "main:up -> 100.127.255.254 (ip vrf exec up)" main ip vrf exec up $PING 100.127.255.254

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
check ok "main:up -> 2001:db8:a::ffff (ip vrf exec up)" main ip vrf exec up $PING 2001:db8:a::ffff

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
while len(seen) < 2:
    d, a = s.recvfrom(100); seen.append(a); s.sendto(d + (" seen-from %s:%d" % a).encode(), a)
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
cat "$T/udp-srv" "$T/udp-b" "$T/udp-r"
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
# an upstream that tries to reach inside: a /32 towards the subscriber via the router
ns uplink ip route add 100.64.0.2/32 via 100.64.0.1
u0=$(counter blue_c2 "echo to 100.64.0.2")
check fail "uplink -> 100.64.0.2 (unsolicited v4) must fail" uplink ping -c 2 -i 0.3 -W 2 100.64.0.2
u1=$(counter blue_c2 "echo to 100.64.0.2")
((u1 == u0)) && okay "nothing from the uplink arrived at blue_c2" ||
    nok "uplink's echo arrived at blue_c2 (+$((u1 - u0)))"
ns uplink ip route del 100.64.0.2/32 via 100.64.0.1

if ((TRACE)); then
    say "trace (main): blue_c1 -> 192.0.2.1 and its reply, red_c1 -> 192.0.2.2, uplink -> 100.64.0.2"
    ns main nft -f - <<'EOF'
table inet vttrace {
  chain pre { type filter hook prerouting priority -400; policy accept;
    ip daddr { 192.0.2.1, 192.0.2.2, 100.64.0.2 } icmp type echo-request meta nftrace set 1
    ip saddr 192.0.2.1 icmp type echo-reply meta nftrace set 1
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
    ns red_c1 ping -c 1 -W 2 192.0.2.2 >/dev/null
    ns uplink ip route add 100.64.0.2/32 via 100.64.0.1
    ns uplink ping -c 1 -W 2 100.64.0.2 >/dev/null
    ns uplink ip route del 100.64.0.2/32 via 100.64.0.1
    sleep 0.5; kill $tp; wait $tp 2>/dev/null
    # one line per hook a packet passed (vttrace chains), and the cgn rules that acted
    grep -E 'inet vttrace [a-z]+ packet:|inet cgn [a-z_]+ rule .*(accept|drop|snat|mark set iif)' "$T/trace" |
        sed -E 's/trace id ([0-9a-f]+) inet /\1 /; s/ether saddr [^ ]+ ether daddr [^ ]+ //;
                s/@ll,[^ ]+ [^ ]+ //; s/ip dscp .* ip protocol icmp //; s/icmp code .*//;
                s/ ip length [0-9]+//; s/vttrace ([a-z]+) packet:/\1:/; s/counter packets [0-9]+ bytes [0-9]+ //'
    ns main nft delete table inet vttrace
fi

say "counters (main)"
ns main nft list table inet cgn | grep -E 'counter'

echo
echo "$pass passed, $fail failed"
((fail == 0))
