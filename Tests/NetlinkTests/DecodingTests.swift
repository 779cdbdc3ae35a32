import Testing
@testable import Netlink

// Kernel replies recorded on this machine (Linux 6.18) inside throwaway namespaces nltest-cap1/2/3:
// rtnetlink replies with `strace -f -e trace=recvmsg -e read=3 ip ...`; the extended-ACK replies with
// offset by a small Python probe that sets NETLINK_EXT_ACK and NETLINK_CAP_ACK as NetlinkSocket does;
// conntrack traffic with `strace -e read=3,4 conntrack -L` / `conntrack -E` while a TCP connection
// (`ct original zone set 5`, `ct mark set 7`, `snat to 10.9.0.3`) and a UDP flow (`ct zone set 6`)
// ran from 10.9.0.1 to 10.9.0.2, with net.netfilter.nf_conntrack_timestamp=1.

@Suite struct RouteDecodingTests {
    // One RTM_NEWLINK message of the `ip -o link show` dump: t-blue, index 3, a veth, up,
    // IFLA_OPERSTATE UP, mtu 1500, MAC d2:4f:81:56:1d:11 (its IFLA_STATS/AF_SPEC etc. are skipped).
    static let tBlue = hex("d8050000100002005620096b1c0c0000000001000300000043100100000000000b000300742d626c7565000008000d00e803000005001000060000000500110000000000050043000000000008000400dc050000080032004400000008003300ffff000008001b000000000008001e000000000008003d000000000008001f000200000008002800ffff0000080029000000010008003a000000010008003f0000000100080040000000010008003b00f8ff070008003c00ffff0000080042000000000008002000020000000500210001000000080023000200000008002f000100000008003000010000000600440000000000060045000000000005002700000000000a000100d24f81561d1100000a000200ffffffffffff0000cc0017000800000000000000070000000000000090020000000000009a02000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000640007000800000007000000900200009a02000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000c002b0005000200000000001000120009000100766574680000000008000500020000000c0006006e6f71756575650030031a008c00020088000100000000000000000000000000010000000100000001000000010000000000000001000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000010270000e80300000000000000000000000000000000000001000000a0020a00080001001000008014000500ffff0000a1940000288d0000e8030000f40002000000000040000000dc05000001000000010000000100000001000000ffffffffa00f0000e803000000000000803a0900805101000300000058020000100000000000000001000000010000000100000060ea000000000000000000000000000000000000000000000000000001000000000000000000000010270000e8030000010000000000000000000000010000000000000000000000010000000000000000000000000000000000000080ee360000000000000000000100000000000000000000000000000000000000000000000004000000000000ffff0000ffffffff0100000000000000000000000000000034010300260000000000000008000000000000002002000000000000000000000000000008000000000000000000000000000000000000000000000000000000000000000700000000000000070000000000000038020000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000008000000000000000700000000000000000000000000000000000000000000002002000000000000380200000000000000000000000000000000000000000000000000000000000000000000000000003c00060007000000000000000000000000000000000000000000000007000000000000000000000000000000000000000000000000000000000000001400070000000000000000000000000000000000050008000000000024000e00000000000000000000000000000000000000000000000000000000000000000004003e8004004180")

