import CGNatCore
import CGNatLabFile
import Foundation
import NetAddress
import Testing

/// The repository's root, from this file's place (Tests/LabFileTests/...).
let repoRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

func fixture(_ name: String) -> String { "Tests/LabFileTests/Fixtures/\(name)" }

func resolve(_ relative: String) throws -> LabFile.Outcome {
    let text = try String(contentsOf: repoRoot.appendingPathComponent(relative), encoding: .utf8)
    return LabFile.resolve(yaml: text, file: relative)
}

/// Every diagnostic of a file, formatted as `cgnat validate` prints it.
func problems(_ name: String) throws -> [String] {
    let f = fixture(name)
    let outcome = try resolve(f)
    #expect(outcome.lab == nil, "\(name) must not resolve")
    return outcome.diagnostics.map { $0.formatted(file: name) }
}

@Suite struct LabFileExamplesTests {
    @Test func seedFileIsTheEmbeddedDefault() throws {
        let outcome = try resolve("labs/seed.yaml")
        let lab = try #require(outcome.lab, "\(outcome.diagnostics)")
        #expect(lab == Lab.seed())
        for (file, embedded) in [(Plan.netns(lab), Plan.netns(Lab.seed())), (Plan.vrf(lab), Plan.vrf(Lab.seed()))] {
            #expect(file.steps.count == embedded.steps.count)
            for (i, (a, b)) in zip(file.steps, embedded.steps).enumerated() {
                #expect(a == b, "step \(i): \(a.summary) != \(b.summary)")
            }
            #expect(file.ruleset.text == embedded.ruleset.text)
        }
    }

    @Test func scaleFileIsSeedScaled() throws {
        let outcome = try resolve("labs/scale-1000.yaml")
        let lab = try #require(outcome.lab, "\(outcome.diagnostics)")
        let embedded = Lab.seedScaled(name: "scale", domains: 10, perDomain: 100)
        #expect(lab.hosts.count == 1001)
        #expect(lab.router == embedded.router)
        for (a, b) in zip(lab.hosts, embedded.hosts) where a != b { Issue.record("\(a.name) != \(b.name): \(a) vs \(b)") }
        #expect(lab == embedded)
    }

    @Test func metroLabIsItsOwn() throws {
        let outcome = try resolve("labs/metro.yaml")
        let lab = try #require(outcome.lab, "\(outcome.diagnostics)")
        try lab.validate()
        #expect(lab.name == "metro")
        #expect(lab.router.subscribers.map(\.name) == ["home", "biz", "mobile"])
        #expect(lab.hosts.map(\.name) == ["isp", "home1", "home2", "home3", "shop", "office", "m01", "m02", "m03", "m04"])
        // The gateway is 100.64.0.1, so the template starts at .2, in every domain alike.
        #expect(lab.hosts.first { $0.name == "m01" }?.addresses == [IPPrefix("100.64.0.2/10")!, IPPrefix("2001:db8:200:3::2/64")!])
        #expect(lab.expectations.map(\.outcome) == [.reach, .reach, .blocked, .reach])
        #expect(lab.expectations[0].location == "labs/metro.yaml:47:5")
        #expect(lab.expectations[0].source == IPAddress("198.51.100.1"))
        #expect(try LabCodec.decode(LabCodec.encode(lab)) == lab)
    }

