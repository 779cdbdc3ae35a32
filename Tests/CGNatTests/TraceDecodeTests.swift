import Testing
import Netlink
@testable import CGNat

private func bytes(_ hex: String) -> [UInt8] {
    var out: [UInt8] = []
    var it = hex.utf8.makeIterator()
    func nibble(_ c: UInt8) -> UInt8 { c <= 57 ? c - 48 : (c | 0x20) - 87 }
    while let hi = it.next(), let lo = it.next() { out.append(nibble(hi) << 4 | nibble(lo)) }
    return out
}

private func recorded(_ stream: [(String, String)]) throws -> [RecordedTraceEvent] {
    try stream.map { ctx, hex in
        let messages = try NetlinkMessage.parse(bytes(hex))
        #expect(messages.count == 1)
        let e = try #require(NFTrace.decode(messages[0]), "not a trace message: \(hex.prefix(40))")
        return RecordedTraceEvent(context: ctx, event: e)
    }
}

private func namespaces() -> [TraceNamespaceInfo] {
    TraceFixtures.links.map { ctx, links in
        TraceNamespaceInfo(context: ctx, links: links, rules: ctx == "main" ? RuleIndex(listing: TraceFixtures.mainListing) : RuleIndex())
    }
}

@Suite struct TraceDecodeTests {
    @Test func decodesTheFirstEventOfAChainWithPacketAndDevices() throws {
        let events = try recorded(TraceFixtures.natPing)
        let first = events[0].event
        #expect(events[0].context == "main:blue")
        #expect(first.kind == .rule)
        #expect(first.table == "cgnat_trace" && first.chain == "mark_pre")
        #expect(first.ruleHandle != nil)
        #expect(first.verdict == NFTrace.NFT_CONTINUE)
        #expect(first.nfproto == 2)
        #expect(first.inputIndex == 2)   // br-blue
        #expect(first.outputIndex == nil)
        let p = try #require(first.packet)
        #expect(p.source == IPAddress("100.64.0.2") && p.destination == IPAddress("192.0.2.1"))
        #expect(p.protocolNumber == 1 && p.icmpTypeName == "echo-request" && p.icmpID != nil)
        // Later events of the same chain carry no packet; the chain ends with its policy.
        #expect(events[1].event.networkHeader == nil && events[1].event.id == first.id)
        let policy = events[2].event
        #expect(policy.kind == .policy && policy.policy == 1 && policy.effectiveVerdict == NFTrace.NF_ACCEPT)
    }

    @Test func decodesConntrackAttributesAndTheSNATRule() throws {
        let events = try recorded(TraceFixtures.natPing).map(\.event)
        // pre_mangle in main sees the new connection, original direction.
        let mangle = try #require(events.first { $0.table == "cgnat" && $0.chain == "pre_mangle" && $0.ctState != nil })
        #expect(mangle.ctState == 8 && NFTrace.ctStateName(8) == "new")
        #expect(mangle.ctDirection == 0)
        #expect(mangle.ctID != nil)
        let snat = try #require(events.first { $0.chain == "srcnat" && $0.ruleHandle != nil })
        #expect(snat.verdict == NFTrace.NF_ACCEPT)
        #expect(snat.outputIndex == 11)   // muplink
        // The reply is established, reply direction, on the same connection.
        let reply = try #require(events.first { $0.chain == "pre_mangle" && $0.ctDirection == 1 })
        #expect(reply.ctState == 2 && reply.ctID == mangle.ctID)
        // After the srcnat chain the packet leaves with the NAT address.
        let post = try #require(events.first { $0.chain == "seen_post" && $0.outputIndex == 11 })
        #expect(post.packet?.source == IPAddress("100.64.0.1"))
        #expect(post.mark == 1)
    }

    @Test func otherMessagesAreNotTraceEvents() {
        let m = NetlinkMessage(type: ConntrackMessage.newType, flags: 0, payload: [2, 0, 0, 0])
        #expect(NFTrace.decode(m) == nil)
    }

    @Test func ruleIndexReadsHooksPrioritiesAndRuleTextWithoutCounters() {
        let idx = RuleIndex(listing: TraceFixtures.mainListing)
        #expect(idx.chain(table: "cgnat", chain: "pre_raw")?.hook == "prerouting")
        #expect(idx.chain(table: "cgnat", chain: "pre_raw")?.priority == "raw")
        #expect(idx.chain(table: "cgnat", chain: "srcnat")?.type == "nat")
        #expect(idx.rule(table: "cgnat", chain: "srcnat", handle: 17)?.hasSuffix("counter snat ip to 100.64.0.1 comment \"CGN\"") == true)
        #expect(idx.rule(table: "cgnat", chain: "forward", handle: 11) == "ct state established,related accept")
        #expect(idx.rules.values.allSatisfy { !$0.contains("packets") })
    }

