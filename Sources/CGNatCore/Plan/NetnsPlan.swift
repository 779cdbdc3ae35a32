import NetAddress

/// A plan: what `up` does, step by step, and the contexts it makes.
public struct Plan: Equatable, Sendable {
    public var lab: Lab
    public var backend: Backend
    public var steps: [Step]
    public var contexts: [Context]
    public var ruleset: Ruleset

    /// Namespaces in creation order; `down` removes them in reverse.
    public var namespaces: [String] {
        steps.compactMap { if case .createNamespace(let ns) = $0 { return ns } else { return nil } }
    }
}

extension Plan {
    /// Sysctls every namespace of the lab gets before any link exists. New namespaces copy some
    /// IPv4 `all`/`default` values from the host, so each one the design relies on is explicit.
    static func baseSysctls(router: Bool) -> [(String, String)] {
        [
            // rp_filter (even loose) drops on unnumbered links; the effective value is the max of
            // `all` and the device's, so both must be 0 before devices exist.
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
            // No tentative addresses stalling the first pings.
            ("net.ipv6.conf.all.accept_dad", "0"),
            ("net.ipv6.conf.default.accept_dad", "0"),
            // Native ICMP probes (and users' unprivileged ping) use datagram ICMP sockets.
            ("net.ipv4.ping_group_range", "0 2147483647"),
            ("net.ipv4.ip_forward", router ? "1" : "0"),
            ("net.ipv6.conf.all.forwarding", router ? "1" : "0"),
        ] + (router ? [
            // `check` concludes on the router's admin-prohibited errors; the kernel's per-peer
            // limit (a burst of 6, then one a second) made a fourth check in a row fail its rows.
            ("net.ipv4.icmp_ratelimit", "0"),
            ("net.ipv6.icmp.ratelimit", "0"),
        ] : [
            // Hosts route statically: no router solicitations. They go to ff02::2, which a bridge
            // floods to every port, so a thousand subscribers starting at once sent about 90,000
            // packets in the seconds after `up` and overflowed the kernel's backlog.
            ("net.ipv6.conf.all.router_solicitations", "0"),
            ("net.ipv6.conf.default.router_solicitations", "0"),
        ])
    }

