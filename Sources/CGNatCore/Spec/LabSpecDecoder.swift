/// Document tree -> `LabSpec`: keys, types and shapes, every problem at once. What the values
/// mean (addresses, names, references) is checked by `LabExpansion`.
public enum LabSpecDecoder {
    /// The spec only if the file has no problem of shape.
    public static func decode(_ root: SpecNode) -> (spec: LabSpec?, diagnostics: [Diagnostic]) {
        let (spec, problems) = decodePartially(root)
        return (problems.isEmpty ? spec : nil, problems)
    }

    /// What could be read (parts with problems left out), with the problems: for reporting
    /// the problems of the rest in the same run.
    public static func decodePartially(_ root: SpecNode) -> (spec: LabSpec?, diagnostics: [Diagnostic]) {
        var d = Decoding()
        let spec = d.lab(root)
        return (spec, d.diagnostics)
    }

    /// The keys each mapping of the format takes, for suggestions and the schema's test.
    public enum Keys {
        public static let lab = ["name", "router", "uplink_hosts", "domains", "expectations"]
        public static let router = ["name", "uplink", "nat"]
        public static let uplink = ["name", "interface", "addresses", "gateways"]
        public static let nat = ["inside", "public", "pool", "mapping", "port_blocks", "sessions", "filtering"]
        public static let portBlocks = ["inside_range", "ports", "size", "per_subscriber"]
        public static let mappings = ["port-blocks", "random"]
        public static let domain = ["count", "name", "id", "bridge", "addresses", "routed", "hosts", "subscribers"]
        public static let host = ["name", "interface", "addresses", "loopback", "routes"]
        public static let route = ["to", "via", "src"]
        public static let subscribers = ["count", "name", "interface", "from", "routes"]
        public static let expectation = ["from", "to", "proto", "expect", "source"]
    }
}

/// Levenshtein distance, for "did you mean" on unknown keys and names.
public func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a.utf8), b = Array(b.utf8)
    if a.isEmpty { return b.count }
    if b.isEmpty { return a.count }
    var prev = Array(0...b.count)
    var cur = [Int](repeating: 0, count: b.count + 1)
    for i in 1...a.count {
        cur[0] = i
        for j in 1...b.count {
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
        }
        swap(&prev, &cur)
    }
    return prev[b.count]
}

/// The candidate closest to `word`, if it is close enough to be what the user meant.
public func nearest(_ word: String, in candidates: [String]) -> String? {
    let scored = candidates.map { ($0, editDistance(word.lowercased(), $0.lowercased())) }
    guard let best = scored.min(by: { $0.1 < $1.1 }) else { return nil }
    return best.1 <= max(2, word.count / 3) ? best.0 : nil
}

private struct Fields {
    var values: [String: (node: SpecNode, at: SpecPlace)] = [:]
    /// Keys suggested for misspelt ones: not reported missing a second time.
    var suggested: Set<String> = []
    var at: SpecPlace
    subscript(_ k: String) -> (node: SpecNode, at: SpecPlace)? { values[k] }
}

private struct Decoding {
    var diagnostics: [Diagnostic] = []

    mutating func report(_ at: SpecPlace, _ message: String, _ hint: String) {
        diagnostics.append(Diagnostic(at, message, hint: hint))
    }

    /// A mapping's known keys; unknown, reserved and repeated keys are reported.
    mutating func fields(_ node: SpecNode, _ at: SpecPlace, _ allowed: [String], what: String,
                         reserved: [String] = []) -> Fields? {
        guard case .mapping(let pairs, _) = node else {
            report(at, "expected a mapping (\(what)), found \(node.kindName)", "write the keys \(allowed.joined(separator: ", ")) under it")
            return nil
        }
        var f = Fields(at: at)
        for p in pairs {
            let keyAt = at.key(p.key, p.keyPosition)
            if reserved.contains(p.key) {
                report(keyAt, "'\(p.key)' is not supported yet (NAT pools and port blocks come with a later version)",
                       "remove it; the NAT policy takes \(allowed.joined(separator: " and ")) today")
                continue
            }
            guard allowed.contains(p.key) else {
                if let n = nearest(p.key, in: allowed) {
                    f.suggested.insert(n)
                    report(keyAt, "unknown key '\(p.key)' in \(what)", "did you mean '\(n)'?")
                } else {
                    report(keyAt, "unknown key '\(p.key)' in \(what)", "valid keys are \(allowed.joined(separator: ", "))")
                }
                continue
            }
            if f.values[p.key] != nil {
                report(keyAt, "key '\(p.key)' appears twice", "keep one of them")
                continue
            }
            f.values[p.key] = (p.value, at.key(p.key, p.value.position ?? p.keyPosition))
        }
        return f
    }