    @Test func natPingIsDeliveredBothWaysWithTheSNATRuleAndZone() throws {
        let events = try recorded(TraceFixtures.natPing)
        let packets = TraceAnalysis.packets(events, namespaces: namespaces())
        #expect(packets.count == 2)
        let request = packets[0]
        #expect(request.packet?.icmpTypeName == "echo-request")
        // One packet across two namespaces although the trace id changed on the way.
        #expect(request.hops.first?.context == "main:blue" && request.hops.last?.context == "main")
        #expect(request.verdict.result == .delivered)
        #expect(request.verdict.detail == "(left main via muplink)")
        let snat = try #require(request.hops.first { $0.chain == "srcnat" && $0.kind == .rule })
        #expect(snat.rule?.contains("snat ip to 100.64.0.1") == true && snat.verdict == "accept")
        #expect(snat.hook == "postrouting")
        let reply = packets[1]
        #expect(reply.packet?.icmpTypeName == "echo-reply")
        #expect(reply.verdict.detail == "(left main:blue via br-blue)")
        // De-NAT seen in prerouting: the reply is addressed to the subscriber after dstnat.
        #expect(reply.hops.contains { $0.kind == .passed && $0.hook == "prerouting" && $0.packet?.destination == IPAddress("100.64.0.2") })
        #expect(TraceAnalysis.summary(packets) == "verdict: delivered (left main via muplink)")
        let text = TraceFormat.text(packets)
        #expect(text.contains("[main] postrouting srcnat srcnat rule"))
        #expect(text.hasSuffix("verdict: delivered (left main via muplink)\n"))
    }

    @Test func conntrackEntriesAddZonesAndNAT() throws {
        let events = try recorded(TraceFixtures.natPing)
        let ctID = try #require(events.map(\.event).first { $0.chain == "pre_mangle" && $0.ctID != nil }?.ctID)
        let entry = ConntrackEntry(id: ctID, family: .v4,
                                   original: ConntrackTuple(source: IPAddress("100.64.0.2")!, destination: IPAddress("192.0.2.1")!, protocolNumber: 1),
                                   reply: ConntrackTuple(source: IPAddress("192.0.2.1")!, destination: IPAddress("100.64.0.1")!, protocolNumber: 1),
                                   originalZone: 1)
        let packets = TraceAnalysis.packets(events, namespaces: namespaces(), conntrack: [ctID: entry])
        let ct = try #require(packets[0].hops.compactMap(\.ct).first { $0.id == ctID })
        #expect(ct.originalZone == 1 && ct.nat == "snat 100.64.0.2 -> 100.64.0.1")
        #expect(ct.state == "new" && ct.direction == "original")
    }

    @Test func rejectedPingIsDroppedAtTheForwardRuleAndTheErrorGoesBack() throws {
        let events = try recorded(TraceFixtures.rejectedPing)
        let packets = TraceAnalysis.packets(events, namespaces: namespaces())
        #expect(packets.count == 2)
        let v = packets[0].verdict
        #expect(v.result == .dropped && v.context == "main")
        #expect(v.detail.hasPrefix("at main forward rule \"iifname { \"t-red\", \"t-blue\" }"))
        #expect(v.detail.hasSuffix("(admin-prohibited reject)"))
        #expect(packets[1].packet?.icmpTypeName == "destination-unreachable")
        #expect(packets[1].packet?.source == IPAddress("192.0.0.8"))
        #expect(packets[1].verdict.result == .delivered)
        #expect(TraceAnalysis.summary(packets).hasPrefix("verdict: dropped at main forward rule"))
    }

    // Synthetic events: the verdict logic without the kernel.
    private func ev(_ id: UInt32, _ table: String, _ chain: String, kind: TraceEvent.Kind = .rule, handle: UInt64? = nil,
                    verdict: Int32? = nil, policy: UInt32? = nil, iif: UInt32? = nil, oif: UInt32? = nil,
                    src: String? = nil, dst: String? = nil) -> TraceEvent {
        var e = TraceEvent(id: id, kind: kind, table: table, chain: chain, ruleHandle: handle, verdict: verdict, policy: policy,
                           inputIndex: iif, outputIndex: oif)
        if let src, let dst {
            var h = [UInt8](repeating: 0, count: 20)
            h[0] = 0x45; h[9] = 17
            h.replaceSubrange(12..<16, with: IPAddress(src)!.bytes)
            h.replaceSubrange(16..<20, with: IPAddress(dst)!.bytes)
            e.networkHeader = h
            e.transportHeader = [0x30, 0x39, 0x00, 0x35]
        }
        return e
    }

