import Netlink

public enum StatusFormat {
    /// Everything read, context by context; for a lab whose domains hold more than
    /// `LabScale.detailLimit` subscribers (and a report of more than one context), the hosts are
    /// summarised per domain instead, unless `full`.
    public static func text(_ r: LabStatus.Report, lab: Lab, full: Bool = false) -> String {
        if !full && r.contexts.count > 1 && lab.isSummarised { return summary(r, lab: lab) }
        var out = "lab \(r.lab): up, \(r.backend.rawValue) backend, \(from(r))\n" + warnings(r)
        for c in r.contexts { out += context(c, collapsePorts: false) }
        return out + (r.nat?.text() ?? "")
    }

    static func from(_ r: LabStatus.Report) -> String { "from \(r.origin ?? "the built-in default lab")" }

    static func warnings(_ r: LabStatus.Report) -> String {
        var out = r.leftoverTrace.map { "warning: \($0) holds a table inet \(TraceTable.name) left by a killed trace (the next trace or down removes it)\n" }.joined()
        for c in r.contexts {
            guard let t = c.table, t.max > 0, t.count * 5 >= t.max * 4 else { continue }
            out += "warning: the conntrack table of \(c.context.name) is \(t.count * 100 / t.max)% full (\(t.count) of \(t.max)); new flows are dropped or evict unreplied ones when it is full, and nf_conntrack_max cannot be raised from inside a namespace\n"
        }
        for c in r.contexts {
            guard let st = c.stats else { continue }
            let lost = ["insert_failed", "drop", "early_drop"].compactMap { n in st[n].flatMap { $0 > 0 ? "\(n) \($0)" : nil } }
            if !lost.isEmpty {
                out += "warning: conntrack of \(c.context.name) has lost flows since the lab came up: \(lost.joined(separator: ", ")) (insert_failed: two flows of one tuple at once; drop/early_drop: no room in the table)\n"
            }
        }
        return out
    }

    static func context(_ c: LabStatus.ContextStatus, collapsePorts: Bool) -> String {
        var out = "\n\(c.context.name)  (namespace \(c.context.namespace)" + (c.context.vrf.map { ", vrf \($0)" } ?? "") + ")\n"
        // Many ports of one bridge are said as a count, with the ones that are not up by name.
        var ports: [String: [LabStatus.Interface]] = [:]
        if collapsePorts {
            let bridges = Set(c.interfaces.filter { $0.kind == "bridge" }.map(\.name))
            for i in c.interfaces { if let m = i.master, bridges.contains(m) { ports[m, default: []].append(i) } }
            ports = ports.filter { $0.value.count > LabScale.detailLimit }
        }
        let collapsed = Set(ports.values.flatMap { $0.map(\.name) })
        for i in c.interfaces where !collapsed.contains(i.name) {
            var line = "  \(i.name)"
            if let k = i.kind { line += " [\(k)]" }
            line += " \(i.up ? "UP" : "DOWN")/\(i.operState)"
            if let m = i.master { line += " master \(m)" }
            let addrs = i.addresses.filter { !$0.address.isLinkLocal || $0.address.bytes[15] <= 2 }
            if !addrs.isEmpty { line += "  " + addrs.map(\.description).joined(separator: " ") }
            out += line + "\n"
            if let members = ports[i.name] {
                let down = members.filter { !linkUp($0) }
                out += "    \(members.count) ports \(HostGroupSummary.range(members.map(\.name))): \(members.count - down.count) up"
                if !down.isEmpty { out += ", not up: " + listed(down.map { "\($0.name) \($0.up ? "UP" : "DOWN")/\($0.operState)" }) }
                out += "\n"
            }
        }
        for rt in c.routes { out += "  route \(rt)\n" }
        for rule in c.rules { out += "  rule \(rule)\n" }
        if c.showsConntrack {
            out += "  conntrack: \(c.conntrack.count) entr\(c.conntrack.count == 1 ? "y" : "ies")" + (c.table.map { " (table \($0.count) of \($0.max))" } ?? "") + "\n"
            if let st = c.stats { out += "  conntrack statistics: " + statistics(st) + "\n" }
            for e in c.conntrack.prefix(20) { out += "    \(LabStatus.describe(e))\n" }
        }
        return out
    }

