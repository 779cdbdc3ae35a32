import NetAddress

/// Who uses how much of the NAT now: sessions and public ports per subscriber, and the pool's
/// utilisation, from the router's connections (given as plain values, so this stays pure). An
/// operator watches it for port exhaustion.
public struct NATUsage: Equatable, Sendable {
    /// One translated connection: the subscriber (domain id from the ct mark, inside address) and
    /// the public port (ICMP id) it holds.
    public struct Mapping: Equatable, Sendable {
        public var domainID: UInt32
        public var inside: IPAddress
        public var publicAddress: IPAddress
        public var publicPort: UInt16?
        public init(domainID: UInt32, inside: IPAddress, publicAddress: IPAddress, publicPort: UInt16?) {
            self.domainID = domainID; self.inside = inside; self.publicAddress = publicAddress; self.publicPort = publicPort
        }
    }

    public struct Subscriber: Equatable, Sendable {
        public var domain: String
        public var inside: IPAddress
        public var host: String?
        public var block: PortBlockPolicy.Allocation?
        public var sessions: Int
        public var portsInUse: Int
    }

    public var subscribers: [Subscriber]
    public var poolPorts: Int
    public var portsInUse: Int
    public var sessionLimit: Int?
    public var policy: String

    public init(lab: Lab, mappings: [Mapping]) {
        let policy = lab.portBlockPolicy
        let domains = Dictionary(lab.router.subscribers.map { ($0.id, $0.name) }, uniquingKeysWith: { a, _ in a })
        var hostByKey: [String: String] = [:]
        for h in lab.hosts {
            guard case .domain(let d) = h.attachment else { continue }
            for a in h.addresses where a.family == .v4 { hostByKey["\(d) \(a.address)"] = h.name }
        }
        struct Key: Hashable { var d: UInt32; var inside: IPAddress }
        var sessions: [Key: Int] = [:]
        var ports: [Key: Set<String>] = [:]
        for m in mappings {
            let k = Key(d: m.domainID, inside: m.inside)
            sessions[k, default: 0] += 1
            if let p = m.publicPort { ports[k, default: []].insert("\(m.publicAddress):\(p)") }
        }
        subscribers = sessions.keys.sorted { ($0.d, $0.inside) < ($1.d, $1.inside) }.map { k in
            let name = domains[k.d] ?? "domain \(k.d)"
            return Subscriber(domain: name, inside: k.inside, host: hostByKey["\(name) \(k.inside)"],
                              block: policy?.allocation(domainID: k.d, inside: k.inside),
                              sessions: sessions[k] ?? 0, portsInUse: ports[k]?.count ?? 0)
        }
        let addresses = lab.router.nat.pool.reduce(0) { $0 + (1 << (32 - $1.length)) }
        poolPorts = addresses * (policy?.ports.count ?? 64512)
        portsInUse = subscribers.reduce(0) { $0 + $1.portsInUse }
        sessionLimit = lab.router.nat.sessionLimit
        if let p = policy {
            self.policy = "port blocks of \(p.portsPerSubscriber) ports, \(p.subscribersPerAddress) subscribers an address, \(addresses) public address\(addresses == 1 ? "" : "es"), \(p.subscriberCount) subscribers provisioned"
        } else {
            self.policy = "random ports over \(addresses) public address\(addresses == 1 ? "" : "es")"
        }
    }

    /// The subscribers using most of their block first; at most `limit` lines of them.
    public func text(limit: Int = 20) -> String {
        var out = "\nNAT: \(policy)" + (sessionLimit.map { ", at most \($0) sessions a subscriber" } ?? "") + "\n"
        let pct = poolPorts > 0 ? Double(portsInUse) * 100 / Double(poolPorts) : 0
        out += "  pool: \(portsInUse) of \(poolPorts) public ports in use (\(Self.percent(pct))), \(subscribers.count) subscriber\(subscribers.count == 1 ? "" : "s") with sessions\n"
        func use(_ s: Subscriber) -> Double { s.block.map { Double(s.portsInUse) / Double($0.ports.count) } ?? 0 }
        for s in subscribers.sorted(by: { use($0) > use($1) }).prefix(limit) {
            var line = "  \(s.host ?? "-") (\(s.domain) \(s.inside)): \(s.sessions) session\(s.sessions == 1 ? "" : "s"), \(s.portsInUse) port\(s.portsInUse == 1 ? "" : "s")"
            if let b = s.block { line += " of \(b.publicAddress) \(b.ports.lowerBound)-\(b.ports.upperBound) (\(Self.percent(use(s) * 100)))" }
            if use(s) >= 0.9 { line += "  NEAR EXHAUSTION" }
            out += line + "\n"
        }
        if subscribers.count > limit { out += "  ... \(subscribers.count - limit) more (--json lists all)\n" }
        return out
    }

    public var json: JSON {
        .object([
            ("policy", .string(policy)), ("pool_ports", .int(Int64(poolPorts))), ("ports_in_use", .int(Int64(portsInUse))),
            ("session_limit", sessionLimit.map { .int(Int64($0)) } ?? .null),
            ("subscribers", .array(subscribers.map { s in .object([
                ("domain", .string(s.domain)), ("inside", .string(s.inside.description)), ("host", JSON(s.host)),
                ("public", JSON(s.block?.publicAddress.description)),
                ("block", s.block.map { .array([.int(Int64($0.ports.lowerBound)), .int(Int64($0.ports.upperBound))]) } ?? .null),
                ("sessions", .int(Int64(s.sessions))), ("ports_in_use", .int(Int64(s.portsInUse))),
            ]) })),
        ])
    }

    static func percent(_ p: Double) -> String {
        let tenths = Int((p * 10).rounded())
        return "\(tenths / 10).\(tenths % 10)%"
    }
}
