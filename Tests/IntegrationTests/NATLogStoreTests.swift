import Foundation
import Testing
import Netlink
@testable import CGNat

private func nowMs() -> Int64 { Int64(Date().timeIntervalSince1970 * 1000) }
private func iso(_ ms: Int64) -> String { Timestamp.format(milliseconds: ms) }

/// `cgnat events --store FILE` as a child process, its JSON lines collected.
private final class EventsProcess {
    let p = Process()
    let out = Pipe()
    init(lab: String, store: String) throws {
        p.executableURL = URL(fileURLWithPath: cgnatBinary)
        p.arguments = ["events", "--lab", lab, "--json", "--store", store]
        p.standardOutput = out
        p.standardError = FileHandle.standardError
        try p.run()
    }
    func kill9() { if p.isRunning { kill(p.processIdentifier, SIGKILL) }; p.waitUntilExit() }
    func lines() -> [[String: Any]] {
        let data = out.fileHandleForReading.readDataToEndOfFile()
        return String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }
    deinit { if p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() } }
}

/// Root-only: a real lab, real flows, the real store helper.
@Suite(.serialized, .enabled(if: isRoot, "needs root: builds network namespaces"))
struct NATLogStoreTests {
    @Test func whoisAtNamesTheSubscriberOfEachFlowAndSaysWhenTheLogHasAGap() throws {
        guard access(cgnatBinary, X_OK) == 0 else {
            Issue.record("no cgnat binary at \(cgnatBinary): set CGNAT_BIN")
            return
        }
        let store = NSTemporaryDirectory() + "cgt-store-\(getpid()).db"
        defer { for s in ["", "-wal", "-shm"] { unlink(store + s) } }
        let name = testLabName("store")
        var events: [EventsProcess] = []
        defer { events.forEach { $0.kill9() } }
        try withLab(name) { lab in
            // Two subscribers that share an inside address in two domains, from the model.
            let subs: [CGNatCore.Host] = lab.hosts.filter { lab.portBlock(of: $0) != nil }
            func inside(_ h: CGNatCore.Host) -> IPAddress { h.addresses.first { $0.family == .v4 }!.address }
            func shares(_ x: CGNatCore.Host, _ y: CGNatCore.Host) -> Bool { x.name != y.name && inside(x) == inside(y) && x.attachment != y.attachment }
            let a: CGNatCore.Host = try #require(subs.first { x in subs.contains { shares($0, x) } })
            let b: CGNatCore.Host = try #require(subs.first { shares($0, a) })
            guard case .domain(let aDomain) = a.attachment, case .domain(let bDomain) = b.attachment else { return }
            let uplinkHost: CGNatCore.Host = try #require(lab.hosts.first { $0.attachment == .uplink })
            let far: IPAddress = try #require((uplinkHost.loopbackAddresses + uplinkHost.addresses).first { $0.family == .v4 }?.address)
            let base: Int = 20000 + Int(getpid() % 5000) * 4
            let port = UInt16(base + Int.random(in: 0..<4))

            events.append(try EventsProcess(lab: name, store: store))
            usleep(800_000)   // subscribed and the run stored
            // a's flow, ended by deleting its conntrack entry (a real DESTROY), then b's.
            func flow(_ h: CGNatCore.Host) throws -> (start: Int64, end: Int64) {
                let start = nowMs()
                try sendUDP(lab: lab, from: h.name, ports: [port], to: far)
                usleep(1_500_000)
                let d = try cgnat(["exec", "--lab", name, lab.router.name, "--", "conntrack", "-D", "-p", "udp", "--orig-port-src", String(port)])
                #expect(d.status == 0, "conntrack -D: \(d.stderr)")
                let end = nowMs()
                usleep(700_000)
                return (start, end)
            }
            let fa = try flow(a)
            let fb = try flow(b)
            // One more of a's, left open: the lab going down ends it.
            try sendUDP(lab: lab, from: a.name, ports: [port + 1], to: far)
            usleep(500_000)
            let killedAt = nowMs()
            let first = events.removeFirst()
            first.kill9()
            let logged = first.lines()
            usleep(3_000_000)   // nobody logs now: a gap
            events.append(try EventsProcess(lab: name, store: store))
            usleep(1_500_000)

            func outsidePort(_ domain: String, _ insidePort: UInt16) throws -> (String, Int) {
                let r = try #require(logged.first { $0["event"] as? String == "new" && $0["domain"] as? String == domain && $0["inside_port"] as? Int == Int(insidePort) },
                                     "no NEW of \(domain) port \(insidePort) in \(logged)")
                return (r["outside"] as! String, r["outside_port"] as! Int)
            }
            func whois(_ target: (String, Int), _ at: Int64) throws -> (status: Int32, json: [String: Any]) {
                let r = try cgnat(["whois", "\(target.0):\(target.1)", "--at", iso(at), "--store", store, "--lab", name, "--json"])
                let obj = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any], "whois --at: \(r.stdout) \(r.stderr)")
                return (r.status, obj)
            }
            let pa = try outsidePort(aDomain, port), pb = try outsidePort(bDomain, port)
            #expect(pa != pb)
            for (h, domain, p, f) in [(a, aDomain, pa, fa), (b, bDomain, pb, fb)] {
                let during = try whois(p, (f.start + f.end) / 2)
                #expect(during.status == 0 && during.json["domain"] as? String == domain && during.json["host"] as? String == h.name
                        && during.json["inside"] as? String == inside(h).description && during.json["inside_port"] as? Int == Int(port), "\(during.json)")
                #expect((during.json["evidence"] as? [String])?.contains("session") == true && during.json["uncertain"] is NSNull, "\(during.json)")
                // The deterministic block is stored from the lab's start: `block` evidence too.
                #expect((during.json["evidence"] as? [String])?.contains("block") == true, "\(during.json)")
                for outside in [f.start - 400, f.end + 400] {
                    let w = try whois(p, outside)
                    #expect((w.json["evidence"] as? [String])?.contains("session") == false, "\(iso(outside)): \(w.json)")
                    #expect((w.json["sessions"] as? [Any])?.isEmpty == true)
                }
            }
            // Inside the gap the answer says it is uncertain, with the gap's bounds.
            let gap = try whois(pa, killedAt + 1500)
            let u = try #require(gap.json["uncertain"] as? [String: Any], "\(gap.json)")
            let from = try Timestamp.parse(u["from"] as? String ?? ""), to = try Timestamp.parse(u["to"] as? String ?? "")
            #expect(from <= killedAt && from >= killedAt - 2 * Int64(StoreOutput.heartbeatMilliseconds) - 500 && to > killedAt + 1500, "\(u)")
            let text = try cgnat(["whois", "\(pa.0):\(pa.1)", "--at", iso(killedAt + 1500), "--store", store, "--lab", name])
            #expect(text.stdout.contains("uncertain"), "\(text.stdout)")

            // down ends the running events, which closes the open session as "lab down".
            let open = try outsidePort(aDomain, port + 1)
            let down = try cgnat(["down", "--lab", name])
            #expect(down.status == 0, "\(down.stderr)")
            events.removeFirst().p.waitUntilExit()
            usleep(300_000)
            let after = try whois(open, killedAt + 200)
            let s = try #require((after.json["sessions"] as? [[String: Any]])?.first, "\(after.json)")
            #expect(s["end_reason"] as? String == "lab down" && s["domain"] as? String == aDomain, "\(s)")
            // The lab going down released the blocks: after it, no `block` evidence.
            let later = try whois(open, nowMs() + 1000)
            #expect((later.json["evidence"] as? [String])?.contains("block") == false, "\(later.json)")
        }
    }
}
