import NetAddress

/// `LabSpec` -> `Lab`: templates expanded, addresses parsed and allocated, and every rule a lab
/// must satisfy checked with the place it was written, all problems at once. Then the model's own
/// `Lab.validate()` runs on the result as a last guard.
public enum LabExpansion {
    /// `file` goes into each expectation's `location` (`labs/x.yaml:40:5`); `origin` into the lab.
    public static func expand(_ spec: LabSpec, file: String? = nil, origin: String? = nil) -> (lab: Lab?, diagnostics: [Diagnostic]) {
        expand(spec, file: file, origin: origin, partial: false)
    }

    static func expand(_ spec: LabSpec, file: String?, origin: String?, partial: Bool) -> (lab: Lab?, diagnostics: [Diagnostic]) {
        var e = Expanding(file: file)
        e.partial = partial
        let lab = e.run(spec, origin: origin)
        return (e.diagnostics.isEmpty && !partial ? lab : nil, e.diagnostics)
    }

    /// Decode and expand a document tree in one step. When the decoder found problems but the
    /// file's frame (name, router) is there, what it could read is expanded and checked too, so
    /// one run reports the problems of both steps.
    public static func resolve(_ root: SpecNode, file: String? = nil, origin: String? = nil) -> (lab: Lab?, diagnostics: [Diagnostic]) {
        let (spec, problems) = LabSpecDecoder.decodePartially(root)
        guard let spec else { return (nil, problems) }
        let (lab, more) = expand(spec, file: file, origin: origin, partial: !problems.isEmpty)
        // A key the decoder already named (a bad value there) is not reported a second time.
        let fresh = more.filter { m in !problems.contains { $0.path == m.path } }
        return (problems.isEmpty ? lab : nil, problems + fresh)
    }
}

/// A resolved domain with where each part was written, for diagnostics about it.
private struct PlacedDomain {
    var model: SubscriberDomain
    var spec: DomainSpec
    /// "generated domain 'd03': " for domains from a template, "" otherwise.
    var label: String
    var addressPlaces: [SpecPlace]
    /// The template's index `{i}` of a generated domain.
    var index: Int?
}

private struct PlacedHost {
    var model: Host
    var at: SpecPlace
    var nameAt: SpecPlace
    var interfaceAt: SpecPlace
    var label: String
    var generated: Bool
}

private struct Expanding {
    let file: String?
    var diagnostics: [Diagnostic] = []

    init(file: String?) { self.file = file }

    mutating func report(_ at: SpecPlace, _ message: String, _ hint: String) {
        diagnostics.append(Diagnostic(at, message, hint: hint))
    }

    /// For problems that follow from one already reported at the same key (a duplicate name
    /// also collides as a namespace) or repeat for every generated domain: say it once.
    mutating func reportOnce(_ at: SpecPlace, _ message: String, _ hint: String) {
        guard !diagnostics.contains(where: { $0.path == at.path && $0.position == at.position }) else { return }
        report(at, message, hint)
    }

    // MARK: Values

    mutating func prefix(_ p: Placed<String>, _ label: String = "", what: String = "an address with prefix length") -> IPPrefix? {
        guard let v = IPPrefix(p.value) else {
            report(p.at, "\(label)'\(p.value)' is not \(what)", "write it as ADDRESS/LENGTH, e.g. 100.64.0.1/10 or 2001:db8::1/64")
            return nil
        }
        return v
    }

    mutating func network(_ p: Placed<String>, _ label: String = "") -> IPPrefix? {
        guard let v = prefix(p, label, what: "a prefix") else { return nil }
        if v.network != v {
            report(p.at, "\(label)prefix '\(p.value)' has host bits set", "write the network, \(v.network)")
            return nil
        }
        return v
    }

    mutating func address(_ p: Placed<String>, _ label: String = "") -> IPAddress? {
        guard let v = IPAddress(p.value) else {
            if IPPrefix(p.value) != nil {
                report(p.at, "\(label)'\(p.value)' is a prefix, an address is expected here", "drop the /LENGTH")
            } else {
                report(p.at, "\(label)'\(p.value)' is not an IPv4 or IPv6 address", "write it as e.g. 192.0.2.1 or 2001:db8::1")
            }
            return nil
        }
        return v
    }

