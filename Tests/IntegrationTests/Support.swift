import Foundation
import Testing
import Netlink
@testable import CGNat

let isRoot = geteuid() == 0

/// How long a probe waits for its answer. Native kernels answer in about a millisecond; under
/// qemu's emulation (scripts/test runs the VRF suite there) everything is 20 times slower and
/// shares the CPU, so the VM run sets CGNAT_PROBE_TIMEOUT_MS.
let probeTimeout = Int(ProcessInfo.processInfo.environment["CGNAT_PROBE_TIMEOUT_MS"] ?? "") ?? 400

/// Test labs are named cgt-*: scripts/sweep removes any a crashed run leaves. CGNAT_TEST_PREFIX
/// (itself starting with cgt) keeps runs that share a machine apart.
let testLabPrefix = ProcessInfo.processInfo.environment["CGNAT_TEST_PREFIX"].flatMap { $0.hasPrefix("cgt") ? $0 : nil } ?? "cgt"
func testLabName(_ tag: String) -> String { "\(testLabPrefix)-\(tag)-\(getpid() % 10000)" }

/// Brings a lab up for the body and always takes it down, also when the body fails.
func withLab<T>(_ name: String, backend: Backend = .netns, adjust: (inout Lab) -> Void = { _ in },
                _ body: (Lab) throws -> T) throws -> T {
    var lab = Lab.seed(name: name)
    adjust(&lab)
    return try withLab(lab, backend: backend, body)
}

func withLab<T>(_ lab: Lab, backend: Backend = .netns, _ body: (Lab) throws -> T) throws -> T {
    _ = try LabControl.up(lab, backend: backend)
    defer { _ = try? Teardown.down(lab: lab.name) }
    return try body(lab)
}

/// What `check --json` says, row by row.
struct CheckJSONRow {
    var probe: String
    var from: String
    var passed: Bool
    var detail: String
    var blockedBy: [String: Any]?
    /// context/family/table/chain/handle of the named rule.
    var rule: String? {
        guard let b = blockedBy, let h = b["handle"] as? Int else { return nil }
        return "\(b["context"] ?? "")/\(b["family"] ?? "")/\(b["table"] ?? "")/\(b["chain"] ?? "")/\(h)"
    }
}

func checkJSON(_ lab: String) throws -> (status: Int32, rows: [CheckJSONRow], raw: String) {
    let r = try cgnat(["check", "--lab", lab, "--json", "--timeout", String(probeTimeout)])
    let obj = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
    let rows = (obj?["rows"] as? [[String: Any]] ?? []).map {
        CheckJSONRow(probe: $0["probe"] as? String ?? "", from: $0["from"] as? String ?? "", passed: $0["passed"] as? Bool ?? false,
                     detail: $0["detail"] as? String ?? "", blockedBy: $0["blocked_by"] as? [String: Any])
    }
    return (r.status, rows, r.stdout + r.stderr)
}

/// Every row expected blocked names the nftables rule that stops it (`check --json`, blocked_by
/// with the handle read back from the kernel); removing exactly that rule inside the namespace
/// makes every such row fail with the packet seen at the target, rule by rule, while the rows of
/// rules still in place keep passing.
func blockedRowsFailWithoutTheirRules(_ lab: Lab) throws {
    let first = try checkJSON(lab.name)
    #expect(first.status == 0, "\(first.rows.filter { !$0.passed }.map { "\($0.from) \($0.probe): \($0.detail)" })")
    // Rows stopped by a mechanism rather than a rule (the seed's inbound rows: delivered to the
    // router's own address, counted in its input chain) are checked by InboundCheckTests.
    let mechanisms = first.rows.filter { $0.blockedBy?["mechanism"] != nil }
    #expect(mechanisms.allSatisfy { $0.passed && $0.detail.hasPrefix("ended in") }, "\(mechanisms.map(\.detail))")
    #expect(mechanisms.allSatisfy { $0.probe.contains("mapping") || $0.probe.contains("block") })
    let blocked = first.rows.filter { $0.blockedBy != nil && $0.blockedBy?["mechanism"] == nil }
    #expect(blocked.count >= 5)
    #expect(blocked.allSatisfy { $0.rule != nil }, "every blocked row of the seed that names a rule has its handle")
    for row in blocked where row.probe.contains("unsolicited") {
        #expect(row.detail.hasPrefix("dropped: counted by"), "\(row.probe): \(row.detail)")
    }
    var removed = Set<String>()
    for rule in Set(blocked.compactMap(\.rule)).sorted() {
        let parts = rule.split(separator: "/").map(String.init)   // context family table chain handle
        let ctx = try #require(lab.context(named: parts[0], backend: try LabControl.runningBackend(lab: lab.name)))
        let fd = try NetNamespace.open(ctx.namespace)
        defer { close(fd) }
        try NetNamespace.run(in: fd) {
            try Nftables().run("delete rule \(parts[1]) \(parts[2]) \(parts[3]) handle \(parts[4])")
        }
        removed.insert(rule)
        let after = try checkJSON(lab.name)
        #expect(after.status == 1)
        for row in after.rows where row.blockedBy != nil {
            let key = blocked.first { $0.probe == row.probe && $0.from == row.from }?.rule
            if let key, removed.contains(key) {
                #expect(!row.passed && row.detail.hasPrefix("LEAK"), "\(rule) removed: \(row.from) \(row.probe) must fail: \(row.detail)")
            } else {
                #expect(row.passed, "\(row.from) \(row.probe) is stopped by a rule still in place: \(row.detail)")
            }
        }
    }
}

