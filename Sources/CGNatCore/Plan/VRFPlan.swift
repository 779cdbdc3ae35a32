import NetAddress

extension Plan {
    /// The VRF backend (the seed's design, DESIGN.md section 4): the domains are VRF devices in
    /// one router namespace `main`, cross-domain routes are leaked with `dev <vrf>`, and NAT is
    /// done once, matched on the real egress device. Needs CONFIG_NET_VRF and Linux 5.16+.
    public static func vrf(_ lab: Lab) -> Plan {
        let r = lab.router
        let main = lab.namespaceName(r.name)
        func hostNS(_ h: Host) -> String { lab.namespaceName(h.name) }
        let routerLinkLocal = IPPrefix(Conventions.routerLinkLocal, Conventions.linkLocalLength)
        let upTable = lab.vrfTable(r.uplink.name)!
        func table(_ d: SubscriberDomain) -> UInt32 { lab.vrfTable(d.name)! }

        var steps = StepList()
        for h in lab.hosts where h.attachment == .uplink { steps.createNamespace(hostNS(h), router: false) }
        steps.createNamespace(main, router: true)
        for h in lab.hosts where h.attachment != .uplink { steps.createNamespace(hostNS(h), router: false) }

        // VRFs first: the kernel adds the l3mdev rule (pref 1000) with the first one.
        steps.addVRF(main, r.uplink.name, table: upTable)
        for d in r.subscribers { steps.addVRF(main, d.name, table: table(d)) }
        var up: [(String, String)] = [(main, r.uplink.name)] + r.subscribers.map { (main, $0.name) }

        for h in lab.hosts where h.attachment == .uplink {
            steps.addVeth(hostNS(h), h.interface, peerNamespace: main, r.uplink.interface)
            // Enslave before addresses: enslaving restarts the link and drops its global IPv6.
            steps.append(.setMaster(namespace: main, link: r.uplink.interface, master: r.uplink.name))
            up += [(hostNS(h), h.interface), (main, r.uplink.interface)]
        }
        for d in r.subscribers {
            steps.addBridge(main, d.bridge)
            steps.append(.setMaster(namespace: main, link: d.bridge, master: d.name))
            up.append((main, d.bridge))
            for h in lab.hosts(in: d.name) {
                steps.addVeth(main, h.name, peerNamespace: hostNS(h), h.interface)
                steps.addBridgePort(main, h.name, bridge: d.bridge)
                up += [(main, h.name), (hostNS(h), h.interface)]
            }
        }

        steps.addHostAddresses(lab)
        for a in r.uplink.addresses { steps.append(.addAddress(namespace: main, link: r.uplink.interface, address: a)) }
        // Static link-locals on forwarding interfaces, as on the netns backend: the kernel's own
        // arrive only with the (possibly delayed) carrier event.
        steps.append(.addAddress(namespace: main, link: r.uplink.interface, address: routerLinkLocal))
        for d in r.subscribers {
            for a in d.addresses { steps.append(.addAddress(namespace: main, link: d.bridge, address: a)) }
            steps.append(.addAddress(namespace: main, link: d.bridge, address: routerLinkLocal))
        }
        steps += up.map { .setUp(namespace: $0.0, link: $0.1) }
        steps.addSubscriberNeighbours(lab) { _ in main }
        steps.addUplinkNeighbours(lab, routerNamespace: main)
        steps.addHairpinLoop(lab, routerNamespace: main, table: upTable, vrf: r.uplink.name)

        steps.addHostRoutes(lab)
        // up: defaults to the uplink, each domain's routed prefixes leaked into its VRF.
        for gw in r.uplink.gateways {
            steps.append(.addRoute(namespace: main, route: PlannedRoute(defaultPrefix(gw.family), via: gw, device: r.uplink.interface, table: upTable)))
        }
        for d in r.subscribers {
            for p in d.routed {
                steps.append(.addRoute(namespace: main, route: PlannedRoute(p, device: d.name, table: upTable)))
            }
        }
        // Subscriber domains: defaults leaked into up; routed IPv4 that lives on the bridge.
        for d in r.subscribers {
            for family in [IPFamily.v4, .v6] {
                steps.append(.addRoute(namespace: main, route: PlannedRoute(defaultPrefix(family), device: r.uplink.name, table: table(d))))
            }
            for p in d.routed where p.family == .v4 {
                steps.append(.addRoute(namespace: main, route: PlannedRoute(p, device: d.bridge, table: table(d))))
            }
        }

        // The seed's rule layout: l3mdev (1000, the kernel's), l3mdev unreachable (2000), local
        // moved behind them (32765). De-NATed replies, all to the NAT address, are told apart by
        // their mark alone: fwmark rules to the domain's table come first (pref 500+).
        for d in r.subscribers {
            steps.append(.addRule(namespace: main, rule: PlannedRule(family: .v4, priority: Conventions.vrfFwmarkRuleBase + d.id, fwmark: d.id, table: table(d))))
        }
        for family in [IPFamily.v4, .v6] {
            steps.append(.addRule(namespace: main, rule: PlannedRule(family: family, priority: Conventions.vrfUnreachableRulePriority, l3mdev: true, action: .unreachable)))
            steps.append(.addRule(namespace: main, rule: PlannedRule(family: family, priority: Conventions.vrfLocalRulePriority, table: Conventions.localTable)))
            steps.append(.deleteRule(namespace: main, rule: PlannedRule(family: family, priority: 0, table: Conventions.localTable)))
        }

        let ruleset = Ruleset(lab: lab, devices: .init(
            subscriberIngress: r.subscribers.map { ($0, $0.bridge) },   // the VRF slave: first PREROUTING pass
            uplinkForwardInput: r.uplink.name,                          // the forward hook sees VRF devices
            uplinkEgress: r.uplink.interface,
            interDomain: .vrfs(r.subscribers.map { d in
                (d.name, r.subscribers.filter { $0.name != d.name }.flatMap(\.routed))
            }),
            hairpinOut: lab.hairpinning ? Conventions.hairpinOut : nil, hairpinIn: lab.hairpinning ? Conventions.hairpinIn : nil))
        steps.append(.loadRuleset(namespace: main, ruleset: ruleset.text))
        if !ruleset.elementsByNetlink.isEmpty {
            steps.append(.loadSetElements(namespace: main, table: Ruleset.tableName, maps: ruleset.elementsByNetlink))
        }
        // Per-port source binding on every subscriber bridge (BridgeBinding.swift).
        steps += bridgeBindingSteps(lab, backend: .vrf)
        steps.append(.sysctl(namespace: main, key: "net.netfilter.nf_conntrack_timestamp", value: "1"))
        for t in NATTimers.sysctls { steps.append(.sysctl(namespace: main, key: t.key, value: t.value)) }
        return Plan(lab: lab, backend: .vrf, steps: steps.steps, contexts: lab.contexts(backend: .vrf), ruleset: ruleset)
    }
}
