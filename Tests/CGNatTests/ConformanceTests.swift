import Testing
import CGNat
import CGNatCore
import NetAddress

/// The catalog against the RFCs' numbering, and every verdict from given evidence (no root).
@Suite struct ConformanceCatalogTests {
    /// The numbered requirements as the RFC texts number them (lettered sub-items where the
    /// RFC letters them and the catalog gives them a row of their own).
    static let expected: [Int: [String]] = [
        4787: ["1", "2", "3", "3a", "4", "5", "5a", "5b", "5c", "6", "6a", "7", "8", "8a", "9", "9a", "10", "10a", "11", "12", "12a", "12b", "13", "13a", "14", "14a"],
        5382: ["1", "2", "2a", "3", "3a", "3b", "4", "4a", "5", "5a", "6", "7", "8", "8a", "9", "10"],
        5508: ["1", "1a", "2", "2a", "3", "3a", "3b", "3c", "3d", "4", "5", "5c", "6", "7", "7a", "8", "9", "10", "11"],
        6888: ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11a", "11b", "11c", "11d", "12", "13", "14", "15"],
    ]

    @Test func everyRequirementOfEachRFCIsPresentExactlyOnce() {
        let keys = ConformanceCatalog.requirements.map(\.key)
        #expect(Set(keys).count == keys.count, "duplicates: \(keys)")
        for rfc in ConformanceCatalog.rfcs {
            let numbers = ConformanceCatalog.requirements.filter { $0.rfc == rfc }.map(\.number)
            #expect(numbers == Self.expected[rfc]!.map { "REQ-\($0)" }, "RFC \(rfc)")
        }
        // Every numbered requirement of each RFC has a row, itself or through its sub-items.
        for (rfc, top) in [(4787, 14), (5382, 10), (5508, 11), (6888, 15)] {
            let numbers = Set(ConformanceCatalog.requirements.filter { $0.rfc == rfc }.map { String($0.number.dropFirst(4).prefix { $0.isNumber }) })
            #expect(numbers == Set((1...top).map(String.init)), "RFC \(rfc)")
        }
    }

    @Test func levelsFollowTheTexts() {
        func level(_ k: String) -> ConformanceLevel? { ConformanceCatalog.requirement(k)?.level }
        for k in ["4787 REQ-1", "4787 REQ-3", "4787 REQ-5", "4787 REQ-9", "4787 REQ-9a", "4787 REQ-11", "4787 REQ-14",
                  "5382 REQ-1", "5382 REQ-4", "5382 REQ-5", "5382 REQ-7", "5382 REQ-8", "5508 REQ-1", "5508 REQ-2",
                  "6888 REQ-2", "6888 REQ-4", "6888 REQ-6", "6888 REQ-9", "6888 REQ-11a", "6888 REQ-11d"] {
            #expect(level(k) == .must, "\(k)")
        }
        for k in ["4787 REQ-2", "4787 REQ-3a", "4787 REQ-4", "4787 REQ-5c", "4787 REQ-8", "4787 REQ-10", "5382 REQ-3",
                  "5382 REQ-9", "5508 REQ-1a", "5508 REQ-8", "6888 REQ-7", "6888 REQ-8", "6888 REQ-12", "6888 REQ-15"] {
            #expect(level(k) == .should, "\(k)")
        }
        for k in ["4787 REQ-5a", "4787 REQ-5b", "4787 REQ-6a", "4787 REQ-8a", "5382 REQ-3a", "5382 REQ-3b", "5382 REQ-5a", "5508 REQ-9", "5508 REQ-11"] {
            #expect(level(k) == .may, "\(k)")
        }
    }

    @Test func probesTheCollisionPairAndOneMore() {
        let lab = Lab.seed()
        let (chosen, pair) = ConformanceRun.chooseSubscribers(lab)
        let p = try! #require(pair)
        func inside(_ h: Host) -> IPAddress? { h.addresses.first { $0.family == .v4 }?.address }
        #expect(inside(p[0]) == inside(p[1]) && p[0].attachment != p[1].attachment, "same inside address, different domains")
        #expect(chosen.count == 3 && chosen.prefix(2).map(\.name) == p.map(\.name))
        #expect(!p.map(\.name).contains(chosen[2].name))
        // A large lab: still three, found without comparing every pair.
        let big = Lab.seedScaled(domains: 10, perDomain: 100)
        let (c2, p2) = ConformanceRun.chooseSubscribers(big)
        #expect(c2.count == 3 && p2 != nil)
    }

