import NetAddress

/// A route a check adds for the run and removes afterwards, in a context of the lab.
public struct ProbeRoute: Equatable, Sendable {
    public var context: String
    public var route: PlannedRoute
    public init(context: String, route: PlannedRoute) {
        self.context = context
        self.route = route
    }
}

/// Rows that run together, with the probe routes they need. Subscribers of different domains
/// share addresses, and the router can route an address from the uplink into one domain at a
/// time: each further domain holding it gets a phase of its own.
public struct CheckPhase: Sendable {
    public var probes: [Probe] = []
    public var pairs: [ProbePair] = []
    public var routes: [ProbeRoute] = []
    /// Rows in two steps: the opener first, then the row, aimed at what the opener saw.
    public var inbound: [InboundRow] = []
    public init() {}
}

/// Inbound traffic to a live mapping: `opener` (a subscriber's UDP datagram to the uplink) opens
/// a mapping, and the uplink side sees its public address and port; `probe` is then sent from
/// another external endpoint to exactly that address and port (`destination` and
/// `destinationPort` are set from the opener's observation when it runs) and looked for at the
/// subscriber, on the port the opener sent from.
public struct InboundRow: Sendable {
    public var opener: Probe
    public var probe: Probe
    public init(opener: Probe, probe: Probe) {
        self.opener = opener
        self.probe = probe
    }

    /// The row to run once the opener's datagram was seen at the uplink from `mapped`:`port`.
    public func aimed(at mapped: IPAddress, port: UInt16) -> Probe {
        var p = probe
        p.destination = mapped
        p.destinationPort = port
        return p
    }
}

/// How many of the quadratic pair rows a subscriber gets: the rest of the matrix grows linearly
/// with subscribers. The seed lab is small enough that every pair is within the sample.
public struct CheckSampling: Equatable, Sendable {
    /// Neighbours on the same bridge, per subscriber.
    public var neighbours: Int
    /// Hosts in other domains, per subscriber (taken round-robin over the other domains).
    public var crossDomain: Int
    /// Same-port pairs per address shared across domains.
    public var samePortPerAddress: Int
    /// Neighbour rows in all, at most: each resolves its addresses at both ends, and the kernel's
    /// neighbour table is one for every namespace (gc_thresh3 = 1024 a family, not raisable from a
    /// lab namespace); thousands at once overflow it and fail rows that have nothing to do with
    /// neighbours. Rows through the router use the plan's permanent entries.
    public var neighbourBudget: Int
    /// Subscribers per domain whose live mapping is probed from another external endpoint.
    public var inboundPerDomain: Int

    public init(neighbours: Int = 2, crossDomain: Int = 2, samePortPerAddress: Int = 1, neighbourBudget: Int = 200,
                inboundPerDomain: Int = 1) {
        self.inboundPerDomain = inboundPerDomain
        self.neighbours = neighbours
        self.crossDomain = crossDomain
        self.samePortPerAddress = samePortPerAddress
        self.neighbourBudget = neighbourBudget
    }

    public static let standard = CheckSampling()

    public var description: String {
        "sampled: \(neighbours) neighbours (at most \(neighbourBudget) neighbour rows in all, spread over the domains) and \(crossDomain) hosts of other domains per subscriber, \(samePortPerAddress) same-port pair per shared address, \(inboundPerDomain) inbound-mapping row per domain"
    }
}

/// The check matrix, computed from the lab model: every example ping of the seed from every
/// client where it applies, what a CGN must also show, negative rows observed at the target with
/// what stops them, and the lab's own expectations.
public struct CheckMatrix {
    public var phases: [CheckPhase] = [CheckPhase()]
    public let sampling: CheckSampling

    /// Every probe of every phase, in run order.
    public var probes: [Probe] { phases.flatMap(\.probes) }
    public var pairs: [ProbePair] { phases.flatMap(\.pairs) }
    public var inbound: [InboundRow] { phases.flatMap(\.inbound) }
    /// Every probe route of every phase, once.
    public var probeRoutes: [ProbeRoute] {
        var out: [ProbeRoute] = []
        for r in phases.flatMap(\.routes) where !out.contains(r) { out.append(r) }
        return out
    }

