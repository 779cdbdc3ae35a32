import Testing
import CGNatCore
import NetAddress

@Suite struct WhoisTests {
    @Test func theSeedsSharedInsideAddressIsTwoSubscribers() throws {
        let lab = Lab.seed()
        let policy = try #require(lab.portBlockPolicy)
        let blue = try #require(policy.allocation(domainID: 1, inside: IPAddress("100.64.0.1")!))
        let red = try #require(policy.allocation(domainID: 2, inside: IPAddress("100.64.0.1")!))
        let a = try Whois.lookup(lab, address: blue.publicAddress, port: blue.ports.lowerBound + 7)
        #expect(a.domain == "blue" && a.inside == IPAddress("100.64.0.1") && a.host == "blue_c1" && a.block == blue)
        let b = try Whois.lookup(lab, address: red.publicAddress, port: red.ports.upperBound)
        #expect(b.domain == "red" && b.host == "red_c1" && b.block == red)
        // An inside address the policy covers but no host has.
        let c = try Whois.lookup(lab, address: blue.publicAddress, port: blue.ports.upperBound + 1 + 1008 * 5)
        #expect(c.domain == "blue" && c.inside == IPAddress("100.64.0.7") && c.host == nil && c.reason == nil)
    }

    @Test func portsNobodyHolds() throws {
        let lab = Lab.seed()
        #expect(try Whois.lookup(lab, address: IPAddress("100.64.0.1")!, port: 80).reason?.contains("outside the translated range 1024-65535") == true)
        #expect(try Whois.lookup(lab, address: IPAddress("203.0.113.9")!, port: 2000).reason?.contains("not in the pool") == true)
        var random = lab
        random.router.nat.mapping = .random
        #expect(throws: Whois.Failure.self) { try Whois.lookup(random, address: IPAddress("100.64.0.1")!, port: 2000) }
        #expect(throws: Whois.Failure.self) { try Whois.parseTarget("100.64.0.1") }
        #expect(try Whois.parseTarget("198.51.100.1:2040") == (IPAddress("198.51.100.1")!, 2040))
    }
}

@Suite struct NATUsageTests {
    @Test func perSubscriberSessionsPortsAndThePool() throws {
        let lab = Lab.seed()
        let policy = try #require(lab.portBlockPolicy)
        let blue = try #require(policy.allocation(domainID: 1, inside: IPAddress("100.64.0.1")!))
        var mappings: [NATUsage.Mapping] = []
        // blue_c1: 950 ports of its 1008 in use (two sessions share one ICMP id); red_c1: one.
        for p in 0..<950 { mappings.append(.init(domainID: 1, inside: IPAddress("100.64.0.1")!, publicAddress: blue.publicAddress, publicPort: blue.ports.lowerBound + UInt16(p))) }
        mappings.append(.init(domainID: 1, inside: IPAddress("100.64.0.1")!, publicAddress: blue.publicAddress, publicPort: blue.ports.lowerBound))
        mappings.append(.init(domainID: 2, inside: IPAddress("100.64.0.1")!, publicAddress: blue.publicAddress, publicPort: 34300))
        let u = NATUsage(lab: lab, mappings: mappings)
        #expect(u.subscribers.count == 2 && u.portsInUse == 951 && u.poolPorts == 64512)
        #expect(u.subscribers[0].host == "blue_c1" && u.subscribers[0].sessions == 951 && u.subscribers[0].portsInUse == 950)
        let text = u.text()
        #expect(text.contains("blue_c1 (blue 100.64.0.1): 951 sessions, 950 ports of 100.64.0.1 2032-3039 (94.2%)  NEAR EXHAUSTION"))
        #expect(text.contains("red_c1 (red 100.64.0.1): 1 session, 1 port of 100.64.0.1 34288-35295 (0.1%)\n"))
        #expect(text.contains("pool: 951 of 64512 public ports in use (1.5%), 2 subscribers with sessions"))
    }
}

