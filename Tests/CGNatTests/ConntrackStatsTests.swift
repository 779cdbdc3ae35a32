import Testing
import Netlink
import CGNat

/// The router's conntrack statistics (/proc/net/stat/nf_conntrack of its namespace) and how
/// `status` shows them with the table's use (no root: synthetic text and reports).
@Suite struct ConntrackStatsTests {
    /// As the 6.18 kernel writes it, two CPUs; `entries` repeats on every line.
    static let file = """
        entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
        0000012c  00000003 00000000 00000000 00000001 00000000 00000000 00000000 00000000 00000002 00000005 00000000 00000000  00000000 00000000 00000000 0000000a
        0000012c  00000001 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000010 00000001 00000007 00000000  00000000 00000000 00000000 00000000

        """

    @Test func countersAreSummedOverCPUsButEntries() throws {
        let st = try #require(ConntrackStats.parse(Self.file))
        #expect(st["entries"] == 300)
        #expect(st["insert_failed"] == 18 && st["drop"] == 6 && st["early_drop"] == 7 && st["clashres"] == 4)
        #expect(st["search_restart"] == 10 && st["invalid"] == 1)
        #expect(st.watchedCounters.map(\.name) == ["insert_failed", "drop", "early_drop", "clashres"])
        #expect(st.counters.count == 17)
    }

    @Test func otherTextIsRefused() {
        #expect(ConntrackStats.parse("") == nil)
        #expect(ConntrackStats.parse("entries drop\n") == nil, "no CPU line")
        #expect(ConntrackStats.parse("entries drop\n00000001\n") == nil, "a short line")
        #expect(ConntrackStats.parse("entries drop\n0000000g 00000001\n") == nil, "not hex")
        // An older kernel with fewer fields still parses; what it lacks is not shown.
        let old = try? #require(ConntrackStats.parse("entries searched found drop\n00000002 00000001 00000000 00000003\n"))
        #expect(old?.watchedCounters.map(\.name) == ["drop"])
    }

    static func report(stats: ConntrackStats?, table: (Int, Int)? = nil) -> (LabStatus.Report, Lab) {
        let lab = Lab.seed()
        let contexts = lab.contexts(backend: .netns).map { ctx in
            var c = LabStatus.ContextStatus(context: ctx, interfaces: [], showsConntrack: ctx.kind == .router)
            if ctx.kind == .router { c.stats = stats; c.table = table.map { (count: $0.0, max: $0.1) } }
            return c
        }
        return (LabStatus.Report(lab: lab.name, backend: .netns, contexts: contexts), lab)
    }

    @Test func statusShowsTheCountersAndWarnsOfLostFlows() throws {
        let (r, lab) = Self.report(stats: ConntrackStats.parse(Self.file), table: (300, 262144))
        let text = StatusFormat.text(r, lab: lab)
        #expect(text.contains("  conntrack: 0 entries (table 300 of 262144)\n  conntrack statistics: insert_failed 18, drop 6, early_drop 7, clashres 4\n"))
        #expect(text.contains("warning: conntrack of main has lost flows since the lab came up: insert_failed 18, drop 6, early_drop 7"))
        // All zero: shown, no warning; clashes resolved (clashres) lose nothing.
        let quiet = ConntrackStats.parse(Self.file.replacingZeroes(but: "clashres"))
        let (q, _) = Self.report(stats: quiet, table: (300, 262144))
        let qt = StatusFormat.text(q, lab: lab)
        #expect(qt.contains("conntrack statistics: insert_failed 0, drop 0, early_drop 0, clashres 4"))
        #expect(!qt.contains("lost flows"))
        #expect(!qt.contains("warning"))
    }

    @Test func jsonCarriesTableUseAndStatistics() throws {
        let (r, _) = Self.report(stats: ConntrackStats.parse(Self.file), table: (230000, 262144))
        let router = try #require(StatusFormat.json(r)["contexts"]?.arrayValue?.first { $0["kind"]?.stringValue == "router" })
        #expect(router["conntrack_table"]?["count"]?.intValue == 230000)
        #expect(router["conntrack_table"]?["max"]?.intValue == 262144)
        #expect(router["conntrack_table"]?["percent"]?.intValue == 87)
        #expect(router["conntrack_table"]?["near_full"] == .bool(true))
        #expect(router["conntrack_statistics"]?["insert_failed"]?.intValue == 18)
        #expect(router["conntrack_statistics"]?["early_drop"]?.intValue == 7)
        let (none, _) = Self.report(stats: nil)
        let r2 = try #require(StatusFormat.json(none)["contexts"]?.arrayValue?.first { $0["kind"]?.stringValue == "router" })
        #expect(r2["conntrack_statistics"] == .null && r2["conntrack_table"] == .null)
    }
}

private extension String {
    /// The file with every counter column zeroed except `keep`.
    func replacingZeroes(but keep: String) -> String {
        let lines = split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true).map(String.init) }
        let k = lines[0].firstIndex(of: keep)!
        return ([lines[0].joined(separator: " ")] + lines.dropFirst().map { l in
            l.enumerated().map { $0.offset == k || $0.offset == 0 ? $0.element : "00000000" }.joined(separator: " ")
        }).joined(separator: "\n") + "\n"
    }
}