    @Test func everyRequirementHasAnEvaluator() {
        let report = Conformance.evaluate(lab: .seed(), evidence: ConformanceEvidence())
        #expect(report.rows.count == ConformanceCatalog.requirements.count)
        #expect(report.rows.map(\.requirement.key) == ConformanceCatalog.requirements.map(\.key))
        for row in report.rows {
            #expect(!row.evidence.contains("no evaluator"), "\(row.requirement.key)")
            #expect(!row.requirement.summary.isEmpty)
        }
    }
}

@Suite struct ConformanceVerdictTests {
    func a(_ s: String) -> IPAddress { IPAddress(s)! }
    func ep(_ s: String, _ p: UInt16) -> FlowEndpoint { FlowEndpoint(a(s), p) }

    /// Flows from one inside endpoint to A:p, A:q, B:p, B:q that left with `mapped` (in order).
    func mapping(_ who: String, inside: FlowEndpoint, _ mapped: [FlowEndpoint?], proto: String = "udp") -> MappingObservation {
        let dests = [ep("192.0.2.1", 4000), ep("192.0.2.1", 5000), ep("192.0.2.17", 4000), ep("192.0.2.17", 5000)]
        return MappingObservation(subscriber: who, proto: proto, inside: inside,
                                  flows: zip(dests, mapped).map { .init(destination: $0, mapped: $1) })
    }

    func row(_ key: String, _ e: ConformanceEvidence, lab: Lab = .seed()) -> ConformanceRow {
        Conformance.evaluate(lab: lab, evidence: e).rows.first { $0.requirement.key == key }!
    }

    @Test func mappingBehaviourFromWhatArrived() {
        let m = ep("100.64.0.1", 2000)
        #expect(mapping("x", inside: ep("100.64.0.1", 40000), [m, m, m, m]).behaviour == .endpointIndependent)
        let m2 = ep("100.64.0.1", 2001)
        #expect(mapping("x", inside: ep("100.64.0.1", 40000), [m, m, m2, m2]).behaviour == .addressDependent)
        #expect(mapping("x", inside: ep("100.64.0.1", 40000), [m, m2, m, m]).behaviour == .addressAndPortDependent)
        #expect(mapping("x", inside: ep("100.64.0.1", 40000), [m, nil, m, m]).behaviour == nil)
    }

    @Test func eimPassesAndAPortPerDestinationFailsREQ1AndExits1() {
        var e = ConformanceEvidence()
        let m = ep("100.64.0.1", 2000)
        e.udpMappings = [mapping("blue_c1", inside: ep("100.64.0.1", 40000), [m, m, m, m])]
        #expect(row("4787 REQ-1", e).verdict == .pass)
        e.udpCollision = [mapping("blue_c1", inside: ep("100.64.0.1", 41000), [ep("100.64.0.1", 2001), ep("100.64.0.1", 2002), ep("100.64.0.1", 2003), ep("100.64.0.1", 2004)]),
                          mapping("red_c1", inside: ep("100.64.0.1", 41000), [ep("100.64.0.1", 3001), ep("100.64.0.1", 3001), ep("100.64.0.1", 3001), ep("100.64.0.1", 3001)])]
        let r = row("4787 REQ-1", e)
        #expect(r.verdict == .fail && r.evidence.contains("address-and-port-dependent") && r.evidence.contains("blue_c1"))
        #expect(row("4787 REQ-11", e).verdict == .fail, "EIM for some, not all: not deterministic")
        #expect(!Conformance.evaluate(lab: .seed(), evidence: e).passed)
        #expect(Conformance.evaluate(lab: .seed(), evidence: e).mustFailures.contains { $0.requirement.key == "4787 REQ-1" })
        // A flow that did not arrive is no pass.
        e.udpCollision = []
        e.udpMappings = [mapping("blue_c1", inside: ep("100.64.0.1", 40000), [m, nil, m, m])]
        #expect(row("4787 REQ-1", e).verdict == .fail)
        #expect(row("4787 REQ-1", ConformanceEvidence()).evidence.hasPrefix("not measured"))
    }