    @Test func linkDumpEntry() throws {
        let msgs = try NetlinkMessage.parse(Self.tBlue)
        #expect(msgs.count == 1)
        #expect(msgs[0].flags & NL.F_MULTI != 0)
        let link = try #require(RouteMessage.decodeLink(msgs[0]))
        #expect(link == Link(index: 3, name: "t-blue", kind: "veth", isUp: true, operState: "UP", mtu: 1500,
                             master: nil, mac: [0xd2, 0x4f, 0x81, 0x56, 0x1d, 0x11]))
    }

    // `ip addr add 100.64.0.1/10 dev t-blue` a second time: NLMSG_ERROR -EEXIST, flags NLM_F_ACK_TLVS,
    // the full request echoed (iproute2 does not set NETLINK_CAP_ACK), then NLMSGERR_ATTR_MSG.
    @Test func errorWithExtendedAckAndEchoedRequest() throws {
        let b = hex("60000000020000025720096bd40c0000efffffff28000000140005065720096b00000000020a0000030000000800020064400001080001006440000123000100697076343a204164647265737320616c72656164792061737369676e65640000")
        let m = try #require(try NetlinkMessage.parse(b).first)
        let info = try #require(m.errorInfo)
        #expect(info.errno == 17)
        #expect(info.message == "ipv4: Address already assigned")
        #expect(info.offset == nil)
        let e = NetlinkError(step: "add address 100.64.0.1/10 to link 3", errno: info.errno, kernelMessage: info.message)
        #expect(e.description == "add address 100.64.0.1/10 to link 3: File exists (kernel: ipv4: Address already assigned)")
    }

    // Probe: RTM_NEWADDR whose IFA_LOCAL is 3 bytes long, on a socket with NETLINK_CAP_ACK: -ERANGE,
    // flags NLM_F_CAPPED|NLM_F_ACK_TLVS, only the request header echoed, NLMSGERR_ATTR_MSG,
    // NLMSGERR_ATTR_OFFS = 24 (the bad attribute's offset in the request) and NLMSGERR_ATTR_POLICY.
    @Test func errorWithExtendedAckOffset() throws {
        let b = hex("780000000200000301000000c03e0000deffffff2000000014000506010000000000000027000100417474726962757465206661696c656420706f6c6963792076616c69646174696f6e00000800020018000000240004800c00040000000000000000000c000500ffffffff000000000800010004000000")
        let m = try #require(try NetlinkMessage.parse(b).first)
        let info = try #require(m.errorInfo)
        #expect(info.errno == 34)
        #expect(info.message == "Attribute failed policy validation")
        #expect(info.offset == 24)
        // An error without extended ACK (RTA_OIF 99: no such device): no kernel message, plain description.
        let plain = try #require(try NetlinkMessage.parse(hex("240000000200000102000000c03e0000edffffff2c000000180005060200000000000000")).first)
        let p = try #require(plain.errorInfo)
        #expect(p.errno == 19 && p.message == nil)
        #expect(NetlinkError(step: "add route", errno: p.errno).description == "add route: No such device")
    }

    // Three messages of `ip -4 route show table all` and `ip -4 rule show`.
    @Test func routeAndRuleDumpEntries() throws {
        let viaV6 = try #require(try NetlinkMessage.parse(hex("54000000180022005620096b780c0000020a0000650300010000000008000f0065000000080001006440000008000700c0000008160012000a00fe80000000000000000000000000000200000800040003000000")).first)
        #expect(RouteMessage.decodeRoute(viaV6) == Route(destination: pfx("100.64.0.0/10"), gateway: ip("fe80::2"), outputInterface: 3,
                                                        preferredSource: ip("192.0.0.8"), table: 101))
        let big = try #require(try NetlinkMessage.parse(hex("3c000000180022005620096b780c0000020a0000fc03fd010000000008000f00e8030000080001006440000008000600640000000800040003000000")).first)
        #expect(RouteMessage.decodeRoute(big) == Route(destination: pfx("100.64.0.0/10"), outputInterface: 3, table: 1000,
                                                       scope: RouteScope.link, metric: 100))
        let dflt = try #require(try NetlinkMessage.parse(hex("44000000180022005620096b780c000002000000fe0300010000000008000f00fe000000160012000a00fe80000000000000000000000000000100000800040003000000")).first)
        #expect(RouteMessage.decodeRoute(dflt) == Route(family: .v4, destination: pfx("0.0.0.0/0"), gateway: ip("fe80::1"), outputInterface: 3))

        let local = try #require(try NetlinkMessage.parse(hex("34000000200002005620096ba60c000002000000ff0000010000000008000f00ff00000008000e00ffffffff0500150002000000")).first)
        #expect(RouteMessage.decodeRule(local) == Rule(family: .v4, priority: 0, table: 255))
        let masked = try #require(try NetlinkMessage.parse(hex("4c000000200002005620096ba60c000002000000660000010000000008000f006600000008000e00ffffffff0500150000000000080006006500000008000a000200000008001000ff000000")).first)
        #expect(RouteMessage.decodeRule(masked) == Rule(family: .v4, priority: 101, table: 102, fwmark: 2, fwmask: 0xff))
        let big1000 = try #require(try NetlinkMessage.parse(hex("4c000000200002005620096ba60c000002000000fc0000010000000008000f00e803000008000e00ffffffff0500150000000000080006006600000008000a000300000008001000ffffffff")).first)
        #expect(RouteMessage.decodeRule(big1000) == Rule(family: .v4, priority: 102, table: 1000, fwmark: 3))
    }

    @Test func attributeParsingSkipsUnknownAndStopsAtGarbage() {
        var w = AttributeWriter()
        w.u32(99, 7)
        w.string(3, "x")
        let attrs = NetlinkAttribute.parse(w.bytes + [0xff, 0x00, 0x01])  // truncated tail ignored
        #expect(attrs.count == 2)
        #expect(attrs[type: 3]?.string == "x")
        #expect(attrs[type: 99]?.u32 == 7)
        // A message whose length runs past the datagram is an error, not a trap.
        #expect(throws: NetlinkError.self) { try NetlinkMessage.parse(hex("ff000000 1000 0000 00000000 00000000")) }
    }
}

@Suite struct ConntrackTests {
    // `conntrack -L` and `conntrack -L -f ipv6` (conntrack-tools 1.4.7, strace -e write=3):
    // IPCTNL_MSG_CT_GET (0x0101), NLM_F_REQUEST|NLM_F_DUMP, struct nfgenmsg {family, NFNETLINK_V0, res_id 0}.
    @Test func dumpRequest() {
        #expect(wire(ConntrackMessage.dump(family: nil)) == normalized(hex("14000000 0101 0103 4a20096b 00000000  00 00 0000")))
        #expect(wire(ConntrackMessage.dump(family: .v6)) == normalized(hex("14000000 0101 0103 4a20096b 00000000  0a 00 0000")))
    }