    /// `insert_failed 0, drop 0, early_drop 0, clashres 2` (the counters a CGN watches).
    static func statistics(_ st: ConntrackStats) -> String {
        st.watchedCounters.map { "\($0.name) \($0.value)" }.joined(separator: ", ")
    }

    /// Up and carrying traffic: administratively up, and the kernel says so too.
    static func linkUp(_ i: LabStatus.Interface) -> Bool { i.up && (i.operState == "UP" || i.operState == "UNKNOWN") }

    /// The first few of a list, and how many more.
    static func listed(_ items: [String], limit: Int = 5) -> String {
        items.prefix(limit).joined(separator: ", ") + (items.count > limit ? ", and \(items.count - limit) more" : "")
    }

    /// Per domain, what its hosts have of what the lab says they should: links up, addresses
    /// present, and the router's conntrack entries of that domain; hosts that fall short by name.
    public struct DomainSummary: Equatable, Sendable {
        public var domain: String
        public var hosts: Int
        public var linksUp: Int
        public var addressesUp: Int
        public var addressesExpected: Int
        public var conntrack: Int
        /// `d01_c017: cuplink DOWN/LOWERLAYERDOWN`, `d01_c020: 100.64.0.20/10 missing`
        public var problems: [String]
    }

    public static func domainSummaries(_ r: LabStatus.Report, lab: Lab) -> [DomainSummary] {
        let byName = Dictionary(r.contexts.map { ($0.context.name, $0) }, uniquingKeysWith: { a, _ in a })
        // The router's conntrack: each entry's domain from its original-direction zone, else its mark.
        var perDomain: [UInt32: Int] = [:]
        for e in r.contexts.first(where: { $0.showsConntrack })?.conntrack ?? [] {
            let zone = UInt32(e.originalZone ?? e.zone ?? 0)
            perDomain[zone != 0 ? zone : e.mark, default: 0] += 1
        }
        return lab.router.subscribers.map { d in
            var s = DomainSummary(domain: d.name, hosts: 0, linksUp: 0, addressesUp: 0, addressesExpected: 0,
                                  conntrack: perDomain[d.id] ?? 0, problems: [])
            for h in lab.hosts(in: d.name) {
                s.hosts += 1
                let expected = h.addresses.map { (h.interface, $0) } + h.loopbackAddresses.map { ("lo", $0) }
                s.addressesExpected += expected.count
                guard let c = byName[h.name] else { s.problems.append("\(h.name): not read"); continue }
                let link = c.interfaces.first { $0.name == h.interface }
                if let link, linkUp(link) { s.linksUp += 1 } else {
                    s.problems.append("\(h.name): \(h.interface) " + (link.map { "\($0.up ? "UP" : "DOWN")/\($0.operState)" } ?? "missing"))
                }
                for (ifname, a) in expected {
                    if c.interfaces.first(where: { $0.name == ifname })?.addresses.contains(a) == true { s.addressesUp += 1 }
                    else { s.problems.append("\(h.name): \(a) missing on \(ifname)") }
                }
            }
            return s
        }
    }