    mutating func expand(_ p: Placed<String>, _ vars: [String: PatternValue]) -> Placed<String>? {
        do { return Placed(try Pattern.expand(p.value, vars), at: p.at) } catch {
            report(p.at, error.message, error.hint)
            return nil
        }
    }

    // MARK: The lab

    /// Set when the decoder dropped parts of the file: checks that count or look up across the
    /// whole file (the uplink host count, expectation hosts) would report follow-on errors then.
    var partial = false

    mutating func run(_ spec: LabSpec, origin: String?) -> Lab? {
        let labName = spec.name.value
        if (try? LabName.validate(labName)) == nil {
            report(spec.name.at, "lab name '\(labName)' cannot prefix namespace names",
                   "use 1-32 characters of a-z, 0-9, '_' or '-', not starting with '-'")
        }
        let router = spec.router
        contextName(router.name, "router")
        let uplinkAddresses = router.uplink.addresses.compactMap { prefix($0) }
        let gateways = router.uplink.gateways.compactMap { g -> IPAddress? in
            guard let a = address(g) else { return nil }
            if !uplinkAddresses.isEmpty, !uplinkAddresses.contains(where: { $0.network.contains(a) }) {
                report(g.at, "gateway \(a) is on none of the uplink's subnets (\(list(uplinkAddresses))), so no link reaches it",
                       "use an address on the uplink's link, or add an address of its subnet to router.uplink.addresses")
            }
            return a
        }
        let nat = natPolicy(router.nat, uplinkAddresses)

        var domains: [PlacedDomain] = []
        for d in spec.domains { domains += expandDomain(d) }

        var hosts: [PlacedHost] = spec.uplinkHosts.compactMap { uplinkHost($0) }
        if spec.uplinkHosts.count != 1 && !partial {
            report(spec.uplinkHosts.first.map { SpecPlace("uplink_hosts", $0.at.position) } ?? spec.at.key("uplink_hosts", spec.at.position),
                   "has \(spec.uplinkHosts.count) hosts; a lab has exactly one host on the uplink's link today",
                   "keep one host under uplink_hosts")
        }
        for d in domains { hosts += domainHosts(d) }

        checkNames(labName, router, domains, hosts)
        checkLinks(router, uplinkAddresses, domains, hosts)
        let names = Set(hosts.map(\.model.name))
        let expectations = partial ? [] : spec.expectations.compactMap { expectation($0, names) }

        guard diagnostics.isEmpty, let nat else { return nil }
        let lab = Lab(
            name: labName,
            router: Router(name: router.name.value,
                           uplink: UplinkDomain(name: router.uplink.name.value, interface: router.uplink.interface.value,
                                                addresses: uplinkAddresses, gateways: gateways),
                           subscribers: domains.map(\.model), nat: nat),
            hosts: hosts.map(\.model), expectations: expectations, origin: origin)
        if let policy = lab.portBlockPolicy, let problem = policy.problems().first {
            report(router.nat.portBlocks?.at ?? router.nat.at, "port blocks: \(problem)",
                   "the blocks of every domain id up to \(policy.maxDomainID) x \(policy.insideCount) inside addresses must fit the pool")
            return nil
        }
        do { try lab.validate() } catch {
            report(spec.at, "\(error)", "fix what it names; cgnat's own model check caught what the file checks did not")
            return nil
        }
        return lab
    }