    @Test func policyDropIsNamedAndUnmatchedChainsShowTheirPolicy() {
        let listing = """
            table inet filt { # handle 4
            \tchain input { # handle 1
            \t\ttype filter hook input priority filter; policy drop;
            \t\ttcp dport 22 accept # handle 3
            \t}
            }
            """
        let ns = [TraceNamespaceInfo(context: "main", links: [5: "muplink"], rules: RuleIndex(listing: listing))]
        let events = [
            ev(7, TraceTable.name, "mark_pre", handle: 1, verdict: -1, iif: 5, src: "192.0.2.1", dst: "100.64.0.1"),
            ev(7, TraceTable.name, "mark_pre", kind: .policy, policy: 1),
            ev(7, TraceTable.name, "seen_pre", verdict: -1, iif: 5, src: "192.0.2.1", dst: "100.64.0.1"),
            ev(7, "filt", "input", verdict: -1, iif: 5, src: "192.0.2.1", dst: "100.64.0.1"),
            ev(7, "filt", "input", kind: .policy, policy: 0),
        ].map { RecordedTraceEvent(context: "main", event: $0) }
        let packets = TraceAnalysis.packets(events, namespaces: ns)
        #expect(packets.count == 1)
        #expect(packets[0].hops.map(\.kind) == [.enter, .passed, .policy])
        #expect(packets[0].verdict.result == .dropped)
        #expect(packets[0].verdict.detail == "at main input (policy drop)")
        #expect(packets[0].packet?.description == "192.0.2.1:12345 > 100.64.0.1:53 udp")
    }

    @Test func localDeliveryAndLostPacketsAndIDReuse() {
        let ns = [TraceNamespaceInfo(context: "main", links: [:], rules: RuleIndex())]
        // Packet A delivered locally; packet B reuses A's trace id with other headers and vanishes
        // after prerouting (no route: nothing in nftables saw it die).
        let events = [
            ev(1, TraceTable.name, "mark_pre", handle: 1, verdict: -1, iif: 5, src: "192.0.2.1", dst: "100.64.0.1"),
            ev(1, TraceTable.name, "seen_in", verdict: -1, iif: 5, src: "192.0.2.1", dst: "100.64.0.1"),
            ev(1, TraceTable.name, "mark_pre", handle: 1, verdict: -1, iif: 5, src: "192.0.2.1", dst: "100.64.9.9"),
            ev(1, TraceTable.name, "seen_pre", verdict: -1, iif: 5, src: "192.0.2.1", dst: "100.64.9.9"),
        ].map { RecordedTraceEvent(context: "main", event: $0) }
        let packets = TraceAnalysis.packets(events, namespaces: ns)
        #expect(packets.count == 2)
        #expect(packets[0].verdict.result == .delivered && packets[0].verdict.detail.hasPrefix("(to main itself"))
        #expect(packets[1].verdict.result == .lost)
        #expect(TraceAnalysis.summary(packets).hasPrefix("verdict: lost after main prerouting"))
        #expect(TraceAnalysis.summary([]) == "verdict: no packets traced")
    }

    @Test func traceTableMatchesTheContextAndItsDestinationsBothWays() {
        let t = TraceTable(sources: [IPAddress("100.64.0.2")!, IPAddress("192.0.2.2")!, IPAddress("2001:db8:b:10::2")!],
                           destinations: [IPAddress("192.0.2.1")!], natAddresses: [IPAddress("100.64.0.1")!])
        #expect(t.match.contains("ip saddr { 100.64.0.2, 192.0.2.2 } ip daddr 192.0.2.1"))
        #expect(t.match.contains("ip saddr 192.0.2.1 ip daddr { 100.64.0.1, 100.64.0.2, 192.0.2.2 }"))
        #expect(!t.match.contains { $0.contains("ip6") })   // only IPv4 destinations were named
        #expect(t.text.contains("type filter hook prerouting priority raw - 1; policy accept;"))
        #expect(t.text.contains("meta nftrace set 1"))
        #expect(t.text.hasPrefix("add table inet cgnat_trace\ndelete table inet cgnat_trace\n"))
        #expect(TraceSession.destinations(in: ["ping", "-I", "192.0.2.2", "-c1", "192.0.2.1"]) == [IPAddress("192.0.2.2")!, IPAddress("192.0.2.1")!])
        let any = TraceTable(sources: [IPAddress("100.64.0.2")!, IPAddress("2001:db8:b:10::2")!], destinations: [], natAddresses: [])
        #expect(any.match.contains("ip6 saddr 2001:db8:b:10::2"))
    }

    @Test func jsonCarriesHopsAndVerdict() throws {
        let packets = TraceAnalysis.packets(try recorded(TraceFixtures.rejectedPing), namespaces: namespaces())
        let json = TraceFormat.json(packets, command: ["ping", "192.0.2.2"], context: "red_c1", exitStatus: 1).serialized()
        #expect(json.contains("\"result\":\"dropped\""))
        #expect(json.contains("\"hook\":\"forward\""))
        #expect(json.contains("\"exit_status\":1"))
    }
}
