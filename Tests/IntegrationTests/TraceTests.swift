import Foundation
import Testing
import Netlink
@testable import CGNat

/// Root-only: `cgnat trace` on a real lab (netns backend). Serialized: traces listen to every
/// namespace's events and the lab's timing should not compete with other labs.
@Suite(.serialized, .enabled(if: isRoot, "needs root: builds network namespaces"))
struct TraceTests {
    /// Tables of the namespace, read back through libnftables inside it.
    static func tables(_ namespace: String) throws -> String {
        let fd = try NetNamespace.open(namespace)
        defer { close(fd) }
        return try NetNamespace.run(in: fd) { try Nftables().run("list tables") }
    }

    static func expectNoTraceTables(_ lab: Lab) throws {
        for ns in Set(lab.contexts(backend: .netns).filter { $0.kind != .host }.map(\.namespace)) {
            #expect(!(try tables(ns)).contains(TraceTable.name), "trace table left in \(ns)")
        }
    }

    static func trace(_ lab: Lab, _ context: String, _ command: [String]) throws -> TraceSession.Result {
        var req = TraceSession.Request(lab: lab, context: context, command: command)
        req.childOutput = .discard
        return try TraceSession.run(req)
    }

    @Test func traces() throws {
        try withLab(testLabName("tr")) { lab in
            // A ping through NAT, end to end: the snat rule, delivered upstream, and the reply back.
            let nat = try Self.trace(lab, "blue_c2", ["ping", "-c1", "-W2", "192.0.2.1"])
            #expect(nat.exitStatus == 0)
            #expect(!nat.lostEvents)
            let text = TraceFormat.text(nat.packets)
            let request = try #require(nat.packets.first { $0.packet?.icmpTypeName == "echo-request" }, "\(text)")
            #expect(request.hops.first?.context == "main:blue", "\(text)")
            let snat = request.hops.first { $0.chain == "srcnat" && $0.kind == .rule }
            #expect(snat?.rule?.contains("snat ip to ct mark . ip saddr map @\(Ruleset.portMap)") == true, "\(text)")
            #expect(request.hops.contains { $0.ct?.originalZone == 1 }, "zone of blue: \(text)")
            #expect(request.verdict.result == .delivered && request.verdict.detail == "(left main via muplink)", "\(text)")
            #expect(request.hops.last?.packet?.source == IPAddress("100.64.0.1"), "\(text)")
            let reply = try #require(nat.packets.first { $0.packet?.icmpTypeName == "echo-reply" }, "\(text)")
            #expect(reply.verdict.detail == "(left main:blue via br-blue)", "\(text)")
            #expect(TraceAnalysis.summary(nat.packets) == "verdict: delivered (left main via muplink)", "\(text)")
            try Self.expectNoTraceTables(lab)

            // Dropped at the router: red to blue's routed 192.0.2.2 is refused in the forward chain.
            let cross = try Self.trace(lab, "red_c1", ["ping", "-c1", "-W1", "192.0.2.2"])
            #expect(cross.exitStatus != 0)
            let crossText = TraceFormat.text(cross.packets)
            let dropped = try #require(cross.packets.first { $0.verdict.result == .dropped }, "\(crossText)")
            #expect(dropped.verdict.context == "main")
            #expect(dropped.verdict.detail.contains("IPv4 between subscriber domains"), "\(crossText)")
            #expect(dropped.verdict.detail.hasSuffix("(admin-prohibited reject)"), "\(crossText)")
            #expect(dropped.hops.last?.hook == "forward")
            // The ICMP error goes back to red_c1 (and nothing reaches blue).
            #expect(cross.packets.contains { $0.packet?.icmpTypeName == "destination-unreachable" && $0.verdict.detail == "(left main:red via br-red)" }, "\(crossText)")
            #expect(!cross.packets.flatMap(\.hops).contains { $0.context == "main:blue" }, "\(crossText)")
            #expect(TraceAnalysis.summary(cross.packets).hasPrefix("verdict: dropped at main forward rule"))
            try Self.expectNoTraceTables(lab)

            // An upstream probe into the subscriber space (a /32 route in the uplink for it) dies in
            // the forward chain's unsolicited-IPv4 rule.
            let uplinkFD = try NetNamespace.open(lab.namespaceName("uplink"))
            defer { close(uplinkFD) }
            let route = try NetNamespace.run(in: uplinkFD) { () -> Route in
                let rs = try RouteSocket()
                defer { rs.close() }
                let r = Route(destination: IPPrefix("100.64.0.2/32")!, gateway: IPAddress("100.64.0.1"),
                              outputInterface: try rs.linkIndex("client1"), preferredSource: IPAddress("192.0.2.1"))
                try rs.addRoute(r)
                return r
            }
            defer { _ = try? NetNamespace.run(in: uplinkFD) { let rs = try RouteSocket(); defer { rs.close() }; try rs.deleteRoute(route) } }
            let probe = try Self.trace(lab, "uplink", ["ping", "-c1", "-W1", "100.64.0.2"])
            let probeText = TraceFormat.text(probe.packets)
            #expect(probe.exitStatus != 0)
            let v = try #require(probe.packets.first?.verdict, "\(probeText)")
            #expect(v.result == .dropped && v.context == "main", "\(probeText)")
            #expect(v.detail.contains("unsolicited IPv4 from the uplink") && v.detail.hasSuffix("(drop)"), "\(probeText)")
            try Self.expectNoTraceTables(lab)

            // Failures and interruptions still remove the tables.
            #expect(throws: (any Error).self) { _ = try Self.trace(lab, "blue_c2", ["/nonexistent/cmd"]) }
            try Self.expectNoTraceTables(lab)
            let killer = Thread {
                Thread.sleep(forTimeInterval: 0.7)
                TraceSession.forwardSignal(SIGTERM)
            }
            killer.start()
            let slept = try Self.trace(lab, "blue_c2", ["sleep", "20"])
            TraceSession.interrupted = 0
            #expect(slept.exitStatus == 128 + SIGTERM)
            try Self.expectNoTraceTables(lab)

            // The command line: JSON, and Ctrl-C ends the command and the trace cleanly.
            guard FileManager.default.isExecutableFile(atPath: cgnatBinary) else { return }
            let json = try cgnat(["trace", "--lab", lab.name, "--json", "blue_c1", "--", "ping", "-c1", "-W2", "192.0.2.1"])
            #expect(json.status == 0, "\(json.stderr)")
            #expect(json.stdout.contains("\"verdict\":\"verdict: delivered (left main via muplink)\""), "\(json.stdout)")
            #expect(json.stderr.contains("1 received"))
            let p = Process()
            p.executableURL = URL(fileURLWithPath: cgnatBinary)
            p.arguments = ["trace", "--lab", lab.name, "blue_c2", "--", "sleep", "20"]
            p.standardOutput = FileHandle.nullDevice
            try p.run()
            Thread.sleep(forTimeInterval: 1.5)
            kill(p.processIdentifier, SIGINT)
            let deadline = Date().addingTimeInterval(10)
            while p.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
            #expect(!p.isRunning)
            #expect(p.terminationStatus == 128 + SIGINT)
            try Self.expectNoTraceTables(lab)
        }
    }
}