    mutating func natPolicy(_ n: NATSpec, _ uplink: [IPPrefix]) -> NATPolicy? {
        let inside = network(n.inside)
        if let inside, inside.family != .v4 {
            report(n.inside.at, "the NAT translates IPv4; '\(n.inside.value)' is IPv6", "write the subscribers' IPv4 prefix, e.g. 100.64.0.0/10 (IPv6 is routed)")
        }
        var pool: [IPPrefix] = []
        if let p = n.publicAddress, let pub = address(p) {
            if pub.family != .v4 {
                report(p.at, "the NAT's public address must be IPv4; '\(p.value)' is IPv6", "write one of the uplink's IPv4 addresses")
            } else if !uplink.isEmpty, !uplink.contains(where: { $0.address == pub }) {
                report(p.at, "public address \(pub) is none of the uplink's addresses (\(list(uplink)))",
                       "use one of them, add \(pub) with its prefix length to router.uplink.addresses, or put it in a pool routed to the router")
            }
            pool = [IPPrefix(pub, 32)]
        }
        for p in n.pool ?? [] {
            // A pool entry is an address or a prefix; a prefix must be its network (198.51.100.0/28).
            let text = p.value.contains("/") ? p.value : p.value + (p.value.contains(":") ? "/128" : "/32")
            guard let prefix = IPPrefix(text) else {
                report(p.at, "'\(p.value)' is not an IPv4 address or prefix", "write e.g. 198.51.100.1 or 198.51.100.0/28")
                continue
            }
            if prefix.family != .v4 { report(p.at, "the pool must be IPv4; '\(p.value)' is IPv6", "IPv6 is routed, not translated") }
            else if prefix.network != prefix { report(p.at, "'\(p.value)' is not the network of its prefix", "write \(prefix.network)") }
            else { pool.append(prefix) }
        }
        var mapping = NATPolicy.Mapping.portBlocks(.init())
        if n.mapping?.value == "random" {
            if let b = n.portBlocks { report(b.at, "port_blocks with mapping random", "remove port_blocks, or use mapping: port-blocks") }
            mapping = .random
        } else if let b = n.portBlocks {
            var blocks = NATPolicy.PortBlocks()
            if let r = b.insideRange, let range = network(r) {
                if range.family != .v4 || !(inside.map { $0.length <= range.length && $0.contains(range.address) } ?? true) {
                    report(r.at, "inside_range \(range) is not within the inside prefix \(n.inside.value)", "write an IPv4 prefix inside \(n.inside.value)")
                } else { blocks.insideRange = range }
            }
            if let p = b.ports {
                let parts = p.value.split(separator: "-").map { UInt16(String($0.filter { $0 != " " })) }
                if parts.count == 2, let lo = parts[0], let hi = parts[1], lo >= 1, lo <= hi { blocks.ports = lo...hi }
                else { report(p.at, "'\(p.value)' is not a port range", "write LOW-HIGH within 1-65535, e.g. 1024-65535") }
            }
            if let z = b.size {
                if (1...65535).contains(z.value) { blocks.blockSize = z.value } else { report(z.at, "block size \(z.value) is not 1-65535", "write the ports per block, e.g. 512") }
            }
            if let k = b.perSubscriber {
                if (1...65535).contains(k.value) { blocks.blocksPerSubscriber = k.value } else { report(k.at, "\(k.value) blocks per subscriber", "write at least 1") }
            }
            mapping = .portBlocks(blocks)
        }
        var sessions: Int?
        if let k = n.sessions {
            if (1...1_000_000).contains(k.value) { sessions = k.value }
            else { report(k.at, "a session limit of \(k.value)", "write 1 to 1000000 sessions per subscriber, or leave it out for no limit") }
        }
        var filtering = NATPolicy.Filtering.addressPortDependent
        if let f = n.filtering, let v = NATPolicy.Filtering(rawValue: f.value) {
            // The uplink side learns the domain of an inbound packet from the public port's block.
            if v == .endpointIndependent, case .random = mapping {
                report(f.at, "endpoint-independent filtering with mapping random", "use mapping: port-blocks (the block of a public port names its subscriber's domain), or leave filtering out")
            }
            filtering = v
        }
        guard let inside, !pool.isEmpty else { return nil }
        return NATPolicy(inside: inside, pool: pool, mapping: mapping, sessionLimit: sessions, filtering: filtering)
    }

    // MARK: Domains

    mutating func expandDomain(_ d: DomainSpec) -> [PlacedDomain] {
        guard let count = d.count else {
            return resolveDomain(d, vars: ["domain": .text(d.name.value)], label: "").map { [$0] } ?? []
        }
        guard (1...255).contains(count.value) else {
            report(count.at, "cannot generate \(count.value) domains", "use a count of 1-255 (domain ids are 1-255)")
            return []
        }
        if !d.name.value.contains("{") {
            report(d.name.at, "the name '\(d.name.value)' of a domain template has no placeholder, so all \(count.value) domains would share it",
                   "use a pattern such as \"d{i:02}\"")
            return []
        }
        var out: [PlacedDomain] = []
        for i in 1...count.value {
            guard let name = expand(d.name, ["i": .number(i)]) else { return out }
            guard var pd = resolveDomain(d, vars: ["i": .number(i), "domain": .text(name.value)], label: "generated domain '\(name.value)': ") else {
                return out   // the same mistake would repeat for every index: report it once
            }
            pd.index = i
            out.append(pd)
        }
        return out
    }

