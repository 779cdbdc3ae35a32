import Foundation
import Testing
import Netlink
@testable import CGNat

/// `up FILE` through the cgnat-lab helper (a stand-in script here: the real helper is built
/// elsewhere), commands by lab name on the stored lab, and the option bounds of issue 7.
@Suite(.serialized, .enabled(if: isRoot, "needs root: builds network namespaces"))
struct LabFileAndOptionTests {
    /// Writes an executable helper script; returns its path.
    static func helper(_ name: String, _ body: String) throws -> String {
        let path = "/tmp/\(name)-helper.sh"
        try ("#!/bin/sh\n" + body).write(toFile: path, atomically: true, encoding: .utf8)
        chmod(path, 0o755)
        return path
    }

    @Test func upFromAFileStoresTheLabAndEveryCommandUsesIt() throws {
        let name = "cgt-life-file\(getpid() % 10000)"
        defer { _ = try? cgnat(["down", "--lab", name]) }
        // A lab unlike the default: another name and origin, and one subscriber fewer.
        var lab = LabSource.default(name: name)
        lab.origin = "/tmp/\(name).yaml"
        let domains = Dictionary(grouping: lab.hosts.filter { $0.attachment != .uplink }, by: { "\($0.attachment)" })
        let dropped = try #require(domains.values.first { $0.count >= 2 }?.last)
        lab.hosts.removeAll { $0.name == dropped.name }
        let json = "/tmp/\(name).json"
        try LabCodec.encode(lab).write(toFile: json, atomically: true, encoding: .utf8)
        defer { unlink(json) }
        let good = try Self.helper(name, "[ \"$1\" = resolve ] || exit 2\n[ \"$2\" = \(lab.origin!) ] || exit 3\ncat \(json)\n")
        defer { unlink(good) }
        let env = ["CGNAT_LAB_HELPER": good]

        let render = try Background(["render", lab.origin!], env: env).finish()
        #expect(render.status == 0, "\(render.stderr)")
        #expect(render.stdout.contains("\(name)-main") && !render.stdout.contains("\(name)-\(dropped.name)"))
        let mismatch = try Background(["up", lab.origin!, "--lab", "\(name)x"], env: env).finish()
        #expect(mismatch.status == 1 && mismatch.stderr.contains("names its lab '\(name)'") && mismatch.stderr.contains("--lab"), "\(mismatch.stderr)")

        let up = try Background(["up", lab.origin!, "--backend", "netns"], env: env).finish()
        #expect(up.status == 0, "\(up.stderr)")
        #expect(up.stdout.contains("lab \(name) is up"))
        #expect(namespaces(withPrefix: name).count == 6)
        #expect(try LabRecord.loadLab(name) == lab)
        // By name, without the file (and without the helper).
        let status = try cgnat(["status", "--lab", name])
        #expect(status.status == 0 && status.stdout.contains("from \(lab.origin!)"), "\(status.stdout.prefix(200))")
        #expect(!status.stdout.contains("\n\(dropped.name) "))
        let gone = try cgnat(["exec", "--lab", name, dropped.name, "--", "true"])
        #expect(gone.status != 0 && gone.stderr.contains("unknown context '\(dropped.name)'"), "\(gone.stderr)")
        let check = try cgnat(["check", "--lab", name, "--json"])
        #expect(check.status == 0, "\(check.stdout.suffix(400)) \(check.stderr)")
        #expect(!check.stdout.contains("\"\(dropped.name)\""))
        let rendered = try cgnat(["render", "--lab", name])
        #expect(rendered.stdout == render.stdout, "render --lab of a running lab renders its stored model")
        let down = try cgnat(["down", "--lab", name])
        #expect(down.stdout.contains("removed 6 namespaces"))
        #expect(leftovers(of: name).isEmpty)
    }

    @Test func aBadFileOrAMissingHelperTouchesNothing() throws {
        let name = "cgt-life-bad\(getpid() % 10000)"
        let diag = "/tmp/\(name).yaml:3:7: router.nat.public: not an IPv4 address; give one such as 192.0.2.1"
        let bad = try Self.helper(name, "echo '\(diag)' >&2\necho 'x.yaml:9:1: hosts: unknown key; did you mean host?' >&2\nexit 1\n")
        defer { unlink(bad) }
        let before = directoryEntries(LabRecord.directory).sorted(), netnsBefore = NetNamespace.names()
        let r = try Background(["up", "/tmp/\(name).yaml"], env: ["CGNAT_LAB_HELPER": bad]).finish()
        #expect(r.status == 1)
        #expect(r.stderr == diag + "\nx.yaml:9:1: hosts: unknown key; did you mean host?\n", "passed through as is: \(r.stderr)")
        #expect(directoryEntries(LabRecord.directory).sorted() == before && NetNamespace.names() == netnsBefore, "nothing touched")
        let missing = try Background(["up", "/tmp/\(name).yaml"], env: ["CGNAT_LAB_HELPER": "/nonexistent/cgnat-lab"]).finish()
        #expect(missing.status == 1 && missing.stderr.contains("/nonexistent/cgnat-lab") && missing.stderr.contains("missing"), "\(missing.stderr)")
        let render = try Background(["render", "/tmp/\(name).yaml"], env: ["CGNAT_LAB_HELPER": bad]).finish()
        #expect(render.status == 1 && render.stdout.isEmpty && render.stderr.hasPrefix(diag))
    }

