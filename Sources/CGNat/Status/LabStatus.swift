import Glibc
import Netlink

/// What is up, per context: interfaces, addresses, routes, rules and conntrack entries, read
/// back from the kernel (not from the plan), so it shows what really is there.
public enum LabStatus {
    public struct Interface {
        public var name: String
        public var kind: String?
        public var up: Bool
        public var operState: String
        public var master: String?
        public var addresses: [IPPrefix]

        public init(name: String, kind: String? = nil, up: Bool, operState: String, master: String? = nil, addresses: [IPPrefix] = []) {
            self.name = name; self.kind = kind; self.up = up; self.operState = operState
            self.master = master; self.addresses = addresses
        }
    }

    public struct ContextStatus {
        public var context: Context
        public var interfaces: [Interface]
        public var routes: [String]
        public var rules: [String]
        public var conntrack: [ConntrackEntry]
        public var showsConntrack: Bool
        /// nf_conntrack_count and nf_conntrack_max of the namespace (the router's).
        public var table: (count: Int, max: Int)? = nil
        /// The namespace's conntrack statistics (the router's): clashes, drops, evictions.
        public var stats: ConntrackStats? = nil

        public init(context: Context, interfaces: [Interface], routes: [String] = [], rules: [String] = [],
                    conntrack: [ConntrackEntry] = [], showsConntrack: Bool = false) {
            self.context = context; self.interfaces = interfaces; self.routes = routes; self.rules = rules
            self.conntrack = conntrack; self.showsConntrack = showsConntrack
        }
    }

    public struct Report {
        public var lab: String
        public var backend: Backend
        public var contexts: [ContextStatus]

        /// The lab file the lab was built from (nil: the embedded default).
        public var origin: String? = nil
        /// Router contexts holding a trace table no running trace owns.
        public var leftoverTrace: [String] = []
        /// Sessions and public ports per subscriber, when the router's context was read.
        public var nat: NATUsage? = nil

        public init(lab: String, backend: Backend, contexts: [ContextStatus], origin: String? = nil, leftoverTrace: [String] = []) {
            self.lab = lab; self.backend = backend; self.contexts = contexts
            self.origin = origin; self.leftoverTrace = leftoverTrace
        }
    }

    public static func read(lab: Lab, only: String? = nil) throws -> Report {
        try LabControl.requireRoot("cgnat status")
        return try read(RunningLab.adopt(lab), only: only)
    }

