import Foundation
import Testing
@testable import CGNatStore
@testable import CGNat
import CGNatCore
import NetAddress

typealias LabHost = CGNatCore.Host

/// The store fed with the lines `cgnat events --store` sends: real `EventFormatter.jsonLine`
/// records of the seed's two subscribers that share an inside address, and the control lines.
/// No root: a temporary SQLite file.
@Suite struct StoreTests {
    let lab = Lab.seed(name: "cgt-store-unit")
    let t0: Int64 = 1_796_083_200_000   // 2026-12-01T00:00:00Z

    func tempPath(_ tag: String) -> String {
        let p = NSTemporaryDirectory() + "cgt-store-\(tag)-\(getpid())-\(Int.random(in: 0..<1_000_000)).db"
        return p
    }
    func remove(_ p: String) { for s in ["", "-wal", "-shm"] { unlink(p + s) } }
    func iso(_ ms: Int64) -> String { Timestamp.format(milliseconds: ms) }

    /// The two hosts with one inside address in two domains, and the public port each one's block starts at.
    func sharers() throws -> (LabHost, LabHost, PortBlockPolicy.Allocation, PortBlockPolicy.Allocation) {
        let subs: [LabHost] = lab.hosts.filter { lab.portBlock(of: $0) != nil }
        func inside(_ h: LabHost) -> IPAddress? { lab.portBlock(of: h).map { _ in h.addresses.first { $0.family == IPFamily.v4 }!.address } }
        func shares(_ a: LabHost, _ b: LabHost) -> Bool { a.name != b.name && inside(a) == inside(b) && a.attachment != b.attachment }
        let pair: LabHost = try #require(subs.first { a in subs.contains { b in shares(a, b) } })
        let other: LabHost = try #require(subs.first { shares($0, pair) })
        return (pair, other, try #require(lab.portBlock(of: pair)), try #require(lab.portBlock(of: other)))
    }

    func record(_ kind: MappingRecord.Kind, host: LabHost, block: PortBlockPolicy.Allocation, port: UInt16, id: UInt32,
                at ms: Int64, start: Int64? = nil, resync: Bool = false) -> String {
        guard case .domain(let dn) = host.attachment, let d = lab.domain(named: dn) else { fatalError() }
        let inside = host.addresses.first { $0.family == IPFamily.v4 }!.address
        let r = MappingRecord(kind: kind, resync: resync, time: UInt64(ms) * 1_000_000, domainID: d.id, domain: d.name, zone: UInt16(d.id), mark: d.id,
                              protocolNumber: 17, inside: inside, insidePort: 40000, outside: block.publicAddress,
                              outsidePort: block.ports.lowerBound + port, destination: IPAddress("192.0.2.1")!, destinationPort: 9, nat: true,
                              start: UInt64(start ?? ms) * 1_000_000, stop: kind == .destroy ? UInt64(ms) * 1_000_000 : nil, id: id)
        return EventFormatter.jsonLine(r)
    }

    func control(_ event: String, _ ms: Int64, _ extra: String = "") -> String {
        "{\"event\":\"\(event)\",\"time\":\"\(iso(ms))\"\(extra)}"
    }
    func policyLine(_ l: Lab, _ ms: Int64) -> String {
        var s = "{\"event\":\"policy\",\"time\":\"\(iso(ms))\",\"lab\":"
        JSON.quote(l.name, into: &s)
        s += ",\"policy\":"
        JSON.quote(LabCodec.encode(l), into: &s)
        return s + "}"
    }

    @Test func sessionsPairAndAnswerOnlyWhileOpen() throws {
        let path = tempPath("pair"); defer { remove(path) }
        let (a, b, ba, bb) = try sharers()
        let store = try NATLogStore(path: path)
        // a's flow from t0+1s to t0+5s, then b's from t0+6s to t0+9s; b's NEW comes again from a resync.
        let c = try store.append(lines: [
            control("run", t0, ",\"pid\":1"), policyLine(lab, t0),
            record(.new, host: a, block: ba, port: 3, id: 11, at: t0 + 1000),
            record(.destroy, host: a, block: ba, port: 3, id: 11, at: t0 + 5000, start: t0 + 1000),
            record(.new, host: b, block: bb, port: 3, id: 12, at: t0 + 6000),
            record(.new, host: b, block: bb, port: 3, id: 12, at: t0 + 6000, resync: true),
            control("heartbeat", t0 + 20_000),
        ])
        #expect(c.sessionsOpened == 2 && c.duplicates == 1 && c.sessionsClosed == 1 && c.bad == 0, "\(c)")
        try store.append(lines: [record(.destroy, host: b, block: bb, port: 3, id: 12, at: t0 + 9000, start: t0 + 6000)])
        #expect(try store.stats().sessions == 2)

        func ask(_ block: PortBlockPolicy.Allocation, _ ms: Int64) throws -> NATLogStore.Answer {
            try store.query(outside: block.publicAddress.description, port: Int64(block.ports.lowerBound + 3), at: ms, protos: [17, 6, 1])
        }
        let during = try ask(ba, t0 + 3000)
        #expect(during.sessions.count == 1)
        let da = try #require(during.sessions.first)
        guard case .domain(let aName) = a.attachment, case .domain(let bName) = b.attachment else { return }
        #expect(da.domain == aName && da.endReason == "destroy" && da.startMs == t0 + 1000 && da.endMs == t0 + 5000)
        #expect(during.policy?.lab == lab.name && during.gap == nil)
        #expect(try ask(ba, t0 + 500).sessions.isEmpty)    // before it started
        #expect(try ask(ba, t0 + 5500).sessions.isEmpty)   // after it ended
        let db = try ask(bb, t0 + 7000)
        #expect(db.sessions.map(\.domain) == [bName] && db.sessions[0].ctID == 12)
        #expect(try ask(bb, t0 + 9500).sessions.isEmpty)
        // Another protocol of the same port: nothing.
        #expect(try store.query(outside: bb.publicAddress.description, port: Int64(bb.ports.lowerBound + 3), at: t0 + 7000, protos: [6]).sessions.isEmpty)
    }

    @Test func policyVersionsAreKeptOnlyWhenTheyChange() throws {
        let path = tempPath("policy"); defer { remove(path) }
        let store = try NATLogStore(path: path)
        var edited = lab
        edited.router.nat.mapping = .portBlocks(.init(insideRange: IPPrefix("100.64.0.0/29")!, blockSize: 4032))
        let c = try store.append(lines: [policyLine(lab, t0), policyLine(lab, t0 + 1000), policyLine(edited, t0 + 2000), policyLine(lab, t0 + 3000)])
        #expect(c.policyVersions == 3, "the same policy again is no new version; A, B, A is three")
        #expect(try store.stats().policies == 3)
        let at = { (ms: Int64) in try store.query(outside: "203.0.113.1", port: 2000, at: ms, protos: [17]).policy }
        #expect(try at(t0 + 1500)?.sinceMs == t0)
        #expect(try at(t0 + 2500)?.sinceMs == t0 + 2000 && (try at(t0 + 2500)?.policy) == LabCodec.encode(edited))
        #expect(try at(t0 - 1) == nil)
    }

    @Test func aKilledLoggerLeavesAGapAndItsOpenSessionsAreSettledOnRestart() throws {
        let path = tempPath("gap"); defer { remove(path) }
        let (a, b, ba, bb) = try sharers()
        do {
            let first = try NATLogStore(path: path)
            try first.append(lines: [
                control("run", t0, ",\"pid\":1"), control("synced", t0),
                record(.new, host: a, block: ba, port: 1, id: 21, at: t0 + 1000),
                record(.new, host: b, block: bb, port: 1, id: 22, at: t0 + 1000),
                control("heartbeat", t0 + 10_000),
            ])
            // killed: no close
        }
        let second = try NATLogStore(path: path)
        #expect(second.openSessions == 2)
        let c = try second.append(lines: [
            control("run", t0 + 60_000, ",\"pid\":2"),
            // Only a's flow is still in the table at restart.
            record(.new, host: a, block: ba, port: 1, id: 21, at: t0 + 1000, resync: true),
            control("synced", t0 + 60_000),
        ])
        #expect(c.duplicates == 1 && c.sessionsClosed == 1 && c.sessionsOpened == 0, "\(c)")
        let inGap = try second.query(outside: ba.publicAddress.description, port: Int64(ba.ports.lowerBound + 1), at: t0 + 30_000, protos: [17])
        let gap = try #require(inGap.gap)
        #expect(gap.fromMs == t0 + 10_000 && gap.toMs == t0 + 60_000)
        #expect(try second.query(outside: ba.publicAddress.description, port: Int64(ba.ports.lowerBound + 1), at: t0 + 5000, protos: [17]).gap == nil)
        // b's flow ended unseen: closed at the dead logger's last heartbeat, as "logger stopped".
        let bAfter = try second.query(outside: bb.publicAddress.description, port: Int64(bb.ports.lowerBound + 1), at: t0 + 5000, protos: [17])
        #expect(bAfter.sessions.first?.endReason == "logger stopped" && bAfter.sessions.first?.endMs == t0 + 10_000)
        // a's is still the one open session.
        #expect(second.openSessions == 1)
        // Before the first run: uncertain too.
        #expect(try second.query(outside: "x", port: 1, at: t0 - 1, protos: [17]).gap?.reason.contains("before") == true)
    }

    @Test func closeEndsOpenSessionsAsLabDownAndRetentionDropsOldRows() throws {
        let path = tempPath("close"); defer { remove(path) }
        let (a, _, ba, _) = try sharers()
        let store = try NATLogStore(path: path)
        let day: Int64 = 86_400_000
        try store.append(lines: [
            control("run", t0, ",\"pid\":1"), policyLine(lab, t0),
            record(.new, host: a, block: ba, port: 2, id: 31, at: t0 + 1000),
            record(.destroy, host: a, block: ba, port: 2, id: 31, at: t0 + 2000, start: t0 + 1000),
            record(.new, host: a, block: ba, port: 4, id: 32, at: t0 + 10 * day),
            control("close", t0 + 10 * day + 5000, ",\"reason\":\"lab down\""),
        ])
        #expect(store.openSessions == 0)
        let q = try store.query(outside: ba.publicAddress.description, port: Int64(ba.ports.lowerBound + 4), at: t0 + 10 * day + 100, protos: [17])
        #expect(q.sessions.first?.endReason == "lab down" && q.sessions.first?.endMs == t0 + 10 * day + 5000)
        // After the close: the logger had stopped, so uncertain.
        let later = try store.query(outside: ba.publicAddress.description, port: Int64(ba.ports.lowerBound + 4), at: t0 + 10 * day + 9000, protos: [17])
        #expect(later.sessions.isEmpty && later.gap?.reason.contains("lab down") == true)
        // Keep 5 days at day 11: the day-0 session goes, the day-10 one stays, and so does the policy in force.
        let removed = try store.retain(days: 5, now: t0 + 11 * day)
        #expect(removed == 1)
        #expect(try store.stats().sessions == 1 && (try store.stats().policies) == 1)
    }

    /// The helper binary end to end: lines on stdin, a JSON answer from `query`.
    @Test func helperAppendsFromStdinAndAnswersQueries() throws {
        let bin = Bundle.main.bundleURL.deletingLastPathComponent().path
        let helper = [ProcessInfo.processInfo.environment["CGNAT_BIN"].map { ($0 as NSString).deletingLastPathComponent + "/cgnat-store" },
                      FileManager.default.currentDirectoryPath + "/.build/debug/cgnat-store", bin + "/cgnat-store"]
            .compactMap { $0 }.first { FileManager.default.isExecutableFile(atPath: $0) }
        let h = try #require(helper, "no cgnat-store binary: build it first")
        let path = tempPath("bin"); defer { remove(path) }
        let (a, _, ba, _) = try sharers()
        let p = Process()
        p.executableURL = URL(fileURLWithPath: h)
        p.arguments = ["append", "--db", path]
        let input = Pipe()
        p.standardInput = input
        try p.run()
        let lines = [control("run", t0, ",\"pid\":1"), policyLine(lab, t0), record(.new, host: a, block: ba, port: 5, id: 41, at: t0 + 1000),
                     "not json", control("close", t0 + 4000, ",\"reason\":\"logger stopped\"")]
        input.fileHandleForWriting.write(Data((lines.joined(separator: "\n") + "\n").utf8))
        try input.fileHandleForWriting.close()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let q = Process()
        q.executableURL = URL(fileURLWithPath: h)
        q.arguments = ["query", "--db", path, "--outside", ba.publicAddress.description, "--port", String(ba.ports.lowerBound + 5), "--at", String(t0 + 2000)]
        let out = Pipe()
        q.standardOutput = out
        try q.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        q.waitUntilExit()
        let obj = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let sessions = try #require(obj["sessions"] as? [[String: Any]])
        #expect(sessions.count == 1 && sessions[0]["end_reason"] as? String == "logger stopped" && sessions[0]["ct_id"] as? Int == 41)
        #expect((obj["policy"] as? [String: Any])?["lab"] as? String == lab.name && obj["uncertain"] is NSNull)
        // The whois answer from that reply names the subscriber with policy and session evidence.
        let answer = try WhoisAt.answer(store: try JSON.parse(String(decoding: data, as: UTF8.self)), address: ba.publicAddress,
                                        port: ba.ports.lowerBound + 5, atMs: t0 + 2000, protocols: Whois.Proto.allCases)
        #expect(answer.evidence == ["policy", "session"] && answer.host == a.name && answer.insidePort == 40000)
        // A store that is not there: a clear error.
        let r = Process()
        r.executableURL = URL(fileURLWithPath: h)
        r.arguments = ["query", "--db", path + ".missing", "--outside", "1.2.3.4", "--port", "1", "--at", "0"]
        let err = Pipe()
        r.standardError = err
        try r.run()
        let msg = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        r.waitUntilExit()
        #expect(r.terminationStatus == 1 && msg.contains("no NAT log store at"))
    }
}