    mutating func resolveDomain(_ d: DomainSpec, vars: [String: PatternValue], label: String) -> PlacedDomain? {
        let before = diagnostics.count
        let name = expand(d.name, vars)
        let bridge = expand(d.bridge, vars)
        var id: UInt32?
        switch d.id.value {
        case .number(let n):
            if (1...255).contains(n) { id = UInt32(n) } else {
                report(d.id.at, "\(label)domain id \(n) is out of range", "use 1-255 (0 is the uplink's conntrack zone and mark)")
            }
        case .pattern(let p):
            if let s = expand(Placed(p, at: d.id.at), vars) {
                if let n = Int(s.value), (1...255).contains(n) { id = UInt32(n) } else {
                    report(d.id.at, "\(label)id pattern '\(p)' gives '\(s.value)', not a domain id", "make it give 1-255, e.g. \"{i}\"")
                }
            }
        }
        var addresses: [IPPrefix] = []
        var places: [SpecPlace] = []
        for a in d.addresses {
            if let t = expand(a, vars), let p = prefix(t, label) { addresses.append(p); places.append(a.at) }
        }
        if d.addresses.isEmpty {
            report(d.at.key("addresses", d.at.position), "\(label)domain has no gateway address", "add the router's address on the bridge, e.g. 100.127.255.254/10")
        }
        let routed = d.routed.compactMap { r in expand(r, vars).flatMap { network($0, label) } }
        guard diagnostics.count == before, let name, let bridge, let id else { return nil }
        contextName(name, "domain", label)
        return PlacedDomain(model: SubscriberDomain(name: name.value, id: id, bridge: bridge.value, addresses: addresses, routed: routed),
                            spec: d, label: label, addressPlaces: places, index: nil)
    }

    // MARK: Hosts

    mutating func uplinkHost(_ h: HostSpec) -> PlacedHost? {
        let addresses = h.addresses.compactMap { prefix($0) }
        let loopback = h.loopback.compactMap { prefix($0) }
        let routes = (h.routes ?? []).compactMap { route($0, "", addresses, loopback) }
        guard addresses.count == h.addresses.count, loopback.count == h.loopback.count, routes.count == (h.routes ?? []).count else { return nil }
        let model = Host(name: h.name.value, attachment: .uplink, interface: h.interface?.value ?? LabSpecDefaults.hostInterface,
                         addresses: addresses, loopbackAddresses: loopback, routes: routes)
        return PlacedHost(model: model, at: h.at, nameAt: h.name.at, interfaceAt: h.interface?.at ?? h.at, label: "", generated: false)
    }

    mutating func route(_ r: RouteSpec, _ label: String, _ addresses: [IPPrefix], _ loopback: [IPPrefix]) -> HostRoute? {
        guard let to = network(r.to, label), let via = address(r.via, label) else { return nil }
        var src: IPAddress?
        if let s = r.src {
            guard let a = address(s, label) else { return nil }
            if !(addresses + loopback).contains(where: { $0.address == a }) {
                report(s.at, "\(label)source \(a) is none of the host's own addresses", "use one of \(list(addresses + loopback)); the kernel refuses a route with a foreign source")
                return nil
            }
            src = a
        }
        if via.family != to.family && !(to.family == .v4 && via.family == .v6 && via.isLinkLocal) {
            report(r.via.at, "\(label)gateway \(via) is \(via.family), the route to \(to) is \(to.family)", "use a gateway of the route's family")
            return nil
        }
        if !via.isLinkLocal && !addresses.contains(where: { $0.network.contains(via) }) {
            report(r.via.at, "\(label)gateway \(via) is on none of the host's subnets (\(list(addresses))), so no link reaches it",
                   "use an address on one of the host's links, or add an address of the gateway's subnet to the host")
            return nil
        }
        return HostRoute(to, via: via, source: src)
    }

