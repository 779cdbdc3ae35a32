import Testing
@testable import Netlink

// Reference bytes for the messages a lab of a thousand subscribers needs: explicit MACs and
// ifindexes on every link, `addrgenmode none` on bridge ports, permanent neighbour entries.
// Recorded from iproute2 6.1.0 on this machine with
//   strace -f -e trace=sendmsg -e write=3 -s 65536 ip ...
// in throwaway namespaces (cgt-scale-cap1/2/3, opened by iproute2 as fds 4 and 5 where `netns`
// is given), nlmsg_seq/nlmsg_pid zeroed by `normalized`. Layout: nlmsghdr | fixed header | attributes.
@Suite struct ScaleEncodingTests {
    let mac0a: [UInt8] = [0x02, 0x63, 0, 0, 0, 0x0a], mac0b: [UInt8] = [0x02, 0x63, 0, 0, 0, 0x0b]

    // `ip link add dev t-blue index 10 address 02:63:00:00:00:0a type veth
    //  peer name t-up index 11 address 02:63:00:00:00:0b netns cgt-scale-cap2`
    @Test func vethWithIndexesAndMACs() {
        let ref = hex("""
            7c000000 1000 0506 399d0e6b 00000000
            00000000 0a000000 00000000 00000000
            0a000100 02630000 000a0000
            0b000300 742d626c 75650000
            44001200 08000100 76657468
                     38000200 34000100 00000000 0b000000 00000000 00000000
                              0a000100 02630000 000b0000 08001c00 04000000 09000300 742d7570 00000000
            """)
        let m = RouteMessage.addVeth(name: "t-blue", peerName: "t-up", peerNamespaceFD: 4, index: 10, peerIndex: 11,
                                     mac: mac0a, peerMAC: mac0b)
        #expect(wire(m) == normalized(ref))
    }

    // Both ends in other namespaces, as the applier creates every link from one socket:
    // `ip link add dev d01_c001 index 20 address 02:63:00:00:00:14 netns cgt-scale-cap1 type veth
    //  peer name cuplink index 21 address 02:63:00:00:00:15 netns cgt-scale-cap3`
    @Test func vethWithBothEndsElsewhere() {
        let ref = hex("""
            88000000 1000 0506 439d0e6b 00000000
            00000000 14000000 00000000 00000000
            0a000100 02630000 00140000
            08001c00 04000000
            0d000300 6430315f 63303031 00000000
            44001200 08000100 76657468
                     38000200 34000100 00000000 15000000 00000000 00000000
                              0a000100 02630000 00150000 08001c00 05000000 0c000300 6375706c 696e6b00
            """)
        let m = RouteMessage.addVeth(name: "d01_c001", peerName: "cuplink", namespaceFD: 4, peerNamespaceFD: 5,
                                     index: 20, peerIndex: 21,
                                     mac: [0x02, 0x63, 0, 0, 0, 0x14], peerMAC: [0x02, 0x63, 0, 0, 0, 0x15])
        #expect(wire(m) == normalized(ref))
    }

    // `ip link add dev br-blue index 12 address 02:63:00:00:00:0c type bridge` and
    // `ip link add dev br-x index 22 address 02:63:00:00:00:16 netns cgt-scale-cap1 type bridge`
    @Test func bridgeWithIndexAndMAC() {
        let here = hex("""
            48000000 1000 0506 399d0e6b 00000000
            00000000 0c000000 00000000 00000000
            0a000100 02630000 000c0000
            0c000300 62722d62 6c756500
            10001200 0a000100 62726964 67650000
            """)
        let there = hex("""
            50000000 1000 0506 439d0e6b 00000000
            00000000 16000000 00000000 00000000
            0a000100 02630000 00160000
            08001c00 04000000
            09000300 62722d78 00000000
            10001200 0a000100 62726964 67650000
            """)
        #expect(wire(RouteMessage.addBridge(name: "br-blue", index: 12, mac: [0x02, 0x63, 0, 0, 0, 0x0c])) == normalized(here))
        #expect(wire(RouteMessage.addBridge(name: "br-x", index: 22, mac: [0x02, 0x63, 0, 0, 0, 0x16], namespaceFD: 4)) == normalized(there))
    }

    // `ip link add dev blue index 13 type vrf table 10`
    @Test func vrfWithIndex() {
        let ref = hex("""
            44000000 1000 0506 399d0e6b 00000000
            00000000 0d000000 00000000 00000000
            09000300 626c7565 00000000
            18001200 07000100 76726600 0c000200 08000100 0a000000
            """)
        #expect(wire(RouteMessage.addVRF(name: "blue", table: 10, index: 13)) == normalized(ref))
    }

    // `ip link set dev d01_c001 addrgenmode none` (ifindex 20): IFLA_AF_SPEC (26, sent without
    // NLA_F_NESTED) { AF_INET6 (10) { IFLA_INET6_ADDR_GEN_MODE (8) = IN6_ADDR_GEN_MODE_NONE } }.
    @Test func addrGenModeNone() {
        let ref = hex("""
            30000000 1000 0500 689e0e6b 00000000
            00000000 14000000 00000000 00000000
            10001a00 0c000a00 05000800 01000000
            """)
        #expect(wire(RouteMessage.setAddrGenModeNone(index: 20)) == normalized(ref))
    }

    // `ip neigh add 100.64.0.1 lladdr 02:63:00:00:00:0b dev t-blue nud permanent` and the same for
    // 2001:db8:b:10::1 (t-blue is ifindex 10): struct ndmsg with NUD_PERMANENT (0x80), NDA_DST, NDA_LLADDR.
    @Test func permanentNeighbours() {
        let v4 = hex("""
            30000000 1c00 0506 3a9d0e6b 00000000
            02000000 0a000000 8000 00 00
            08000100 64400001
            0a000200 02630000 000b0000
            """)
        let v6 = hex("""
            3c000000 1c00 0506 3a9d0e6b 00000000
            0a000000 0a000000 8000 00 00
            14000100 20010db8 000b0010 00000000 00000001
            0a000200 02630000 000b0000
            """)
        #expect(wire(RouteMessage.addPermanentNeighbour(index: 10, address: ip("100.64.0.1"), mac: mac0b)) == normalized(v4))
        #expect(wire(RouteMessage.addPermanentNeighbour(index: 10, address: ip("2001:db8:b:10::1"), mac: mac0b)) == normalized(v6))
    }
}