    public static func read(_ running: RunningLab, only: String? = nil) throws -> Report {
        try LabControl.requireRoot("cgnat status")
        let lab = running.lab
        let backend = running.backend
        var contexts = lab.contexts(backend: backend)
        if let only {
            guard let c = contexts.first(where: { $0.name == only }) else {
                throw UsageError("unknown context '\(only)': the contexts are \(contexts.map(\.name).joined(separator: ", "))")
            }
            contexts = [c]
        }
        var out: [ContextStatus] = []
        for ctx in contexts {
            let (_, fd) = try running.open(context: ctx.name)
            defer { close(fd) }
            let showsConntrack = ctx.kind == .router
            let s: ContextStatus = try NetNamespace.run(in: fd) {
                let sock = try RouteSocket()
                defer { sock.socket.close() }
                let links = try sock.links()
                let names = Dictionary(links.map { ($0.index, $0.name) }, uniquingKeysWith: { a, _ in a })
                let addrs = try sock.addresses()
                // A VRF context shows its VRF's slaves and table; other contexts show everything.
                var vrfIndex: Int32?
                var table: UInt32?
                if let vrf = ctx.vrf, let l = links.first(where: { $0.name == vrf }) {
                    vrfIndex = l.index
                    table = lab.vrfTable(vrf)
                }
                let shown = links.filter { vrfIndex == nil || $0.master == vrfIndex || $0.index == vrfIndex }
                let interfaces = shown.map { l in
                    Interface(name: l.name, kind: l.kind, up: l.isUp, operState: l.operState,
                              master: l.master.flatMap { names[$0] },
                              addresses: addrs.filter { $0.index == l.index }.map(\.prefix))
                }
                var routes: [String] = []
                for family in [IPFamily.v4, .v6] {
                    for r in try sock.routes(family: family, table: table) where r.kind != .local && r.kind != .broadcast {
                        if r.family == .v6 && r.destination.address.isLinkLocal { continue }
                        if r.family == .v6 && r.destination.address.bytes[0] == 0xff { continue }   // multicast
                        routes.append(describe(r, names: names))
                    }
                }
                var rules: [String] = []
                if ctx.kind != .host {
                    for family in [IPFamily.v4, .v6] {
                        rules += try sock.rules(family: family).map { describe($0) }
                    }
                }
                let ct = showsConntrack ? try ConntrackSocket().dump() : []
                var status = ContextStatus(context: ctx, interfaces: interfaces, routes: routes, rules: rules,
                                           conntrack: ct, showsConntrack: showsConntrack)
                // /proc/sys/net follows the thread's namespace: these are the router's own.
                if showsConntrack, let c = readSmallFile("/proc/sys/net/netfilter/nf_conntrack_count").flatMap({ Int($0.filter(\.isNumber)) }),
                   let m = readSmallFile("/proc/sys/net/netfilter/nf_conntrack_max").flatMap({ Int($0.filter(\.isNumber)) }) {
                    status.table = (c, m)
                }
                // /proc/self/net is the main thread's namespace; thread-self is this thread's.
                if showsConntrack { status.stats = readSmallFile("/proc/thread-self/net/stat/nf_conntrack").flatMap(ConntrackStats.parse) }
                return status
            }
            out.append(s)
        }
        var report = Report(lab: lab.name, backend: backend, contexts: out, origin: lab.origin,
                            leftoverTrace: TraceSession.leftoverTables(running))
        if let router = out.first(where: { $0.context.kind == .router }) {
            report.nat = NATUsage(lab: lab, mappings: router.conntrack.compactMap { e in
                guard e.family == .v4, e.status & ConntrackEntry.statusSourceNAT != 0 else { return nil }
                return NATUsage.Mapping(domainID: e.mark, inside: e.original.source, publicAddress: e.reply.destination,
                                        publicPort: e.reply.protocolNumber == 1 ? e.reply.icmpID : e.reply.destinationPort)
            })
        }
        return report
    }

    static func describe(_ r: Route, names: [Int32: String]) -> String {
        var parts: [String] = []
        if r.kind == .unreachable { parts.append("unreachable") }
        parts.append(r.destination.isDefault ? (r.family == .v4 ? "default" : "default6") : r.destination.description)
        if let g = r.gateway { parts += ["via", (g.family != r.family ? "inet6 " : "") + g.description] }
        if let o = r.outputInterface { parts += ["dev", names[o] ?? "#\(o)"] }
        if let s = r.preferredSource { parts += ["src", s.description] }
        if r.table != 254 { parts += ["table", r.table == 255 ? "local" : String(r.table)] }
        return parts.joined(separator: " ")
    }

    static func describe(_ r: Rule) -> String {
        var parts = ["\(r.priority):", r.family == .v4 ? "ipv4" : "ipv6"]
        if let m = r.fwmark { parts += ["fwmark", String(m)] }
        if r.l3mdev { parts.append("l3mdev") }
        switch r.action {
        case .toTable: if let t = r.table { parts += ["lookup", t == 255 ? "local" : t == 254 ? "main" : t == 253 ? "default" : String(t)] } else if r.l3mdev { parts.append("lookup [l3mdev-table]") }
        case .unreachable: parts.append("unreachable")
        case .blackhole: parts.append("blackhole")
        case .prohibit: parts.append("prohibit")
        }
        return parts.joined(separator: " ")
    }

    public static func describe(_ e: ConntrackEntry) -> String {
        func t(_ x: ConntrackTuple) -> String {
            var s = "\(x.source)"
            if let p = x.sourcePort { s += ":\(p)" }
            s += " -> \(x.destination)"
            if let p = x.destinationPort { s += ":\(p)" }
            if let id = x.icmpID { s += " id \(id)" }
            return s
        }
        let proto = [1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6"][Int(e.original.protocolNumber)] ?? "proto \(e.original.protocolNumber)"
        var s = "\(proto) \(t(e.original)) | reply \(t(e.reply))"
        if let z = e.originalZone { s += " zone \(z) (original)" } else if let z = e.zone { s += " zone \(z)" }
        if e.mark != 0 { s += " mark \(e.mark)" }
        return s
    }
}