    /// Every example against labs/schema.json (python3 jsonschema + yaml), and a broken file
    /// the schema must reject, so this test can fail.
    @Test func schemaAcceptsEveryExampleAndRejectsTheBrokenOne() throws {
        let labs = try FileManager.default.contentsOfDirectory(atPath: repoRoot.appendingPathComponent("labs").path)
            .filter { $0.hasSuffix(".yaml") }.sorted().map { "labs/\($0)" }
        #expect(labs.count >= 3)
        let script = """
            import json, sys, yaml, jsonschema
            schema = json.load(open(sys.argv[1]))
            jsonschema.Draft202012Validator.check_schema(schema)
            v = jsonschema.Draft202012Validator(schema)
            for f in sys.argv[2:]:
                errs = list(v.iter_errors(yaml.safe_load(open(f))))
                print(f + ": " + ("ok" if not errs else "rejected: " + "; ".join(e.message for e in errs)))
            """
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", script, "labs/schema.json"] + labs + [fixture("schema-broken.yaml")]
        p.currentDirectoryURL = repoRoot
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        p.waitUntilExit()
        #expect(p.terminationStatus == 0, "python3 with jsonschema and yaml (scripts/deps installs them): \(text)")
        let lines = text.split(separator: "\n").map(String.init)
        for l in labs { #expect(lines.contains("\(l): ok"), "\(text)") }
        let broken = lines.first { $0.hasPrefix(fixture("schema-broken.yaml")) } ?? ""
        #expect(broken.contains("rejected") && broken.contains("'adresses' was unexpected") && broken.contains("'sctp' is not one of"), "\(text)")
    }

    @Test func everyExampleCarriesTheSchemaModeline() throws {
        for f in ["labs/seed.yaml", "labs/metro.yaml", "labs/scale-1000.yaml"] {
            let text = try String(contentsOf: repoRoot.appendingPathComponent(f), encoding: .utf8)
            #expect(text.hasPrefix("# yaml-language-server: $schema=./schema.json\n"), "\(f)")
        }
    }
}

/// A dozen broken files, each with every problem's exact position and message.
@Suite struct LabFileDiagnosticsTests {
    @Test func unknownKeysSuggestTheNearest() throws {
        #expect(try problems("unknown-key.yaml") == [
            "unknown-key.yaml:12:5: domains[0].adresses: unknown key 'adresses' in a domain; did you mean 'addresses'?",
            "unknown-key.yaml:14:48: domains[0].hosts[0].gatway: unknown key 'gatway' in a host; valid keys are name, interface, addresses, loopback, routes",
        ])
    }

    @Test func wrongTypes() throws {
        #expect(try problems("wrong-types.yaml") == [
            "wrong-types.yaml:4:53: router.uplink.addresses: expected a list of addresses with prefix length, found a scalar; write it as a list: addresses: [100.64.0.1/10]",
            "wrong-types.yaml:10:9: domains[0].id: expected the domain's id (1-255), found 'one'; write a whole number, e.g. id: 1",
            "wrong-types.yaml:11:13: domains[0].bridge: expected the bridge's name, found a list; write the bridge's name as a single value",
        ])
    }

    @Test func badAddressesAndPrefixes() throws {
        #expect(try problems("bad-addresses.yaml") == [
            "bad-addresses.yaml:12:37: domains[0].addresses[1]: '2001:db8:b::zz/64' is not an address with prefix length; write it as ADDRESS/LENGTH, e.g. 100.64.0.1/10 or 2001:db8::1/64",
            "bad-addresses.yaml:13:14: domains[0].routed[0]: prefix '192.0.2.2/24' has host bits set; write the network, 192.0.2.0/24",
        ])
    }

    @Test func hostAddressOutsideItsDomain() throws {
        #expect(try problems("outside-subnet.yaml") == [
            "outside-subnet.yaml:14:47: domains[0].hosts[0].addresses[1]: 2001:db8:b:20::1/64 is outside domain 'blue''s subnets (2001:db8:b:10::/64) and its routed prefixes; use an address in 2001:db8:b:10::/64 with the same prefix length, or route its prefix to the domain",
            "outside-subnet.yaml:15:32: domains[0].hosts[1].addresses[0]: 10.0.0.2/8 is outside domain 'blue''s subnets (100.64.0.0/10) and its routed prefixes; use an address in 100.64.0.0/10 with the same prefix length, or route its prefix to the domain",
        ])
    }

    @Test func duplicateNamesIdsAndBridges() throws {
        #expect(try problems("duplicates.yaml") == [
            "duplicates.yaml:15:16: domains[0].hosts[1].name: 'c1' also names host at domains[0].hosts[0]; give every host a name of its own",
            "duplicates.yaml:17:9: domains[1].id: id 1 is also domain 'blue''s; give every domain an id of its own (it keys its conntrack zone and mark)",
            "duplicates.yaml:18:13: domains[1].bridge: bridge 'br-blue' is also domain 'blue''s; give every domain a bridge of its own",
        ])
    }

    @Test func namesTheKernelRefusesCountingDerivedOnes() throws {
        #expect(try problems("long-names.yaml") == [
            "long-names.yaml:9:11: domains[0].name: 'subscribers-15b' gives the interface name 't-subscribers-15b' (the domain's transfer link on the netns backend), 17 bytes; the kernel takes at most 15; shorten 'subscribers-15b' to 13 characters or fewer",
            "long-names.yaml:14:16: domains[0].hosts[0].name: interface name 'blue_subscriber_1' (the host's port on the bridge carries its name) is 17 bytes; the kernel takes at most 15; shorten it to 15 characters or fewer",
            "long-names.yaml:15:31: domains[0].hosts[1].interface: interface name 'a-very-long-ifname' (the host's interface) is 18 bytes; the kernel takes at most 15; shorten it to 15 characters or fewer",
        ])
    }

    @Test func derivedNamespaceAndDeviceCollisions() throws {
        #expect(try problems("namespace-collision.yaml") == [
            "namespace-collision.yaml:14:16: domains[0].hosts[0].name: host 'main-blue' would live in namespace 't-main-blue', which is the namespace of domain 'blue' (main:blue); rename the host (names of the form main-DOMAIN are the router's)",
            "namespace-collision.yaml:15:16: domains[0].hosts[1].name: 'br-blue' would name two devices in the router: the bridge port of host 'br-blue' and the bridge of domain 'blue'; rename one of them",
        ])
    }

    @Test func gatewaysNoLinkReaches() throws {
        #expect(try problems("unreachable-gateway.yaml") == [
            "unreachable-gateway.yaml:4:81: router.uplink.gateways[0]: gateway 10.9.9.9 is on none of the uplink's subnets (100.64.0.1/10), so no link reaches it; use an address on the uplink's link, or add an address of its subnet to router.uplink.addresses",
            "unreachable-gateway.yaml:10:38: uplink_hosts[0].routes[0].via: gateway 10.0.0.1 is on none of the host's subnets (100.127.255.254/10), so no link reaches it; use an address on one of the host's links, or add an address of the gateway's subnet to the host",
        ])
    }

    @Test func templateRunsOutOfAddresses() throws {
        // A /29 has 6 host addresses; the gateway holds one.
        #expect(try problems("exhausted.yaml") == [
            "exhausted.yaml:14:14: domains[0].subscribers.count: 10 subscribers need 10 addresses from 192.168.7.0/29, which has 5 free; lower count to 5 or allocate from a larger prefix (192.168.7.0/29 has 6 host addresses, 1 taken by the gateway and other hosts)",
        ])
    }

    @Test func moreSubscribersThanABridgeTakes() throws {
        #expect(try problems("bridge-full.yaml") == [
            "bridge-full.yaml:13:26: domains[0].subscribers.count: domain 'blue' has 1024 subscribers, more than a bridge takes; keep it to 1023 per domain (the kernel refuses the 1024th bridge port); split the subscribers over more domains",
        ])
    }

    @Test func natPolicyMistakes() throws {
        #expect(try problems("nat-pool.yaml") == [
            "nat-pool.yaml:7:13: router.nat.public: the NAT policy has both 'public' and 'pool'; keep one: a single public address is a pool of one",
            "nat-pool.yaml:9:14: router.nat.mapping: unknown mapping 'cone'; use port-blocks (endpoint-independent, the default) or random (fully-random ports: address-and-port-dependent)",
            "nat-pool.yaml:10:77: router.nat.port_blocks.per_subcriber: unknown key 'per_subcriber' in the port blocks; did you mean 'per_subscriber'?",
            "nat-pool.yaml:10:64: router.nat.port_blocks.inside_range: inside_range 10.0.0.0/24 is not within the inside prefix 100.64.0.0/10; write an IPv4 prefix inside 100.64.0.0/10",
            "nat-pool.yaml:10:38: router.nat.port_blocks.ports: '1024-70000' is not a port range; write LOW-HIGH within 1-65535, e.g. 1024-65535",
        ])
    }

    /// Filtering: a value the policy does not know, and endpoint-independent filtering with a
    /// mapping whose public ports name no domain.
    @Test func filteringMistakes() throws {
        #expect(try problems("nat-filtering.yaml") == [
            "nat-filtering.yaml:9:16: router.nat.filtering: unknown filtering 'full-cone'; use address-port-dependent (the default: only the endpoint a subscriber sent to answers) or endpoint-independent (any host reaches a live mapping)",
        ])
        let text = try String(contentsOf: repoRoot.appendingPathComponent(fixture("nat-filtering.yaml")), encoding: .utf8)
            .replacingOccurrences(of: "full-cone", with: "endpoint-independent")
        let outcome = LabFile.resolve(yaml: text, file: "f")
        #expect(outcome.lab == nil)
        #expect(outcome.diagnostics.map { $0.formatted(file: "f") } == [
            "f:9:16: router.nat.filtering: endpoint-independent filtering with mapping random; use mapping: port-blocks (the block of a public port names its subscriber's domain), or leave filtering out",
        ])
    }

    @Test func poolTooSmallForItsBlocksNamesTheNumbers() throws {
        #expect(try problems("nat-small-pool.yaml") == [
            "nat-small-pool.yaml:8:18: router.nat.port_blocks: port blocks: pool too small: 2 domain(s) x 256 inside addresses = 512 subscribers x 1024 ports need 524288 ports, but 1 public address(es) x 64512 ports give 64512; add public addresses, narrow the inside range, or make blocks smaller (at most 126 ports each); the blocks of every domain id up to 2 x 256 inside addresses must fit the pool",
        ])
    }

    @Test func aliasBombIsRefused() throws {
        #expect(try problems("alias-bomb.yaml") == [
            "alias-bomb.yaml:1:1: (document): the document has more than 1000000 nodes once its aliases are expanded (an alias bomb?); write the lab without nested aliases; templates (count:) generate many hosts from a few lines",
        ])
    }

    @Test func yamlSyntaxError() throws {
        #expect(try problems("syntax.yaml") == [
            "syntax.yaml:4:10: (document): YAML syntax: mapping values are not allowed in this context; fix the YAML at this position (indentation, a missing ':' or quote)",
        ])
    }

    @Test func expectationsNameHostsProtocolsAndOutcomes() throws {
        #expect(try problems("expectations.yaml") == [
            "expectations.yaml:15:12: expectations[0].from: no host is named 'blue_c2'; did you mean 'blue_c1'?",
            "expectations.yaml:15:43: expectations[0].proto: unknown protocol 'icmpv6'; use icmp, udp or tcp",
            "expectations.yaml:16:25: expectations[1].to: '192.0.2.1/32' is a prefix, an address is expected here; drop the /LENGTH",
            "expectations.yaml:16:59: expectations[1].expect: unknown outcome 'pass'; use reach or blocked",
        ])
    }

    @Test func missingKeys() throws {
        #expect(try problems("missing.yaml") == [
            "missing.yaml:1:1: router: missing 'router'; add 'router:' with the router's name, uplink and nat",
            "missing.yaml:2:15: uplink_hosts: has no host; add the host on the uplink's link (the ISP side)",
            "missing.yaml:4:5: domains[0].id: missing 'id'; add 'id:' with a number 1-255 (it keys the domain's conntrack zone and mark)",
            "missing.yaml:4:5: domains[0].addresses: missing 'addresses'; add 'addresses:' with a list of gateway addresses with prefix length",
        ])
    }

    @Test func templateProblemsAreReportedOnce() throws {
        #expect(try problems("template-names.yaml") == [
            "template-names.yaml:14:35: domains[0].subscribers.name: generated domain 'dom1': the subscriber name '{domain}_subscriber{j}' has no {i}, so all 2 would share it; use a pattern such as \"{domain}_c{i:03}\"",
        ])
    }

    /// Problems of shape (unknown keys) and of meaning (names, lengths, ids) in one run.
    @Test func everyProblemOfBothStepsInOneRun() throws {
        #expect(try problems("mixed.yaml") == [
            "mixed.yaml:7:73: uplink_hosts[0].colour: unknown key 'colour' in a host; valid keys are name, interface, addresses, loopback, routes",
            "mixed.yaml:15:20: domains[0].hosts[1].adresses: unknown key 'adresses' in a host; did you mean 'addresses'?",
            "mixed.yaml:1:7: name: lab name 'Bad_Name' cannot prefix namespace names; use 1-32 characters of a-z, 0-9, '_' or '-', not starting with '-'",
            "mixed.yaml:14:32: domains[0].hosts[0].addresses[0]: 100.64.0.1/24 has prefix length /24, but domain 'blue''s subnet is 100.64.0.0/10; write 100.64.0.1/10: the host shares the subnet with its gateway",
            "mixed.yaml:18:9: domains[1].id: generated domain 'g2': id 7 is also domain 'g1''s; give every domain an id of its own (it keys its conntrack zone and mark)",
        ])
    }

    @Test func jsonDiagnosticsCarryEveryField() throws {
        let d = try resolve(fixture("unknown-key.yaml")).diagnostics[0]
        #expect(d.json(file: "x.yaml").serialized()
            == #"{"file":"x.yaml","line":12,"column":5,"path":"domains[0].adresses","message":"unknown key 'adresses' in a domain","hint":"did you mean 'addresses'?"}"#)
    }
}
