import CGNatCore
import NetAddress
import Testing

/// The pure core's side of lab files: patterns, the allocator and expansion, from document trees
/// built in code (no YAML reader involved).
@Suite struct LabSpecTests {
    @Test func patterns() throws {
        let v: [String: PatternValue] = ["i": .number(10), "domain": .text("d10")]
        #expect(try Pattern.expand("{domain}_c{i:03}", v) == "d10_c010")
        #expect(try Pattern.expand("2001:db8:b:{i:x}0::/64", v) == "2001:db8:b:a0::/64")
        #expect(try Pattern.expand("x{i:04x}", v) == "x000a")
        #expect(try Pattern.expand("plain", [:]) == "plain")
        #expect(throws: Pattern.Failure.self) { try Pattern.expand("{j}", v) }
        #expect(throws: Pattern.Failure.self) { try Pattern.expand("{i", v) }
        #expect(throws: Pattern.Failure.self) { try Pattern.expand("{i:y}", v) }
    }

    @Test func allocatorSkipsTakenNetworkAndBroadcast() {
        var a = AddressAllocator(IPPrefix("192.168.7.0/29")!, taken: [IPAddress("192.168.7.2")!])
        #expect(a.usable == 6 && a.takenInRange == 1 && a.free == 5)
        var got: [String] = []
        while let x = a.allocate() { got.append(x.description) }
        #expect(got == ["192.168.7.1", "192.168.7.3", "192.168.7.4", "192.168.7.5", "192.168.7.6"])

        var six = AddressAllocator(IPPrefix("2001:db8::/126")!, taken: [IPAddress("2001:db8::3")!])
        #expect(six.allocate() == IPAddress("2001:db8::1"))
        #expect(six.allocate() == IPAddress("2001:db8::2"))
        #expect(six.allocate() == nil)

        var wide = AddressAllocator(IPPrefix("100.64.0.0/10")!)
        for _ in 0..<255 { _ = wide.allocate() }
        #expect(wide.allocate() == IPAddress("100.64.1.0"))   // carries into the next byte
        #expect(AddressAllocator(IPPrefix("2001:db8::/64")!).free == UInt64.max)
    }

    /// A template in a generated domain, built as a document tree: 3 domains x 4 subscribers.
    @Test func expandsDomainAndSubscriberTemplates() throws {
        let lab = try #require(LabExpansion.resolve(doc(domains: 3, subscribers: 4)).lab)
        #expect(lab.router.subscribers.map(\.name) == ["x1", "x2", "x3"])
        #expect(lab.router.subscribers.map(\.id) == [1, 2, 3])
        #expect(lab.router.subscribers[2].addresses.map(\.description) == ["10.0.0.1/24", "2001:db8:3::1/64"])
        let x3 = lab.hosts(in: "x3")
        #expect(x3.map(\.name) == ["x3-s1", "x3-s2", "x3-s3", "x3-s4"])
        #expect(x3[3].addresses.map(\.description) == ["10.0.0.5/24", "2001:db8:3::5/64"])
        #expect(x3[0].routes == [HostRoute(IPPrefix("0.0.0.0/0")!, via: IPAddress("10.0.0.1")!),
                                 HostRoute(IPPrefix("::/0")!, via: IPAddress("2001:db8:3::1")!)])
        #expect(lab.hosts.count == 1 + 12)
    }

    @Test func exhaustionIsADiagnosticAtTheTemplate() throws {
        // 10.0.0.0/24 has 254 host addresses; the gateway takes one.
        let (lab, problems) = LabExpansion.resolve(doc(domains: 1, subscribers: 254))
        #expect(lab == nil)
        #expect(problems.map(\.path) == ["domains[0].subscribers.count"])
        #expect(problems.first?.message == "generated domain 'x1': 254 subscribers need 254 addresses from 10.0.0.0/24, which has 253 free")
        #expect(LabExpansion.resolve(doc(domains: 1, subscribers: 253)).lab?.hosts.count == 254)
    }

    @Test func nearestKey() {
        #expect(nearest("adresses", in: LabSpecDecoder.Keys.domain) == "addresses")
        #expect(nearest("subscriber", in: LabSpecDecoder.Keys.domain) == "subscribers")
        #expect(nearest("colour", in: LabSpecDecoder.Keys.domain) == nil)
    }

    private func s(_ v: String, _ k: SpecNode.ScalarKind = .string) -> SpecNode { .scalar(v, k, nil) }
    private func m(_ pairs: [(String, SpecNode)]) -> SpecNode { .mapping(pairs.map { (key: $0.0, keyPosition: nil, value: $0.1) }, nil) }
    private func l(_ items: [SpecNode]) -> SpecNode { .sequence(items, nil) }

    private func doc(domains: Int, subscribers: Int) -> SpecNode {
        m([
            ("name", s("t")),
            ("router", m([
                ("name", s("r")),
                ("uplink", m([("name", s("up")), ("interface", s("u0")), ("addresses", l([s("198.51.100.1/24")]))])),
                ("nat", m([("inside", s("10.0.0.0/24")), ("public", s("198.51.100.1"))])),
            ])),
            ("uplink_hosts", l([m([("name", s("isp")), ("addresses", l([s("198.51.100.2/24")]))])])),
            ("domains", l([m([
                ("count", s("\(domains)", .int)), ("name", s("x{i}")), ("id", s("{i}")), ("bridge", s("br-{domain}")),
                ("addresses", l([s("10.0.0.1/24"), s("2001:db8:{i}::1/64")])),
                ("subscribers", m([("count", s("\(subscribers)", .int)), ("name", s("{domain}-s{i}"))])),
            ])])),
        ])
    }
}
