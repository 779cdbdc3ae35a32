import NetAddress

/// One event of the NAT log as the collectors see it (RFC 8158's event types), independent of
/// how it is carried (IPFIX, syslog). Pure value: the runtime builds it from conntrack records
/// and from the port-block policy.
public struct NATLogEvent: Equatable, Sendable {
    public enum Kind: Equatable, Sendable {
        case sessionCreate, sessionDelete
        case portBlockAllocation, portBlockDeallocation
        /// The pool had no address (port block) for a subscriber.
        case addressesExhausted
        /// A per-subscriber session limit was hit; `limit` is the configured maximum.
        case quotaExceeded(limit: UInt32)
    }

    public var kind: Kind
    /// Milliseconds since the Unix epoch (observationTimeMilliseconds).
    public var timeMilliseconds: UInt64
    /// The subscriber domain (ingressVRFID); 0 when not known.
    public var vrfID: UInt32
    public var protocolNumber: UInt8
    /// Inside (pre-NAT) source; nil for events that cannot say who (a counter).
    public var inside: IPAddress?
    public var insidePort: UInt16
    public var outside: IPAddress?
    public var outsidePort: UInt16
    /// Destination, when the policy logs it (nil: left out, RFC 6888 REQ-12).
    public var destination: IPAddress?
    public var destinationPort: UInt16
    /// A port block: first and last port (step 1, contiguous).
    public var ports: ClosedRange<UInt16>?
    /// The domain's name, for text outputs (IPFIX carries only the id).
    public var domain: String?

    public init(kind: Kind, timeMilliseconds: UInt64, vrfID: UInt32 = 0, protocolNumber: UInt8 = 0,
                inside: IPAddress? = nil, insidePort: UInt16 = 0, outside: IPAddress? = nil, outsidePort: UInt16 = 0,
                destination: IPAddress? = nil, destinationPort: UInt16 = 0, ports: ClosedRange<UInt16>? = nil, domain: String? = nil) {
        self.kind = kind
        self.timeMilliseconds = timeMilliseconds
        self.vrfID = vrfID
        self.protocolNumber = protocolNumber
        self.inside = inside
        self.insidePort = insidePort
        self.outside = outside
        self.outsidePort = outsidePort
        self.destination = destination
        self.destinationPort = destinationPort
        self.ports = ports
        self.domain = domain
    }

    /// RFC 8158 / IANA natEvent value of this event.
    public var natEvent: UInt8 {
        switch kind {
        case .sessionCreate: return IPFIX.NATEvent.nat44SessionCreate
        case .sessionDelete: return IPFIX.NATEvent.nat44SessionDelete
        case .portBlockAllocation: return IPFIX.NATEvent.portBlockAllocation
        case .portBlockDeallocation: return IPFIX.NATEvent.portBlockDeallocation
        case .addressesExhausted: return IPFIX.NATEvent.addressesExhausted
        case .quotaExceeded: return IPFIX.NATEvent.quotaExceeded
        }
    }

    /// A short name for syslog's MSGID and for text.
    public var name: String {
        switch kind {
        case .sessionCreate: return "SESSION_CREATE"
        case .sessionDelete: return "SESSION_DELETE"
        case .portBlockAllocation: return "BLOCK_ALLOC"
        case .portBlockDeallocation: return "BLOCK_RELEASE"
        case .addressesExhausted: return "ADDRESSES_EXHAUSTED"
        case .quotaExceeded: return "QUOTA_EXCEEDED"
        }
    }

    /// One allocation (or release) per subscriber the deterministic policy covers: every inside
    /// address of the policy's range in every domain of the lab, as the ruleset's map holds them.
    /// The policy allocates them all at `up`, so this is what a logging CGN reports at start.
    public static func portBlocks(of lab: Lab, release: Bool = false, timeMilliseconds: UInt64) -> [NATLogEvent] {
        guard let policy = lab.portBlockPolicy else { return [] }
        var out: [NATLogEvent] = []
        out.reserveCapacity(lab.router.subscribers.count * policy.insideCount)
        for d in lab.router.subscribers.sorted(by: { $0.id < $1.id }) {
            for i in 0..<policy.insideCount {
                let inside = policy.insideRange.network.address.advanced(by: UInt64(i))
                guard let a = policy.allocation(domainID: d.id, inside: inside) else { continue }
                out.append(NATLogEvent(kind: release ? .portBlockDeallocation : .portBlockAllocation,
                                       timeMilliseconds: timeMilliseconds, vrfID: d.id, inside: inside,
                                       outside: a.publicAddress, ports: a.ports, domain: d.name))
            }
        }
        return out
    }
}
