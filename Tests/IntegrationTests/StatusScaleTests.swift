import Foundation
import Testing
import Netlink
@testable import CGNat

/// `status` of a lab with more subscribers than are listed one by one, read back from the kernel:
/// summarised per domain, and a subscriber whose link goes down is named.
@Suite(.serialized, .enabled(if: isRoot, "needs root"))
struct StatusScaleTests {
    @Test func scaledLabIsSummarisedFromTheKernel() throws {
        let lab = Lab.seedScaled(name: testLabName("graph-st"), domains: 2, perDomain: 10)
        _ = try LabControl.up(lab, backend: .netns)
        defer { _ = try? Teardown.down(lab: lab.name) }

        let text = StatusFormat.text(try LabStatus.read(lab: lab), lab: lab)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines[0].contains("20 subscribers in 2 domains, summarised"), "\(lines[0])")
        let d1 = lab.router.subscribers[0].name
        #expect(!text.contains("\(lab.hosts(in: d1)[4].name)  (namespace"), "no section per host")
        #expect(text.contains("10 ports \(HostGroupSummary.range(lab.hosts(in: d1).map(\.name))): 10 up"), "\(text)")
        #expect(lines.contains { $0.hasPrefix("  \(d1) ") && $0.contains(" 10/10 ") && $0.contains(" 20/20 ") }, "\(text)")
        #expect(text.contains("every subscriber has its link up and all its addresses"))

        // Take one subscriber's link down behind cgnat's back: status says who.
        let d2 = lab.router.subscribers[1].name
        let victim = lab.hosts(in: d2)[6]
        let v6 = victim.addresses.first { $0.family == .v6 }!
        let ns = lab.namespaceName(victim.name)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["-n", ns, "link", "set", victim.interface, "down"]
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let after = StatusFormat.text(try LabStatus.read(lab: lab), lab: lab)
        #expect(after.contains("\(victim.name): \(victim.interface) DOWN/DOWN"), "\(after)")
        // The kernel flushes a downed link's IPv6 addresses (keep_addr_on_down is 0): one is missing.
        #expect(after.split(separator: "\n").contains { $0.hasPrefix("  \(d2) ") && $0.contains(" 9/10 ") && $0.contains(" 19/20 ") }, "\(after)")
        #expect(after.contains("\(victim.name): \(v6) missing on \(victim.interface)"), "\(after)")
        // The router's side of that link has lost its carrier.
        let ports = HostGroupSummary.range(lab.hosts(in: d2).map(\.name))
        #expect(after.contains("10 ports \(ports): 9 up, not up: \(victim.name) UP/DOWN"), "\(after)")
    }
}
