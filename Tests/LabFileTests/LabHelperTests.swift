import CGNatCore
import Foundation
import Testing

/// `cgnat-lab` and `cgnat validate` as a user runs them: the built binaries next to the test
/// bundle (or the directory of $CGNAT_BIN).
@Suite struct LabHelperTests {
    static let binDir: URL = {
        if let bin = ProcessInfo.processInfo.environment["CGNAT_BIN"] {
            return URL(fileURLWithPath: bin).deletingLastPathComponent()
        }
        return URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath().deletingLastPathComponent()
    }()

    struct Run { var status: Int32; var out: String; var err: String }

    func run(_ binary: String, _ args: [String], env: [String: String] = [:]) throws -> Run {
        let p = Process()
        p.executableURL = Self.binDir.appendingPathComponent(binary)
        p.arguments = args
        p.currentDirectoryURL = repoRoot
        p.environment = ProcessInfo.processInfo.environment.merging(env) { $1 }
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Run(status: p.terminationStatus, out: String(decoding: o, as: UTF8.self), err: String(decoding: e, as: UTF8.self))
    }

    @Test func resolvePrintsTheResolvedLabWithItsOrigin() throws {
        let r = try run("cgnat-lab", ["resolve", "labs/seed.yaml"])
        #expect(r.status == 0, "\(r.err)")
        var lab = try LabCodec.decode(r.out)
        #expect(lab.origin == repoRoot.appendingPathComponent("labs/seed.yaml").standardizedFileURL.path)
        lab.origin = nil
        #expect(lab == Lab.seed())
    }

    @Test func resolveOfABrokenFileFailsWithOneLinePerProblem() throws {
        let r = try run("cgnat-lab", ["resolve", fixture("nat-pool.yaml")])
        #expect(r.status == 1 && r.out.isEmpty)
        #expect(r.err.split(separator: "\n").map(String.init) == [
            "\(fixture("nat-pool.yaml")):7:13: router.nat.public: the NAT policy has both 'public' and 'pool'; keep one: a single public address is a pool of one",
            "\(fixture("nat-pool.yaml")):9:14: router.nat.mapping: unknown mapping 'cone'; use port-blocks (endpoint-independent, the default) or random (fully-random ports: address-and-port-dependent)",
            "\(fixture("nat-pool.yaml")):10:77: router.nat.port_blocks.per_subcriber: unknown key 'per_subcriber' in the port blocks; did you mean 'per_subscriber'?",
            "\(fixture("nat-pool.yaml")):10:64: router.nat.port_blocks.inside_range: inside_range 10.0.0.0/24 is not within the inside prefix 100.64.0.0/10; write an IPv4 prefix inside 100.64.0.0/10",
            "\(fixture("nat-pool.yaml")):10:38: router.nat.port_blocks.ports: '1024-70000' is not a port range; write LOW-HIGH within 1-65535, e.g. 1024-65535",
        ])
    }

    @Test func cgnatValidateRunsTheHelper() throws {
        let ok = try run("cgnat", ["validate", "labs/metro.yaml"])
        #expect(ok.status == 0 && ok.out == "labs/metro.yaml: ok (3 domains, 10 hosts)\n", "\(ok.err)")

        let bad = try run("cgnat", ["validate", fixture("unknown-key.yaml")])
        #expect(bad.status == 1)
        #expect(bad.err.hasPrefix("\(fixture("unknown-key.yaml")):12:5: domains[0].adresses: unknown key 'adresses' in a domain; did you mean 'addresses'?\n"))
        #expect(bad.err.hasSuffix("\(fixture("unknown-key.yaml")): 2 problems\n"))

        let json = try run("cgnat", ["validate", "--json", fixture("unknown-key.yaml")])
        #expect(json.status == 1)
        let rows = try #require(try JSON.parse(json.out).arrayValue)
        #expect(rows.count == 2)
        #expect(rows[0]["line"] == .int(12) && rows[0]["column"] == .int(5) && rows[0]["path"]?.stringValue == "domains[0].adresses")
        #expect(rows[0]["hint"]?.stringValue == "did you mean 'addresses'?" && rows[0]["file"]?.stringValue == fixture("unknown-key.yaml"))

        let none = try run("cgnat", ["validate", "labs/nonexistent.yaml"])
        #expect(none.status == 1 && none.err.contains("labs/nonexistent.yaml: (document): the lab file does not exist"))
    }

    @Test func aMissingHelperIsNamed() throws {
        let r = try run("cgnat", ["validate", "labs/seed.yaml"], env: ["CGNAT_LAB_HELPER": "/nonexistent/cgnat-lab"])
        #expect(r.status == 1)
        #expect(r.err.hasPrefix("cgnat: cannot run the lab-file helper /nonexistent/cgnat-lab: No such file or directory;"))
    }

    /// Foundation (which Yams needs) stays out of cgnat: it would cost every exec its start-up.
    /// Static (release) and dynamic (debug) builds alike carry the names of what they contain.
    @Test func cgnatDoesNotLinkFoundationOrYams() throws {
        func contains(_ binary: String, _ name: String) throws -> Bool {
            let data = try Data(contentsOf: Self.binDir.appendingPathComponent(binary))
            return data.range(of: Data(name.utf8)) != nil
        }
        #expect(try contains("cgnat-lab", "NSRegularExpression") && contains("cgnat-lab", "Yams"))
        #expect(try !contains("cgnat", "NSRegularExpression") && !contains("cgnat", "Yams"))
    }
}