    @Test func portOverloadingIsASharedPublicEndpoint() {
        var e = ConformanceEvidence()
        let s = ep("100.64.0.1", 41000)
        e.udpCollision = [mapping("blue_c1", inside: s, Array(repeating: ep("100.64.0.1", 2000), count: 4)),
                          mapping("red_c1", inside: s, Array(repeating: ep("100.64.0.1", 3000), count: 4))]
        #expect(row("4787 REQ-3", e).verdict == .pass)
        e.udpCollision[1] = mapping("red_c1", inside: s, Array(repeating: ep("100.64.0.1", 2000), count: 4))
        #expect(row("4787 REQ-3", e).verdict == .fail)
        // A lab without two subscribers of one address has nothing to collide.
        #expect(row("4787 REQ-3", ConformanceEvidence()).verdict == .notApplicable)
    }

    @Test func filteringVerdicts() {
        var e = ConformanceEvidence()
        let m = ep("100.64.0.1", 2000)
        e.udpFiltering = FilteringObservation(subscriber: "blue_c1", mapping: m, fromSameEndpoint: true, fromOtherPort: false, fromOtherAddress: false)
        #expect(row("4787 REQ-8", e).verdict == .fail)
        #expect(row("6888 REQ-7", e).verdict == .fail)
        e.udpFiltering?.fromOtherPort = true
        #expect(row("4787 REQ-8", e).verdict == .pass, "address-dependent is one of the two recommended")
        #expect(row("6888 REQ-7", e).verdict == .fail)
        e.udpFiltering?.fromOtherAddress = true
        #expect(row("4787 REQ-8", e).verdict == .pass && row("6888 REQ-7", e).verdict == .pass)
        e.udpFiltering?.fromSameEndpoint = false
        #expect(row("4787 REQ-8", e).evidence.hasPrefix("not measured"))
    }

    @Test func hairpinNeedsArrivalAndTheSendersMapping() {
        var e = ConformanceEvidence()
        let mine = ep("198.51.100.0", 2000), theirs = ep("198.51.100.8", 3000)
        e.udpHairpin = HairpinObservation(proto: "udp", sender: "blue_c1", receiver: "red_c1", target: theirs, senderMapping: mine, seenSource: nil, waitedMilliseconds: 300)
        #expect(row("4787 REQ-9", e).verdict == .fail && row("4787 REQ-9a", e).verdict == .fail)
        #expect(row("5508 REQ-7", e).verdict == .fail)
        e.udpHairpin?.seenSource = ep("100.64.0.1", 40000)
        #expect(row("4787 REQ-9", e).verdict == .pass)
        #expect(row("4787 REQ-9a", e).verdict == .fail, "arrived with the inside source: not the external address and port")
        e.udpHairpin?.seenSource = mine
        #expect(row("4787 REQ-9a", e).verdict == .pass)
        #expect(row("5508 REQ-7", e).verdict == .untested)
    }

    @Test func unsolicitedSYNSilenceNeedsADropRule() {
        var e = ConformanceEvidence()
        let t = ep("100.64.0.1", 40000)
        e.unsolicitedSYN = UnsolicitedSYNObservation(target: t, answer: "TCP reset", answerMilliseconds: 0.2, waitedMilliseconds: 500, droppedBy: nil)
        #expect(row("5382 REQ-4", e).verdict == .fail)
        // Silence for 500 ms alone says nothing about 6 s.
        e.unsolicitedSYN = UnsolicitedSYNObservation(target: t, answer: nil, answerMilliseconds: nil, waitedMilliseconds: 500, droppedBy: nil)
        #expect(row("5382 REQ-4", e).verdict == .fail)
        e.unsolicitedSYN?.droppedBy = "'iifname \"muplink\" drop' (+1)"
        #expect(row("5382 REQ-4", e).verdict == .pass && row("5382 REQ-4a", e).verdict == .pass)
    }

