import Netlink

/// The rules and chains of one namespace's ruleset, read from `nft -a list ruleset` text, so a
/// trace event's (table, chain, handle) can be shown as the rule the user wrote, and a chain's hook.
public struct RuleIndex: Equatable, Sendable {
    public struct Chain: Equatable, Sendable {
        public var hook: String?
        /// As nft prints it: `raw`, `mangle`, `filter`, `srcnat`, `raw - 1`, `-301`, ...
        public var priority: String?
        public var type: String?
    }

    /// "table/chain" -> chain; "table/chain/handle" -> rule text.
    public private(set) var chains: [String: Chain] = [:]
    public private(set) var rules: [String: String] = [:]

    public init() {}

    /// Parses nft's listing with handles (`# handle N` after each rule).
    public init(listing: String) {
        var table: String?
        var chain: String?
        var depth = 0          // braces inside a chain or a set/map block
        var inOther = false    // a set, map, flowtable or object block: skipped
        for raw in listing.split(separator: "\n", omittingEmptySubsequences: true) {
            let line = raw.trimmingCharacters()
            if line.hasPrefix("table ") {
                // table inet cgnat { # handle 1
                let words = line.split(separator: " ")
                table = words.count >= 3 ? String(words[2]) : nil
                chain = nil; inOther = false; depth = 0
                continue
            }
            guard let t = table else { continue }
            if chain == nil && !inOther {
                if line.hasPrefix("chain ") {
                    chain = String(line.split(separator: " ")[1])
                    chains["\(t)/\(chain!)"] = Chain()
                    depth = 1
                } else if line.hasSuffix("{") || line.contains("{ #") {
                    inOther = true; depth = 1
                } else if line == "}" {
                    table = nil
                }
                continue
            }
            if inOther {
                depth += line.filter { $0 == "{" }.count - line.filter { $0 == "}" }.count
                if depth <= 0 { inOther = false }
                continue
            }
            guard let c = chain else { continue }
            if line == "}" { chain = nil; continue }
            if line.hasPrefix("type ") {
                // type filter hook prerouting priority raw; policy accept;
                let clause = line.split(separator: ";").first.map(String.init) ?? line
                let words = clause.split(separator: " ").map(String.init)
                var ch = Chain()
                if let i = words.firstIndex(of: "type"), i + 1 < words.count { ch.type = words[i + 1] }
                if let i = words.firstIndex(of: "hook"), i + 1 < words.count { ch.hook = words[i + 1] }
                if let i = words.firstIndex(of: "priority"), i + 1 < words.count {
                    ch.priority = words[(i + 1)...].joined(separator: " ")
                }
                chains["\(t)/\(c)"] = ch
                continue
            }
            guard let mark = line.ranges(of: "# handle ").last else { continue }
            let handle = line[mark.upperBound...].trimmingCharacters()
            rules["\(t)/\(c)/\(handle)"] = RuleIndex.tidy(String(line[..<mark.lowerBound]).trimmingCharacters())
        }
    }

    public func chain(table: String, chain: String) -> Chain? { chains["\(table)/\(chain)"] }
    public func rule(table: String, chain: String, handle: UInt64) -> String? { rules["\(table)/\(chain)/\(handle)"] }

    /// Counter values change under the trace: show `counter` alone.
    static func tidy(_ rule: String) -> String {
        var words = rule.split(separator: " ").map(String.init)
        var i = 0
        while i < words.count {
            if words[i] == "counter", i + 4 < words.count, words[i + 1] == "packets", words[i + 3] == "bytes" {
                words.removeSubrange((i + 1)...(i + 4))
            }
            i += 1
        }
        return words.joined(separator: " ")
    }
}

/// The temporary table that switches tracing on for the traced command's packets, and chains at
/// the end of every hook that show where a packet went (devices, addresses after NAT).
public struct TraceTable: Equatable, Sendable {
    public static let name = "cgnat_trace"
    /// Chains that set nftrace (first in their hook, before conntrack and the lab's raw chains).
    public static let markChains: [String: String] = ["mark_pre": "prerouting", "mark_out": "output"]
    /// Rule-less chains last in each hook: their policy event shows the packet leaving the hook.
    public static let seenChains: [String: String] = ["seen_pre": "prerouting", "seen_in": "input", "seen_fwd": "forward",
                                                      "seen_out": "output", "seen_post": "postrouting"]

    /// Packets are chosen by headers (nftrace does not survive a veth hop, so each namespace marks
    /// them itself): from the context's addresses to the destinations and back, replies to the NAT
    /// address, and ICMP errors addressed to the context.
    public var match: [String]

    public init(sources: [IPAddress], destinations: [IPAddress], natAddresses: [IPAddress]) {
        var rules: [String] = []
        for family in [IPFamily.v4, .v6] {
            let src = sources.filter { $0.family == family }
            let dst = destinations.filter { $0.family == family }
            let back = Array(Set(src + natAddresses.filter { $0.family == family })).sorted()
            // Destinations given but none of this family: the command does not use it.
            if src.isEmpty || (dst.isEmpty && !destinations.isEmpty) { continue }
            let ip = family == .v4 ? "ip" : "ip6"
            if dst.isEmpty {
                rules.append("\(ip) saddr \(TraceTable.set(src))")
                rules.append("\(ip) daddr \(TraceTable.set(back))")
            } else {
                rules.append("\(ip) saddr \(TraceTable.set(src)) \(ip) daddr \(TraceTable.set(dst))")
                rules.append("\(ip) saddr \(TraceTable.set(dst)) \(ip) daddr \(TraceTable.set(back))")
            }
            let errors = family == .v4
                ? "icmp type { destination-unreachable, time-exceeded, parameter-problem }"
                : "icmpv6 type { destination-unreachable, packet-too-big, time-exceeded, parameter-problem }"
            rules.append("\(ip) daddr \(TraceTable.set(back)) \(errors)")
        }
        match = rules
    }

    static func set(_ a: [IPAddress]) -> String {
        a.count == 1 ? a[0].description : "{ " + a.map(\.description).joined(separator: ", ") + " }"
    }

    /// nft commands that (re)create the table; one transaction.
    public var text: String {
        var lines = ["add table inet \(TraceTable.name)", "delete table inet \(TraceTable.name)",
                     "table inet \(TraceTable.name) {"]
        for (chain, hook) in TraceTable.markChains.sorted(by: { $0.key < $1.key }) {
            lines.append("\tchain \(chain) {")
            lines.append("\t\ttype filter hook \(hook) priority raw - 1; policy accept;")
            for m in match { lines.append("\t\t\(m) meta nftrace set 1") }
            lines.append("\t}")
        }
        for (chain, hook) in TraceTable.seenChains.sorted(by: { $0.key < $1.key }) {
            lines.append("\tchain \(chain) {")
            lines.append("\t\ttype filter hook \(hook) priority 1000; policy accept;")
            lines.append("\t}")
        }
        lines.append("}")
        return lines.joined(separator: "\n") + "\n"
    }

    public static var deleteText: String { "delete table inet \(name)\n" }
}

extension StringProtocol {
    func trimmingCharacters() -> String {
        var s = Substring(self)
        while let f = s.first, f == " " || f == "\t" { s.removeFirst() }
        while let l = s.last, l == " " || l == "\t" || l == "\r" { s.removeLast() }
        return String(s)
    }
}
