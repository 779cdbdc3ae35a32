/// What the rtnetlink functions read and write: links, addresses, routes, policy rules.

public struct Link: Equatable, Sendable {
    public var index: Int32
    public var name: String
    /// IFLA_INFO_KIND: "veth", "bridge", "vrf", ...; nil for devices without one (lo, physical).
    public var kind: String?
    /// IFF_UP (administratively up).
    public var isUp: Bool
    /// IFLA_OPERSTATE as iproute2 prints it: UNKNOWN, NOTPRESENT, DOWN, LOWERLAYERDOWN, TESTING, DORMANT, UP.
    public var operState: String
    public var mtu: UInt32
    /// IFLA_MASTER (bridge or VRF), nil when none.
    public var master: Int32?
    /// IFLA_ADDRESS (the MAC), empty when none.
    public var mac: [UInt8]

    public init(index: Int32, name: String, kind: String? = nil, isUp: Bool = false, operState: String = "UNKNOWN",
                mtu: UInt32 = 0, master: Int32? = nil, mac: [UInt8] = []) {
        self.index = index; self.name = name; self.kind = kind; self.isUp = isUp
        self.operState = operState; self.mtu = mtu; self.master = master; self.mac = mac
    }
}

public struct InterfaceAddress: Equatable, Sendable {
    public var index: Int32
    /// The local address with its prefix length (`100.64.0.1/10`).
    public var prefix: IPPrefix
    /// RT_SCOPE_*: 0 universe, 253 link, 254 host.
    public var scope: UInt8

    public init(index: Int32, prefix: IPPrefix, scope: UInt8 = 0) {
        self.index = index; self.prefix = prefix; self.scope = scope
    }
}

public enum RouteScope {
    public static let universe: UInt8 = 0
    public static let site: UInt8 = 200
    public static let link: UInt8 = 253
    public static let host: UInt8 = 254
    public static let nowhere: UInt8 = 255
}

public enum RouteTable {
    public static let unspec: UInt32 = 0
    public static let compat: UInt32 = 252
    public static let `default`: UInt32 = 253
    public static let main: UInt32 = 254
    public static let local: UInt32 = 255
}

public struct Route: Equatable, Sendable {
    /// rtm_type. Dumps skip routes of other types (multicast, anycast, throw, nat).
    public enum Kind: UInt8, Sendable { case unicast = 1, local = 2, broadcast = 3, unreachable = 7, prohibit = 8, blackhole = 6 }

    public var family: IPFamily
    /// 0.0.0.0/0 or ::/0 for a default route.
    public var destination: IPPrefix
    /// Same family: RTA_GATEWAY. Other family: RTA_VIA (an IPv4 route via an IPv6 next hop, Linux 5.2+).
    public var gateway: IPAddress?
    /// RTA_OIF.
    public var outputInterface: Int32?
    /// RTA_PREFSRC.
    public var preferredSource: IPAddress?
    /// 254 = main. Tables up to 255 go in rtm_table, larger ones in RTA_TABLE (as iproute2 does).
    public var table: UInt32
    /// RT_SCOPE_*: 0 universe, 253 link, 254 host (see RouteScope).
    public var scope: UInt8
    public var kind: Kind
    /// RTA_PRIORITY.
    public var metric: UInt32?
    /// rtm_protocol: 3 = boot (what `ip route add` uses), 2 = kernel, 4 = static.
    public var protocolID: UInt8

    public init(family: IPFamily? = nil, destination: IPPrefix, gateway: IPAddress? = nil, outputInterface: Int32? = nil,
                preferredSource: IPAddress? = nil, table: UInt32 = RouteTable.main, scope: UInt8 = RouteScope.universe,
                kind: Kind = .unicast, metric: UInt32? = nil, protocolID: UInt8 = 3) {
        self.family = family ?? destination.family
        self.destination = destination
        self.gateway = gateway
        self.outputInterface = outputInterface
        self.preferredSource = preferredSource
        self.table = table
        self.scope = scope
        self.kind = kind
        self.metric = metric
        self.protocolID = protocolID
    }

    /// The default route of a family (0.0.0.0/0 or ::/0).
    public static func defaultDestination(_ family: IPFamily) -> IPPrefix { IPPrefix(.any(family), 0) }
}

public struct Rule: Equatable, Sendable {
    /// fib_rule_hdr.action (FR_ACT_*). Dumps skip goto/nop rules.
    public enum Action: UInt8, Sendable { case toTable = 1, unreachable = 7, blackhole = 6, prohibit = 8 }

    public var family: IPFamily
    /// FRA_PRIORITY (the `pref`).
    public var priority: UInt32
    /// FRA_TABLE / header table; nil for none (l3mdev rules, unreachable...).
    public var table: UInt32?
    /// FRA_FWMARK.
    public var fwmark: UInt32?
    /// FRA_FWMASK; nil means the kernel default 0xffffffff (dumps report that as nil too).
    public var fwmask: UInt32?
    /// FRA_L3MDEV = 1: look up the table of the VRF the packet belongs to.
    public var l3mdev: Bool
    public var action: Action

    public init(family: IPFamily, priority: UInt32, table: UInt32? = nil, fwmark: UInt32? = nil, fwmask: UInt32? = nil,
                l3mdev: Bool = false, action: Action = .toTable) {
        self.family = family; self.priority = priority; self.table = table; self.fwmark = fwmark
        self.fwmask = fwmask; self.l3mdev = l3mdev; self.action = action
    }
}