    @Test func timersAreReadAgainstTheirFloors() {
        var e = ConformanceEvidence()
        e.settings = [ConformanceSettings.udpTimeout: 120, ConformanceSettings.udpStreamTimeout: 120]
        #expect(row("4787 REQ-5", e).verdict == .pass)
        #expect(row("4787 REQ-5c", e).verdict == .fail)
        e.settings[ConformanceSettings.udpTimeout] = 30
        #expect(row("4787 REQ-5", e).verdict == .fail)
        e.settings[ConformanceSettings.tcpEstablished] = 7440
        for n in ConformanceSettings.tcpTransitory { e.settings[n] = 240 }
        #expect(row("5382 REQ-5", e).verdict == .pass)
        e.settings["nf_conntrack_tcp_timeout_syn_sent"] = 120
        #expect(row("5382 REQ-5", e).verdict == .fail)
        e.settings[ConformanceSettings.icmpTimeout] = 59
        #expect(row("5508 REQ-2", e).verdict == .fail)
        #expect(row("5508 REQ-2", ConformanceEvidence()).verdict == .fail)
    }

    @Test func poolingIsNotApplicableToOneAddressButRequiredBy6888() {
        var e = ConformanceEvidence()
        let inside = ep("100.64.0.1", 40000)
        e.udpMappings = [mapping("blue_c1", inside: inside, Array(repeating: ep("100.64.0.1", 2000), count: 4))]
        #expect(row("4787 REQ-2", e).verdict == .notApplicable)
        #expect(row("6888 REQ-2", e).verdict == .pass)
        var pool = Lab.seed()
        pool.router.nat.pool = [IPPrefix("198.51.100.0/28")!]
        e.udpMappings = [mapping("blue_c1", inside: inside, [ep("198.51.100.0", 2000), ep("198.51.100.0", 2000), ep("198.51.100.1", 2000), ep("198.51.100.1", 2000)])]
        #expect(row("4787 REQ-2", e, lab: pool).verdict == .fail)
        #expect(row("6888 REQ-2", e, lab: pool).verdict == .fail)
    }

    @Test func policyRowsFollowTheMappingKind() {
        var random = Lab.seed()
        random.router.nat.mapping = .random
        let e = ConformanceEvidence()
        #expect(row("6888 REQ-4", e).verdict == .pass)
        #expect(row("6888 REQ-4", e, lab: random).verdict == .fail)
        #expect(row("6888 REQ-14", e, lab: random).verdict == .fail)
        #expect(row("6888 REQ-14", e).verdict == .pass)
    }

    @Test func icmpErrorsAndMappingAfterThem() {
        var e = ConformanceEvidence()
        e.udpErrorInbound = ICMPErrorObservation(flow: "f", received: nil)
        #expect(row("5508 REQ-4", e).verdict == .fail)
        e.udpErrorInbound = ICMPErrorObservation(flow: "f", received: "destination unreachable, port unreachable (icmp 3/3) from 192.0.2.1", type: 3, code: 3, from: a("192.0.2.1"))
        #expect(row("5508 REQ-4", e).verdict == .pass && row("4787 REQ-12b", e).verdict == .pass)
        e.mappingAfterError = MappingAfterError(flow: "f", before: ep("100.64.0.1", 2000), after: ep("100.64.0.1", 2001))
        #expect(row("4787 REQ-12", e).verdict == .fail)
        e.mappingAfterError?.after = ep("100.64.0.1", 2000)
        #expect(row("4787 REQ-12", e).verdict == .pass)
        e.udpErrorOutbound = ICMPErrorObservation(flow: "o", received: "port unreachable (icmp 3/3) from 100.64.0.1", type: 3, code: 3, from: a("100.64.0.1"))
        e.udpErrorOutboundMapping = ep("198.51.100.0", 2000)
        #expect(row("5508 REQ-5", e).verdict == .pass)
        #expect(row("5508 REQ-5c", e).verdict == .fail, "the error left with the inside source address")
    }