    // One datagram of the `conntrack -L` reply: the UDP flow (CTA_ZONE 6, mark 7, reply to the SNAT
    // address 10.9.0.3, with CTA_TIMESTAMP start) and the TCP flow (CTA_TUPLE_ZONE 5 in the original
    // tuple only, ESTABLISHED, ASSURED|SRC_NAT...).
    @Test func dumpEntries() throws {
        let udp = hex("bc00000000010200ec22096b56360000020000003400018014000180080001000a090001080002000a0900021c000280050001001100000006000200835100000600030027 0f00003400028014000180080001000a090002080002000a0900031c000280050001001100000006000200270f0000060003008351000006001200000600000800030000000198080008000000000708000c00c36eefe108000b0000000001080007000000001d100014800c00010018ebd300ad5c95bd")
        let tcp = hex("ec00000000010200ec22096b56360000020000003c00018014000180080001000a090001080002000a0900021c0002800500010006000000060002008b8f0000060003001f90000006000300000500003400028014000180080001000a090002080002000a0900031c0002800500010006000000060002001f900000060003008b8f0000080003000000019e080008000000000708000c00882be67f08000b0000000001080007000006977f300004802c0001800500010003000000050002000a000000050003000a00000006000400230000000600050023000000100014800c00010018ebd300ad5750be")
        let msgs = try NetlinkMessage.parse(udp + tcp)
        #expect(msgs.count == 2)
        let u = try #require(ConntrackMessage.decodeEntry(msgs[0]))
        #expect(u == ConntrackEntry(
            id: 0xc36eefe1, family: .v4,
            original: ConntrackTuple(source: ip("10.9.0.1"), destination: ip("10.9.0.2"), protocolNumber: 17, sourcePort: 0x8351, destinationPort: 9999),
            reply: ConntrackTuple(source: ip("10.9.0.2"), destination: ip("10.9.0.3"), protocolNumber: 17, sourcePort: 9999, destinationPort: 0x8351),
            zone: 6, mark: 7, status: 0x198, timeout: 29, start: 0x18ebd300ad5c95bd))
        let t = try #require(ConntrackMessage.decodeEntry(msgs[1]))
        #expect(t.originalZone == 5 && t.zone == nil && t.replyZone == nil)
        #expect(t.tcpState == 3)
        #expect(t.mark == 7 && t.status == 0x19e && t.status & ConntrackEntry.statusSourceNAT != 0)
        #expect(t.original == ConntrackTuple(source: ip("10.9.0.1"), destination: ip("10.9.0.2"), protocolNumber: 6, sourcePort: 0x8b8f, destinationPort: 8080))
        #expect(t.reply.destination == ip("10.9.0.3") && t.reply.destinationPort == 0x8b8f)
        #expect(t.timeout == 0x6977f && t.start == 0x18ebd300ad5750be && t.stop == nil)
    }

    // `conntrack -E` events. This kernel's NEW event carries no CTA_TIMESTAMP (start/stop come with
    // DESTROY events and dumps) but CTA_TIMESTAMP_EVENT (27); the DESTROY event of the UDP flow
    // (after `conntrack -D -p udp`) carries CTA_TIMESTAMP start and stop.
    @Test func events() throws {
        let new = hex("e0000000000100060000000000000000020000003c00018014000180080001000a090001080002000a0900021c0002800500010006000000060002008b8f0000060003001f90000006000300000500003400028014000180080001000a090002080002000a0900031c0002800500010006000000060002001f900000060003008b8f000008000c00882be67f08000300000001980800070000000078300004802c0001800500010001000000050002000a00000005000300000000000600040003000000060005000000000008000800000000070c001b0018ebd300ad56d9f8")
        let destroy = hex("cc0000000201000000000000824135e3020000003400018014000180080001000a090001080002000a0900021c0002800500010011000000060002008351000006000300270f00003400028014000180080001000a090002080002000a0900031c000280050001001100000006000200270f00000600030083510000060012000006000008000c00c36eefe10800030000000398080007000000001d1c0014800c00010018ebd300ad5c95bd0c00020018ebd300df35482c08000800000000070c001b0018ebd300df3548fe")
        let n = try #require(ConntrackMessage.decodeEvent(try NetlinkMessage.parse(new)[0]))
        #expect(n.kind == .new)
        #expect(n.entry.originalZone == 5 && n.entry.tcpState == 1 && n.entry.mark == 7 && n.entry.timeout == 120)
        #expect(n.entry.eventTime == 0x18ebd300ad56d9f8 && n.entry.start == nil)
        let d = try #require(ConntrackMessage.decodeEvent(try NetlinkMessage.parse(destroy)[0]))
        #expect(d.kind == .destroy)
        #expect(d.entry.zone == 6 && d.entry.start == 0x18ebd300ad5c95bd && d.entry.stop == 0x18ebd300df35482c)
        #expect(d.entry.reply.destination == ip("10.9.0.3"))
        // The same message without NLM_F_CREATE is an update.
        var upd = try NetlinkMessage.parse(new)[0]
        upd.flags = 0
        #expect(ConntrackMessage.decodeEvent(upd)?.kind == .update)
    }

    @Test func overrunDescription() {
        #expect(ConntrackOverrun(step: "receive conntrack events").description.contains("ENOBUFS"))
    }
}