    mutating func missing(_ f: Fields, _ key: String, _ what: String) {
        if f.suggested.contains(key) { return }
        report(f.at.key(key, f.at.position), "missing '\(key)'", "add '\(key):' with \(what)")
    }

    mutating func string(_ f: Fields, _ key: String, required: Bool = true, what: String = "a name") -> Placed<String>? {
        guard let (node, at) = f[key] else {
            if required { missing(f, key, what) }
            return nil
        }
        return string(node, at, what: what)
    }

    mutating func string(_ node: SpecNode, _ at: SpecPlace, what: String) -> Placed<String>? {
        switch node {
        case .scalar(_, .null, _):
            report(at, "has no value", "write \(what)")
            return nil
        case .scalar(let s, _, _):
            return Placed(s, at: at)
        default:
            report(at, "expected \(what), found \(node.kindName)", "write \(what) as a single value")
            return nil
        }
    }

    mutating func int(_ f: Fields, _ key: String, required: Bool = true, what: String) -> Placed<Int>? {
        guard let (node, at) = f[key] else {
            if required { missing(f, key, what) }
            return nil
        }
        guard case .scalar(let s, let kind, _) = node, kind == .int, let v = Int(s.replacingUnderscores) else {
            report(at, "expected \(what), found \(describe(node))", "write a whole number, e.g. \(key): 10")
            return nil
        }
        return Placed(v, at: at)
    }

    mutating func strings(_ f: Fields, _ key: String, required: Bool = true, what: String) -> [Placed<String>]? {
        guard let (node, at) = f[key] else {
            if required { missing(f, key, "a list of \(what)") }
            return nil
        }
        guard case .sequence(let items, _) = node else {
            let example: String
            if case .scalar(let s, _, _) = node { example = "[\(s)]" } else { example = "[...]" }
            report(at, "expected a list of \(what), found \(node.kindName)", "write it as a list: \(key): \(example)")
            return nil
        }
        var out: [Placed<String>] = []
        for (i, item) in items.enumerated() {
            if let s = string(item, at.index(i, item.position), what: "one of the \(what)") { out.append(s) }
        }
        return out
    }

    mutating func list(_ f: Fields, _ key: String, required: Bool, what: String) -> [(SpecNode, SpecPlace)]? {
        guard let (node, at) = f[key] else {
            if required { missing(f, key, "a list of \(what)") }
            return nil
        }
        guard case .sequence(let items, _) = node else {
            report(at, "expected a list of \(what), found \(node.kindName)", "write each entry on its own line starting with '- '")
            return nil
        }
        return items.enumerated().map { ($0.element, at.index($0.offset, $0.element.position)) }
    }

    func describe(_ node: SpecNode) -> String {
        if case .scalar(let s, let k, _) = node, k != .null { return "'\(s)'" }
        return node.kindName
    }

    // MARK: The format

    mutating func lab(_ root: SpecNode) -> LabSpec? {
        let at = SpecPlace("", root.position ?? SpecPlace.document.position)
        guard let f = fields(root, at, LabSpecDecoder.Keys.lab, what: "the lab") else { return nil }
        let name = string(f, "name", what: "the lab's name (it prefixes every namespace)")
        var router: RouterSpec?
        if let (n, a) = f["router"] { router = self.router(n, a) } else { missing(f, "router", "the router's name, uplink and nat") }
        var uplinkHosts: [HostSpec] = []
        if let items = list(f, "uplink_hosts", required: true, what: "hosts on the uplink") {
            uplinkHosts = items.compactMap { host($0.0, $0.1) }
            if items.isEmpty { report(f["uplink_hosts"]!.at, "has no host", "add the host on the uplink's link (the ISP side)") }
        }
        var domains: [DomainSpec] = []
        if let items = list(f, "domains", required: true, what: "subscriber domains") {
            domains = items.compactMap { domain($0.0, $0.1) }
            if items.isEmpty { report(f["domains"]!.at, "has no domain", "add at least one subscriber domain") }
        }
        var expectations: [ExpectationSpec] = []
        if let items = list(f, "expectations", required: false, what: "expectations") {
            expectations = items.compactMap { expectation($0.0, $0.1) }
        }
        guard let name, let router else { return nil }
        return LabSpec(name: name, router: router, uplinkHosts: uplinkHosts, domains: domains, expectations: expectations, at: at)
    }