@Suite struct TimestampTests {
    @Test func rfc3339WithMillisecondsAndOffsets() throws {
        #expect(try Timestamp.parse("1970-01-01T00:00:00Z") == 0)
        #expect(try Timestamp.parse("2026-12-01T09:23:19.412Z") == 1_796_116_999_412)
        #expect(try Timestamp.parse("2026-12-01T10:23:19.412+01:00") == 1_796_116_999_412)
        #expect(try Timestamp.parse("2026-12-01T04:53:19.412-04:30") == 1_796_116_999_412)
        #expect(try Timestamp.parse("2026-12-01t09:23:19.4123456z") == 1_796_116_999_412)   // micro/nanoseconds truncated
        #expect(try Timestamp.parse("2026-12-01T09:23:19.4Z") == 1_796_116_999_400)
        #expect(try Timestamp.parse("2024-02-29T00:00:00Z") == 1_709_164_800_000)
        #expect(Timestamp.format(milliseconds: 1_796_116_999_412) == "2026-12-01T09:23:19.412Z")
        #expect(Timestamp.format(milliseconds: 1_709_164_800_005) == "2024-02-29T00:00:00.005Z")
        for bad in ["2026-12-01T09:23:19", "2026-12-01", "2025-02-29T00:00:00Z", "2026-13-01T00:00:00Z", "2026-12-01T24:00:00Z",
                    "2026-12-01T09:23:19.Z", "2026-12-01T09:23:19Zx", "yesterday", "2026-12-01T09:23:19+0100"] {
            #expect(throws: Timestamp.Invalid.self, "\(bad)") { try Timestamp.parse(bad) }
        }
        #expect((try? Timestamp.parse("noon")) == nil)
        do { _ = try Timestamp.parse("2026-12-01T09:23:19") } catch { #expect("\(error)".contains("no time zone")) }
    }
}

@Suite struct WhoisAtTests {
    /// The store's reply (as `cgnat-store query` prints it) to the answer: evidence and uncertainty.
    @Test func evidenceFromPolicyBlockAndGap() throws {
        let lab = Lab.seed(name: "cgt-store-core")
        let host = try #require(lab.hosts.first { lab.portBlock(of: $0) != nil })
        let block = try #require(lab.portBlock(of: host))
        guard case .domain(let d) = host.attachment, let domain = lab.domain(named: d) else { Issue.record("no domain"); return }
        let inside = try #require(host.addresses.first { $0.family == .v4 }).address.description
        let policy = JSON.object([("since_ms", .int(0)), ("lab", .string(lab.name)), ("lab_json", .string(LabCodec.encode(lab)))])
        func reply(blocks: [JSON], uncertain: JSON) -> JSON {
            .object([("sessions", .array([])), ("blocks", .array(blocks)), ("policy", policy), ("uncertain", uncertain)])
        }
        let gap = JSON.object([("from_ms", .int(1000)), ("to_ms", .int(5000)), ("reason", .string("the logger stopped without a close (killed?)"))])
        let a = try WhoisAt.answer(store: reply(blocks: [], uncertain: gap), address: block.publicAddress, port: block.ports.lowerBound,
                                   atMs: 3000, protocols: [.udp])
        #expect(a.evidence == ["policy"] && a.domain == d && a.host == host.name && a.uncertain?.fromMs == 1000 && a.uncertain?.toMs == 5000)
        #expect(WhoisAt.text(a).contains("uncertain: the logger stopped") && WhoisAt.json(a)["uncertain"]?["to"]?.stringValue == "1970-01-01T00:00:05.000Z")
        let stored = JSON.object([("domain_id", .int(Int64(domain.id))), ("domain", .string(d)), ("inside", .string(inside)),
                                  ("outside", .string(block.publicAddress.description)), ("first_port", .int(Int64(block.ports.lowerBound))),
                                  ("last_port", .int(Int64(block.ports.upperBound))), ("start_ms", .int(0)), ("end_ms", .null)])
        let b = try WhoisAt.answer(store: reply(blocks: [stored], uncertain: .null), address: block.publicAddress, port: block.ports.lowerBound,
                                   atMs: 3000, protocols: [.udp])
        #expect(b.evidence == ["policy", "block"] && b.uncertain == nil && b.found)
        // A port nobody's block covers, no store rows: nobody.
        let c = try WhoisAt.answer(store: reply(blocks: [], uncertain: .null), address: block.publicAddress, port: 80, atMs: 3000, protocols: [.udp])
        #expect(!c.found && c.evidence.isEmpty && WhoisAt.text(c).contains("nobody"))
    }
}
