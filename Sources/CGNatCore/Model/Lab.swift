import NetAddress

/// The lab as data: one CGN router with an uplink domain and subscriber domains, and the hosts
/// around it. Backends turn this into a plan; nothing here knows about namespaces or VRFs.
public struct Lab: Equatable, Sendable {
    /// Prefix of every namespace the lab owns; two labs with different names coexist.
    public var name: String
    public var router: Router
    public var hosts: [Host]
    /// Rows the lab's author adds to `check`: what the design must do (netlab's `validate`).
    public var expectations: [Expectation]
    /// The file the lab was read from; nil for the embedded default.
    public var origin: String?

    public init(name: String, router: Router, hosts: [Host], expectations: [Expectation] = [], origin: String? = nil) {
        self.name = name
        self.router = router
        self.hosts = hosts
        self.expectations = expectations
        self.origin = origin
    }
}

/// One extra check row: from a host, to an address, over a protocol, must reach (seen at the
/// target from `source`, when given) or be blocked.
public struct Expectation: Equatable, Sendable {
    public enum Outcome: String, Sendable, CaseIterable { case reach, blocked }
    public var from: String
    public var to: IPAddress
    public var proto: ProbeProtocol
    public var outcome: Outcome
    public var source: IPAddress?
    /// Where it was written (`labs/x.yaml:40:5`), for the row's detail; nil if not from a file.
    public var location: String?

    public init(from: String, to: IPAddress, proto: ProbeProtocol, outcome: Outcome, source: IPAddress? = nil, location: String? = nil) {
        self.from = from
        self.to = to
        self.proto = proto
        self.outcome = outcome
        self.source = source
        self.location = location
    }
}

public struct Router: Equatable, Sendable {
    /// Context name of the router itself (`main`); its domains are `main:<domain>`.
    public var name: String
    public var uplink: UplinkDomain
    public var subscribers: [SubscriberDomain]
    public var nat: NATPolicy

    public init(name: String, uplink: UplinkDomain, subscribers: [SubscriberDomain], nat: NATPolicy) {
        self.name = name
        self.uplink = uplink
        self.subscribers = subscribers
        self.nat = nat
    }
}

/// The routing domain facing the ISP (`up`), holding the uplink interface (`muplink`).
public struct UplinkDomain: Equatable, Sendable {
    public var name: String
    public var interface: String
    public var addresses: [IPPrefix]
    /// Default gateways, one per family, on the uplink's link.
    public var gateways: [IPAddress]

    public init(name: String, interface: String, addresses: [IPPrefix], gateways: [IPAddress]) {
        self.name = name
        self.interface = interface
        self.addresses = addresses
        self.gateways = gateways
    }
}

/// A subscriber routing domain (`blue`, `red`): a bridge its hosts attach to, the shared
/// subscriber space on it, and what the uplink domain routes into it.
public struct SubscriberDomain: Equatable, Sendable {
    public var name: String
    /// Small positive number that keys this domain's conntrack zone, ct mark and return table.
    public var id: UInt32
    public var bridge: String
    public var addresses: [IPPrefix]
    /// Prefixes routed to this domain from the uplink without NAT (IPv6 subnets, routed IPv4).
    public var routed: [IPPrefix]

    public init(name: String, id: UInt32, bridge: String, addresses: [IPPrefix], routed: [IPPrefix]) {
        self.name = name
        self.id = id
        self.bridge = bridge
        self.addresses = addresses
        self.routed = routed
    }
}

/// IPv4 from subscriber domains is translated once, on the uplink, to a public address of the
/// pool: by default through deterministic port blocks (endpoint-independent mapping, paired
/// pooling; RFC 4787 REQ-1, RFC 6888 REQ-2, RFC 7422).
public struct NATPolicy: Equatable, Sendable {
    public enum Mapping: Equatable, Sendable {
        /// Each subscriber owns one address and a range of ports (ICMP ids) of it, given by
        /// `PortBlockPolicy`; the kernel keeps a subscriber's inside port's mapping for every
        /// destination while its concurrent ports fit its block.
        case portBlocks(PortBlocks)
        /// `snat ... fully-random` over the whole pool: a new public port per destination
        /// (address-and-port-dependent mapping). Kept to show what breaks EIM.
        case random
    }

    /// The port-block parameters a lab states; the rest (pool, domains) come from the lab.
    public struct PortBlocks: Equatable, Sendable {
        /// The inside addresses every domain's blocks cover; nil: the first /24 of `inside`.
        public var insideRange: IPPrefix?
        public var ports: ClosedRange<UInt16>
        /// Ports per block; nil: the largest that fits (pool ports / subscribers), at most 4096.
        public var blockSize: Int?
        public var blocksPerSubscriber: Int

        public static let maximumDefaultBlockSize = 4096

        public init(insideRange: IPPrefix? = nil, ports: ClosedRange<UInt16> = PortBlockPolicy.defaultPorts,
                    blockSize: Int? = nil, blocksPerSubscriber: Int = 1) {
            self.insideRange = insideRange
            self.ports = ports
            self.blockSize = blockSize
            self.blocksPerSubscriber = blocksPerSubscriber
        }
    }

    public var inside: IPPrefix
    /// The public addresses; the first is `publicAddress`.
    public var pool: [IPPrefix]
    public var mapping: Mapping
    /// Concurrent IPv4 sessions per subscriber (RFC 6888 REQ-4); a new one over it is dropped and
    /// counted. nil: no limit but the subscriber's ports.
    public var sessionLimit: Int?
    /// Who may reach a live mapping from outside (RFC 4787 REQ-8).
    public var filtering: Filtering = .addressPortDependent