    mutating func router(_ node: SpecNode, _ at: SpecPlace) -> RouterSpec? {
        guard let f = fields(node, at, LabSpecDecoder.Keys.router, what: "the router") else { return nil }
        let name = string(f, "name", what: "the router's context name")
        var uplink: UplinkSpec?
        if let (n, a) = f["uplink"] { uplink = self.uplink(n, a) } else { missing(f, "uplink", "the uplink domain's name, interface and addresses") }
        var nat: NATSpec?
        if let (n, a) = f["nat"] { nat = self.nat(n, a) } else { missing(f, "nat", "inside (the subscribers' IPv4 prefix) and public (the address they are translated to)") }
        guard let name, let uplink, let nat else { return nil }
        return RouterSpec(name: name, uplink: uplink, nat: nat, at: at)
    }

    mutating func uplink(_ node: SpecNode, _ at: SpecPlace) -> UplinkSpec? {
        guard let f = fields(node, at, LabSpecDecoder.Keys.uplink, what: "the uplink domain") else { return nil }
        let name = string(f, "name", what: "the uplink domain's name")
        let interface = string(f, "interface", what: "the router's uplink interface name")
        let addresses = strings(f, "addresses", what: "addresses with prefix length")
        let gateways = strings(f, "gateways", required: false, what: "gateway addresses") ?? []
        guard let name, let interface, let addresses else { return nil }
        return UplinkSpec(name: name, interface: interface, addresses: addresses, gateways: gateways, at: at)
    }

    mutating func nat(_ node: SpecNode, _ at: SpecPlace) -> NATSpec? {
        guard let f = fields(node, at, LabSpecDecoder.Keys.nat, what: "the NAT policy") else { return nil }
        let inside = string(f, "inside", what: "the IPv4 prefix translated (e.g. 100.64.0.0/10)")
        let pub = string(f, "public", required: false, what: "the public IPv4 address (one of the uplink's)")
        let pool = strings(f, "pool", required: false, what: "public IPv4 addresses or prefixes routed to the router")
        if pub == nil && pool == nil {
            report(at, "the NAT policy has neither 'public' nor 'pool'", "add public: ADDRESS (one of the uplink's) or pool: [PREFIX, ...] (routed to the router by the uplink)")
        } else if let pub, pool != nil {
            report(pub.at, "the NAT policy has both 'public' and 'pool'", "keep one: a single public address is a pool of one")
        }
        let mapping = string(f, "mapping", required: false, what: "port-blocks or random")
        if let m = mapping, !LabSpecDecoder.Keys.mappings.contains(m.value) {
            report(m.at, "unknown mapping '\(m.value)'", "use port-blocks (endpoint-independent, the default) or random (fully-random ports: address-and-port-dependent)")
        }
        var blocks: PortBlocksSpec?
        if let (n, a) = f["port_blocks"], let g = fields(n, a, LabSpecDecoder.Keys.portBlocks, what: "the port blocks") {
            blocks = PortBlocksSpec(
                insideRange: string(g, "inside_range", required: false, what: "the inside IPv4 prefix every domain's blocks cover"),
                ports: string(g, "ports", required: false, what: "a port range such as 1024-65535"),
                size: int(g, "size", required: false, what: "ports per block"),
                perSubscriber: int(g, "per_subscriber", required: false, what: "blocks per subscriber"), at: a)
        }
        let sessions = int(f, "sessions", required: false, what: "the most concurrent sessions a subscriber may open")
        let filtering = string(f, "filtering", required: false, what: "address-port-dependent or endpoint-independent")
        if let v = filtering, NATPolicy.Filtering(rawValue: v.value) == nil {
            report(v.at, "unknown filtering '\(v.value)'", "use address-port-dependent (the default: only the endpoint a subscriber sent to answers) or endpoint-independent (any host reaches a live mapping)")
        }
        guard let inside else { return nil }
        return NATSpec(inside: inside, publicAddress: pub, pool: pool, mapping: mapping, portBlocks: blocks, sessions: sessions,
                       filtering: filtering, at: at)
    }