    /// Subscribers without routes get a default route per family via their domain's gateways.
    func defaultRoutes(_ d: SubscriberDomain) -> [HostRoute] {
        var seen = Set<IPFamily>()
        return d.addresses.compactMap { a in
            guard seen.insert(a.family).inserted else { return nil }
            return HostRoute(IPPrefix(IPAddress.any(a.family), 0), via: a.address)
        }
    }

    mutating func domainHosts(_ d: PlacedDomain) -> [PlacedHost] {
        let dom = d.model
        let vars: [String: PatternValue] = d.spec.count == nil ? ["domain": .text(dom.name)]
            : ["domain": .text(dom.name), "i": .number(d.index ?? 0)]
        var out: [PlacedHost] = []
        for h in d.spec.hosts {
            guard let name = expand(h.name, vars) else { continue }
            let label = d.label.isEmpty ? "" : "\(d.label)host '\(name.value)': "
            var addresses: [IPPrefix] = []
            for a in h.addresses {
                guard let t = expand(a, vars), let p = prefix(t, label) else { continue }
                let subnet = dom.addresses.first { $0.family == p.family && $0.network.contains(p.address) }
                if let subnet, subnet.length != p.length, !dom.routed.contains(where: { $0.contains(p.address) }) {
                    report(a.at, "\(label)\(p) has prefix length /\(p.length), but domain '\(dom.name)''s subnet is \(subnet.network)",
                           "write \(p.address)/\(subnet.length): the host shares the subnet with its gateway")
                    continue
                }
                if subnet == nil && !dom.routed.contains(where: { $0.contains(p.address) }) {
                    let subnets = dom.addresses.filter { $0.family == p.family }.map { $0.network.description }
                    report(a.at, "\(label)\(p) is outside domain '\(dom.name)''s subnets (\(subnets.joined(separator: ", "))) and its routed prefixes",
                           subnets.isEmpty ? "add a gateway address of this family to the domain" : "use an address in \(subnets.joined(separator: " or ")) with the same prefix length, or route its prefix to the domain")
                    continue
                }
                addresses.append(p)
            }
            let loopback = h.loopback.compactMap { l in expand(l, vars).flatMap { prefix($0, label) } }
            let routes = h.routes.map { $0.compactMap { route($0, label, addresses, loopback) } } ?? defaultRoutes(dom)
            let model = Host(name: name.value, attachment: .domain(dom.name), interface: h.interface?.value ?? LabSpecDefaults.hostInterface,
                             addresses: addresses, loopbackAddresses: loopback, routes: routes)
            out.append(PlacedHost(model: model, at: h.at, nameAt: h.name.at, interfaceAt: h.interface?.at ?? h.at, label: label, generated: false))
        }
        if let t = d.spec.subscribers { out += generate(t, d, written: out.map(\.model)) }
        if out.count > LabSpecDefaults.maxBridgePorts {
            report(d.spec.subscribers?.count.at ?? d.spec.at, "\(d.label)domain '\(dom.name)' has \(out.count) subscribers, more than a bridge takes",
                   "keep it to \(LabSpecDefaults.maxBridgePorts) per domain (the kernel refuses the 1024th bridge port); split the subscribers over more domains")
        }
        return out
    }