    /// `endpoint` maps a context name (and, on the VRF backend, its device) to an open namespace.
    public init(lab: Lab, backend: Backend, sampling: CheckSampling = .standard,
                endpoint: (String) throws -> ProbeEndpoint, port: () -> UInt16) throws {
        self.sampling = sampling
        let r = lab.router
        func v4(_ h: Host) -> [IPAddress] { h.addresses.filter { $0.family == .v4 }.map(\.address) }
        func v6(_ h: Host) -> IPAddress? { h.addresses.first { $0.family == .v6 }?.address }
        func gateway(_ d: SubscriberDomain, _ f: IPFamily) -> IPAddress? { d.addresses.first { $0.family == f }?.address }
        let routerContext = "\(r.name):\(r.uplink.name)"
        let policy = BlockingPolicy(lab: lab, backend: backend)

        guard let uplink = lab.uplinkHost else { return }
        let up = try endpoint(uplink.name)
        let uplinkPublic = uplink.loopbackAddresses.first { $0.family == .v4 }?.address
        let uplinkV6 = v6(uplink)
        let nat = r.nat.publicAddress
        // With a pool, each subscriber leaves with the address its port block is on.
        let blocks = lab.portBlockPolicy
        func publicSource(_ h: Host) -> IPAddress {
            guard let blocks else { return nat }
            return lab.portBlock(of: h, policy: blocks)?.publicAddress ?? nat
        }
        // The admin-prohibited error's source differs by backend, by design.
        let rejectSourceNote = backend == .netns
            ? "netns: the error comes from \(policy.routerLoopbackV4.map { "\($0) " } ?? "")(RFC 7600): the router has no IPv4 address on its transfer links"
            : "vrf: the error comes from the domain bridge's own address, the router's address in that VRF"

        func add(_ kind: RowKind, _ name: String, _ from: Host, _ dst: IPAddress, _ proto: ProbeProtocol = .icmp, bind: IPAddress? = nil,
                 target: ProbeEndpoint, iface: String?, expect: ProbeExpectation, fromEndpoint: ProbeEndpoint? = nil,
                 phase: Int = 0) throws {
            var p = Probe(name: name, from: try fromEndpoint ?? endpoint(from.name), bindAddress: bind,
                          sourcePort: proto == .icmp ? nil : port(), destination: dst, proto: proto,
                          target: target, targetInterface: iface, expect: expect, kind: kind)
            if expect == .blocked { (p.blockedBy, p.evidence) = policy.blocking(from: from, to: dst) }
            while phases.count <= phase { phases.append(CheckPhase()) }
            phases[phase].probes.append(p)
        }
        func ping(_ dst: IPAddress, bind: IPAddress? = nil) -> String {
            (bind.map { "ping -I \($0) " } ?? "ping ") + dst.description
        }
        var byDomain: [String: [Host]] = [:]
        for h in lab.hosts { if case .domain(let d) = h.attachment { byDomain[d, default: []].append(h) } }
        func hosts(in d: String) -> [Host] { byDomain[d] ?? [] }
        let subscribersInOrder = r.subscribers.flatMap { hosts(in: $0.name) }

        for (di, d) in r.subscribers.enumerated() {
            let gwTarget = try endpoint("\(r.name):\(d.name)")
            let local = hosts(in: d.name)
            // This domain's share of the neighbour rows, spread evenly over its subscribers.
            let wanted = local.count * min(sampling.neighbours, max(0, local.count - 1)) * 2
            let share = max(2, sampling.neighbourBudget / max(1, r.subscribers.count))
            let every = wanted <= share ? 1 : (wanted + share - 1) / share
            for (i, h) in local.enumerated() {
                let src4 = v4(h).first { r.nat.inside.contains($0) }
                let src6 = v6(h)
                // The gateway, both families.
                if let g = gateway(d, .v4), let s = src4 {
                    try add(.gateway, ping(g), h, g, target: gwTarget, iface: d.bridge, expect: .reach(source: s))
                }
                if let g = gateway(d, .v6), let s = src6 {
                    try add(.gateway, ping(g), h, g, target: gwTarget, iface: d.bridge, expect: .reach(source: s))
                }
                // Neighbours on the same bridge: the next ones in the domain, cyclically.
                let neighbourCount = i % every == 0 ? min(sampling.neighbours, local.count - 1) : 0
                for k in stride(from: 1, through: neighbourCount, by: 1) {
                    let o = local[(i + k) % local.count]
                    let t = try endpoint(o.name)
                    if let a = v4(o).first(where: { r.nat.inside.contains($0) }), let s = src4, a != s {
                        try add(.neighbour, ping(a), h, a, target: t, iface: o.interface, expect: .reach(source: s))
                    }
                    if let a = v6(o), let s = src6 {
                        try add(.neighbour, ping(a), h, a, target: t, iface: o.interface, expect: .reach(source: s))
                    }
                }
                // IPv6 is routed across domains; IPv4 to another domain's routed address is refused.
                // Hosts of the other domains, round-robin over the domains, starting at this host's index.
                let otherDomains = (1..<max(1, r.subscribers.count)).map { r.subscribers[(di + $0) % r.subscribers.count] }
                    .filter { $0.name != d.name }.map { hosts(in: $0.name) }.filter { !$0.isEmpty }
                var others: [Host] = []
                let longest = otherDomains.map(\.count).max() ?? 0
                round: for k in 0..<longest {
                    for hs in otherDomains where k < hs.count {
                        if others.count >= sampling.crossDomain { break round }
                        others.append(hs[(i + k) % hs.count])
                    }
                }
                for o in others {
                    let t = try endpoint(o.name)
                    guard case .domain(let odName) = o.attachment, let od = lab.domain(named: odName) else { continue }
                    if let a = v6(o), let s = src6 {
                        try add(.crossDomain, ping(a), h, a, target: t, iface: o.interface, expect: .reach(source: s))
                    }
                    for a in v4(o) where !r.nat.inside.contains(a) && od.routed.contains(where: { $0.contains(a) }) {
                        try add(.crossDomainV4, ping(a), h, a, target: t, iface: o.interface, expect: .blocked)
                        try add(.crossDomainV4, "tcp \(a)", h, a, .tcp, target: t, iface: o.interface, expect: .blocked)
                        let n = phases[0].probes.count
                        phases[0].probes[n - 2].note = rejectSourceNote
                        phases[0].probes[n - 1].note = rejectSourceNote
                    }
                }
                // The uplink and the router's uplink address over IPv6: the real source is seen.
                if let a = uplinkV6, let s = src6 {
                    try add(.uplinkV6, ping(a), h, a, target: up, iface: uplink.interface, expect: .reach(source: s))
                }
                if let a = r.uplink.addresses.first(where: { $0.family == .v6 })?.address, let s = src6 {
                    // Delivered locally in the router: it arrives on the domain's link, not on muplink.
                    try add(.routerV6, ping(a), h, a, target: try endpoint(routerContext), iface: nil, expect: .reach(source: s))
                }
                // IPv4 to the uplink's public address goes through NAT, once.
                if let a = uplinkPublic {
                    try add(.nat, ping(a), h, a, target: up, iface: uplink.interface, expect: .reach(source: publicSource(h)))
                    for a2 in v4(h) where !r.nat.inside.contains(a2) {
                        // A routed public address on the subscriber: no NAT.
                        try add(.routedOut, ping(a, bind: a2), h, a, bind: a2, target: up, iface: uplink.interface, expect: .reach(source: a2))
                    }
                }
            }
        }

        // Per-port source binding (BridgeBinding): in each domain of two or more hosts, the first
        // sends with the second's address, one row per family, to the domain's gateway, where it
        // is looked for on the bridge. UDP: a datagram socket may send from an address that is not
        // its host's (IP_TRANSPARENT), an ICMP echo socket may not.
        for d in r.subscribers {
            let local = hosts(in: d.name)
            guard local.count >= 2 else { continue }
            let (h, o) = (local[0], local[1])
            let ref = BridgeBinding.unboundRule(lab, domain: d, backend: backend)
            for f in [IPFamily.v4, .v6] {
                let theirs = f == .v4 ? v4(o).first { r.nat.inside.contains($0) } : v6(o)
                guard let g = gateway(d, f), let spoofed = theirs, !h.addresses.contains(where: { $0.address == spoofed }) else { continue }
                phases[0].probes.append(Probe(
                    name: "udp \(g) sent from \(spoofed) (\(o.name)'s address)", from: try endpoint(h.name), bindAddress: spoofed,
                    sourcePort: port(), destination: g, proto: .udp, target: try endpoint("\(r.name):\(d.name)"),
                    targetInterface: d.bridge, expect: .blocked, kind: .spoofNeighbour, blockedBy: .rule(ref), evidence: .counted(ref)))
            }
        }

        // From the uplink: routed addresses are reached without NAT, IPv6 is routed in, and
        // nothing else inside can be opened over IPv4.
        var occurrences: [IPAddress: Int] = [:]
        for d in r.subscribers {
            for h in hosts(in: d.name) {
                let t = try endpoint(h.name)
                for a in v4(h) where d.routed.contains(where: { $0.contains(a) }) {
                    // The route's own source, else what the kernel picks: the uplink host's address on the
                    // gateway's subnet.
                    let route = uplink.routes.first { $0.destination.contains(a) }
                    let src = route?.source ?? route.flatMap { rt in uplink.addresses.first { $0.network.contains(rt.gateway) }?.address } ?? uplinkPublic
                    try add(.routedIn, ping(a), uplink, a, target: t, iface: h.interface, expect: .reach(source: src), fromEndpoint: up)
                }
                if let a = v6(h), let s = uplinkV6 {
                    try add(.inboundV6, ping(a), uplink, a, target: t, iface: h.interface, expect: .reach(source: s), fromEndpoint: up)
                }
                // Subscriber addresses that are not the router's own: an upstream that routes them
                // to the router must reach nobody, and only the policy may stop it.
                for a in v4(h) where policy.isUnsolicitedTarget(a) {
                    let phase = occurrences[a, default: 0]
                    occurrences[a] = phase + 1
                    let routes = policy.probeRoutes(to: a, in: d)
                    while phases.count <= phase { phases.append(CheckPhase()) }
                    for pr in routes where !phases[phase].routes.contains(pr) { phases[phase].routes.append(pr) }
                    for proto in [ProbeProtocol.icmp, .udp, .tcp] {
                        let name = proto == .icmp ? ping(a) : "\(proto) \(a)"
                        try add(.unsolicited, name + " (unsolicited)", uplink, a, proto, bind: policy.uplinkSource, target: t,
                                iface: h.interface, expect: .blocked, fromEndpoint: up, phase: phase)
                    }
                }
            }
        }

        // The router itself reaches the uplink's gateway (broken in the seed once NAT was on).
        if let gw = r.uplink.gateways.first(where: { $0.family == .v4 }), let own = r.uplink.addresses.first(where: { $0.family == .v4 }) {
            phases[0].probes.append(Probe(name: ping(gw), from: try endpoint(routerContext), destination: gw, proto: .icmp,
                                          target: up, targetInterface: uplink.interface, expect: .reach(source: own.address),
                                          kind: .routerUplink))
        }

        // Hosts in different domains sharing an address reach the uplink at the same moment with
        // the same source port: NAT must give them distinct mapped ports.
        if let dst = uplinkPublic {
            var holders: [IPAddress: [Host]] = [:]
            var order: [IPAddress] = []
            for h in subscribersInOrder {
                for a in v4(h) {
                    if holders[a] == nil { order.append(a) }
                    holders[a, default: []].append(h)
                }
            }
            for shared in order {
                let hs = holders[shared]!
                var taken = 0
                outer: for (i, a) in hs.enumerated() {
                    for b in hs[(i + 1)...] where a.attachment != b.attachment {
                        if taken >= sampling.samePortPerAddress { break outer }
                        taken += 1
                        for proto in [ProbeProtocol.icmp, .udp, .tcp] {
                            let p = proto == .icmp ? nil : port()
                            func probe(_ h: Host) throws -> Probe {
                                Probe(name: "\(proto) \(dst)", from: try endpoint(h.name), sourcePort: p, destination: dst,
                                      proto: proto, target: up, targetInterface: uplink.interface, expect: .reach(source: publicSource(h)),
                                      kind: .samePort)
                            }
                            phases[0].pairs.append(ProbePair(name: "\(proto) \(dst) same \(proto == .icmp ? "echo id" : "port"), both from \(shared)",
                                                             first: try probe(a), second: try probe(b)))
                        }
                    }
                }
            }
        }

        // Inbound to a live mapping from an external endpoint the subscriber never sent to:
        // delivered under endpoint-independent filtering, stopped under address-and-port-dependent
        // filtering. A sample: the first subscribers of each domain that own a block (or, without
        // port blocks, that leave through NAT).
        if let dst = uplinkPublic, sampling.inboundPerDomain > 0 {
            let independent = blocks != nil && r.nat.filtering == .endpointIndependent
            for d in r.subscribers {
                let chosen = hosts(in: d.name).filter { h in
                    v4(h).contains { r.nat.inside.contains($0) } && (blocks.map { lab.portBlock(of: h, policy: $0) != nil } ?? true)
                }.prefix(sampling.inboundPerDomain)
                for h in chosen {
                    let mapped = publicSource(h)
                    let insidePort = port()
                    let opener = Probe(name: "udp \(dst) (opens a mapping)", from: try endpoint(h.name), sourcePort: insidePort,
                                       destination: dst, proto: .udp, target: up, targetInterface: uplink.interface,
                                       expect: .reach(source: mapped), kind: .inboundMapping)
                    var p = Probe(name: "udp \(mapped) to \(h.name)'s mapping from another port", from: up, bindAddress: dst,
                                  sourcePort: port(), destination: mapped, proto: .udp, target: try endpoint(h.name),
                                  targetInterface: h.interface, expect: independent ? .reach(source: dst) : .blocked,
                                  kind: .inboundMapping)
                    p.listenerPort = insidePort
                    if !independent { (p.blockedBy, p.evidence) = policy.blockingInbound(to: mapped) }
                    p.note = independent ? "endpoint-independent filtering" : "address-and-port-dependent filtering"
                    phases[0].inbound.append(InboundRow(opener: opener, probe: p))
                    // Public ports no live mapping holds reach nobody, under either filtering: the
                    // last port of this subscriber's block, and one below every block. (The NAT
                    // picks a flow's port in its block by hash: under endpoint-independent
                    // filtering a live UDP flow of the subscriber holds the last port with a chance
                    // of one in the block's size, and the row then fails as a leak.)
                    guard let blocks, let block = lab.portBlock(of: h, policy: blocks) else { continue }
                    var unheld: [(UInt16, String)] = [(block.ports.upperBound, "in \(h.name)'s block, unheld")]
                    if blocks.ports.lowerBound > 1 { unheld.append((blocks.ports.lowerBound - 1, "outside every block")) }
                    for (publicPort, why) in unheld {
                        var u = Probe(name: "udp \(mapped) port \(publicPort) (\(why))", from: up, bindAddress: dst, sourcePort: port(),
                                      destination: mapped, proto: .udp, target: try endpoint(h.name), targetInterface: h.interface,
                                      expect: .blocked, kind: .inboundUnheld)
                        // A leak untranslated keeps the port; a translated one is still seen by its token.
                        u.destinationPort = publicPort
                        u.listenerPort = publicPort
                        (u.blockedBy, u.evidence) = policy.blockingInbound(to: mapped)
                        phases[0].probes.append(u)
                    }
                }
            }
        }

        // The lab's own expectations: extra rows, in phase 0 (an address shared across domains
        // is looked for where phase 0 routes it: at its first holder).
        for e in lab.expectations {
            guard let from = lab.hosts.first(where: { $0.name == e.from }) else {
                throw UsageError("expectation from '\(e.from)'\(e.location.map { " at \($0)" } ?? ""): no such host in lab \(lab.name)")
            }
            let (targetName, iface) = policy.expectationTarget(from: from, to: e.to)
            let expect: ProbeExpectation = e.outcome == .reach ? .reach(source: e.source) : .blocked
            let name = (e.proto == .icmp ? "ping" : e.proto.rawValue) + " \(e.to) (expected \(e.outcome.rawValue))"
            let bind = from.attachment == .uplink && policy.isUnsolicitedTarget(e.to) ? policy.uplinkSource : nil
            try add(.expectation, name, from, e.to, e.proto, bind: bind, target: try endpoint(targetName), iface: iface,
                    expect: expect, fromEndpoint: from.attachment == .uplink ? up : nil)
            let n = phases[0].probes.count
            phases[0].probes[n - 1].note = e.location.map { "expectation at \($0)" }
            if from.attachment == .uplink && policy.isUnsolicitedTarget(e.to), let d = policy.firstDomain(holding: e.to) {
                for pr in policy.probeRoutes(to: e.to, in: d) where !phases[0].routes.contains(pr) { phases[0].routes.append(pr) }
            }
        }
    }
}

