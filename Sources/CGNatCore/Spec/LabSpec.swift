/// What a lab file says, before expansion: names may be patterns (`"{domain}_c{i:03}"`),
/// subscribers and domains may be templates, addresses are still text. `LabExpansion` turns it
/// into the resolved `Lab` the plans use. Every value keeps the place it was written.
public struct LabSpec: Equatable, Sendable {
    public var name: Placed<String>
    public var router: RouterSpec
    /// Hosts on the uplink's link (the model has exactly one today).
    public var uplinkHosts: [HostSpec]
    public var domains: [DomainSpec]
    public var expectations: [ExpectationSpec]
    public var at: SpecPlace
}

public struct RouterSpec: Equatable, Sendable {
    public var name: Placed<String>
    public var uplink: UplinkSpec
    public var nat: NATSpec
    public var at: SpecPlace
}

public struct UplinkSpec: Equatable, Sendable {
    public var name: Placed<String>
    public var interface: Placed<String>
    public var addresses: [Placed<String>]
    public var gateways: [Placed<String>]
    public var at: SpecPlace
}

/// The NAT policy: `public` (one of the uplink's addresses) or `pool` (addresses the uplink
/// routes to the router), the mapping, and its port blocks.
public struct NATSpec: Equatable, Sendable {
    public var inside: Placed<String>
    public var publicAddress: Placed<String>?
    public var pool: [Placed<String>]?
    public var mapping: Placed<String>?
    public var portBlocks: PortBlocksSpec?
    public var sessions: Placed<Int>?
    public var filtering: Placed<String>? = nil
    public var at: SpecPlace
}

public struct PortBlocksSpec: Equatable, Sendable {
    public var insideRange: Placed<String>?
    /// "LOW-HIGH".
    public var ports: Placed<String>?
    public var size: Placed<Int>?
    public var perSubscriber: Placed<Int>?
    public var at: SpecPlace
}

/// One subscriber domain, or with `count` a template for `count` domains whose text fields are
/// patterns over `{i}` (1...count) and `{domain}` (the generated name).
public struct DomainSpec: Equatable, Sendable {
    public enum ID: Equatable, Sendable {
        case number(Int)
        /// A pattern such as `"{i}"` or `"{i}0"`, for generated domains.
        case pattern(String)
    }

    public var count: Placed<Int>?
    public var name: Placed<String>
    public var id: Placed<ID>
    public var bridge: Placed<String>
    /// The router's addresses on the bridge: the subscribers' gateways; their networks are the
    /// domain's subnets.
    public var addresses: [Placed<String>]
    public var routed: [Placed<String>]
    public var hosts: [HostSpec]
    public var subscribers: SubscriberTemplate?
    public var at: SpecPlace
}

/// `count` subscribers named by a pattern over `{i}` and `{domain}`, with one address allocated
/// from each prefix of `from` (by default the domain's subnets), skipping addresses taken by the
/// gateway and the domain's other hosts, and IPv4 network and broadcast addresses.
public struct SubscriberTemplate: Equatable, Sendable {
    public var count: Placed<Int>
    public var name: Placed<String>
    public var interface: Placed<String>?
    public var from: [Placed<String>]?
    public var routes: [RouteSpec]?
    public var at: SpecPlace
}

public struct HostSpec: Equatable, Sendable {
    public var name: Placed<String>
    public var interface: Placed<String>?
    public var addresses: [Placed<String>]
    public var loopback: [Placed<String>]
    /// nil: subscribers get a default route per family via their domain's gateway addresses.
    public var routes: [RouteSpec]?
    public var at: SpecPlace
}

public struct RouteSpec: Equatable, Sendable {
    public var to: Placed<String>
    public var via: Placed<String>
    public var src: Placed<String>?
    public var at: SpecPlace
}

public struct ExpectationSpec: Equatable, Sendable {
    public var from: Placed<String>
    public var to: Placed<String>
    public var proto: Placed<String>
    public var expect: Placed<String>
    public var source: Placed<String>?
    public var at: SpecPlace
}

public enum LabSpecDefaults {
    /// A host's interface when the file names none.
    public static let hostInterface = "eth0"
    /// The kernel refuses the 1024th port of a bridge (EXFULL, BR_MAX_PORTS).
    public static let maxBridgePorts = 1023
}
