/// A place a user can run a command in: a host, the router, or one of the router's domains.
/// The names are the seed's and mean the same on every backend.
public struct Context: Equatable, Sendable {
    public enum Kind: String, Sendable { case host, router, domain }
    public var name: String
    public var kind: Kind
    /// The network namespace behind the context (`ip netns exec` reaches it).
    public var namespace: String
    /// On the VRF backend, the VRF device a domain context runs in (`ip vrf exec`).
    public var vrf: String?

    public init(name: String, kind: Kind, namespace: String, vrf: String? = nil) {
        self.name = name
        self.kind = kind
        self.namespace = namespace
        self.vrf = vrf
    }
}

extension Lab {
    /// Every context of the lab on a backend, in a stable order: hosts, router, domains.
    public func contexts(backend: Backend) -> [Context] {
        var out = hosts.map { Context(name: $0.name, kind: .host, namespace: namespaceName($0.name)) }
        let r = router.name
        let domains = [router.uplink.name] + router.subscribers.map(\.name)
        switch backend {
        case .netns:
            // The router itself is its uplink domain's namespace: NAT and conntrack live there.
            out.append(Context(name: r, kind: .router, namespace: namespaceName(r)))
            out.append(Context(name: "\(r):\(router.uplink.name)", kind: .domain, namespace: namespaceName(r)))
            for d in router.subscribers.map(\.name) {
                out.append(Context(name: "\(r):\(d)", kind: .domain, namespace: namespaceName("\(r)-\(d)")))
            }
        case .vrf:
            out.append(Context(name: r, kind: .router, namespace: namespaceName(r)))
            for d in domains {
                out.append(Context(name: "\(r):\(d)", kind: .domain, namespace: namespaceName(r), vrf: d))
            }
        }
        return out
    }

    /// Namespace names carry the lab name, so labs never collide with each other.
    public func namespaceName(_ part: String) -> String { "\(name)-\(part)" }

    public func context(named name: String, backend: Backend) -> Context? {
        contexts(backend: backend).first { $0.name == name }
    }
}

extension Lab {
    /// Routing table of a domain's VRF on the VRF backend: `up` 10, then 20, 30, ... by domain id.
    public func vrfTable(_ domain: String) -> UInt32? {
        if domain == router.uplink.name { return Conventions.uplinkVRFTable }
        return router.subscribers.first { $0.name == domain }.map { Conventions.vrfTableStep * ($0.id + 1) }
    }
}

extension Lab {
    /// On the VRF backend: every router device (VRF, its slaves, bridge ports) and the context of
    /// the domain it belongs to, e.g. `br-blue` -> `main:blue`.
    public func vrfDomainDevices() -> [String: String] {
        let r = router
        var map = [r.uplink.name: "\(r.name):\(r.uplink.name)", r.uplink.interface: "\(r.name):\(r.uplink.name)"]
        for d in r.subscribers {
            for dev in [d.name, d.bridge] + hosts(in: d.name).map(\.name) { map[dev] = "\(r.name):\(d.name)" }
        }
        return map
    }
}
