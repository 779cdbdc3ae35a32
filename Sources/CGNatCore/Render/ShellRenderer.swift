import NetAddress

/// Renders a plan as the equivalent shell script: one `ip`, `sysctl` or `nft` command per step,
/// the way the seed's demo built its lab. Runs as root with iproute2 and nftables installed.
public enum ShellRenderer {
    public static func render(_ plan: Plan) -> String {
        var out = [
            "#!/bin/sh",
            "# cgnat lab '\(plan.lab.name)', backend \(plan.backend.rawValue): the same steps `cgnat up` takes natively.",
            "# Contexts: " + plan.contexts.map { c in "\(c.name)=\(c.namespace)" + (c.vrf.map { "/vrf \($0)" } ?? "") }.joined(separator: " "),
            "set -e",
        ]
        for step in plan.steps { out.append(command(step)) }
        return out.joined(separator: "\n") + "\n"
    }

    /// The teardown as shell: the lab lives entirely in its namespaces.
    public static func renderDown(_ plan: Plan) -> String {
        (["#!/bin/sh"] + plan.namespaces.reversed().map { "ip netns del \($0)" }).joined(separator: "\n") + "\n"
    }

    public static func command(_ step: Step) -> String {
        switch step {
        case .createNamespace(let ns):
            return "ip netns add \(ns)"
        case .sysctl(let ns, let key, let value):
            return "ip netns exec \(ns) sysctl -qw \(key)=\(shellQuote(value))"
        case .addVeth(let ns, let name, let pns, let peer, let index, let peerIndex):
            // `name` after `dev`: a bare `a` would parse as `address` (DESIGN.md pitfall 6).
            return "ip -n \(ns) link add dev \(name) index \(index) type veth peer name \(peer) index \(peerIndex) netns \(pns)"
        case .addBridge(let ns, let name):
            return "ip -n \(ns) link add dev \(name) type bridge"
        case .addVRF(let ns, let name, let table):
            return "ip -n \(ns) link add dev \(name) type vrf table \(table)"
        case .setMaster(let ns, let link, let master):
            return "ip -n \(ns) link set dev \(link) master \(master)"
        case .setUp(let ns, let link):
            // `dev` always: a VRF named `up` collides with the keyword.
            return "ip -n \(ns) link set dev \(link) up"
        case .addAddress(let ns, let link, let address):
            return "ip -n \(ns) address add \(address) dev \(link)" + (address.family == .v6 ? " nodad" : "")
        case .addRoute(let ns, let route):
            return "ip -n \(ns) \(route.family == .v4 ? "-4" : "-6") route add " + routeArguments(route).joined(separator: " ")
        case .addRule(let ns, let rule):
            return "ip -n \(ns) \(rule.family == .v4 ? "-4" : "-6") rule add " + ruleArguments(rule).joined(separator: " ")
        case .deleteRule(let ns, let rule):
            return "ip -n \(ns) \(rule.family == .v4 ? "-4" : "-6") rule del " + ruleArguments(rule).joined(separator: " ")
        case .loadRuleset(let ns, let ruleset):
            return "ip netns exec \(ns) nft -f - <<'CGNAT_RULESET'\n\(ruleset)CGNAT_RULESET"
        }
    }

    public static func routeArguments(_ r: PlannedRoute) -> [String] {
        var a: [String] = []
        if r.kind == .unreachable { a.append("unreachable") }
        a.append(r.destination.isDefault ? "default" : r.destination.description)
        if let gw = r.gateway {
            // An IPv6 next hop for an IPv4 route needs `via inet6` (RTA_VIA); without the family
            // iproute2 would install an IPv6 default (pitfall 1).
            a += gw.family == r.family ? ["via", gw.description] : ["via", "inet6", gw.description]
        }
        if let dev = r.device { a += ["dev", dev] }
        if let src = r.source { a += ["src", src.description] }
        if r.table != 254 { a += ["table", String(r.table)] }
        return a
    }

    public static func ruleArguments(_ r: PlannedRule) -> [String] {
        var a = ["pref", String(r.priority)]
        if let m = r.fwmark { a += ["fwmark", String(m)] }
        if r.l3mdev { a.append("l3mdev") }
        if r.action == .unreachable { a.append("unreachable") }
        if let t = r.table { a += ["lookup", t == 255 ? "local" : String(t)] }
        return a
    }

    static func shellQuote(_ s: String) -> String {
        s.allSatisfy { $0.isLetter || $0.isNumber || "._-/:".contains($0) } ? s : "'\(s)'"
    }
}
