import Foundation
import Testing
import Netlink
@testable import CGNat

/// Root-only: a thousand subscribers (10 domains x 100, overlapping IPv4) up through LabControl,
/// read back from the kernel, pinged with the system's ping, and down with nothing left.
@Suite(.serialized, .enabled(if: isRoot, "needs root"))
struct ScaleTests {
    @Test func thousandSubscribersComeUpAnswerAndGoAway() throws {
        let name = testLabName("scale")
        let lab = Lab.seedScaled(name: name, domains: 10, perDomain: 100)
        var removed = false
        defer { if !removed { _ = try? Teardown.down(lab: name) } }
        // Under a limit of 512 fds (the default is 1024): a namespace's fd and socket must be
        // released when its steps are done, or 1012 namespaces fail with EMFILE.
        var limit = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        var low = limit
        low.rlim_cur = 512
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &low)
        let upResult = Result { try LabControl.up(lab, backend: .netns, faults: .init(), showProgress: false) }
        setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
        let result = try upResult.get()
        let plan = result.plan
        #expect(plan.namespaces.count == 1 + 1 + 10 + 1000)
        #expect(Set(namespaces(withPrefix: name)) == Set(plan.namespaces), "every namespace of the plan exists, and no other")

        // A sample: the first, a middle and the last subscriber of every domain.
        var sample: [CGNat.Host] = []
        for d in lab.router.subscribers {
            let hosts = lab.hosts(in: d.name)
            sample += [hosts[0], hosts[hosts.count / 2], hosts[hosts.count - 1]]
        }
        let uplinkPublic = lab.uplinkHost!.loopbackAddresses.first { $0.family == .v4 }!.address

        // Addresses and permanent gateway neighbours, read back from each sampled namespace.
        for h in sample {
            let fd = try NetNamespace.open(lab.namespaceName(h.name))
            defer { close(fd) }
            let addresses = try NetNamespace.run(in: fd) { try RouteSocket().addresses().map(\.prefix) }
            for a in h.addresses { #expect(addresses.contains(a), "\(h.name) lacks \(a)") }
        }
        let neigh = try shell(["ip", "-n", lab.namespaceName(sample[0].name), "neigh", "show", "nud", "permanent"])
        #expect(neigh.contains("100.127.255.254 dev cuplink lladdr") && neigh.contains("PERMANENT"), "\(neigh)")
        let port = try shell(["ip", "-n", lab.namespaceName("main-\(lab.router.subscribers[0].name)"), "-d", "link", "show", sample[0].name])
        #expect(port.contains("addrgenmode none"), "\(port)")

        // Real pings, all at once: each sampled subscriber to its gateways (IPv4, IPv6) and,
        // through the NAT, to the uplink's public address.
        var pings: [(String, Process)] = []
        for h in sample {
            let d = lab.domain(named: { if case .domain(let n) = h.attachment { return n } else { return "" } }())!
            for target in d.addresses.map(\.address) + [uplinkPublic] {
                let p = Process()
                p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
                p.arguments = ["netns", "exec", lab.namespaceName(h.name), "ping", "-c", "1", "-W", "3", target.description]
                p.standardOutput = FileHandle.nullDevice
                p.standardError = FileHandle.nullDevice
                try p.run()
                pings.append(("\(h.name) -> \(target)", p))
            }
        }
        for (what, p) in pings {
            p.waitUntilExit()
            #expect(p.terminationStatus == 0, "ping \(what) failed")
        }

        let report = try LabControl.down(lab: name)
        removed = true
        #expect(report.removed.count == plan.namespaces.count)
        #expect(namespaces(withPrefix: name).isEmpty, "down left namespaces behind")
        #expect(LabRecord.load(lab: name) == nil)
    }
}

/// Runs a command and returns its stdout; throws if it fails.
private func shell(_ argv: [String]) throws -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = argv
    let out = Pipe()
    p.standardOutput = out
    try p.run()
    let data = out.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    guard p.terminationStatus == 0 else { throw POSIXError(.EIO) }
    return String(decoding: data, as: UTF8.self)
}
