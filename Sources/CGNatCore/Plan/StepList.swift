import NetAddress

/// A plan's steps under construction, with the pieces every backend builds the same way.
struct StepList {
    private(set) var steps: [Step] = []
    private var nextIndex: Int32 = Conventions.firstLinkIndex
    /// The ifindex given to each link so far, by "namespace/link".
    private var indexes: [String: Int32] = [:]

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

    /// A veth pair, each end created directly in its namespace with an ifindex of its own. Left to
    /// the kernel, two ends in fresh namespaces both get index 2; the kernel then treats the carrier
    /// change as non-urgent and reports it up to a second late (linkwatch), and until then IPv6 on
    /// the link is not ready: the first forwarded packets wait a second for neighbour discovery.
    /// Each end's MAC follows from its index (`Conventions.mac(linkIndex:)`).
    mutating func addVeth(_ ns: String, _ name: String, peerNamespace: String, _ peer: String) {
        steps.append(.addVeth(namespace: ns, name: name, peerNamespace: peerNamespace, peer: peer,
                              index: nextIndex, peerIndex: nextIndex + 1))
        indexes["\(ns)/\(name)"] = nextIndex
        indexes["\(peerNamespace)/\(peer)"] = nextIndex + 1
        nextIndex += 2
    }

    /// A bridge with an ifindex (and so a MAC) of its own: left to the kernel, a bridge takes the
    /// lowest MAC of its ports, which changes as ports are added.
    mutating func addBridge(_ ns: String, _ name: String) {
        steps.append(.addBridge(namespace: ns, name: name, index: nextIndex))
        indexes["\(ns)/\(name)"] = nextIndex
        nextIndex += 1
    }

    mutating func addVRF(_ ns: String, _ name: String, table: UInt32) {
        steps.append(.addVRF(namespace: ns, name: name, table: table, index: nextIndex))
        indexes["\(ns)/\(name)"] = nextIndex
        nextIndex += 1
    }

    /// The MAC a link of this plan will have.
    func mac(_ ns: String, _ link: String) -> MACAddress {
        Conventions.mac(linkIndex: indexes["\(ns)/\(link)"]!)
    }

    /// A subscriber's port on its domain's bridge: enslaved, and without automatic IPv6 addresses.
    mutating func addBridgePort(_ ns: String, _ port: String, bridge: String) {
        steps.append(.setMaster(namespace: ns, link: port, master: bridge))
        steps.append(.setAddrGenModeNone(namespace: ns, link: port))
    }

    /// Permanent neighbour entries on both sides of every subscriber link: each subscriber knows
    /// its gateways' MAC (the bridge's), and the bridge knows every subscriber address. The
    /// kernel's neighbour table limit (gc_thresh3, 1024 per family) is global: a thousand
    /// subscribers resolving their gateway overflow it, permanent entries do not count.
    /// Call after the links are up: taking a link down flushes even permanent entries.
    mutating func addSubscriberNeighbours(_ lab: Lab, bridgeNamespace: (SubscriberDomain) -> String) {
        for d in lab.router.subscribers {
            let bns = bridgeNamespace(d)
            let bridgeMAC = mac(bns, d.bridge)
            var known = Set<IPAddress>()
            for h in lab.hosts(in: d.name) {
                let hns = lab.namespaceName(h.name)
                for gw in d.addresses {
                    steps.append(.addNeighbour(namespace: hns, link: h.interface, address: gw.address, mac: bridgeMAC))
                }
                let hostMAC = mac(hns, h.interface)
                for a in h.addresses where known.insert(a.address).inserted {
                    steps.append(.addNeighbour(namespace: bns, link: d.bridge, address: a.address, mac: hostMAC))
                }
            }
        }
    }

    /// Permanent neighbour entries on the uplink's link, both sides: a check sends hundreds of
    /// probes from the uplink at once, and packets queued for an unresolved neighbour beyond its
    /// small queue (unres_qlen) are dropped before any rule sees them.
    mutating func addUplinkNeighbours(_ lab: Lab, routerNamespace: String) {
        guard let h = lab.uplinkHost else { return }
        let up = lab.router.uplink
        let hns = lab.namespaceName(h.name)
        let routerMAC = mac(routerNamespace, up.interface), hostMAC = mac(hns, h.interface)
        for a in up.addresses where !a.address.isLinkLocal {
            steps.append(.addNeighbour(namespace: hns, link: h.interface, address: a.address, mac: routerMAC))
        }
        for a in h.addresses where !a.address.isLinkLocal {
            steps.append(.addNeighbour(namespace: routerNamespace, link: up.interface, address: a.address, mac: hostMAC))
        }
    }

    /// The router's hairpin loop, when the lab hairpins (`Lab.hairpinning`): a veth pair of the
    /// router's own, the pool routed into it. IPv4 goes via an IPv6 link-local next hop with a
    /// permanent neighbour, as on the transfer links: no ARP for addresses nobody owns. On the
    /// VRF backend both ends belong to the uplink's VRF (`vrf`, its table `table`).
    /// Call after the other links are up.
    mutating func addHairpinLoop(_ lab: Lab, routerNamespace ns: String, table: UInt32 = Conventions.mainTable, vrf: String? = nil) {
        guard lab.hairpinning else { return }
        let out = Conventions.hairpinOut, back = Conventions.hairpinIn
        addVeth(ns, out, peerNamespace: ns, back)
        if let vrf {
            steps.append(.setMaster(namespace: ns, link: out, master: vrf))
            steps.append(.setMaster(namespace: ns, link: back, master: vrf))
        }
        let length = Conventions.linkLocalLength
        steps.append(.addAddress(namespace: ns, link: out, address: IPPrefix(Conventions.routerLinkLocal, length)))
        steps.append(.addAddress(namespace: ns, link: back, address: IPPrefix(Conventions.domainLinkLocal, length)))
        steps.append(.setUp(namespace: ns, link: out))
        steps.append(.setUp(namespace: ns, link: back))
        steps.append(.addNeighbour(namespace: ns, link: out, address: Conventions.domainLinkLocal, mac: mac(ns, back)))
        for p in lab.router.nat.pool {
            steps.append(.addRoute(namespace: ns, route: PlannedRoute(p, via: Conventions.domainLinkLocal, device: out, table: table)))
        }
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