    @Test func refreshNeedsTheTimerToRise() {
        var e = ConformanceEvidence()
        e.outboundRefresh = RefreshObservation(direction: "outbound", beforeSeconds: 28, afterSeconds: 28, pausedMilliseconds: 1500)
        #expect(row("4787 REQ-6", e).verdict == .fail)
        e.outboundRefresh?.afterSeconds = 30
        #expect(row("4787 REQ-6", e).verdict == .pass)
        e.inboundRefresh = RefreshObservation(direction: "inbound", beforeSeconds: 28, afterSeconds: 27, pausedMilliseconds: 1500)
        #expect(row("4787 REQ-6a", e).verdict == .pass, "a MAY: not refreshing conforms too")
        e.inboundRefresh?.afterSeconds = nil
        #expect(row("4787 REQ-6a", e).verdict == .fail)
    }

    @Test func rfc6888REQ1IsDerivedFromTheOtherMUSTs() {
        var e = ConformanceEvidence()
        let m = ep("100.64.0.1", 2000)
        e.udpMappings = [mapping("blue_c1", inside: ep("100.64.0.1", 40000), [m, ep("100.64.0.1", 2001), m, m])]
        let r = row("6888 REQ-1", e)
        #expect(r.verdict == .fail && r.evidence.contains("4787 REQ-1"))
    }

    @Test func fragmentRowsAndTCPFiltering() {
        var e = ConformanceEvidence()
        #expect(row("4787 REQ-13", e).verdict == .fail && row("4787 REQ-14", e).verdict == .fail, "not measured is no pass")
        e.fragmentationNeeded = ICMPErrorObservation(flow: "f", received: "local error: Message too long")
        #expect(row("4787 REQ-13", e).verdict == .fail, "a local error is not the router's answer")
        e.fragmentationNeeded = ICMPErrorObservation(flow: "f", received: "fragmentation needed (icmp 3/4) from 192.0.0.8", type: 3, code: 4)
        #expect(row("4787 REQ-13", e).verdict == .pass)
        e.fragmentsInOrder = FragmentObservation(flow: "in", bytes: 3000, arrivedWhole: true)
        e.fragmentsOutOfOrder = FragmentObservation(flow: "out", bytes: 2400, arrivedWhole: false)
        #expect(row("4787 REQ-14", e).verdict == .fail)
        e.fragmentsOutOfOrder?.arrivedWhole = true
        #expect(row("4787 REQ-14", e).verdict == .pass)
        #expect(row("4787 REQ-14a", e).verdict == .untested)
        e.tcpFiltering = FilteringObservation(subscriber: "blue_c1", mapping: ep("100.64.0.1", 2000), fromSameEndpoint: true, fromOtherPort: false, fromOtherAddress: false)
        #expect(row("5382 REQ-3", e).verdict == .fail)
        e.tcpFiltering?.fromOtherPort = true
        #expect(row("5382 REQ-3", e).verdict == .pass)
    }

    @Test func tcpConnectionAfterAnICMPError() {
        var e = ConformanceEvidence()
        e.tcpAfterError = TCPAfterErrorObservation(flow: "t", errorArrived: false, dataOutbound: true, dataInbound: true)
        #expect(row("5382 REQ-10", e).verdict == .fail, "an error that never arrived proves nothing")
        e.tcpAfterError = TCPAfterErrorObservation(flow: "t", errorArrived: true, dataOutbound: true, dataInbound: false)
        #expect(row("5382 REQ-10", e).verdict == .fail)
        e.tcpAfterError?.dataInbound = true
        #expect(row("5382 REQ-10", e).verdict == .pass)
    }

    @Test func formatsCarryEveryRow() {
        let report = Conformance.evaluate(lab: .seed(), evidence: ConformanceEvidence())
        let table = ConformanceFormat.table(report)
        #expect(table.split(separator: "\n").filter { $0.hasPrefix("RFC ") }.count == ConformanceCatalog.requirements.count)
        let json = ConformanceFormat.json(report).serialized()
        #expect(json.contains("\"requirement\":\"REQ-14a\"") && json.contains("\"passed\":false"))
    }
}
