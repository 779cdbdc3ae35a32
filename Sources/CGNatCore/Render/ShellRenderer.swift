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
        case .loadRuleset(let ns, let ruleset):
            return "ip netns exec \(ns) nft -f - <<'CGNAT_RULESET'\n\(ruleset)CGNAT_RULESET"
        case .loadSetElements(let ns, let table, let maps):
            // `up` sends these as one netlink batch; the same elements as nft text replay it.
            return "ip netns exec \(ns) nft -f - <<'CGNAT_ELEMENTS'\n"
                + maps.map { $0.addElementCommands(table: table) }.joined() + "CGNAT_ELEMENTS"
        default:
            return "ip -n \(step.namespace) " + ipArguments(step)!
        }
    }

    /// The `ip` arguments of a netlink step, after `ip -n NAMESPACE` (nil for the other steps):
    /// what a line of an `ip -batch` file says.
    /// `placed`: links name their own namespace too (`netns NS`), for a batch run elsewhere.
    public static func ipArguments(_ step: Step, placed: Bool = false) -> String? {
        let own = placed ? " netns \(step.namespace)" : ""
        switch step {
        case .createNamespace, .sysctl, .loadRuleset, .loadSetElements:
            return nil

        case .addVeth(_, let name, let pns, let peer, let index, let peerIndex):
            // `name` after `dev`: a bare `a` would parse as `address` (DESIGN.md pitfall 6).
            return "link add dev \(name) index \(index) address \(Conventions.mac(linkIndex: index))\(own) type veth"
                + " peer name \(peer) index \(peerIndex) address \(Conventions.mac(linkIndex: peerIndex)) netns \(pns)"
        case .addBridge(_, let name, let index):
            return "link add dev \(name) index \(index) address \(Conventions.mac(linkIndex: index))\(own) type bridge"
        case .addVRF(_, let name, let table, let index):
            return "link add dev \(name) index \(index)\(own) type vrf table \(table)"
        case .setMaster(_, let link, let master):
            return "link set dev \(link) master \(master)"
        case .setAddrGenModeNone(_, let link):
            return "link set dev \(link) addrgenmode none"
        case .setUp(_, let link):
            // `dev` always: a VRF named `up` collides with the keyword.
            return "link set dev \(link) up"
        case .addNeighbour(_, let link, let address, let mac):
            return "neigh add \(address) lladdr \(mac) dev \(link) nud permanent"
        case .addAddress(_, let link, let address):
            return "address add \(address) dev \(link)" + (address.family == .v6 ? " nodad" : "")
        case .addRoute(_, let route):
            return "\(route.family == .v4 ? "-4" : "-6") route add " + routeArguments(route).joined(separator: " ")
        case .addRule(_, let rule):
            return "\(rule.family == .v4 ? "-4" : "-6") rule add " + ruleArguments(rule).joined(separator: " ")
        case .deleteRule(_, let rule):
            return "\(rule.family == .v4 ? "-4" : "-6") rule del " + ruleArguments(rule).joined(separator: " ")
        }
    }

    /// A line of an `ip -batch` file for the step, or nil if it cannot be one. Batch lines take no
    /// global options such as `-6`: routes name both families' destinations explicitly
    /// (`::/0`, not `-6 ... default`), and IPv6 rules run as commands of their own.
    public static func batchLine(_ step: Step, placed: Bool = false) -> String? {
        switch step {
        case .addRoute(_, let route):
            var args = routeArguments(route)
            if route.destination.isDefault { args[route.kind == .unreachable ? 1 : 0] = route.destination.description }
            return "route add " + args.joined(separator: " ")
        case .addRule(_, let rule), .deleteRule(_, let rule):
            return rule.family == .v4 ? ipArguments(step)!.replacingPrefix("-4 ") : nil
        default:
            return ipArguments(step, placed: placed)
        }
    }

    /// The same lab as the fastest plain shell script we know how to write: what a careful user
    /// would do at scale, and what `cgnat up` is measured against. Namespaces are made by one
    /// `ip -batch`, each namespace's sysctls set by one `sysctl` per namespace, every link made
    /// by one `ip -batch` with both ends placed by `netns` (run inside the first namespace, so that
    /// nothing could land in the host's own), then each namespace's remaining commands are one
    /// `ip -n NS -batch` (sysctls and the ruleset between them as they come).
    public static func renderBatched(_ plan: Plan) -> String {
        var out = [
            "#!/bin/sh",
            "# cgnat lab '\(plan.lab.name)', backend \(plan.backend.rawValue): the plan of `cgnat up` as ip -batch files.",
            "set -e",
        ]
        func batch(_ prefix: String, _ lines: [String]) {
            guard !lines.isEmpty else { return }
            out.append("\(prefix) -batch - <<'CGNAT_BATCH'")
            out += lines
            out.append("CGNAT_BATCH")
        }
        let steps = plan.steps
        batch("ip", plan.namespaces.map { "netns add \($0)" })
        // Sysctls right after a namespace's creation must precede its links.
        var first: [Int: Bool] = [:]
        var i = 0
        while i < steps.count {
            if case .createNamespace(let ns) = steps[i] {
                var kv: [String] = []
                var j = i + 1
                while j < steps.count, case .sysctl(let sns, let k, let v) = steps[j], sns == ns {
                    kv.append("\(k)=\(shellQuote(v))"); first[j] = true; j += 1
                }
                if !kv.isEmpty { out.append("ip netns exec \(ns) sysctl -qw " + kv.joined(separator: " ")) }
                i = j
            } else { i += 1 }
        }
        if let anchor = plan.namespaces.first {
            batch("ip -n \(anchor)", steps.filter(\.createsLink).map { batchLine($0, placed: true)! })
        }
        var order: [String] = []
        var rest: [String: [Step]] = [:]
        for (k, step) in steps.enumerated() where first[k] == nil && !step.createsLink {
            if case .createNamespace = step { continue }
            if rest[step.namespace] == nil { order.append(step.namespace) }
            rest[step.namespace, default: []].append(step)
        }
        for ns in order {
            var lines: [String] = []
            for step in rest[ns]! {
                if let args = batchLine(step) {
                    lines.append(args)
                } else {
                    batch("ip -n \(ns)", lines)
                    lines = []
                    out.append(command(step))
                }
            }
            batch("ip -n \(ns)", lines)
        }
        return out.joined(separator: "\n") + "\n"
    }

    /// The teardown as one `ip -batch`.
    public static func renderDownBatched(_ plan: Plan) -> String {
        var out = ["#!/bin/sh", "ip -batch - <<'CGNAT_BATCH'"]
        out += plan.namespaces.reversed().map { "netns del \($0)" }
        out.append("CGNAT_BATCH")
        return out.joined(separator: "\n") + "\n"
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

extension String {
    func replacingPrefix(_ prefix: String) -> String {
        hasPrefix(prefix) ? String(dropFirst(prefix.count)) : self
    }
}
