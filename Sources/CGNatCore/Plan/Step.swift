import NetAddress

/// Which kernel mechanism keeps the routing domains apart.
public enum Backend: String, Sendable, CaseIterable {
    /// One network namespace per routing domain (works on kernels without CONFIG_NET_VRF).
    case netns
    /// VRF devices inside one router namespace (the seed's design; CONFIG_NET_VRF, Linux 5.16+).
    case vrf
}

/// A route as the plan states it: devices by name, resolved to indexes when applied.
public struct PlannedRoute: Equatable, Sendable {
    public enum Kind: String, Sendable { case unicast, unreachable }
    public var destination: IPPrefix
    public var gateway: IPAddress?
    public var device: String?
    public var source: IPAddress?
    public var table: UInt32
    public var kind: Kind

    public init(_ destination: IPPrefix, via gateway: IPAddress? = nil, device: String? = nil,
                source: IPAddress? = nil, table: UInt32 = 254, kind: Kind = .unicast) {
        self.destination = destination
        self.gateway = gateway
        self.device = device
        self.source = source
        self.table = table
        self.kind = kind
    }

    public var family: IPFamily { destination.family }
}

public struct PlannedRule: Equatable, Sendable {
    public enum Action: String, Sendable { case lookup, unreachable }
    public var family: IPFamily
    public var priority: UInt32
    public var fwmark: UInt32?
    public var table: UInt32?
    public var l3mdev: Bool
    public var action: Action

    public init(family: IPFamily, priority: UInt32, fwmark: UInt32? = nil, table: UInt32? = nil,
                l3mdev: Bool = false, action: Action = .lookup) {
        self.family = family
        self.priority = priority
        self.fwmark = fwmark
        self.table = table
        self.l3mdev = l3mdev
        self.action = action
    }
}

/// One thing to do in one namespace. A plan is a list of these: computed without root,
/// rendered as shell by `render`, executed by `up`.
public enum Step: Equatable, Sendable {
    case createNamespace(String)
    case sysctl(namespace: String, key: String, value: String)
    /// Both ends get explicit, distinct ifindexes (see `Plan.vethIndexes`).
    case addVeth(namespace: String, name: String, peerNamespace: String, peer: String, index: Int32, peerIndex: Int32)
    /// Bridges and VRFs get explicit ifindexes too, from the same sequence as veths: the
    /// applier then knows every link's index from the plan and never looks one up.
    case addBridge(namespace: String, name: String, index: Int32)
    case addVRF(namespace: String, name: String, table: UInt32, index: Int32)
    case setMaster(namespace: String, link: String, master: String)
    /// `addrgenmode none`: no automatic IPv6 link-local (nor its MLD and router solicitations)
    /// on a bridge port, which would otherwise flood every other port of the bridge.
    case setAddrGenModeNone(namespace: String, link: String)
    /// A permanent neighbour entry (`nud permanent`): the kernel's neighbour table limit
    /// (gc_thresh3) is global, not per namespace, and permanent entries do not count against it.
    case addNeighbour(namespace: String, link: String, address: IPAddress, mac: MACAddress)
    case setUp(namespace: String, link: String)
    case addAddress(namespace: String, link: String, address: IPPrefix)
    case addRoute(namespace: String, route: PlannedRoute)
    case addRule(namespace: String, rule: PlannedRule)
    case deleteRule(namespace: String, rule: PlannedRule)
    case loadRuleset(namespace: String, ruleset: String)
    /// Elements of maps that the ruleset declares (table `inet TABLE`), loaded by netlink as one
    /// NFT_MSG_NEWSETELEM batch (one transaction) after the ruleset.
    case loadSetElements(namespace: String, table: String, maps: [NftMap])

    public var namespace: String {
        switch self {
        case .createNamespace(let ns): return ns
        case .sysctl(let ns, _, _), .addVeth(let ns, _, _, _, _, _), .addBridge(let ns, _, _), .addVRF(let ns, _, _, _),
             .setMaster(let ns, _, _), .setAddrGenModeNone(let ns, _), .addNeighbour(let ns, _, _, _),
             .setUp(let ns, _), .addAddress(let ns, _, _), .addRoute(let ns, _),
             .addRule(let ns, _), .deleteRule(let ns, _), .loadRuleset(let ns, _), .loadSetElements(let ns, _, _):
            return ns
        }
    }

    /// What this step does, in words an error message can start with.
    public var summary: String {
        switch self {
        case .createNamespace(let ns): return "create namespace \(ns)"
        case .sysctl(let ns, let k, let v): return "[\(ns)] sysctl \(k)=\(v)"
        case .addVeth(let ns, let n, let pns, let p, _, _): return "[\(ns)] add veth \(n) with peer \(p) in \(pns)"
        case .addBridge(let ns, let n, _): return "[\(ns)] add bridge \(n)"
        case .addVRF(let ns, let n, let t, _): return "[\(ns)] add vrf \(n) table \(t)"
        case .setMaster(let ns, let l, let m): return "[\(ns)] set \(l) master \(m)"
        case .setAddrGenModeNone(let ns, let l): return "[\(ns)] set \(l) addrgenmode none"
        case .addNeighbour(let ns, let l, let a, let m): return "[\(ns)] add permanent neighbour \(a) lladdr \(m) on \(l)"
        case .setUp(let ns, let l): return "[\(ns)] set \(l) up"
        case .addAddress(let ns, let l, let a): return "[\(ns)] add address \(a) on \(l)"
        case .addRoute(let ns, let r): return "[\(ns)] add route \(ShellRenderer.routeArguments(r).joined(separator: " "))"
        case .addRule(let ns, let r): return "[\(ns)] add rule \(ShellRenderer.ruleArguments(r).joined(separator: " "))"
        case .deleteRule(let ns, let r): return "[\(ns)] delete rule \(ShellRenderer.ruleArguments(r).joined(separator: " "))"
        case .loadRuleset(let ns, _): return "[\(ns)] load nftables ruleset"
        case .loadSetElements(let ns, let t, let maps):
            let n = maps.reduce(0) { $0 + $1.elements.count }
            return "[\(ns)] load \(n) elements into \(maps.map { "inet \(t) \($0.name)" }.joined(separator: ", ")) by netlink"

        }
    }
}

extension Step {
    /// Whether the step creates a link (the only steps that reach into a second namespace).
    public var createsLink: Bool {
        switch self {
        case .addVeth, .addBridge, .addVRF: return true
        default: return false
        }
    }
}

extension Plan {
    /// Every link the plan creates, by namespace and name, with the ifindex it asks for (`lo` is
    /// always 1): the applier resolves devices from this, without asking the kernel.
    public var linkIndexes: [String: [String: Int32]] {
        var out: [String: [String: Int32]] = [:]
        for step in steps {
            switch step {
            case .createNamespace(let ns): out[ns, default: [:]]["lo"] = 1
            case .addVeth(let ns, let n, let pns, let p, let i, let pi):
                out[ns, default: [:]][n] = i
                out[pns, default: [:]][p] = pi
            case .addBridge(let ns, let n, let i), .addVRF(let ns, let n, _, let i):
                out[ns, default: [:]][n] = i
            default: continue
            }
        }
        return out
    }
}
