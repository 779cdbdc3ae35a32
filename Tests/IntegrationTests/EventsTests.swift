import Foundation
import Testing
import Netlink
@testable import CGNat

/// Sends one UDP datagram from `port` in the context's namespace to 192.0.2.1:9 (or `count`
/// datagrams from `port`, `port+1`, ...).
private func sendUDP(lab: Lab, from context: String, port: UInt16, count: Int = 1, to: String = "192.0.2.1") throws {
    let (_, fd) = try LabControl.open(context: context, lab: lab)
    defer { close(fd) }
    try NetNamespace.run(in: fd) {
        var dst = sockaddr_in()
        dst.sin_family = sa_family_t(AF_INET)
        dst.sin_port = UInt16(9).bigEndian
        inet_pton(AF_INET, to, &dst.sin_addr)
        for i in 0..<count {
            let s = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            guard s >= 0 else { throw SystemError("socket") }
            defer { close(s) }
            var one: Int32 = 1
            setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(4))
            var src = sockaddr_in()
            src.sin_family = sa_family_t(AF_INET)
            src.sin_port = (port &+ UInt16(i)).bigEndian
            let b = withUnsafePointer(to: &src) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard b == 0 else { throw SystemError("bind port \(port &+ UInt16(i))") }
            let n = withUnsafePointer(to: &dst) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(s, "x", 1, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard n == 1 else { throw SystemError("sendto") }
        }
    }
}

private final class Collected: @unchecked Sendable {
    var items: [EventStream.Item] = []
    var records: [MappingRecord] {
        items.compactMap { if case .record(let r) = $0 { return r } else { return nil } }
    }
}

/// A source port few other tests would pick, fresh per run.
private func freshPort() -> UInt16 { UInt16(20000 + Int(getpid() % 5000) * 4 + Int.random(in: 0..<4)) }

/// Root-only: real labs on this kernel. Serialized like LabLifecycleTests.
@Suite(.serialized, .enabled(if: isRoot, "needs root: builds network namespaces"))
struct EventsTests {
    @Test func sameAddressSamePortFlowsAreLoggedWithTheirDomainsAndDistinctMappedPorts() throws {
        try withLab(testLabName("ev")) { lab in
            let stream = try EventStream.open(lab: lab, contexts: ["blue_c1", "red_c1"])
            defer { stream.close() }
            let port = freshPort()
            let got = Collected()
            let t = OSThread {
                _ = try? stream.run(durationSeconds: 1.5) { got.items.append($0) }
            }
            try sendUDP(lab: lab, from: "blue_c1", port: port)
            try sendUDP(lab: lab, from: "red_c1", port: port)
            try sendUDP(lab: lab, from: "blue_c2", port: port)   // filtered out: another context
            t.join()

            let new = got.records.filter { $0.kind == .new && $0.protocolNumber == 17 && $0.insidePort == port }
            #expect(new.count == 2, "\(got.records)")
            let blue = try #require(new.first { $0.domain == "blue" })
            let red = try #require(new.first { $0.domain == "red" })
            #expect(blue.zone == 1 && blue.mark == 1 && red.zone == 2 && red.mark == 2)
            for r in [blue, red] {
                #expect(r.inside == IPAddress("100.64.0.1") && r.insidePort == port)
                #expect(r.outside == IPAddress("100.64.0.1"))
                #expect(r.destination == IPAddress("192.0.2.1") && r.destinationPort == 9)
                #expect(!r.resync && r.start != nil && r.time > 1_600_000_000_000_000_000)
            }
            #expect(blue.outsidePort != nil && red.outsidePort != nil && blue.outsidePort != red.outsidePort)
            // The one whose port changed says NAT was applied.
            #expect((blue.outsidePort != port) == blue.nat && (red.outsidePort != port) == red.nat)
            #expect(blue.nat || red.nat)
            #expect(!got.records.contains { $0.inside == IPAddress("100.64.0.2") })
            #expect(!got.items.contains { if case .overrun = $0 { return true } else { return false } })
        }
    }