    mutating func generate(_ t: SubscriberTemplate, _ d: PlacedDomain, written: [Host]) -> [PlacedHost] {
        let dom = d.model
        guard t.count.value >= 1 else {
            reportOnce(t.count.at, "\(d.label)cannot generate \(t.count.value) subscribers", "use a count of at least 1, or remove 'subscribers'")
            return []
        }
        if !t.name.value.contains("{i") {
            reportOnce(t.name.at, "\(d.label)the subscriber name '\(t.name.value)' has no {i}, so all \(t.count.value) would share it",
                   "use a pattern such as \"{domain}_c{i:03}\"")
            return []
        }
        // Prefixes to allocate from, each with the length the host gets: that of the domain's
        // subnet it lies in (on-link with the gateway), or a host route for a routed prefix.
        var pools: [(IPPrefix, Int, SpecPlace)] = []
        if let from = t.from {
            for f in from {
                guard let p = expand(f, ["domain": .text(dom.name)]).flatMap({ network($0, d.label) }) else { continue }
                if let subnet = dom.addresses.first(where: { $0.family == p.family && $0.network.contains(p.address) && $0.length <= p.length }) {
                    pools.append((p, subnet.length, f.at))
                } else if dom.routed.contains(where: { $0.family == p.family && $0.contains(p.address) && $0.length <= p.length }) {
                    pools.append((p, p.family.bitLength, f.at))
                } else {
                    reportOnce(f.at, "\(d.label)prefix \(p) is outside domain '\(dom.name)''s subnets and routed prefixes",
                           "allocate from one of \(list(dom.addresses.map(\.network) + dom.routed))")
                }
            }
        } else {
            var seen = Set<IPPrefix>()
            for (i, a) in dom.addresses.enumerated() where seen.insert(a.network).inserted {
                pools.append((a.network, a.length, d.addressPlaces.indices.contains(i) ? d.addressPlaces[i] : d.spec.at))
            }
        }
        let taken = Set(dom.addresses.map(\.address) + written.flatMap { $0.addresses.map(\.address) })
        var allocators = pools.map { AddressAllocator($0.0, taken: taken) }
        var out: [PlacedHost] = []
        for i in 1...t.count.value {
            guard let name = expand(t.name, ["i": .number(i), "domain": .text(dom.name)]) else { return [] }
            var addresses: [IPPrefix] = []
            for k in allocators.indices {
                guard let a = allocators[k].allocate() else {
                    let (pool, _, _) = pools[k]
                    let al = allocators[k]
                    reportOnce(t.count.at, "\(d.label)\(t.count.value) subscribers need \(t.count.value) addresses from \(pool), which has \(al.free) free",
                               "lower count to \(al.free) or allocate from a larger prefix (\(pool) has \(al.usable) host addresses, \(al.takenInRange) taken by the gateway and other hosts)")
                    return out
                }
                addresses.append(IPPrefix(a, pools[k].1))
            }
            let label = "\(d.label.isEmpty ? "" : d.label)subscriber '\(name.value)': "
            let routes = t.routes.map { $0.compactMap { route($0, label, addresses, []) } } ?? defaultRoutes(dom)
            let model = Host(name: name.value, attachment: .domain(dom.name), interface: t.interface?.value ?? LabSpecDefaults.hostInterface,
                             addresses: addresses, routes: routes)
            out.append(PlacedHost(model: model, at: t.at, nameAt: t.name.at, interfaceAt: t.interface?.at ?? t.at, label: label, generated: true))
        }
        return out
    }

    // MARK: Names

    /// Names users type (contexts, namespace parts): plain characters, no ':' (it joins router and domain).
    mutating func contextName(_ p: Placed<String>, _ what: String, _ label: String = "") {
        let s = p.value
        let ok = !s.isEmpty && s.first != "-" && s.first != "." && s.utf8.allSatisfy {
            ($0 >= 97 && $0 <= 122) || ($0 >= 65 && $0 <= 90) || ($0 >= 48 && $0 <= 57) || $0 == 95 || $0 == 45 || $0 == 46
        }
        if !ok {
            report(p.at, "\(label)\(what) name '\(s)' is not a plain name", "use letters, digits, '_', '-' or '.', not starting with '-' or '.' (':' joins router and domain, as in main:blue)")
        }
    }

    /// A kernel interface name: at most 15 bytes (IFNAMSIZ - 1), no '/', ':' or white space.
    mutating func interfaceName(_ name: String, _ at: SpecPlace, _ label: String, _ what: String, derivedFrom source: String? = nil) {
        let bad = name.isEmpty || name.utf8.count > 15 || name == "." || name == ".." || name.contains(where: { $0 == "/" || $0 == ":" || $0.isWhitespace })
        guard bad else { return }
        let n = name.utf8.count
        if let source {
            report(at, "\(label)'\(source)' gives the interface name '\(name)' (\(what)), \(n) bytes; the kernel takes at most 15",
                   "shorten '\(source)' to \(max(1, 15 - (n - source.utf8.count))) characters or fewer")
        } else if n > 15 {
            report(at, "\(label)interface name '\(name)' (\(what)) is \(n) bytes; the kernel takes at most 15", "shorten it to 15 characters or fewer")
        } else {
            report(at, "\(label)'\(name)' is not a valid interface name (\(what))", "use 1-15 characters without '/', ':' or spaces")
        }
    }

