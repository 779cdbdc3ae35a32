import Foundation
import Netlink
@testable import CGNat

let isRoot = geteuid() == 0

/// Test labs are named cgt-*: scripts/sweep removes any a crashed run leaves.
func testLabName(_ tag: String) -> String { "cgt-\(tag)-\(getpid() % 10000)" }

/// Brings a lab up for the body and always takes it down, also when the body fails.
func withLab<T>(_ name: String, backend: Backend = .netns, _ body: (Lab) throws -> T) throws -> T {
    let lab = Lab.seed(name: name)
    _ = try LabControl.up(lab, backend: backend)
    defer { _ = try? Teardown.down(lab: name) }
    return try body(lab)
}

func namespaces(withPrefix p: String) -> [String] { NetNamespace.names().filter { $0.hasPrefix(p + "-") } }

/// The cgnat binary as users run it (scripts/test sets CGNAT_BIN; default: the debug build).
var cgnatBinary: String {
    if let b = ProcessInfo.processInfo.environment["CGNAT_BIN"] { return b }
    return FileManager.default.currentDirectoryPath + "/.build/debug/cgnat"
}

struct Run { var status: Int32; var stdout: String; var stderr: String }

func cgnat(_ args: [String]) throws -> Run {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: cgnatBinary)
    p.arguments = args
    let out = Pipe(), err = Pipe()
    p.standardOutput = out
    p.standardError = err
    try p.run()
    let o = out.fileHandleForReading.readDataToEndOfFile()
    let e = err.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return Run(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
}

func failures(_ report: CheckRun.Report) -> String {
    report.results.filter { !$0.passed }.map { "\($0.from) \($0.name): \($0.detail)" }.joined(separator: "\n")
}
