import Foundation
import Testing
import Netlink
@testable import CGNat

/// The example labs of labs/, brought up from their files through the real `cgnat-lab`, as a
/// user runs them: every command by lab name afterwards, and nothing left after `down`.
@Suite(.serialized, .enabled(if: isRoot))
struct LabFileLabsTests {
    /// labs/NAME.yaml with its lab renamed to a test lab (and `extra` lines appended), in /tmp.
    func copy(_ file: String, as name: String, extra: String = "") throws -> String {
        let text = try String(contentsOfFile: "labs/\(file)", encoding: .utf8)
        var lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        let i = try #require(lines.firstIndex { $0.hasPrefix("name:") })
        lines[i] = "name: \(name)"
        let path = "/tmp/\(name).yaml"
        try (lines.joined(separator: "\n") + extra).write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    /// `up FILE`, then `check --json` of it: the rows, with both commands' success expected.
    func upAndCheck(_ file: String, _ name: String, mustPass: Bool = true) throws -> [[String: Any]] {
        let up = try cgnat(["up", file, "--backend", "netns"])
        #expect(up.status == 0, "\(up.stderr)")
        let check = try cgnat(["check", "--lab", name, "--json"])
        #expect(check.status == (mustPass ? 0 : 1), "\(check.stdout.suffix(2000))")
        return try rows(check.stdout)
    }

    func rows(_ json: String) throws -> [[String: Any]] {
        let o = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
        return try #require(o?["rows"] as? [[String: Any]])
    }

    @Test func aLabUnlikeTheSeedFromItsFile() throws {
        let name = testLabName("metro")
        let file = try copy("metro.yaml", as: name)
        defer { _ = try? cgnat(["down", "--lab", name]); unlink(file) }
        let expectations = try upAndCheck(file, name).filter { $0["kind"] as? String == "expectation" }
        #expect(expectations.count == 4 && expectations.allSatisfy { $0["passed"] as? Bool == true }, "\(expectations)")
        // Every command by lab name, without the file.
        let status = try cgnat(["status", "--lab", name])
        #expect(status.status == 0 && status.stdout.contains("from \(file)"), "\(status.stdout.prefix(300))")
        let exec = try cgnat(["exec", "--lab", name, "home1", "--", "ping", "-c1", "-W2", "203.0.113.10"])
        #expect(exec.status == 0, "\(exec.stdout) \(exec.stderr)")
        let graph = try cgnat(["graph", "--lab", name])
        #expect(graph.status == 0 && graph.stdout.contains("cgn (router)") && graph.stdout.contains("m04"))
        let render = try cgnat(["render", "--lab", name])
        #expect(render.status == 0 && render.stdout.contains("\(name)-home1"))
        let lab = try #require(try LabRecord.loadLab(name))
        let home1 = try #require(lab.hosts.first { $0.name == "home1" })
        let block = try #require(lab.portBlock(of: home1))
        let whois = try cgnat(["whois", "--lab", name, "\(block.publicAddress):\(block.ports.lowerBound + 3)"])
        #expect(whois.status == 0 && whois.stdout.contains("domain home") && whois.stdout.contains("host home1"), "\(whois.stdout)")
        let down = try cgnat(["down", "--lab", name])
        #expect(down.status == 0)
        #expect(leftovers(of: name).isEmpty, "\(leftovers(of: name))")
    }

    /// An expectation written wrong (blocked, for a path that works) is a failing row: check exits 1.
    @Test func aWrongExpectationFails() throws {
        let name = testLabName("metrox")
        let file = try copy("metro.yaml", as: name, extra: "  - {from: home1, to: 203.0.113.10, proto: udp, expect: blocked}\n")
        defer { _ = try? cgnat(["down", "--lab", name]); unlink(file) }
        let failed = try upAndCheck(file, name, mustPass: false).filter { $0["passed"] as? Bool == false }
        #expect(failed.count == 1 && failed[0]["kind"] as? String == "expectation"
                && (failed[0]["destination"] as? String) == "203.0.113.10", "\(failed)")
    }

    /// The pool lab: the two subscribers that share 100.64.0.1 leave with different public
    /// addresses of the pool (its own expectations say which), and the seed's rows all pass.
    @Test func aPoolOfPublicAddresses() throws {
        let name = testLabName("pool")
        let file = try copy("cgn-pool.yaml", as: name)
        defer { _ = try? cgnat(["down", "--lab", name]); unlink(file) }
        let expectations = try upAndCheck(file, name).filter { $0["kind"] as? String == "expectation" }
        #expect(Set(expectations.compactMap { $0["observed_source"] as? String }) == ["198.51.100.0", "198.51.100.8"])
        #expect(try cgnat(["down", "--lab", name]).status == 0)
        #expect(leftovers(of: name).isEmpty)
    }

    /// 1000 subscribers in 10 domains sharing 100.64.0.0/10, from the file: up, a passing check
    /// (every subscriber's rows), down, nothing left.
    @Test func aThousandSubscribersFromTheFile() throws {
        let name = testLabName("s1k")
        let file = try copy("scale-1000.yaml", as: name)
        defer { _ = try? cgnat(["down", "--lab", name]); unlink(file) }
        let up = try cgnat(["up", file, "--backend", "netns"])
        #expect(up.status == 0, "\(up.stderr.suffix(500))")
        #expect(namespaces(withPrefix: name).count == 1 + 1000 + 1 + 10)
        let check = try cgnat(["check", "--lab", name])
        #expect(check.status == 0, "\(check.stdout.suffix(3000))")
        #expect(check.stdout.contains("1000/1000 ok") && check.stdout.contains(" 0 failed"), "\(check.stdout.suffix(1500))")
        #expect(try cgnat(["down", "--lab", name]).status == 0)
        #expect(leftovers(of: name).isEmpty)
    }
}
