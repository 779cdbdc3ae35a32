import Testing
import CGNatCore
import NetAddress

@Suite struct LabCodecTests {
    @Test func seedRoundTrips() throws {
        var lab = Lab.seed(name: "rt")
        lab.origin = "labs/seed.yaml"
        lab.expectations = [Expectation(from: "blue_c1", to: IPAddress("192.0.2.1")!, proto: .udp, outcome: .reach,
                                        source: IPAddress("100.64.0.1")!, location: "labs/x.yaml:3:5")]
        let text = LabCodec.encode(lab)
        #expect(try LabCodec.decode(text) == lab)
        lab.router.nat = NATPolicy(inside: IPPrefix("100.64.0.0/10")!, pool: [IPPrefix("198.51.100.0/28")!],
                                   mapping: .portBlocks(.init(insideRange: IPPrefix("100.64.0.0/22")!, ports: 2000...60000,
                                                              blockSize: 100, blocksPerSubscriber: 2)))
        #expect(try LabCodec.decode(LabCodec.encode(lab)) == lab)
        lab.router.nat.mapping = .random
        #expect(try LabCodec.decode(LabCodec.encode(lab)) == lab)
    }

    @Test func rejectsWhatIsNotAResolvedLab() {
        #expect(throws: (any Error).self) { try LabCodec.decode("{\"name\":\"x\"}") }
        #expect(throws: (any Error).self) { try LabCodec.decode("[1,") }
    }

    @Test func parsesEscapesAndNumbers() throws {
        let v = try JSON.parse(#"{"a":"x\"\u00e9\n","b":[1,-2.5,true,null]}"#)
        #expect(v["a"]?.stringValue == "x\"é\n")
        #expect(v["b"] == .array([.int(1), .number(-2.5), .bool(true), .null]))
    }
}

@Suite struct ScaledLabTests {
    @Test func scaledLabIsValidAndPlans() throws {
        let lab = Lab.seedScaled(domains: 10, perDomain: 100)
        #expect(lab.hosts.count == 1001)
        try lab.validate()
        #expect(try LabCodec.decode(LabCodec.encode(lab)) == lab)
        let plan = Plan.netns(lab)
        #expect(plan.namespaces.count == 1 + 1000 + 1 + 10)
    }
}
