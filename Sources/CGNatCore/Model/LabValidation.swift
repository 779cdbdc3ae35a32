import NetAddress

/// What a lab model must satisfy before any plan is made from it. The seed lab passes; a lab from
/// elsewhere (a later file format) gets one error naming the first thing that is wrong.
extension Lab {
    public func validate() throws {
        try LabName.validate(name)
        let r = router
        func fail(_ what: String) -> UsageError { UsageError("invalid lab '\(name)': \(what)") }

        // Interface names: the kernel's limit is 15 bytes (IFNAMSIZ - 1), no '/' or spaces.
        var interfaces = [r.uplink.interface] + r.subscribers.map(\.bridge) + hosts.map(\.interface)
        interfaces += [r.uplink.name] + r.subscribers.map(\.name)                       // VRF devices
        interfaces += hosts.filter { $0.attachment != .uplink }.map(\.name)               // bridge ports
        for i in interfaces where i.isEmpty || i.utf8.count > 15 || i.contains("/") || i.contains(" ") || i == "lo" {
            throw fail("interface or domain name '\(i)' must be 1-15 characters without '/' or spaces, and not 'lo'")
        }

        // Names users type: unique, and free of ':' (it separates router and domain).
        let contexts = hosts.map(\.name) + [r.name] + [r.uplink.name] + r.subscribers.map(\.name)
        for c in contexts where c.contains(":") { throw fail("name '\(c)' must not contain ':'") }
        if let d = duplicate(hosts.map(\.name) + [r.name]) { throw fail("'\(d)' names two contexts") }
        if let d = duplicate([r.uplink.name] + r.subscribers.map(\.name)) { throw fail("domain '\(d)' is defined twice") }
        if let d = duplicate(r.subscribers.map(\.bridge)) { throw fail("bridge '\(d)' is used by two domains") }

        // Domain ids key zones, marks and tables: positive, unique, small.
        for d in r.subscribers where d.id == 0 || d.id > 255 {
            throw fail("domain '\(d.name)' has id \(d.id); use 1-255 (0 is the uplink's zone and mark)")
        }
        if let d = duplicate(r.subscribers.map { String($0.id) }) { throw fail("two domains share id \(d)") }

        // Hosts attach to something that exists; exactly one uplink host.
        let uplinkHosts = hosts.filter { $0.attachment == .uplink }
        guard uplinkHosts.count == 1 else { throw fail("needs exactly one host attached to the uplink, has \(uplinkHosts.count)") }
        for h in hosts {
            if case .domain(let d) = h.attachment, domain(named: d) == nil {
                throw fail("host '\(h.name)' attaches to domain '\(d)', which does not exist")
            }
            for rt in h.routes where rt.gateway.family == rt.destination.family
                && !h.addresses.contains(where: { $0.network.contains(rt.gateway) }) && !rt.gateway.isLinkLocal {
                throw fail("host '\(h.name)' routes \(rt.destination) via \(rt.gateway), which is on none of its subnets")
            }
        }

        // A Linux bridge takes at most 1023 ports: the kernel refuses the 1024th with EXFULL,
        // half-way through `up`. Say so before anything is built.
        for d in r.subscribers {
            let ports = hosts(in: d.name).count
            if ports > Conventions.maxBridgePorts {
                throw fail("domain '\(d.name)' has \(ports) subscribers, but its bridge \(d.bridge) can take at most \(Conventions.maxBridgePorts) ports (the kernel refuses port \(Conventions.maxBridgePorts + 1) with EXFULL); spread the \(ports) subscribers over \((ports + Conventions.maxBridgePorts - 1) / Conventions.maxBridgePorts) or more domains")
            }
        }

        // NAT: IPv4 only; each public address is the uplink's own or routed to the router by the
        // uplink host (else replies to it never come back).
        guard r.nat.inside.family == .v4, !r.nat.pool.isEmpty, r.nat.pool.allSatisfy({ $0.family == .v4 }) else {
            throw fail("NAT translates IPv4: inside \(r.nat.inside) and the pool (\(r.nat.pool.map(\.description).joined(separator: ", "))) must be IPv4 and not empty")
        }
        let routerUplink = r.uplink.addresses.map(\.address)
        for p in r.nat.pool {
            let own = p.length == 32 && routerUplink.contains(p.address)
            let routed = uplinkHost?.routes.contains { $0.destination.family == .v4 && $0.destination.length <= p.length
                && $0.destination.network.contains(p.address) && routerUplink.contains($0.gateway) } ?? false
            guard own || routed else {
                throw fail("public \(p) is neither one of the uplink's addresses (\(r.uplink.addresses.map(\.description).joined(separator: ", "))) nor routed to the router by the uplink host: add a route for it via \(routerUplink.first { $0.family == .v4 }?.description ?? "the router") to the uplink host")
            }
        }
        if let policy = portBlockPolicy {
            if let problem = policy.problems().first { throw fail("port blocks: \(problem)") }
            for h in hosts {
                guard case .domain = h.attachment else { continue }
                for a in h.addresses where a.family == .v4 && r.nat.inside.contains(a.address) && !policy.insideRange.contains(a.address) {
                    throw fail("host '\(h.name)' has \(a.address), outside the port-block range \(policy.insideRange): widen the policy's inside range")
                }
            }
        }
        for gw in r.uplink.gateways where !r.uplink.addresses.contains(where: { $0.network.contains(gw) }) {
            throw fail("uplink gateway \(gw) is on none of the uplink's subnets")
        }
    }
}

private func duplicate(_ names: [String]) -> String? {
    var seen = Set<String>()
    for n in names where !seen.insert(n).inserted { return n }
    return nil
}
