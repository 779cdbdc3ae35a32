import Foundation
import Testing
import Netlink
@testable import CGNat

let kernelHasVRF = KernelSupport.detect().hasVRF

/// The VRF backend on a kernel that has VRFs: scripts/test runs this suite inside a VM with
/// Debian's kernel when the machine's own kernel has none.
@Suite(.serialized, .enabled(if: isRoot && kernelHasVRF, "needs root and a kernel with VRFs (scripts/test runs it in a VM)"))
struct VRFBackendTests {
    @Test func upCheckExecStatusDown() throws {
        let name = testLabName("vrf")
        let up = try cgnat(["up", "--lab", name, "--backend", "vrf"])
        #expect(up.status == 0, "\(up.stderr)")
        do {
            #expect(namespaces(withPrefix: name).sorted() == ["blue_c1", "blue_c2", "main", "red_c1", "uplink"].map { "\(name)-\($0)" })
            let report = try CheckRun.run(lab: Lab.seed(name: name), timeoutMilliseconds: probeTimeout)
            #expect(report.backend == .vrf)
            #expect(report.passed, "failing rows:\n\(failures(report))")
            // Row for row the same matrix as the netns backend.
            let netnsRows = try CheckMatrix(lab: Lab.seed(name: name), backend: .netns,
                                            endpoint: { ProbeEndpoint(context: $0, namespaceFD: -1) }, port: { 1 })
            // (Each phase's inbound rows run after its other rows.)
            #expect(report.results.map(\.name).sorted() == (netnsRows.probes.map(\.name) + netnsRows.pairs.map(\.name) + netnsRows.inbound.map(\.probe.name)).sorted())

            // exec runs inside each VRF, as ip vrf exec does.
            for vrf in ["up", "blue", "red"] {
                let r = try cgnat(["exec", "--lab", name, "main:\(vrf)", "--", "ip", "vrf", "identify"])
                #expect(r.status == 0 && r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == vrf, "\(vrf): \(r.stdout) \(r.stderr)")
            }
            let ping = try cgnat(["exec", "--lab", name, "main:red", "--", "ping", "-c1", "-W2", "100.64.0.1"])
            #expect(ping.status == 0, "main:red reaches red_c1 inside VRF red: \(ping.stdout)")
            let router = try cgnat(["exec", "--lab", name, "main:up", "--", "ping", "-c1", "-W2", "100.127.255.254"])
            #expect(router.status == 0, "main:up reaches the uplink's gateway with NAT on")

            let st = try cgnat(["status", "--lab", name, "--json"])
            #expect(st.status == 0, "\(st.stderr)")
            let obj = try JSONSerialization.jsonObject(with: Data(st.stdout.utf8)) as? [String: Any]
            let ctxs = obj?["contexts"] as? [[String: Any]] ?? []
            #expect(ctxs.first { $0["name"] as? String == "main:blue" }?["vrf"] as? String == "blue")
            let rules = (ctxs.first { $0["name"] as? String == "main" }?["rules"] as? [String]) ?? []
            for r in ["500: ipv4 fwmark 1 lookup 20", "1000: ipv4 l3mdev lookup [l3mdev-table]", "2000: ipv4 l3mdev unreachable", "32765: ipv4 lookup local"] {
                #expect(rules.contains(r), "rule \(r) in \(rules)")
            }
        }
        let record = LabRecord.load(lab: name)
        let down = try cgnat(["down", "--lab", name])
        #expect(down.status == 0, "\(down.stderr)")
        #expect(namespaces(withPrefix: name).isEmpty)
        #expect(LabRecord.load(lab: name) == nil)
        for cg in record?.cgroups ?? [] { #expect(access(cg, F_OK) != 0, "cgroup \(cg) removed") }
        #expect(record?.cgroups.count == 3)
    }

    /// events and trace on the VRF backend: one router namespace, domains told apart by zone,
    /// mark and the VRF slave devices.
    @Test func eventsAndTraceWork() throws {
        try withLab(testLabName("vrfet"), backend: .vrf) { lab in
            final class Box: @unchecked Sendable { var items: [EventStream.Item] = [] }
            let got = Box()
            let stream = try EventStream.open(lab: lab, contexts: ["blue_c1", "red_c1"])
            defer { stream.close() }
            let t = OSThread { _ = try? stream.run(durationSeconds: 4 + Double(probeTimeout) / 1000) { got.items.append($0) } }
            let report = try CheckRun.run(lab: lab, timeoutMilliseconds: probeTimeout)   // plenty of flows, among them the same-port pairs
            t.join()
            #expect(report.passed, "\(failures(report))")
            let records = got.items.compactMap { if case .record(let r) = $0 { return r } else { return nil } }
            let udp = records.filter { $0.kind == .new && $0.protocolNumber == 17 && $0.destination == IPAddress("192.0.2.1") }
            let blue = udp.first { $0.domain == "blue" }, red = udp.first { $0.domain == "red" }
            #expect(blue?.zone == 1 && red?.zone == 2, "\(udp)")
            #expect(blue?.inside == IPAddress("100.64.0.1") && red?.inside == IPAddress("100.64.0.1"))
            #expect(blue?.outside == IPAddress("100.64.0.1") && blue?.outsidePort != red?.outsidePort)

            var req = TraceSession.Request(lab: lab, context: "blue_c2", command: ["ping", "-c1", "-W2", "192.0.2.1"])
            req.childOutput = .discard
            let nat = try TraceSession.run(req)
            let text = TraceFormat.text(nat.packets)
            #expect(nat.exitStatus == 0, "\(text)")
            let request = nat.packets.first { $0.packet?.icmpTypeName == "echo-request" }
            #expect(request?.hops.contains { $0.chain == "srcnat" && $0.rule?.contains("snat ip to ct mark . ip saddr map @\(Ruleset.portMap)") == true } == true, "\(text)")
            #expect(request?.verdict.result == .delivered, "\(text)")

            var cross = TraceSession.Request(lab: lab, context: "red_c1", command: ["ping", "-c1", "-W1", "192.0.2.2"])
            cross.childOutput = .discard
            let dropped = try TraceSession.run(cross)
            let crossText = TraceFormat.text(dropped.packets)
            #expect(dropped.packets.contains { $0.verdict.result == .dropped && $0.verdict.detail.contains("IPv4 between subscriber domains") }, "\(crossText)")
        }
    }

    /// The seed's own rule (masquerade matched on the VRF device `up`, no zones, no marks), on
    /// this kernel: since 5.16 NAT is skipped on the VRF-device pass, so the rule never matches,
    /// packets leave un-NATed, and replies to 100.64.0.1 are delivered locally in VRF up.
    @Test func theSeedsNaiveRuleNeverMatches() throws {
        try withLab(testLabName("naive"), backend: .vrf) { lab in
            let fd = try NetNamespace.open(lab.namespaceName("main"))
            defer { close(fd) }
            try NetNamespace.run(in: fd) {
                let nft = try Nftables()
                try nft.run("delete table inet cgnat")
                try nft.run("""
                    table ip nat {
                        chain postrouting {
                            type nat hook postrouting priority srcnat; policy accept;
                            oifname "up" counter masquerade
                        }
                    }
                    """)
                let rt = try RouteSocket()
                for (pref, mark, table) in [(UInt32(500), UInt32(1), UInt32(20)), (501, 2, 30)] {
                    try rt.deleteRule(Rule(family: .v4, priority: pref, table: table, fwmark: mark))
                }
            }
            // Conntrack events of the router, subscribed before any traffic.
            let events = try NetNamespace.run(in: fd) {
                try ConntrackSocket(groups: ConntrackSocket.newEvents | ConntrackSocket.updateEvents | ConntrackSocket.destroyEvents)
            }
            defer { events.close() }
            func host(_ n: String) throws -> ProbeEndpoint { ProbeEndpoint(context: n, namespaceFD: try NetNamespace.open(lab.namespaceName(n))) }
            let uplink = try host("uplink"), c1 = try host("blue_c1"), c2 = try host("blue_c2")
            defer { [uplink, c1, c2].forEach { close($0.namespaceFD) } }
            let results = runProbes([
                Probe(name: "ping 192.0.2.1", from: c2, destination: IPAddress("192.0.2.1")!, proto: .icmp,
                      target: uplink, targetInterface: "client1", expect: .reach(source: IPAddress("100.64.0.2"))),
                Probe(name: "ping 192.0.2.1", from: c1, destination: IPAddress("192.0.2.1")!, proto: .icmp,
                      target: uplink, targetInterface: "client1", expect: .reach(source: IPAddress("100.64.0.1"))),
            ], timeoutMilliseconds: max(500, probeTimeout))
            // blue_c2's echo leaves un-NATed: the uplink sees 100.64.0.2; no reply comes back.
            #expect(results[0].observedSource == IPAddress("100.64.0.2"), "\(results[0].detail)")
            #expect(!results[0].passed && results[0].detail.contains("no reply"), "\(results[0].detail)")
            // blue_c1's echo also leaves, but the reply to 100.64.0.1 stays in the router.
            #expect(results[1].observedSource == IPAddress("100.64.0.1"))
            #expect(!results[1].passed && results[1].detail.contains("no reply"), "\(results[1].detail)")

            // NEW, then no DESTROY: the entry lives on, un-NATed (the seed's author saw NEW then
            // DESTROY at once, which needs a kernel before 5.16).
            var seen: [ConntrackEvent] = []
            for _ in 0..<5 { seen += try events.receiveEvents(timeoutMilliseconds: 100) }
            let flow2 = seen.filter { $0.entry.original.source == IPAddress("100.64.0.2") && $0.entry.original.destination == IPAddress("192.0.2.1") }
            #expect(flow2.contains { $0.kind == .new }, "\(seen)")
            #expect(!flow2.contains { $0.kind == .destroy }, "\(flow2)")
            #expect(flow2.allSatisfy { $0.entry.status & ConntrackEntry.statusSourceNAT == 0 && $0.entry.reply.destination == IPAddress("100.64.0.2") })

            try NetNamespace.run(in: fd) {
                let listing = try Nftables().run("list chain ip nat postrouting")
                #expect(listing.contains("counter packets 0 bytes 0 masquerade"), "the rule never matched:\n\(listing)")
                let entries = try ConntrackSocket().dump(family: .v4)
                let flow = entries.first { $0.original.source == IPAddress("100.64.0.2") && $0.original.destination == IPAddress("192.0.2.1") }
                #expect(flow != nil)
                #expect((flow?.status ?? ConntrackEntry.statusSourceNAT) & ConntrackEntry.statusSourceNAT == 0, "no NAT was applied to the flow")
                #expect(flow?.reply.destination == IPAddress("100.64.0.2"))
            }
        }
    }
}

extension VRFBackendTests {
    /// The same proof on the VRF backend: each blocked row names its rule by handle in `main`,
    /// and removing exactly that rule makes every such row fail.
    @Test func blockedRowsNameTheirRuleAndFailWithoutIt() throws {
        try withLab(testLabName("vrfblk"), backend: .vrf) { lab in try blockedRowsFailWithoutTheirRules(lab) }
    }
}