    /// A logger started after flows exist still logs them (from a dump), unless told not to.
    @Test func mappingsThatExistAtStartAreLogged() throws {
        try withLab(testLabName("evx")) { lab in
            let port = freshPort()
            try sendUDP(lab: lab, from: "red_c1", port: port)
            let r = try cgnat(["events", "--lab", lab.name, "--json", "--duration", "0.3"])
            #expect(r.status == 0, "\(r.stderr)")
            let lines = r.stdout.split(separator: "\n").map(String.init)
            #expect(lines.contains { $0.contains("\"domain\":\"red\"") && $0.contains("\"inside_port\":\(port)") && $0.contains("\"resync\":true") },
                    "\(r.stdout)")
            #expect(lines.last?.contains("\"event\":\"resync\"") == true)
            // --count cuts the resync short: its summary counts what was logged, not the table.
            try sendUDP(lab: lab, from: "red_c1", port: port + 1, count: 4)
            let three = try cgnat(["events", "--lab", lab.name, "--json", "--count", "3"])
            let threeLines = three.stdout.split(separator: "\n")
            #expect(threeLines.filter { $0.contains("\"resync\":true") }.count == 3, "\(three.stdout)")
            #expect(threeLines.last?.contains("\"event\":\"resync\"") == true && threeLines.last?.contains("\"logged\":3") == true
                    && threeLines.last?.contains("\"not_logged\":2") == true, "\(three.stdout)")
            let none = try cgnat(["events", "--lab", lab.name, "--json", "--duration", "0.3", "--no-existing"])
            #expect(!none.stdout.contains("\"inside_port\":\(port)"), "\(none.stdout)")
        }
    }

    @Test func droppedEventsAreReportedAndEveryMappingIsLoggedByResync() throws {
        // 1500 concurrent ports of one subscriber need a block that large: 16 subscribers of 4032.
        try withLab(testLabName("evo"), adjust: {
            $0.router.nat.mapping = .portBlocks(.init(insideRange: IPPrefix("100.64.0.0/29")!, blockSize: 4032))
        }) { lab in
            // A tiny buffer, and nobody reading while 1500 flows start: the kernel must drop events.
            let stream = try EventStream.open(lab: lab, receiveBuffer: 4096)
            defer { stream.close() }
            let port: UInt16 = 30000
            let flows = 1500
            try sendUDP(lab: lab, from: "blue_c1", port: port, count: flows)
            let got = Collected()
            let summary = try stream.run(durationSeconds: 1.0) { got.items.append($0) }
            let overruns = got.items.filter { if case .overrun = $0 { return true } else { return false } }
            #expect(!overruns.isEmpty && summary.overruns >= 1)
            let resync = got.items.compactMap { if case .resync(let s) = $0 { return s } else { return nil } }
            #expect(resync.count >= 1)
            // The socket's drop counter says how many events were lost: at least the mappings the
            // resync found unlogged (each lost NEW is one dropped event).
            let dropped = resync.compactMap(\.droppedEvents).reduce(0, +)
            #expect(dropped >= resync.map(\.logged).reduce(0, +) && dropped > 0, "dropped \(dropped), resync \(resync), summary \(summary)")
            #expect(EventFormatter.resyncText(resync[0]).contains("the kernel dropped"))
            let logged = Set(got.records.filter { $0.kind == .new && $0.domain == "blue" && $0.protocolNumber == 17 }.compactMap(\.insidePort))
            let sent = Set((0..<flows).map { port + UInt16($0) })
            #expect(sent.isSubset(of: logged), "\(sent.subtracting(logged).count) mappings never logged")
            #expect(got.records.contains { $0.resync && $0.kind == .new })
            // Each mapping is logged once.
            let newCount = got.records.filter { $0.kind == .new && $0.domain == "blue" && $0.protocolNumber == 17 }.count
            #expect(newCount == logged.count)
        }
    }

    @Test func binaryPrintsJSONLinesAndEndsAfterCount() throws {
        guard access(cgnatBinary, X_OK) == 0 else {
            Issue.record("no cgnat binary at \(cgnatBinary): set CGNAT_BIN")
            return
        }
        try withLab(testLabName("evb")) { lab in
            let p = Process()
            p.executableURL = URL(fileURLWithPath: cgnatBinary)
            p.arguments = ["events", "--lab", lab.name, "--json", "--count", "2", "--no-destination",
                           "--context", "blue_c1", "--context", "red_c1", "--duration", "10"]
            let out = Pipe()
            p.standardOutput = out
            try p.run()
            usleep(400_000)   // the subscription is open well before this
            let port = freshPort() &+ 2
            try sendUDP(lab: lab, from: "blue_c1", port: port)
            try sendUDP(lab: lab, from: "red_c1", port: port)
            let data = out.fileHandleForReading.readDataToEndOfFile()
            p.waitUntilExit()
            #expect(p.terminationStatus == 0)
            let lines = String(decoding: data, as: UTF8.self).split(separator: "\n")
            #expect(lines.count == 2)
            let objs = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            #expect(Set(objs.compactMap { $0["domain"] as? String }) == ["blue", "red"])
            #expect(objs.allSatisfy { $0["event"] as? String == "new" && $0["inside_port"] as? Int == Int(port) && $0["destination"] == nil })
            #expect(Set(objs.compactMap { $0["outside_port"] as? Int }).count == 2)
        }
    }
}
