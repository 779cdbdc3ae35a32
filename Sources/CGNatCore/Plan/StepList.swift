import NetAddress

/// A plan's steps under construction, with the pieces every backend builds the same way.
struct StepList {
    private(set) var steps: [Step] = []
    private var nextIndex: Int32 = Plan.vethFirstIndex

    mutating func append(_ step: Step) { steps.append(step) }
    static func += (list: inout StepList, more: [Step]) { list.steps += more }

    /// A namespace with the sysctls the design relies on, set before any link exists, and lo up.
    mutating func createNamespace(_ ns: String, router: Bool) {
        steps.append(.createNamespace(ns))
        steps += Plan.baseSysctls(router: router).map { .sysctl(namespace: ns, key: $0.0, value: $0.1) }
        if router {
            // ICMP errors the router sends follow the mark of the packet that caused them.
            steps.append(.sysctl(namespace: ns, key: "net.ipv4.fwmark_reflect", value: "1"))
            steps.append(.sysctl(namespace: ns, key: "net.ipv6.fwmark_reflect", value: "1"))
        }
        steps.append(.setUp(namespace: ns, link: "lo"))
    }

    /// A veth pair, each end created directly in its namespace with an ifindex of its own.
    mutating func addVeth(_ ns: String, _ name: String, peerNamespace: String, _ peer: String) {
        steps.append(.addVeth(namespace: ns, name: name, peerNamespace: peerNamespace, peer: peer,
                              index: nextIndex, peerIndex: nextIndex + 1))
        nextIndex += 2
    }

    /// Every host's addresses (interface and loopback), in its own namespace.
    mutating func addHostAddresses(_ lab: Lab) {
        for h in lab.hosts {
            let ns = lab.namespaceName(h.name)
            for a in h.loopbackAddresses { steps.append(.addAddress(namespace: ns, link: "lo", address: a)) }
            for a in h.addresses { steps.append(.addAddress(namespace: ns, link: h.interface, address: a)) }
        }
    }

    /// Every host's routes, out of its own interface.
    mutating func addHostRoutes(_ lab: Lab) {
        for h in lab.hosts {
            for rt in h.routes {
                steps.append(.addRoute(namespace: lab.namespaceName(h.name),
                                       route: PlannedRoute(rt.destination, via: rt.gateway, device: h.interface, source: rt.source)))
            }
        }
    }
}
