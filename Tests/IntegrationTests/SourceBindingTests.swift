import Foundation
import Testing
import Netlink
@testable import CGNat

/// Per-port source binding on the subscriber bridges (netns backend), and the router's
/// conntrack statistics in `status`, on real labs.
@Suite(.serialized, .enabled(if: isRoot, "needs root: builds network namespaces"))
struct SourceBindingTests {
    /// Runs a command in a namespace through iproute2: a path independent of cgnat's own.
    func inNamespace(_ ns: String, _ argv: [String]) throws -> String {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        p.arguments = ["netns", "exec", ns] + argv
        let out = Pipe()
        p.standardOutput = out
        try p.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return String(decoding: data, as: UTF8.self)
    }

    /// The binding is in every domain's namespace; a host sending with its neighbour's address is
    /// dropped at its bridge port (the counter of the named rule rises) while every other row
    /// passes; with that one rule deleted the spoofed packets arrive at the gateway.
    @Test func aHostCannotSendWithItsNeighboursAddress() throws {
        try withLab(testLabName("bind")) { lab in
            for t in BridgeBinding.tables(lab, backend: .netns) {
                let listed = try inNamespace(t.namespace, ["nft", "list", "table", "bridge", BridgeBinding.tableName])
                #expect(listed.contains("comment \"\(BridgeBinding.Comment.unbound)\""), "\(t.namespace): \(listed)")
            }
            let blueNS = BridgeBinding.tables(lab, backend: .netns)[0].namespace
            func dropped() throws -> Int {
                let line = try inNamespace(blueNS, ["nft", "list", "chain", "bridge", BridgeBinding.tableName, BridgeBinding.chain])
                    .split(separator: "\n").first { $0.contains(BridgeBinding.Comment.unbound) } ?? ""
                let words = line.split(separator: " ")
                return words.firstIndex(of: "packets").flatMap { Int(words[$0 + 1]) } ?? -1
            }
            let before = try dropped()
            let first = try checkJSON(lab.name)
            #expect(first.status == 0, "\(first.rows.filter { !$0.passed }.map { "\($0.from) \($0.probe): \($0.detail)" })")
            let spoof = first.rows.filter { $0.probe.contains("'s address)") }
            #expect(spoof.count == 2)
            #expect(spoof.allSatisfy { $0.passed && $0.detail.hasPrefix("dropped: counted by") && $0.rule?.hasPrefix("main:blue/bridge/\(BridgeBinding.tableName)/") == true },
                    "\(spoof.map { "\($0.probe): \($0.detail) \($0.rule ?? "no rule")" })")
            #expect(try dropped() >= before + 2)

            // Without the rule the same rows fail: the packet is seen at the gateway.
            let handle = try #require(spoof.first?.rule?.split(separator: "/").last.map(String.init))
            _ = try inNamespace(blueNS, ["nft", "delete", "rule", "bridge", BridgeBinding.tableName, BridgeBinding.chain, "handle", handle])
            let after = try checkJSON(lab.name)
            #expect(after.status == 1)
            for row in after.rows {
                if row.probe.contains("'s address)") {
                    #expect(!row.passed && row.detail.hasPrefix("LEAK"), "\(row.probe): \(row.detail)")
                } else {
                    #expect(row.passed, "\(row.from) \(row.probe): \(row.detail)")
                }
            }
        }
    }

    /// `status --json` shows the router's table use and its namespace's conntrack statistics, the
    /// same values `ip netns exec ROUTER` reads (and not the host's: the lab's entries are there).
    @Test func statusReadsTheRoutersConntrackStatistics() throws {
        try withLab(testLabName("ctst")) { lab in
            let check = try checkJSON(lab.name)   // some flows through the router
            #expect(check.status == 0)
            let router = lab.namespaceName(lab.router.name)
            let st = try cgnat(["status", "--lab", lab.name, "--json", "--context", lab.router.name])
            #expect(st.status == 0, "\(st.stderr)")
            let obj = try JSONSerialization.jsonObject(with: Data(st.stdout.utf8)) as? [String: Any]
            let ctx = try #require((obj?["contexts"] as? [[String: Any]])?.first)
            let table = try #require(ctx["conntrack_table"] as? [String: Any])
            let stats = try #require(ctx["conntrack_statistics"] as? [String: Any])
            let count = try #require(table["count"] as? Int)
            #expect(count > 0, "the check's flows are in the router's table")
            #expect(table["max"] as? Int == Int(try inNamespace(router, ["cat", "/proc/sys/net/netfilter/nf_conntrack_max"]).filter(\.isNumber)))
            let independent = try #require(ConntrackStats.parse(try inNamespace(router, ["cat", "/proc/net/stat/nf_conntrack"])))
            // entries is the namespace's table size: as status read it moments earlier (nothing runs now).
            #expect(stats["entries"] as? Int == Int(independent["entries"] ?? 0))
            #expect(stats["entries"] as? Int == count)
            for name in ConntrackStats.watched {
                #expect(stats[name] as? Int == independent[name].map { Int($0) }, "\(name)")
            }
            let text = try cgnat(["status", "--lab", lab.name, "--context", lab.router.name])
            #expect(text.stdout.contains("conntrack statistics: insert_failed "), "\(text.stdout)")
        }
    }
}
