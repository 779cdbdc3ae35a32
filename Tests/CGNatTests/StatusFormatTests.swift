import Testing
import Netlink
import CGNat

/// `cgnat status` text for a lab at scale, from a synthetic report (no root): per domain, not
/// per host; what falls short is named; one context or --full keeps every detail.
@Suite struct StatusFormatTests {
    /// What status would read back from a healthy lab: every host's link up with its addresses,
    /// the domains' bridges with a port per host, conntrack entries in the router.
    static func report(_ lab: Lab, backend: Backend = .netns, conntrack: [ConntrackEntry] = []) -> LabStatus.Report {
        let contexts = lab.contexts(backend: backend).map { ctx -> LabStatus.ContextStatus in
            if let h = lab.hosts.first(where: { $0.name == ctx.name }) {
                var ifs = [LabStatus.Interface(name: "lo", up: true, operState: "UNKNOWN", addresses: h.loopbackAddresses)]
                ifs.append(LabStatus.Interface(name: h.interface, kind: "veth", up: true, operState: "UP", addresses: h.addresses))
                return LabStatus.ContextStatus(context: ctx, interfaces: ifs, routes: ["default via 100.127.255.254 dev \(h.interface)"])
            }
            var ifs: [LabStatus.Interface] = []
            for d in lab.router.subscribers where ctx.name == "\(lab.router.name):\(d.name)" {
                ifs.append(LabStatus.Interface(name: d.bridge, kind: "bridge", up: true, operState: "UP", addresses: d.addresses))
                ifs += lab.hosts(in: d.name).map { LabStatus.Interface(name: $0.name, kind: "veth", up: true, operState: "UP", master: d.bridge) }
            }
            let router = ctx.kind == .router
            return LabStatus.ContextStatus(context: ctx, interfaces: ifs, rules: router ? ["1000: ipv4 lookup local"] : [],
                                           conntrack: router ? conntrack : [], showsConntrack: router)
        }
        return LabStatus.Report(lab: lab.name, backend: backend, contexts: contexts)
    }

    static func flow(zone: UInt16, mark: UInt32) -> ConntrackEntry {
        let a = IPAddress("100.64.0.1")!, b = IPAddress("192.0.2.1")!
        return ConntrackEntry(family: .v4,
                              original: ConntrackTuple(source: a, destination: b, protocolNumber: 17, sourcePort: 4000, destinationPort: 9),
                              reply: ConntrackTuple(source: b, destination: a, protocolNumber: 17, sourcePort: 9, destinationPort: 61000),
                              originalZone: zone, mark: mark, status: 0x8)
    }

    let lab = Lab.seedScaled(domains: 10, perDomain: 100)

    @Test func scaledLabIsSummarisedPerDomain() {
        let flows = [StatusFormatTests.flow(zone: 1, mark: 1), StatusFormatTests.flow(zone: 1, mark: 1), StatusFormatTests.flow(zone: 3, mark: 3)]
        let text = StatusFormat.text(StatusFormatTests.report(lab, conntrack: flows), lab: lab)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines[0].contains("1000 subscribers in 10 domains, summarised"))
        #expect(!text.contains("d01_c050"), "no line per host")
        #expect(lines.count < 150, "\(lines.count) lines")
        // The router contexts are still there in full, with the bridge ports counted.
        #expect(text.contains("\nmain  (namespace scale-main)"))
        #expect(text.contains("100 ports d01_c001..d01_c100: 100 up"))
        func row(_ d: String) -> [String] { lines.first { $0.hasPrefix("  \(d) ") }.map { $0.split(separator: " ").map(String.init) } ?? [] }
        #expect(row("domain") == ["domain", "hosts", "links", "up", "addresses", "conntrack"])
        #expect(row("d01") == ["d01", "100", "100/100", "200/200", "2"])
        #expect(row("d03") == ["d03", "100", "100/100", "200/200", "1"])
        #expect(row("d10") == ["d10", "100", "100/100", "200/200", "0"])
        #expect(text.contains("every subscriber has its link up and all its addresses"))
    }

    /// A host whose link is down and one that lacks an address are counted and named.
    @Test func aNearlyFullConntrackTableIsFlagged() {
        let lab = Lab.seed()
        var r = Self.report(lab)
        let i = r.contexts.firstIndex { $0.context.kind == .router }!
        r.contexts[i].table = (count: 1000, max: 262144)
        #expect(!StatusFormat.text(r, lab: lab).contains("warning: the conntrack table"))
        #expect(StatusFormat.text(r, lab: lab).contains("conntrack: 0 entries (table 1000 of 262144)"))
        r.contexts[i].table = (count: 230000, max: 262144)
        #expect(StatusFormat.text(r, lab: lab).contains("warning: the conntrack table of main is 87% full (230000 of 262144)"))
    }

    @Test func shortfallsAreNamed() {
        var r = StatusFormatTests.report(lab)
        let i = r.contexts.firstIndex { $0.context.name == "d03_c017" }!
        r.contexts[i].interfaces[1].up = false
        r.contexts[i].interfaces[1].operState = "DOWN"
        let j = r.contexts.firstIndex { $0.context.name == "d07_c100" }!
        r.contexts[j].interfaces[1].addresses.removeFirst()
        let k = r.contexts.firstIndex { $0.context.name == "main:d05" }!
        r.contexts[k].interfaces[9].operState = "LOWERLAYERDOWN"
        let text = StatusFormat.text(r, lab: lab)
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("  d03 ") && $0.contains(" 99/100 ") })
        #expect(lines.contains { $0.hasPrefix("  d07 ") && $0.contains(" 199/200 ") })
        #expect(text.contains("not as planned (2):"))
        #expect(text.contains("d03_c017: cuplink DOWN/DOWN"))
        #expect(text.contains("d07_c100: 100.64.0.100/10 missing on cuplink"))
        #expect(text.contains("100 ports d05_c001..d05_c100: 99 up, not up: d05_c009 UP/LOWERLAYERDOWN"))
        #expect(!text.contains("every subscriber has"))
    }

    @Test func fullOneContextAndSmallLabsKeepEveryDetail() {
        let r = StatusFormatTests.report(lab)
        let full = StatusFormat.text(r, lab: lab, full: true)
        #expect(full.contains("\nd01_c050  (namespace scale-d01_c050)"))
        #expect(full.contains("  d01_c050 [veth] UP/UP master br-d01"))
        let one = LabStatus.Report(lab: r.lab, backend: r.backend, contexts: r.contexts.filter { $0.context.name == "main:d01" })
        #expect(StatusFormat.text(one, lab: lab).contains("  d01_c050 [veth] UP/UP master br-d01"))
        let seed = Lab.seed(name: "s")
        let small = StatusFormat.text(StatusFormatTests.report(seed), lab: seed)
        #expect(small.contains("\nblue_c1  (namespace s-blue_c1)") && !small.contains("summarised"))
        // JSON is never summarised.
        #expect(StatusFormat.json(r).serialized().contains("\"d01_c050\""))
    }
}