func namespaces(withPrefix p: String) -> [String] { NetNamespace.names().filter { $0.hasPrefix(p + "-") } }

/// The cgnat binary as users run it (scripts/test sets CGNAT_BIN; default: the debug build).
var cgnatBinary: String {
    if let b = ProcessInfo.processInfo.environment["CGNAT_BIN"] { return b }
    return FileManager.default.currentDirectoryPath + "/.build/debug/cgnat"
}

struct Run { var status: Int32; var stdout: String; var stderr: String }

/// Runs the cgnat binary and collects its output. posix_spawn and poll rather than Foundation's
/// Process: a child that starts a daemon (tmux) must not leave the test waiting.
func cgnat(_ args: [String]) throws -> Run {
    var outPipe: [Int32] = [-1, -1], errPipe: [Int32] = [-1, -1]
    guard pipe(&outPipe) == 0, pipe(&errPipe) == 0 else { throw POSIXError(.EMFILE) }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_adddup2(&actions, outPipe[1], 1)
    posix_spawn_file_actions_adddup2(&actions, errPipe[1], 2)
    for fd in outPipe + errPipe { posix_spawn_file_actions_addclose(&actions, fd) }
    let argv = ([cgnatBinary] + args).map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    // As a user's shell would start it: nothing blocked (the test runner blocks some signals).
    var attr = posix_spawnattr_t()
    posix_spawnattr_init(&attr)
    defer { posix_spawnattr_destroy(&attr) }
    var empty = sigset_t()
    sigemptyset(&empty)
    posix_spawnattr_setsigmask(&attr, &empty)
    posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK))
    var pid: pid_t = 0
    let rc = posix_spawn(&pid, cgnatBinary, &actions, &attr, argv, environ)
    close(outPipe[1]); close(errPipe[1])
    guard rc == 0 else { close(outPipe[0]); close(errPipe[0]); throw POSIXError(POSIXErrorCode(rawValue: rc) ?? .ENOENT) }
    var out: [UInt8] = [], err: [UInt8] = []
    var open = [outPipe[0], errPipe[0]]
    var buf = [UInt8](repeating: 0, count: 65536)
    let deadline = Date().addingTimeInterval(120)
    while !open.isEmpty && Date() < deadline {
        var fds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        _ = poll(&fds, nfds_t(fds.count), 1000)
        for f in fds where f.revents != 0 {
            let n = read(f.fd, &buf, buf.count)
            if n > 0 {
                if f.fd == outPipe[0] { out += buf[0..<n] } else { err += buf[0..<n] }
            } else {
                close(f.fd)
                open.removeAll { $0 == f.fd }
            }
        }
    }
    open.forEach { close($0) }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    return Run(status: code, stdout: String(decoding: out, as: UTF8.self), stderr: String(decoding: err, as: UTF8.self))
}

func failures(_ report: CheckRun.Report) -> String {
    report.results.filter { !$0.passed }.map { "\($0.from) \($0.name): \($0.detail)" }.joined(separator: "\n")
}