    mutating func domain(_ node: SpecNode, _ at: SpecPlace) -> DomainSpec? {
        guard let f = fields(node, at, LabSpecDecoder.Keys.domain, what: "a domain") else { return nil }
        let count = int(f, "count", required: false, what: "the number of domains to generate")
        let name = string(f, "name", what: count == nil ? "the domain's name" : "a name pattern such as \"d{i:02}\"")
        var id: Placed<DomainSpec.ID>?
        if let (n, a) = f["id"] {
            switch n {
            case .scalar(let s, .int, _) where Int(s.replacingUnderscores) != nil: id = Placed(.number(Int(s.replacingUnderscores)!), at: a)
            case .scalar(let s, .string, _) where count != nil && s.contains("{"): id = Placed(.pattern(s), at: a)
            default:
                report(a, "expected the domain's id (1-255), found \(describe(n))",
                       count == nil ? "write a whole number, e.g. id: 1" : "write a number or a pattern such as \"{i}\"")
            }
        } else {
            missing(f, "id", count == nil ? "a number 1-255 (it keys the domain's conntrack zone and mark)" : "a pattern such as \"{i}\"")
        }
        let bridge = string(f, "bridge", what: "the bridge's name")
        let addresses = strings(f, "addresses", what: "gateway addresses with prefix length")
        let routed = strings(f, "routed", required: false, what: "prefixes") ?? []
        var hosts: [HostSpec] = []
        if let items = list(f, "hosts", required: false, what: "hosts") { hosts = items.compactMap { host($0.0, $0.1) } }
        var template: SubscriberTemplate?
        if let (n, a) = f["subscribers"] { template = subscribers(n, a) }
        guard let name, let id, let bridge, let addresses else { return nil }
        return DomainSpec(count: count, name: name, id: id, bridge: bridge, addresses: addresses, routed: routed,
                          hosts: hosts, subscribers: template, at: at)
    }

    mutating func subscribers(_ node: SpecNode, _ at: SpecPlace) -> SubscriberTemplate? {
        guard let f = fields(node, at, LabSpecDecoder.Keys.subscribers, what: "a subscriber template") else { return nil }
        let count = int(f, "count", what: "the number of subscribers to generate")
        let name = string(f, "name", what: "a name pattern such as \"{domain}_c{i:03}\"")
        let interface = string(f, "interface", required: false, what: "the subscribers' interface name")
        let from = strings(f, "from", required: false, what: "prefixes to allocate addresses from")
        let routes = list(f, "routes", required: false, what: "routes")?.compactMap { route($0.0, $0.1) }
        guard let count, let name else { return nil }
        return SubscriberTemplate(count: count, name: name, interface: interface, from: from, routes: routes, at: at)
    }

    mutating func host(_ node: SpecNode, _ at: SpecPlace) -> HostSpec? {
        guard let f = fields(node, at, LabSpecDecoder.Keys.host, what: "a host") else { return nil }
        let name = string(f, "name", what: "the host's name")
        let interface = string(f, "interface", required: false, what: "the host's interface name")
        let addresses = strings(f, "addresses", what: "addresses with prefix length")
        let loopback = strings(f, "loopback", required: false, what: "addresses with prefix length") ?? []
        let routes = list(f, "routes", required: false, what: "routes")?.compactMap { route($0.0, $0.1) }
        guard let name, let addresses else { return nil }
        return HostSpec(name: name, interface: interface, addresses: addresses, loopback: loopback, routes: routes, at: at)
    }

    mutating func route(_ node: SpecNode, _ at: SpecPlace) -> RouteSpec? {
        guard let f = fields(node, at, LabSpecDecoder.Keys.route, what: "a route") else { return nil }
        let to = string(f, "to", what: "the destination prefix")
        let via = string(f, "via", what: "the gateway address")
        let src = string(f, "src", required: false, what: "the source address")
        guard let to, let via else { return nil }
        return RouteSpec(to: to, via: via, src: src, at: at)
    }

    mutating func expectation(_ node: SpecNode, _ at: SpecPlace) -> ExpectationSpec? {
        guard let f = fields(node, at, LabSpecDecoder.Keys.expectation, what: "an expectation") else { return nil }
        let from = string(f, "from", what: "the host the probe is sent from")
        let to = string(f, "to", what: "the target address")
        let proto = string(f, "proto", what: "icmp, udp or tcp")
        let expect = string(f, "expect", what: "reach or blocked")
        let source = string(f, "source", required: false, what: "the source address the target must see")
        guard let from, let to, let proto, let expect else { return nil }
        return ExpectationSpec(from: from, to: to, proto: proto, expect: expect, source: source, at: at)
    }
}

extension String {
    /// YAML allows `1_000`.
    var replacingUnderscores: String { String(filter { $0 != "_" }) }
}