    static func summary(_ r: LabStatus.Report, lab: Lab) -> String {
        let subscribers = Set(lab.subscriberHosts.map(\.name))
        let domains = domainSummaries(r, lab: lab)
        var out = "lab \(r.lab): up, \(r.backend.rawValue) backend, \(from(r)); \(subscribers.count) subscribers in "
        out += "\(domains.count) domains, summarised (one context: --context C; everything: --full or --json)\n" + warnings(r)
        for c in r.contexts where !subscribers.contains(c.context.name) { out += context(c, collapsePorts: true) }

        out += "\nsubscribers by domain\n"
        let rows = [["domain", "hosts", "links up", "addresses", "conntrack"]] + domains.map { d in
            [d.domain, "\(d.hosts)", "\(d.linksUp)/\(d.hosts)", "\(d.addressesUp)/\(d.addressesExpected)", "\(d.conntrack)"]
        }
        let widths = (0..<5).map { col in rows.map { $0[col].count }.max() ?? 0 }
        for row in rows {
            var line = "  " + row[0] + String(repeating: " ", count: widths[0] - row[0].count)
            for col in 1..<5 { line += "  " + String(repeating: " ", count: widths[col] - row[col].count) + row[col] }
            out += line + "\n"
        }
        let total = domains.reduce(into: (hosts: 0, links: 0, addrs: 0, expected: 0)) {
            $0.hosts += $1.hosts; $0.links += $1.linksUp; $0.addrs += $1.addressesUp; $0.expected += $1.addressesExpected
        }
        out += "  all: \(total.links)/\(total.hosts) links up, \(total.addrs)/\(total.expected) addresses\n"
        let problems = domains.flatMap(\.problems)
        if problems.isEmpty {
            out += "  every subscriber has its link up and all its addresses\n"
        } else {
            out += "  not as planned (\(problems.count)):\n"
            for p in problems.prefix(20) { out += "    \(p)\n" }
            if problems.count > 20 { out += "    and \(problems.count - 20) more (cgnat status --json lists everything)\n" }
        }
        return out + (r.nat?.text() ?? "")
    }

    public static func json(_ r: LabStatus.Report) -> JSON {
        .object([
            ("lab", .string(r.lab)),
            ("backend", .string(r.backend.rawValue)),
            ("origin", JSON(r.origin)),
            ("leftover_trace_tables", .array(r.leftoverTrace.map { .string($0) })),
            ("nat", r.nat?.json ?? .null),
            ("contexts", .array(r.contexts.map { c in
                var fields: [(String, JSON)] = [
                    ("name", .string(c.context.name)),
                    ("kind", .string(c.context.kind.rawValue)),
                    ("namespace", .string(c.context.namespace)),
                    ("vrf", JSON(c.context.vrf)),
                    ("interfaces", .array(c.interfaces.map { i in
                        .object([
                            ("name", .string(i.name)), ("kind", JSON(i.kind)), ("up", .bool(i.up)),
                            ("operstate", .string(i.operState)), ("master", JSON(i.master)),
                            ("addresses", .array(i.addresses.map { .string($0.description) })),
                        ])
                    })),
                    ("routes", .array(c.routes.map { .string($0) })),
                    ("rules", .array(c.rules.map { .string($0) })),
                ]
                if c.showsConntrack {
                    fields.append(("conntrack_table", c.table.map { t in
                        .object([("count", .int(Int64(t.count))), ("max", .int(Int64(t.max))),
                                 ("percent", .int(Int64(t.max > 0 ? t.count * 100 / t.max : 0))),
                                 ("near_full", .bool(t.max > 0 && t.count * 5 >= t.max * 4))])
                    } ?? .null))
                    fields.append(("conntrack_statistics", c.stats.map { st in
                        .object(st.counters.map { ($0.name, .int(Int64(clamping: $0.value))) })
                    } ?? .null))
                    fields.append(("conntrack", .array(c.conntrack.map { e in
                        .object([
                            ("summary", .string(LabStatus.describe(e))),
                            ("protocol", .int(Int64(e.original.protocolNumber))),
                            ("original_source", .string(e.original.source.description)),
                            ("original_destination", .string(e.original.destination.description)),
                            ("reply_source", .string(e.reply.source.description)),
                            ("reply_destination", .string(e.reply.destination.description)),
                            ("zone", (e.originalZone ?? e.zone).map { .int(Int64($0)) } ?? .null),
                            ("zone_direction", .string(e.originalZone != nil ? "original" : e.zone != nil ? "both" : "none")),
                            ("mark", .int(Int64(e.mark))),
                        ])
                    })))
                }
                return .object(fields)
            })),
        ])
    }
}