/// What the lab's policy says stops a packet, and the probe routes that leave only the policy in
/// its way. Derived from the lab model and the backend's plan: no addresses or names of its own.
struct BlockingPolicy {
    let lab: Lab
    let backend: Backend
    let plan: Plan
    let uplinkSource: IPAddress?
    let routerOwn: Set<IPAddress>
    let routed: [IPPrefix]
    /// The plan's routes in the router namespace, and the route into each domain found there.
    let routerRoutes: [PlannedRoute]
    private var into: [String: PlannedRoute?] = [:]

    init(lab: Lab, backend: Backend) {
        self.lab = lab
        self.backend = backend
        plan = backend == .netns ? Plan.netns(lab) : Plan.vrf(lab)
        // An Internet host's address: the uplink's link address is also a subscriber gateway's
        // (the seed's 100.127.255.254), so a leaked packet from it would die as a martian inside
        // and the row could never fail.
        uplinkSource = lab.uplinkHost?.loopbackAddresses.first { $0.family == .v4 }?.address
        routerOwn = Set(lab.router.uplink.addresses.map(\.address))
        routed = lab.router.subscribers.flatMap(\.routed)
        let routerNS = lab.namespaceName(lab.router.name)
        routerRoutes = plan.steps.compactMap { s -> PlannedRoute? in
            if case .addRoute(let ns, let route) = s, ns == routerNS { return route } else { return nil }
        }
        for d in lab.router.subscribers { into[d.name] = findRouteIntoDomain(d) }
    }