    public enum Filtering: String, Equatable, Sendable, CaseIterable {
        /// Only the endpoint (address and port) the subscriber sent to: conntrack's own replies.
        case addressPortDependent = "address-port-dependent"
        /// Any external host, once the mapping exists (what P2P asks for): a DNAT through the
        /// mappings learned in the packet path. Needs port blocks (the block names the domain).
        case endpointIndependent = "endpoint-independent"
    }

    /// The first public address (the seed's only one, which is also the uplink's own).
    public var publicAddress: IPAddress { pool.first?.network.address ?? IPAddress.any(.v4) }

    public init(inside: IPPrefix, pool: [IPPrefix], mapping: Mapping = .portBlocks(PortBlocks()), sessionLimit: Int? = nil,
                filtering: Filtering = .addressPortDependent) {
        self.inside = inside
        self.pool = pool
        self.mapping = mapping
        self.sessionLimit = sessionLimit
        self.filtering = filtering
    }

    public init(inside: IPPrefix, publicAddress: IPAddress, mapping: Mapping = .portBlocks(PortBlocks()), sessionLimit: Int? = nil) {
        self.init(inside: inside, pool: [IPPrefix(publicAddress, 32)], mapping: mapping, sessionLimit: sessionLimit)
    }
}

extension Lab {
    /// The deterministic allocation of this lab's policy: nil unless the mapping is port blocks.
    /// Domains are provisioned up to the highest id in the lab, so reordering never remaps.
    public var portBlockPolicy: PortBlockPolicy? {
        guard case .portBlocks(let b) = router.nat.mapping else { return nil }
        let nat = router.nat
        let range = b.insideRange ?? IPPrefix(nat.inside.network.address, max(nat.inside.length, 24)).network
        let maxID = router.subscribers.map(\.id).max() ?? 1
        var policy = PortBlockPolicy(pool: nat.pool, insideRange: range, maxDomainID: maxID, ports: b.ports,
                                     blockSize: 1, blocksPerSubscriber: b.blocksPerSubscriber)
        if let size = b.blockSize {
            policy.blockSize = size
        } else {
            let fit = policy.publicAddressCount * b.ports.count / max(policy.subscriberCount * b.blocksPerSubscriber, 1)
            policy.blockSize = max(1, min(fit, NATPolicy.PortBlocks.maximumDefaultBlockSize))
        }
        return policy
    }

    /// Whether the router hairpins (RFC 4787 REQ-9): with port blocks (a public port's block names
    /// the domain a hairpinned packet goes to) and a pool that no subscriber reaches on-link and
    /// the router does not own. The seed's single address is inside the subscribers' own prefix,
    /// so a subscriber sending to it never reaches the router (DESIGN.md section 7).
    public var hairpinning: Bool {
        guard portBlockPolicy != nil else { return false }
        let nat = router.nat
        let onLink = router.subscribers.flatMap(\.addresses).filter { $0.family == .v4 }.map(\.network) + [nat.inside]
        let local = router.uplink.addresses.map(\.address)
        return !nat.pool.contains { p in onLink.contains { $0.overlaps(p) } || local.contains { p.contains($0) } }
    }

    /// A subscriber host's block (for its first inside IPv4 address), if the policy gives one.
    public func portBlock(of h: Host, policy: PortBlockPolicy? = nil) -> PortBlockPolicy.Allocation? {
        guard let policy = policy ?? portBlockPolicy, case .domain(let dn) = h.attachment, let d = domain(named: dn),
              let inside = h.addresses.first(where: { $0.family == .v4 && router.nat.inside.contains($0.address) })?.address
        else { return nil }
        return policy.allocation(domainID: d.id, inside: inside)
    }
}

/// A host next to the router: the uplink host, or a subscriber on a domain's bridge.
public struct Host: Equatable, Sendable {
    public enum Attachment: Equatable, Sendable {
        /// Peer of the router's uplink interface.
        case uplink
        /// A port of this subscriber domain's bridge; the port carries the host's name.
        case domain(String)
    }

    public var name: String
    public var attachment: Attachment
    /// The host's own interface name (`client1`, `cuplink`).
    public var interface: String
    public var addresses: [IPPrefix]
    /// Addresses on the host's loopback (the uplink's public 192.0.2.1).
    public var loopbackAddresses: [IPPrefix]
    public var routes: [HostRoute]

    public init(name: String, attachment: Attachment, interface: String, addresses: [IPPrefix],
                loopbackAddresses: [IPPrefix] = [], routes: [HostRoute]) {
        self.name = name
        self.attachment = attachment
        self.interface = interface
        self.addresses = addresses
        self.loopbackAddresses = loopbackAddresses
        self.routes = routes
    }
}

public struct HostRoute: Equatable, Sendable {
    public var destination: IPPrefix
    public var gateway: IPAddress
    public var source: IPAddress?

    public init(_ destination: IPPrefix, via gateway: IPAddress, source: IPAddress? = nil) {
        self.destination = destination
        self.gateway = gateway
        self.source = source
    }
}

extension Lab {
    public func domain(named name: String) -> SubscriberDomain? {
        router.subscribers.first { $0.name == name }
    }

    public func hosts(in domain: String) -> [Host] {
        hosts.filter { $0.attachment == .domain(domain) }
    }

    public var uplinkHost: Host? { hosts.first { $0.attachment == .uplink } }
}