    @Test func numericOptionsAreBoundedAndOptionsAfterTheContextAreRead() throws {
        let name = "cgt-life-opt\(getpid() % 10000)"
        defer { _ = try? cgnat(["down", "--lab", name]) }
        #expect(try cgnat(["up", "--lab", name, "--backend", "netns"]).status == 0)
        let huge = try cgnat(["check", "--lab", name, "--timeout", "2147483648"])
        #expect(huge.status != 0 && huge.status < 128 && huge.stderr.contains("out of range"), "\(huge.status) \(huge.stderr)")
        #expect(throws: UsageError.self) { _ = try CheckRun.run(lab: LabSource.default(name: name), timeoutMilliseconds: 1 << 40) }
        let uplink = try #require(LabSource.default(name: name).uplinkHost)
        let routes = try cgnat(["exec", "--lab", name, uplink.name, "--", "ip", "-o", "route"])
        #expect(routes.status == 0 && !routes.stdout.contains("/32"), "no probe route left: \(routes.stdout)")
        for d in ["nan", "inf", "-1", "0"] {
            let e = try cgnat(["events", "--lab", name, "--duration", d])
            #expect(e.status != 0 && e.stderr.contains("--duration"), "\(d): \(e.stderr)")
        }
        let grace = try cgnat(["trace", "--lab", name, "--grace", "99999999999", "main", "--", "true"])
        #expect(grace.status != 0 && grace.stderr.contains("--grace"))
        // Options after the context: read (this lab, not the default one), or refused.
        let after = try cgnat(["exec", "main", "--lab", name, "--", "cat", "/proc/self/net/dev"])
        #expect(after.status == 0 && after.stdout.contains("t-blue"), "\(after.stderr)")
        let unknown = try cgnat(["exec", "main", "--bogus", "--", "true"])
        #expect(unknown.status != 0 && unknown.stderr.contains("--bogus"))
        #expect(try cgnat(["down", "--lab", name]).status == 0)

        // --fail-before-step inside a sysctl batch fails there and rolls back.
        let steps = Plan.netns(LabSource.default(name: name)).steps
        let inBatch = try #require(steps.indices.dropFirst().first { i in
            if case .sysctl(let ns, _, _) = steps[i], case .sysctl(let prev, _, _) = steps[i - 1], ns == prev,
               case .sysctl = steps[i + 1] { return true }
            return false
        })
        let fault = try cgnat(["up", "--lab", name, "--backend", "netns", "--fail-before-step", "\(inBatch)"])
        #expect(fault.status != 0 && fault.stderr.contains("fault injected before step \(inBatch)") && fault.stderr.contains("rolled back"), "\(fault.stderr)")
        #expect(leftovers(of: name).isEmpty)
    }

    /// A trace killed with SIGKILL leaves its table: status shows it, the next trace removes it
    /// (and works), and `down` takes it with the lab.
    @Test func aKilledTraceIsCleanedUp() throws {
        let name = "cgt-life-trc\(getpid() % 10000)"
        defer { _ = try? cgnat(["down", "--lab", name]) }
        #expect(try cgnat(["up", "--lab", name, "--backend", "netns"]).status == 0)
        let lab = LabSource.default(name: name)
        let host = try #require(lab.hosts.first { $0.attachment != .uplink })
        let router = lab.namespaceName(lab.router.name)
        func hasTable() throws -> Bool { try TraceTests.tables(router).contains(TraceTable.name) }
        let tr = try Background(["trace", "--lab", name, host.name, "--", "sleep", "20"])
        let deadline = Date().addingTimeInterval(10)
        while try !hasTable(), Date() < deadline { usleep(10_000) }
        #expect(try hasTable())
        kill(tr.pid, SIGKILL)
        _ = tr.finish()
        #expect(try hasTable(), "SIGKILL: no cleanup ran")
        let status = try cgnat(["status", "--lab", name])
        #expect(status.stdout.contains("left by a killed trace"), "\(status.stdout.prefix(300))")
        let again = try cgnat(["trace", "--lab", name, host.name, "--", "true"])
        #expect(again.status == 0, "\(again.stderr)")
        #expect(try !hasTable())
        // Killed again; this time down removes it with the lab (and ends the orphaned command).
        let tr2 = try Background(["trace", "--lab", name, host.name, "--", "sleep", "20"])
        while try !hasTable(), Date() < deadline.addingTimeInterval(10) { usleep(10_000) }
        kill(tr2.pid, SIGKILL)
        _ = tr2.finish()
        #expect(try cgnat(["down", "--lab", name]).status == 0)
        #expect(leftovers(of: name).isEmpty)
    }
}