    /// The router's own IPv4 address on its loopback (netns: the RFC 7600 source of its ICMP errors).
    var routerLoopbackV4: IPAddress? {
        let routerNS = lab.namespaceName(lab.router.name)
        for s in plan.steps {
            if case .addAddress(let ns, "lo", let a) = s, ns == routerNS, a.family == .v4 { return a.address }
        }
        return nil
    }

    /// An inside IPv4 address of a subscriber that an upstream must not reach.
    func isUnsolicitedTarget(_ a: IPAddress) -> Bool {
        a.family == .v4 && lab.router.nat.inside.contains(a) && !routerOwn.contains(a)
            && !routed.contains { $0.contains(a) }
    }

    func firstDomain(holding a: IPAddress) -> SubscriberDomain? {
        lab.router.subscribers.first { d in lab.hosts(in: d.name).contains { $0.addresses.contains { $0.address == a } } }
    }

    func rule(_ comment: String) -> RuleRef {
        RuleRef(context: lab.router.name, table: Ruleset.tableName, chain: Ruleset.forwardChain, comment: comment)
    }

    /// The rule of the ruleset that stops `from` -> `to`, and how a row proves it.
    func blocking(from: Host, to a: IPAddress) -> (BlockedBy, BlockEvidence) {
        let r = lab.router
        if from.attachment == .uplink && isUnsolicitedTarget(a) {
            let ref = rule(Ruleset.Comment.unsolicited)
            return (.rule(ref), .counted(ref))
        }
        if case .domain(let dn) = from.attachment, a.family == .v4,
           r.subscribers.contains(where: { $0.name != dn && $0.routed.contains { $0.contains(a) } }) {
            // The VRF backend has one such rule per ingress VRF; the netns backend one for all.
            return (.rule(rule(Ruleset.Comment.interDomain(from: backend == .vrf ? dn : nil))), .reject)
        }
        return (.mechanism("no rule of the lab's policy is known to stop this: the row waits its whole timeout for a leak"), .wait)
    }

