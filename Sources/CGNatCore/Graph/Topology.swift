import NetAddress

/// What `cgnat graph` draws: the lab's contexts, domains, links, addresses, NAT and routed
/// prefixes, taken from the model once, so every output format says the same. With a plan it
/// also says where each context lives on that backend (namespace, VRF, transfer links).
public struct Topology: Sendable {
    public struct Interface: Sendable {
        public var name: String
        public var kind: String?
        public var addresses: [IPPrefix]
    }

    /// A route as words that may be broken between lines: `["2001:db8:b::/48", "via 2001:db8:a::1"]`.
    public typealias Words = [String]

    public struct HostNode: Sendable {
        public var name: String
        public var notes: [String]
        /// Loopback first when it has addresses, then the interface that links it to the router.
        public var interfaces: [Interface]
        public var link: String
        public var routes: [Words]
    }

    public struct HostGroup: Sendable {
        public var summary: HostGroupSummary
        public var notes: [String]
        /// The interface every host of the group links with (`cuplink`), or a list of them.
        public var link: String
        public var routes: [Words]
    }

    public enum Peer: Sendable {
        case host(HostNode)
        case group(HostGroup)
    }

    /// A router-side end of links to hosts: one bridge port, or the ports of a summarised group.
    public struct Port: Sendable {
        public var name: String
        public var count: Int
        public var peer: Peer
    }

    public struct Domain: Sendable {
        public var name: String
        /// The context users type (`main:blue`).
        public var context: String
        /// Subscriber domains' id (zone, mark, return table); nil for the uplink domain.
        public var id: UInt32?
        public var notes: [String]
        /// The uplink interface, or the subscriber domain's bridge.
        public var interface: Interface
        public var routes: [Words]
        /// Prefixes routed into a subscriber domain without NAT.
        public var routedIn: [IPPrefix]
        public var ports: [Port]
    }

    public struct NAT: Sendable {
        public var inside: IPPrefix
        /// The public address, or the pool's prefixes.
        public var publicAddress: String
        /// How subscribers map onto it: "port blocks of 126 ports" or "random ports (APDM)".
        public var mapping: String
        /// Where SNAT matches: the uplink interface, on egress.
        public var interface: String
        public var from: [String]
    }

    public var lab: String
    public var router: String
    public var backend: Backend?
    public var uplinkHosts: [HostNode]
    public var uplink: Domain
    public var subscribers: [Domain]
    public var nat: NAT
    /// IPv6 is routed, never translated: said once when the lab has any.
    public var routesIPv6: Bool

    /// `lab cgnat: router main (netns backend), 1 uplink host, 3 subscribers in 2 domains`
    public var headline: String {
        var s = "lab \(lab): router \(router)"
        if let b = backend { s += " (\(b.rawValue) backend)" }
        let n = subscribers.flatMap(\.ports).map(\.count).reduce(0, +)
        func plural(_ k: Int, _ word: String) -> String { "\(k) \(word)\(k == 1 ? "" : "s")" }
        return s + ", \(plural(uplinkHosts.count, "uplink host")), \(plural(n, "subscriber")) in \(plural(subscribers.count, "domain"))"
    }
}

extension Topology {
    /// The topology of `lab`; with `plan`, annotated with that backend's namespaces and VRFs.
    public init(_ lab: Lab, plan: Plan? = nil) {
        let r = lab.router
        self.lab = lab.name
        router = r.name
        backend = plan?.backend
        let contexts = plan.map { Dictionary($0.contexts.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a }) } ?? [:]
        let veths: [(ns: String, name: String, peerNS: String, peer: String)] = plan?.steps.compactMap {
            if case .addVeth(let ns, let name, let peerNS, let peer, _, _) = $0 { return (ns, name, peerNS, peer) }
            return nil
        } ?? []