    mutating func checkNames(_ lab: String, _ router: RouterSpec, _ domains: [PlacedDomain], _ hosts: [PlacedHost]) {
        let r = router.name.value
        let up = router.uplink
        interfaceName(up.interface.value, up.interface.at, "", "the router's uplink interface")
        interfaceName(up.name.value, up.name.at, "", "the VRF device of the uplink domain", derivedFrom: nil)
        if up.name.value.utf8.count <= 15 { interfaceName(SpecDerivedNames.transferLink(up.name.value), up.name.at, "", "the transfer link of the netns backend", derivedFrom: up.name.value) }
        contextName(up.name, "domain")
        for d in domains {
            interfaceName(d.model.name, d.spec.name.at, d.label, "the domain's VRF device")
            if d.model.name.utf8.count <= 15 { interfaceName(SpecDerivedNames.transferLink(d.model.name), d.spec.name.at, d.label, "the domain's transfer link on the netns backend", derivedFrom: d.model.name) }
            interfaceName(d.model.bridge, d.spec.bridge.at, d.label, "the domain's bridge")
        }
        // A generated host's name problem repeats for every index: report the first one of each template.
        var reported = Set<String>()
        for h in hosts {
            if h.generated, reported.contains(h.at.path) { continue }
            let before = diagnostics.count
            contextName(Placed(h.model.name, at: h.nameAt), "host", h.label)
            interfaceName(h.model.interface, h.interfaceAt, h.label, "the host's interface")
            if h.model.attachment != .uplink {
                interfaceName(h.model.name, h.nameAt, h.label, "the host's port on the bridge carries its name", derivedFrom: nil)
            }
            if diagnostics.count > before, h.generated { reported.insert(h.at.path) }
        }

        // Duplicates users would trip over: contexts, domains, ids, bridges.
        var contexts: [String: String] = [r: "the router"]
        for h in hosts {
            if let other = contexts[h.model.name] {
                reportOnce(h.nameAt, "\(h.label)'\(h.model.name)' also names \(other)", "give every host a name of its own")
            } else { contexts[h.model.name] = "host at \(h.at.path)" }
        }
        var domainNames: [String: String] = [up.name.value: "the uplink domain"]
        var ids: [UInt32: String] = [:]
        var bridges: [String: String] = [:]
        for d in domains {
            if let other = domainNames[d.model.name] {
                reportOnce(d.spec.name.at, "\(d.label)domain '\(d.model.name)' is defined twice (also \(other))", "give every domain a name of its own")
            } else { domainNames[d.model.name] = "domain at \(d.spec.at.path)" }
            if let other = ids[d.model.id] {
                reportOnce(d.spec.id.at, "\(d.label)id \(d.model.id) is also domain '\(other)''s", "give every domain an id of its own (it keys its conntrack zone and mark)")
            } else { ids[d.model.id] = d.model.name }
            if let other = bridges[d.model.bridge] {
                reportOnce(d.spec.bridge.at, "\(d.label)bridge '\(d.model.bridge)' is also domain '\(other)''s", "give every domain a bridge of its own")
            } else { bridges[d.model.bridge] = d.model.name }
        }

        // Namespaces: <lab>-<host>, <lab>-<router>, <lab>-<router>-<domain> must stay distinct.
        var namespaces: [String: String] = ["\(lab)-\(r)": "the router '\(r)'"]
        for d in domains { namespaces["\(lab)-\(r)-\(d.model.name)"] = "domain '\(d.model.name)' (\(r):\(d.model.name))" }
        for h in hosts where h.model.name != r {
            let ns = "\(lab)-\(h.model.name)"
            if let other = namespaces[ns] {
                reportOnce(h.nameAt, "\(h.label)host '\(h.model.name)' would live in namespace '\(ns)', which is the namespace of \(other)",
                       "rename the host (names of the form \(r)-DOMAIN are the router's)")
            } else { namespaces[ns] = "host '\(h.model.name)'" }
        }

        // Devices in the router's namespace (the VRF backend holds them all in one): VRFs, the
        // uplink interface, bridges, bridge ports (host names) and the netns transfer links.
        var devices: [String: String] = ["lo": "the loopback", up.interface.value: "the uplink interface", up.name.value: "the VRF of domain '\(up.name.value)'"]
        func claim(_ name: String, _ what: String, _ at: SpecPlace, _ label: String) -> Bool {
            if let other = devices[name], other != what {
                reportOnce(at, "\(label)'\(name)' would name two devices in the router: \(what) and \(other)", "rename one of them")
                return false
            }
            devices[name] = what
            return true
        }
        for d in domains {
            _ = claim(d.model.name, "the VRF of domain '\(d.model.name)'", d.spec.name.at, d.label)
            _ = claim(SpecDerivedNames.transferLink(d.model.name), "the transfer link of domain '\(d.model.name)'", d.spec.name.at, d.label)
            _ = claim(d.model.bridge, "the bridge of domain '\(d.model.name)'", d.spec.bridge.at, d.label)
        }
        for h in hosts where h.model.attachment != .uplink {
            _ = claim(h.model.name, "the bridge port of host '\(h.model.name)'", h.nameAt, h.label)
        }
    }

