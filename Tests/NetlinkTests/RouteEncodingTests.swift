import Testing
@testable import Netlink

// Reference bytes: what iproute2 6.1.0 (Debian 12) actually sent, recorded on this machine with
//   ip netns exec nltest-cap1 strace -f -e trace=sendmsg,sendto -e write=3 -s 65536 ip ...
// inside throwaway namespaces nltest-cap1/2/3 (deleted afterwards). Each string is the final
// request on iproute2's main rtnl socket (fd 3), nlmsg_seq/nlmsg_pid zeroed by `normalized`.
// Interface indexes in that namespace: lo 1, t-up 2, t-blue 3, br-blue 4. Layout of the strings:
// nlmsghdr | fixed header | one attribute per group.
// Where the argument order of the `ip` command is shown, it was chosen so that iproute2 emits
// attributes in the order our encoder uses (iproute2 emits them in argv order).

@Suite struct RouteEncodingTests {
    // `ip link add t-blue type veth peer name t-up`
    @Test func addVeth() {
        let ref = hex("""
            5c000000 1000 0506 4720096b 00000000
            00 00 0000 00000000 00000000 00000000
            0b000300 742d626c 75650000
            30001200 08000100 76657468
                     24000200 20000100 00000000000000000000000000000000 09000300 742d7570 00000000
            """)
        #expect(wire(RouteMessage.addVeth(name: "t-blue", peerName: "t-up")) == normalized(ref))
    }

    // `ip link add t-b2 netns nltest-cap2 type veth peer name t-u2 netns nltest-cap3`: iproute2 opened
    // the namespaces as fds 4 and 5 and sent IFLA_NET_NS_FD (28) for each end.
    @Test func addVethWithNamespaces() {
        let ref = hex("""
            6c000000 1000 0506 4720096b 00000000
            00000000 00000000 00000000 00000000
            08001c00 04000000
            09000300 742d6232 00000000
            38001200 08000100 76657468
                     2c000200 28000100 00000000000000000000000000000000 08001c00 05000000 09000300 742d7532 00000000
            """)
        #expect(wire(RouteMessage.addVeth(name: "t-b2", peerName: "t-u2", namespaceFD: 4, peerNamespaceFD: 5)) == normalized(ref))
    }

    // `ip link add br-blue type bridge`
    @Test func addBridge() {
        let ref = hex("""
            3c000000 1000 0506 4720096b 00000000
            00000000 00000000 00000000 00000000
            0c000300 62722d62 6c756500
            10001200 0a000100 62726964 67650000
            """)
        #expect(wire(RouteMessage.addBridge(name: "br-blue")) == normalized(ref))
    }

    // `ip link add blue type vrf table 10` and `ip link add vrf1000 type vrf table 1000`
    @Test func addVRF() {
        let ref10 = hex("""
            44000000 1000 0506 4820096b 00000000
            00000000 00000000 00000000 00000000
            09000300 626c7565 00000000
            18001200 07000100 76726600 0c000200 08000100 0a000000
            """)
        let ref1000 = hex("""
            44000000 1000 0506 4820096b 00000000
            00000000 00000000 00000000 00000000
            0c000300 76726631 30303000
            18001200 07000100 76726600 0c000200 08000100 e8030000
            """)
        #expect(wire(RouteMessage.addVRF(name: "blue", table: 10)) == normalized(ref10))
        #expect(wire(RouteMessage.addVRF(name: "vrf1000", table: 1000)) == normalized(ref1000))
    }

    // `ip link set dev t-blue up|down|master br-blue|nomaster`, `ip link del dev br-blue`
    @Test func setAndDeleteLink() {
        let up = hex("20000000 1000 0500 4820096b 00000000  00 00 0000 03000000 01000000 01000000")
        let down = hex("20000000 1000 0500 4820096b 00000000  00 00 0000 03000000 00000000 01000000")
        let master = hex("28000000 1000 0500 4820096b 00000000  00000000 03000000 00000000 00000000  08000a00 04000000")
        let nomaster = hex("28000000 1000 0500 4820096b 00000000  00000000 03000000 00000000 00000000  08000a00 00000000")
        let del = hex("20000000 1100 0500 4820096b 00000000  00000000 04000000 00000000 00000000")
        #expect(wire(RouteMessage.setLink(index: 3, up: true)) == normalized(up))
        #expect(wire(RouteMessage.setLink(index: 3, up: false)) == normalized(down))
        #expect(wire(RouteMessage.setLink(index: 3, master: 4)) == normalized(master))
        #expect(wire(RouteMessage.setLink(index: 3, master: 0)) == normalized(nomaster))
        #expect(wire(RouteMessage.deleteLink(index: 4)) == normalized(del))
    }

