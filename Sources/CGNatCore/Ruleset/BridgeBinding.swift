import NetAddress

/// Per-port source binding on the subscriber bridges: on each host's bridge port only that
/// host's own addresses may be the source (IPv4, IPv6, and the sender of ARP), the way libvirt's
/// `clean-traffic` filter binds a guest to its addresses. The router's BCP 38 rules
/// (`Ruleset.Comment.spoofed`) stop sources a domain does not own; inside one domain the bridge
/// would still forward a host's packets sent with its neighbour's address, which this stops.
///
/// One bridge-family table per namespace that holds bridges (netns: each domain's namespace;
/// VRF: the router namespace, for every domain), with one set of `port . address` elements per
/// family, so a thousand subscribers are a few thousand set elements and a handful of rules.
/// The bridge `prerouting` hook sees a frame before it is delivered to the bridge device or
/// forwarded to another port, so a spoofed packet reaches neither the gateway nor a neighbour.
///
/// Not checked: the target address of an IPv6 neighbour advertisement (nft 1.0.6 has no
/// `icmpv6 taddr`); a host can claim a neighbour's IPv6 address in an NA sent from its
/// link-local address. The router's side is not fooled by it: the plan gives the bridge
/// permanent neighbour entries for every host address, which advertisements do not override.
public struct BridgeBinding: Equatable, Sendable {
    public static let tableName = "cgnat_bind"
    public static let chain = "prerouting"
    public static let v4Set = "ipv4_bound"
    public static let v6Set = "ipv6_bound"

    public enum Comment {
        public static let v4 = "IPv4 from the port's own addresses"
        public static let v6 = "IPv6 from the port's own addresses"
        public static let v6LinkLocal = "IPv6 link-local and unspecified (DAD, MLD) sources"
        public static let arp = "ARP whose sender is the port's own address"
        public static let arpProbe = "ARP probes (sender 0.0.0.0, RFC 5227)"
        /// The rule `check` names for a spoofed source.
        public static let unbound = "source not bound to the bridge port"
    }

    /// The namespace the table is loaded into, and the domains whose bridges it covers.
    public var namespace: String
    public var domains: [String]
    public var text: String

    /// One table per namespace holding bridges, in the order of the lab's domains.
    public static func tables(_ lab: Lab, backend: Backend) -> [BridgeBinding] {
        var out: [BridgeBinding] = []
        for d in lab.router.subscribers {
            let ns = bridgeNamespace(lab, domain: d, backend: backend)
            if let i = out.firstIndex(where: { $0.namespace == ns }) { out[i].domains.append(d.name) }
            else { out.append(BridgeBinding(namespace: ns, domains: [d.name], text: "")) }
        }
        for i in out.indices { out[i].text = render(lab, domains: out[i].domains) }
        return out
    }

    /// Where a domain's bridge lives on this backend.
    public static func bridgeNamespace(_ lab: Lab, domain d: SubscriberDomain, backend: Backend) -> String {
        backend == .netns ? lab.namespaceName("\(lab.router.name)-\(d.name)") : lab.namespaceName(lab.router.name)
    }

    /// The context whose namespace holds the domain's bridge (for `check` to read the counter).
    public static func context(_ lab: Lab, domain d: SubscriberDomain, backend: Backend) -> String {
        backend == .netns ? "\(lab.router.name):\(d.name)" : lab.router.name
    }

    /// The rule that drops what a port may not send, as `check` names it.
    public static func unboundRule(_ lab: Lab, domain d: SubscriberDomain, backend: Backend) -> RuleRef {
        RuleRef(context: context(lab, domain: d, backend: backend), family: "bridge", table: tableName,
                chain: chain, comment: Comment.unbound)
    }

    /// Each host's bridge port (named after the host) with its own addresses, interface and loopback.
    static func bindings(_ lab: Lab, domains: [String], family: IPFamily) -> [(port: String, address: IPAddress)] {
        var out: [(String, IPAddress)] = []
        for dn in domains {
            for h in lab.hosts(in: dn) {
                var seen = Set<IPAddress>()
                for a in (h.addresses + h.loopbackAddresses).map(\.address)
                where a.family == family && !a.isLinkLocal && seen.insert(a).inserted {
                    out.append((h.name, a))
                }
            }
        }
        return out
    }

    static func render(_ lab: Lab, domains: [String]) -> String {
        func set(_ name: String, _ type: String, _ family: IPFamily) -> String {
            let e = bindings(lab, domains: domains, family: family).map { "\"\($0.port)\" . \($0.address)" }
            // An empty set is declared without elements (nft rejects `elements = { }`).
            let elements = e.isEmpty ? "" : "\n\t\telements = { " + stride(from: 0, to: e.count, by: 4)
                .map { e[$0..<min($0 + 4, e.count)].joined(separator: ", ") }.joined(separator: ",\n\t\t\t") + " }"
            return "\tset \(name) {\n\t\ttype ifname . \(type)\(elements)\n\t}"
        }
        let ports = domains.flatMap { lab.hosts(in: $0).map { "\"\($0.name)\"" } }
        var lines = [
            "# cgnat source binding for lab \(lab.name), bridges of \(domains.joined(separator: ", ")): each host's port sends only from the host's own addresses.",
            "table bridge \(tableName) {",
            set(v4Set, "ipv4_addr", .v4),
            set(v6Set, "ipv6_addr", .v6),
            "\tchain \(chain) {",
            "\t\ttype filter hook prerouting priority filter; policy accept;",
        ]
        guard !ports.isEmpty else { return (lines + ["\t}", "}"]).joined(separator: "\n") + "\n" }
        let onPorts = "iifname { " + ports.joined(separator: ", ") + " }"
        lines += [
            "\t\tether type ip iifname . ip saddr @\(v4Set) accept comment \"\(Comment.v4)\"",
            "\t\tether type ip6 iifname . ip6 saddr @\(v6Set) accept comment \"\(Comment.v6)\"",
            "\t\tether type ip6 ip6 saddr { fe80::/10, :: } accept comment \"\(Comment.v6LinkLocal)\"",
            "\t\tether type arp iifname . arp saddr ip @\(v4Set) accept comment \"\(Comment.arp)\"",
            "\t\tether type arp arp saddr ip 0.0.0.0 accept comment \"\(Comment.arpProbe)\"",
            // Only the hosts' ports: a port the lab does not know (none today) is not cut off.
            "\t\t\(onPorts) counter drop comment \"\(Comment.unbound)\"",
            "\t}",
            "}",
        ]
        return lines.joined(separator: "\n") + "\n"
    }
}

extension Plan {
    /// The source-binding tables as plan steps: one `nft -f` per namespace holding bridges.
    static func bridgeBindingSteps(_ lab: Lab, backend: Backend) -> [Step] {
        BridgeBinding.tables(lab, backend: backend).map { .loadRuleset(namespace: $0.namespace, ruleset: $0.text) }
    }
}