        func hostNotes(_ name: String) -> [String] {
            contexts[name].map { ["netns \($0.namespace)"] } ?? []
        }
        func domainNotes(_ domain: String) -> [String] {
            guard let plan, let ctx = contexts["\(r.name):\(domain)"] else { return [] }
            switch plan.backend {
            case .vrf:
                let table = lab.vrfTable(domain).map { ", table \($0)" } ?? ""
                return ["vrf \(ctx.vrf ?? domain)\(table) in \(ctx.namespace)"]
            case .netns:
                let routerNS = contexts[r.name]?.namespace
                if ctx.namespace == routerNS { return ["netns \(ctx.namespace) (also \(r.name))"] }
                var notes = ["netns \(ctx.namespace)"]
                if let routerNS, let v = veths.first(where: { Set([$0.ns, $0.peerNS]) == Set([ctx.namespace, routerNS]) }) {
                    let (here, there) = v.ns == ctx.namespace ? (v.name, v.peer) : (v.peer, v.name)
                    notes.append("link \(here) -- \(there) in \(r.name)")
                }
                return notes
            }
        }
        /// Host routes, with defaults via the domain's own gateway said as `default via br-x`.
        func routes(_ h: Host, gateways: [IPAddress], gatewayName: String?) -> [Words] {
            let viaGateway = h.routes.filter { $0.destination.isDefault && $0.source == nil && gateways.contains($0.gateway) }
            var out: [Words] = []
            if let gatewayName, !viaGateway.isEmpty { out.append(["default via \(gatewayName)"]) }
            for rt in h.routes where !(gatewayName != nil && viaGateway.contains(rt)) {
                var words = [rt.destination.isDefault ? "default" : rt.destination.description, "via \(rt.gateway)"]
                if let s = rt.source { words.append("src \(s)") }
                out.append(words)
            }
            return out
        }
        func node(_ h: Host, gateways: [IPAddress] = [], gatewayName: String? = nil) -> HostNode {
            var ifs: [Interface] = []
            if !h.loopbackAddresses.isEmpty { ifs.append(Interface(name: "lo", kind: nil, addresses: h.loopbackAddresses)) }
            ifs.append(Interface(name: h.interface, kind: nil, addresses: h.addresses))
            return HostNode(name: h.name, notes: hostNotes(h.name), interfaces: ifs, link: h.interface,
                            routes: routes(h, gateways: gateways, gatewayName: gatewayName))
        }

        uplinkHosts = lab.hosts.filter { $0.attachment == .uplink }.map { node($0) }
        uplink = Domain(
            name: r.uplink.name, context: "\(r.name):\(r.uplink.name)", id: nil, notes: domainNotes(r.uplink.name),
            interface: Interface(name: r.uplink.interface, kind: nil, addresses: r.uplink.addresses),
            routes: r.uplink.gateways.map { ["default", "via \($0)"] }, routedIn: [], ports: [])
        subscribers = r.subscribers.map { d in
            let hosts = lab.hosts(in: d.name)
            let gateways = d.addresses.map(\.address)
            let ports: [Port]
            if lab.summarises(domain: d.name) {
                // The group's routes are those every host has; the rest would be per host.
                let each = hosts.map { routes($0, gateways: gateways, gatewayName: d.bridge) }
                let common = (each.first ?? []).filter { w in each.allSatisfy { $0.contains(w) } }
                let links = hosts.map(\.interface).reduce(into: [String]()) { if !$0.contains($1) { $0.append($1) } }
                var notes: [String] = []
                let namespaces = hosts.compactMap { contexts[$0.name]?.namespace }
                if !namespaces.isEmpty {
                    // Namespaces named for their hosts are said once, as the pattern.
                    let prefix = lab.namespaceName("")
                    let patterned = zip(hosts, namespaces).allSatisfy { $1 == prefix + $0.name }
                    notes.append(patterned ? "netns \(prefix)<name> each" : "netns \(HostGroupSummary.range(namespaces))")
                }
                let group = HostGroup(summary: HostGroupSummary(hosts), notes: notes,
                                      link: links.joined(separator: ", "), routes: common)
                ports = hosts.isEmpty ? [] : [Port(name: group.summary.names, count: hosts.count, peer: .group(group))]
            } else {
                ports = hosts.map { Port(name: $0.name, count: 1, peer: .host(node($0, gateways: gateways, gatewayName: d.bridge))) }
            }
            return Domain(
                name: d.name, context: "\(r.name):\(d.name)", id: d.id, notes: domainNotes(d.name),
                interface: Interface(name: d.bridge, kind: "bridge", addresses: d.addresses),
                routes: [["default", "-> \(r.name):\(r.uplink.name)"]], routedIn: d.routed, ports: ports)
        }
        let pool = r.nat.pool.count == 1 && r.nat.pool[0].length == 32 ? "\(r.nat.publicAddress)"
            : r.nat.pool.map(\.description).joined(separator: ", ")
        let mapping = lab.portBlockPolicy.map { "port blocks of \($0.portsPerSubscriber) ports" } ?? "random ports (APDM)"
        nat = NAT(inside: r.nat.inside, publicAddress: pool, mapping: mapping, interface: r.uplink.interface,
                  from: r.subscribers.map(\.name))
        routesIPv6 = lab.hosts.contains { $0.addresses.contains { $0.family == .v6 } }
            || r.uplink.addresses.contains { $0.family == .v6 }
    }
}