    // The name lookup iproute2 does for `dev t-blue` (its second rtnl socket, fd 4, recorded with
    // -e write=4 during `ip link set dev t-blue up`): RTM_GETLINK, IFLA_EXT_MASK VF|SKIP_STATS, IFLA_IFNAME.
    @Test func getLinkByName() {
        let ref = hex("""
            34000000 1200 0100 5620096b 00000000
            00000000 00000000 00000000 00000000
            08001d00 09000000
            0b000300 742d626c 75650000
            """)
        #expect(wire(RouteMessage.getLink(name: "t-blue")) == normalized(ref))
    }

    // `ip addr add 100.64.0.1/10 dev t-blue`, `ip addr add 2001:db8:a::1/64 dev t-blue nodad`
    @Test func addAddress() {
        let v4 = hex("""
            28000000 1400 0506 4820096b 00000000
            02 0a 00 00 03000000
            08000200 64400001
            08000100 64400001
            """)
        let v6 = hex("""
            40000000 1400 0506 4920096b 00000000
            0a 40 02 00 03000000
            14000200 20010db8000a00000000000000000001
            14000100 20010db8000a00000000000000000001
            """)
        #expect(wire(RouteMessage.addAddress(index: 3, pfx("100.64.0.1/10"))) == normalized(v4))
        #expect(wire(RouteMessage.addAddress(index: 3, pfx("2001:db8:a::1/64"), noDAD: true)) == normalized(v6))
        // noDAD has no meaning for IPv4 and is not sent there.
        #expect(wire(RouteMessage.addAddress(index: 3, pfx("100.64.0.1/10"), noDAD: false)) == normalized(v4))
    }

    // `ip route add 192.0.2.2/32 via 100.64.0.2 dev t-blue`
    @Test func routeViaIPv4Gateway() {
        let ref = hex("""
            34000000 1800 0506 4920096b 00000000
            02 20 00 00 fe 03 00 01 00000000
            08000100 c0000202
            08000500 64400002
            08000400 03000000
            """)
        let r = Route(destination: pfx("192.0.2.2/32"), gateway: ip("100.64.0.2"), outputInterface: 3)
        #expect(wire(RouteMessage.addRoute(r)) == normalized(ref))
    }

    // `ip -4 route add 0.0.0.0/0 via inet6 fe80::1 dev t-blue`: RTA_VIA (18) = struct rtvia
    // { u16 family = AF_INET6; address }.
    @Test func ipv4DefaultViaIPv6LinkLocal() {
        let ref = hex("""
            44000000 1800 0506 4920096b 00000000
            02 00 00 00 fe 03 00 01 00000000
            08000100 00000000
            16001200 0a00 fe800000000000000000000000000001 0000
            08000400 03000000
            """)
        let r = Route(family: .v4, destination: Route.defaultDestination(.v4), gateway: ip("fe80::1"), outputInterface: 3)
        #expect(wire(RouteMessage.addRoute(r)) == normalized(ref))
    }

    // `ip -6 route add 2001:db8:b:10::/64 via 2001:db8:a::2 dev t-blue`
    @Test func ipv6Route() {
        let ref = hex("""
            4c000000 1800 0506 4a20096b 00000000
            0a 40 00 00 fe 03 00 01 00000000
            14000100 20010db8000b00100000000000000000
            14000500 20010db8000a00000000000000000002
            08000400 03000000
            """)
        let r = Route(destination: pfx("2001:db8:b:10::/64"), gateway: ip("2001:db8:a::2"), outputInterface: 3)
        #expect(wire(RouteMessage.addRoute(r)) == normalized(ref))
    }

    // `ip route add 100.64.0.0/10 table 101 via inet6 fe80::2 src 192.0.0.8 dev t-blue`
    // (table < 256: only in rtm_table, as iproute2 does).
    @Test func routeInTable101WithPrefsrc() {
        let ref = hex("""
            4c000000 1800 0506 4a20096b 00000000
            02 0a 00 00 65 03 00 01 00000000
            08000100 64400000
            16001200 0a00 fe800000000000000000000000000002 0000
            08000700 c0000008
            08000400 03000000
            """)
        let r = Route(destination: pfx("100.64.0.0/10"), gateway: ip("fe80::2"), outputInterface: 3,
                      preferredSource: ip("192.0.0.8"), table: 101)
        #expect(wire(RouteMessage.addRoute(r)) == normalized(ref))
    }