    // MARK: Links

    /// Two ends of one link with the same address would each answer for it.
    mutating func checkLinks(_ router: RouterSpec, _ uplink: [IPPrefix], _ domains: [PlacedDomain], _ hosts: [PlacedHost]) {
        var onUplink: [IPAddress: String] = [:]
        for a in uplink { onUplink[a.address] = "the router's uplink interface" }
        for h in hosts where h.model.attachment == .uplink {
            for a in h.model.addresses {
                if let other = onUplink[a.address] {
                    report(h.at.key("addresses", h.at.position), "\(h.model.name)'s address \(a.address) is also \(other)'s on the uplink's link", "use another address")
                } else { onUplink[a.address] = "host '\(h.model.name)'" }
            }
        }
        for d in domains {
            var owners: [IPAddress: String] = [:]
            for a in d.model.addresses { owners[a.address] = "the gateway's (domain '\(d.model.name)')" }
            for h in hosts where h.model.attachment == .domain(d.model.name) {
                for a in h.model.addresses {
                    if let other = owners[a.address] {
                        report(h.at.key("addresses", h.at.position), "\(h.label)address \(a.address) of '\(h.model.name)' is also \(other) on bridge '\(d.model.bridge)'",
                               "give every host on a bridge its own address")
                    } else { owners[a.address] = "host '\(h.model.name)''s" }
                }
            }
        }
    }

    // MARK: Expectations

    mutating func expectation(_ e: ExpectationSpec, _ hosts: Set<String>) -> Expectation? {
        if !hosts.contains(e.from.value) {
            let n = nearest(e.from.value, in: Array(hosts))
            report(e.from.at, "no host is named '\(e.from.value)'", n.map { "did you mean '\($0)'?" } ?? "use a host's name")
        }
        let to = address(e.to)
        let proto = ProbeProtocol(rawValue: e.proto.value)
        if proto == nil { report(e.proto.at, "unknown protocol '\(e.proto.value)'", "use icmp, udp or tcp") }
        let outcome = Expectation.Outcome(rawValue: e.expect.value)
        if outcome == nil { report(e.expect.at, "unknown outcome '\(e.expect.value)'", "use reach or blocked") }
        var source: IPAddress?
        if let s = e.source {
            source = address(s)
            if outcome == .blocked, source != nil {
                report(s.at, "a blocked probe arrives nowhere, so no source is seen", "remove 'source' or expect reach")
            }
        }
        guard hosts.contains(e.from.value), let to, let proto, let outcome, e.source == nil || source != nil else { return nil }
        let pos = e.at.position.map { "\($0.line):\($0.column)" }
        let location = pos.map { p in file.map { "\($0):\(p)" } ?? p }
        return Expectation(from: e.from.value, to: to, proto: proto, outcome: outcome, source: source, location: location)
    }

    func list(_ p: [IPPrefix]) -> String { p.map(\.description).joined(separator: ", ") }
}

/// Names the backends derive from the lab's names, as the plans spell them, so the file's
/// checks count what the kernel will be asked to create (NetnsPlan: `t-<domain>`).
public enum SpecDerivedNames {
    public static func transferLink(_ domain: String) -> String { "t-\(domain)" }
}