    /// What stops a packet from outside to a mapped public address and port under
    /// address-and-port-dependent filtering: a public address of the router's own is delivered
    /// to the router itself (no DNAT sends it on), where no socket holds the port; any other is
    /// forwarded, and the forward chain drops unsolicited IPv4 from the uplink.
    func blockingInbound(to publicAddress: IPAddress) -> (BlockedBy, BlockEvidence) {
        if routerOwn.contains(publicAddress) {
            // The input chain's counter proves it ended in the router (the port unreachable it
            // answers is rate-limited per peer, so it cannot be relied on).
            let counter = RuleRef(context: lab.router.name, table: Ruleset.tableName, chain: "input", comment: Ruleset.Comment.localUDP)
            return (.mechanism("delivered to the router itself (\(publicAddress) is its own address and nothing translates the packet on): no socket of the router holds the port, its UDP stack answers port unreachable"), .counted(counter))
        }
        let ref = rule(Ruleset.Comment.unsolicited)
        return (.rule(ref), .counted(ref))
    }

    /// Routes that let an upstream's probe to `a` reach domain `d` if the policy did not stop it:
    /// on the uplink host, `a` via the router from the uplink's public address; in the router, `a`
    /// into `d` as the plan routes `d`'s own routed prefixes.
    func probeRoutes(to a: IPAddress, in d: SubscriberDomain) -> [ProbeRoute] {
        var out: [ProbeRoute] = []
        let r = lab.router
        if let uplink = lab.uplinkHost, let gw = r.uplink.addresses.first(where: { $0.family == .v4 })?.address {
            out.append(ProbeRoute(context: uplink.name,
                                  route: PlannedRoute(IPPrefix(a, 32), via: gw, device: uplink.interface, source: uplinkSource)))
        }
        if let into = into[d.name] ?? nil {
            out.append(ProbeRoute(context: r.name, route: PlannedRoute(IPPrefix(a, 32), via: into.gateway, device: into.device, table: into.table)))
        }
        return out
    }