    // `ip route add 100.64.0.0/10 table 1000 metric 100 dev t-blue`: table > 255 goes in RTA_TABLE
    // with rtm_table RT_TABLE_UNSPEC; iproute2 picked scope link itself (no gateway), we pass it.
    @Test func routeInLargeTableWithMetric() {
        let ref = hex("""
            3c000000 1800 0506 4a20096b 00000000
            02 0a 00 00 00 03 fd 01 00000000
            08000100 64400000
            08000f00 e8030000
            08000600 64000000
            08000400 03000000
            """)
        let r = Route(destination: pfx("100.64.0.0/10"), outputInterface: 3, table: 1000, scope: RouteScope.link, metric: 100)
        #expect(wire(RouteMessage.addRoute(r)) == normalized(ref))
    }

    // `ip rule add pref 100 fwmark 1 table 101`, `ip rule del pref 100 fwmark 1 table 101 type unicast`
    // (`type unicast` makes iproute2 send action FR_ACT_TO_TBL on delete as we do; without it, it sends 0),
    // `ip rule add pref 101 fwmark 0x2/0xff table 102`, `ip rule add pref 102 fwmark 3 table 1000`,
    // `ip -6 rule add pref 100 fwmark 1 table 101`.
    @Test func fwmarkRules() {
        let add = hex("""
            2c000000 2000 0506 4a20096b 00000000
            02 00 00 00 65 00 00 01 00000000
            08000600 64000000
            08000a00 01000000
            """)
        let del = hex("""
            2c000000 2100 0500 4a20096b 00000000
            02 00 00 00 65 00 00 01 00000000
            08000600 64000000
            08000a00 01000000
            """)
        let masked = hex("""
            34000000 2000 0506 4a20096b 00000000
            02 00 00 00 66 00 00 01 00000000
            08000600 65000000
            08000a00 02000000
            08001000 ff000000
            """)
        let big = hex("""
            34000000 2000 0506 4a20096b 00000000
            02 00 00 00 00 00 00 01 00000000
            08000600 66000000
            08000a00 03000000
            08000f00 e8030000
            """)
        let v6 = hex("""
            2c000000 2000 0506 4b20096b 00000000
            0a 00 00 00 65 00 00 01 00000000
            08000600 64000000
            08000a00 01000000
            """)
        let rule = Rule(family: .v4, priority: 100, table: 101, fwmark: 1)
        #expect(wire(RouteMessage.addRule(rule)) == normalized(add))
        #expect(wire(RouteMessage.deleteRule(rule)) == normalized(del))
        #expect(wire(RouteMessage.addRule(Rule(family: .v4, priority: 101, table: 102, fwmark: 2, fwmask: 0xff))) == normalized(masked))
        #expect(wire(RouteMessage.addRule(Rule(family: .v4, priority: 102, table: 1000, fwmark: 3))) == normalized(big))
        #expect(wire(RouteMessage.addRule(Rule(family: .v6, priority: 100, table: 101, fwmark: 1))) == normalized(v6))
    }

    // `ip rule add pref 1000 l3mdev`, `ip rule add pref 2000 l3mdev unreachable`
    @Test func l3mdevRules() {
        let lookup = hex("""
            2c000000 2000 0506 4b20096b 00000000
            02 00 00 00 00 00 00 01 00000000
            08000600 e8030000
            05001300 01000000
            """)
        let unreachable = hex("""
            2c000000 2000 0506 4b20096b 00000000
            02 00 00 00 00 00 00 07 00000000
            08000600 d0070000
            05001300 01000000
            """)
        #expect(wire(RouteMessage.addRule(Rule(family: .v4, priority: 1000, l3mdev: true))) == normalized(lookup))
        #expect(wire(RouteMessage.addRule(Rule(family: .v4, priority: 2000, l3mdev: true, action: .unreachable))) == normalized(unreachable))
    }

    // Dump requests of `ip -o link show`, `ip -o addr show`, `ip -4 route show table all`,
    // `ip -4 rule show` (fd 3; iproute2 passes a larger buffer to sendto for the address dump,
    // nlmsg_len is 24 and that is what counts).
    @Test func dumpRequests() {
        #expect(wire(RouteMessage.dumpLinks()) == normalized(hex("""
            28000000 1200 0103 5620096b 00000000
            11 00 0000 00000000 00000000 00000000
            08001d00 01000000
            """)))
        #expect(wire(RouteMessage.dumpAddresses(family: nil)) == normalized(hex("""
            18000000 1600 0103 5720096b 00000000
            00 00 00 00 00000000
            """)))
        #expect(wire(RouteMessage.dumpRoutes(family: .v4)) == normalized(hex("""
            1c000000 1a00 0103 5620096b 00000000
            02 00 00 00 00 00 00 00 00000000
            """)))
        #expect(wire(RouteMessage.dumpRules(family: .v4)) == normalized(hex("""
            1c000000 2200 0103 5620096b 00000000
            02 00 00 00 00 00 00 00 00000000
            """)))
    }
}