    /// The netns backend (DESIGN.md section 3): one namespace per routing domain, transfer links
    /// without IPv4 addresses (IPv4 routes via IPv6 link-local next hops, so no ARP), NAT once in
    /// the uplink domain's namespace, which is also the router context `main`.
    public static func netns(_ lab: Lab) -> Plan {
        let r = lab.router
        let main = lab.namespaceName(r.name)
        func domainNS(_ d: SubscriberDomain) -> String { lab.namespaceName("\(r.name)-\(d.name)") }
        func hostNS(_ h: Host) -> String { lab.namespaceName(h.name) }
        let routerSide = Conventions.routerLinkLocal, domainSide = Conventions.domainLinkLocal
        let linkLocal = { (a: IPAddress) in IPPrefix(a, Conventions.linkLocalLength) }
        let errorSource = Conventions.errorSource
        func transfer(_ d: SubscriberDomain) -> String { Conventions.transferLink(d.name) }
        let transferUp = Conventions.transferLink(r.uplink.name)

        var steps = StepList()

        // Namespaces.
        for h in lab.hosts where h.attachment == .uplink { steps.createNamespace(hostNS(h), router: false) }
        steps.createNamespace(main, router: true)
        for d in r.subscribers { steps.createNamespace(domainNS(d), router: true) }
        for h in lab.hosts where h.attachment != .uplink { steps.createNamespace(hostNS(h), router: false) }

        // Links: veth ends are created directly in their namespaces, with ifindexes of their own.
        var up: [(String, String)] = []   // (namespace, link) to bring up
        for h in lab.hosts where h.attachment == .uplink {
            steps.addVeth(hostNS(h), h.interface, peerNamespace: main, r.uplink.interface)
            up += [(hostNS(h), h.interface), (main, r.uplink.interface)]
        }
        for d in r.subscribers {
            steps.addVeth(main, transfer(d), peerNamespace: domainNS(d), transferUp)
            steps.addBridge(domainNS(d), d.bridge)
            up += [(main, transfer(d)), (domainNS(d), transferUp), (domainNS(d), d.bridge)]
            for h in lab.hosts(in: d.name) {
                steps.addVeth(domainNS(d), h.name, peerNamespace: hostNS(h), h.interface)
                steps.addBridgePort(domainNS(d), h.name, bridge: d.bridge)
                up += [(domainNS(d), h.name), (hostNS(h), h.interface)]
            }
            // Subscribers may send from an address that is local to the router (the NAT address
            // on the uplink): without accept_local they are dropped as martians.
            steps.append(.sysctl(namespace: main, key: "net.ipv4.conf.\(transfer(d)).accept_local", value: "1"))
        }

        // Addresses.
        steps.addHostAddresses(lab)
        for a in r.uplink.addresses { steps.append(.addAddress(namespace: main, link: r.uplink.interface, address: a)) }
        // Router interfaces that forward IPv6 get a static link-local address: the kernel makes its
        // own only when the carrier event arrives (linkwatch, up to a second later), and until then
        // neighbour solicitations for forwarded packets are not sent at all.
        steps.append(.addAddress(namespace: main, link: r.uplink.interface, address: linkLocal(routerSide)))
        steps.append(.addAddress(namespace: main, link: "lo", address: IPPrefix(errorSource, 32)))
        for d in r.subscribers {
            steps.append(.addAddress(namespace: main, link: transfer(d), address: linkLocal(routerSide)))
            steps.append(.addAddress(namespace: domainNS(d), link: transferUp, address: linkLocal(domainSide)))
            for a in d.addresses { steps.append(.addAddress(namespace: domainNS(d), link: d.bridge, address: a)) }
            steps.append(.addAddress(namespace: domainNS(d), link: d.bridge, address: linkLocal(routerSide)))
        }
        steps += up.map { .setUp(namespace: $0.0, link: $0.1) }
        steps.addSubscriberNeighbours(lab, bridgeNamespace: domainNS)
        steps.addUplinkNeighbours(lab, routerNamespace: main)
        steps.addHairpinLoop(lab, routerNamespace: main)

        // Routes.
        steps.addHostRoutes(lab)
        for gw in r.uplink.gateways {
            steps.append(.addRoute(namespace: main, route: PlannedRoute(defaultPrefix(gw.family), via: gw, device: r.uplink.interface)))
        }
        for d in r.subscribers {
            for p in d.routed {
                steps.append(.addRoute(namespace: main, route: PlannedRoute(p, via: domainSide, device: transfer(d))))
            }
            // The domain's return table: only its own prefixes, reached by the fwmark rule.
            let table = returnTable(d)
            for p in [r.nat.inside] + d.routed.filter({ $0.family == .v4 }) {
                steps.append(.addRoute(namespace: main, route: PlannedRoute(p, via: domainSide, device: transfer(d), source: errorSource, table: table)))
            }
            for family in [IPFamily.v4, .v6] {
                steps.append(.addRoute(namespace: domainNS(d), route: PlannedRoute(defaultPrefix(family), via: routerSide, device: transferUp)))
            }
            // Routed prefixes that live on the bridge itself (192.0.2.2 on blue_c2).
            for p in d.routed where p.family == .v4 {
                steps.append(.addRoute(namespace: domainNS(d), route: PlannedRoute(p, device: d.bridge)))
            }
        }

        // Rules: marked replies find their domain before the local table claims the NAT address.
        for d in r.subscribers {
            steps.append(.addRule(namespace: main, rule: PlannedRule(family: .v4, priority: Conventions.fwmarkRuleBase + d.id, fwmark: d.id, table: returnTable(d))))
        }
        steps.append(.addRule(namespace: main, rule: PlannedRule(family: .v4, priority: Conventions.localRulePriority, table: Conventions.localTable)))
        steps.append(.deleteRule(namespace: main, rule: PlannedRule(family: .v4, priority: 0, table: Conventions.localTable)))

        let ruleset = Ruleset(lab: lab, devices: .init(
            subscriberIngress: r.subscribers.map { ($0, transfer($0)) },
            uplinkForwardInput: r.uplink.interface,
            uplinkEgress: r.uplink.interface,
            interDomain: .links(r.subscribers.map(transfer)),
            hairpinOut: lab.hairpinning ? Conventions.hairpinOut : nil, hairpinIn: lab.hairpinning ? Conventions.hairpinIn : nil))
        steps.append(.loadRuleset(namespace: main, ruleset: ruleset.text))
        if !ruleset.elementsByNetlink.isEmpty {
            steps.append(.loadSetElements(namespace: main, table: Ruleset.tableName, maps: ruleset.elementsByNetlink))
        }
        // Per-port source binding on every subscriber bridge (BridgeBinding.swift).
        steps += bridgeBindingSteps(lab, backend: .netns)
        // Start and stop times for the NAT mapping log; must be on before flows exist.
        steps.append(.sysctl(namespace: main, key: "net.netfilter.nf_conntrack_timestamp", value: "1"))
        for t in NATTimers.sysctls { steps.append(.sysctl(namespace: main, key: t.key, value: t.value)) }

        return Plan(lab: lab, backend: .netns, steps: steps.steps, contexts: lab.contexts(backend: .netns), ruleset: ruleset)
    }

    static func returnTable(_ d: SubscriberDomain) -> UInt32 { Conventions.returnTableBase + d.id }
}

func defaultPrefix(_ family: IPFamily) -> IPPrefix {
    IPPrefix(IPAddress.any(family), 0)
}