    /// How the uplink domain's table reaches `d` in the plan: its route to one of `d`'s routed
    /// prefixes (netns: over the transfer link; VRF: leaked into the domain's VRF device).
    func findRouteIntoDomain(_ d: SubscriberDomain) -> PlannedRoute? {
        let upTable: UInt32 = backend == .vrf ? (lab.vrfTable(lab.router.uplink.name) ?? 254) : 254
        let routes = routerRoutes
        if let r = routes.first(where: { $0.table == upTable && d.routed.contains($0.destination) && $0.device != nil }) {
            return r
        }
        // A domain without routed prefixes: netns, its return table's route to the inside prefix;
        // VRF, the domain's VRF device from the uplink's table.
        if backend == .vrf { return PlannedRoute(IPPrefix(lab.router.nat.inside.address, 32), device: d.name, table: upTable) }
        return routes.first { $0.table != upTable && $0.destination == lab.router.nat.inside && $0.device != d.bridge }
            .map { PlannedRoute($0.destination, via: $0.gateway, device: $0.device, table: upTable) }
    }

    /// Where an expectation's packet is looked for: the host (or router context) that owns the
    /// address as seen from `from`; an address nobody in the lab owns, where it leaves the lab.
    func expectationTarget(from: Host, to a: IPAddress) -> (String, String?) {
        let r = lab.router
        func owns(_ h: Host) -> Bool { h.addresses.contains { $0.address == a } }
        if case .domain(let dn) = from.attachment {
            if let h = lab.hosts(in: dn).first(where: owns) { return (h.name, h.interface) }
            if let d = lab.domain(named: dn), d.addresses.contains(where: { $0.address == a }) { return ("\(r.name):\(dn)", d.bridge) }
        }
        if let u = lab.uplinkHost, owns(u) || u.loopbackAddresses.contains(where: { $0.address == a }) {
            return (u.name, from.attachment == .uplink ? nil : u.interface)
        }
        if r.uplink.addresses.contains(where: { $0.address == a }) { return ("\(r.name):\(r.uplink.name)", nil) }
        for d in r.subscribers {
            if let h = lab.hosts(in: d.name).first(where: { owns($0) || $0.loopbackAddresses.contains { $0.address == a } }) {
                return (h.name, owns(h) ? h.interface : nil)
            }
        }
        if let u = lab.uplinkHost { return (u.name, u.interface) }
        return (from.name, nil)
    }
}

extension CheckMatrix {
    /// How many rows the matrix of a lab has (probes, same-port pairs and inbound rows), without opening anything.
    public static func rowCount(_ lab: Lab, backend: Backend = .netns, sampling: CheckSampling = .standard) -> Int {
        guard let m = try? CheckMatrix(lab: lab, backend: backend, sampling: sampling,
                                       endpoint: { ProbeEndpoint(context: $0, namespaceFD: -1) }, port: { 1 }) else { return 0 }
        return m.probes.count + m.pairs.count + m.inbound.count
    }
}
