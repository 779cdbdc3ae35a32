import NetAddress

/// An address and port (an echo identifier for ICMP) as one side of a flow sees it.
public struct FlowEndpoint: Hashable, Sendable, CustomStringConvertible {
    public var address: IPAddress
    public var port: UInt16
    public init(_ address: IPAddress, _ port: UInt16) {
        self.address = address
        self.port = port
    }
    public var description: String { "\(address):\(port)" }
}

public enum MappingBehaviour: String, Sendable {
    case endpointIndependent = "endpoint-independent"
    case addressDependent = "address-dependent"
    case addressAndPortDependent = "address-and-port-dependent"
}

public enum FilteringBehaviour: String, Sendable {
    case endpointIndependent = "endpoint-independent"
    case addressDependent = "address-dependent"
    case addressAndPortDependent = "address-and-port-dependent"
}

/// One inside endpoint's flows to several destinations and the public endpoint each left with,
/// as the receivers on the uplink saw it (nil: nothing arrived there).
public struct MappingObservation: Sendable, Equatable {
    public struct Flow: Sendable, Equatable {
        public var destination: FlowEndpoint
        public var mapped: FlowEndpoint?
        public init(destination: FlowEndpoint, mapped: FlowEndpoint?) {
            self.destination = destination
            self.mapped = mapped
        }
    }
    public var subscriber: String
    public var proto: String
    public var inside: FlowEndpoint
    public var flows: [Flow]

    public init(subscriber: String, proto: String, inside: FlowEndpoint, flows: [Flow]) {
        self.subscriber = subscriber
        self.proto = proto
        self.inside = inside
        self.flows = flows
    }

    public var complete: Bool { !flows.isEmpty && flows.allSatisfy { $0.mapped != nil } }
    public var mappedEndpoints: Set<FlowEndpoint> { Set(flows.compactMap(\.mapped)) }

    /// RFC 4787 section 4.1 from what arrived: one public endpoint for every destination (EIM);
    /// one per destination address (address-dependent); otherwise one per address and port.
    /// nil when a flow did not arrive or fewer than two destinations were tried.
    public var behaviour: MappingBehaviour? {
        guard complete, flows.count >= 2 else { return nil }
        if mappedEndpoints.count == 1 { return .endpointIndependent }
        let byAddress = Dictionary(grouping: flows, by: { $0.destination.address })
        if byAddress.values.allSatisfy({ Set($0.compactMap(\.mapped)).count == 1 }) { return .addressDependent }
        return .addressAndPortDependent
    }

    public var text: String {
        let each = flows.map { "\($0.destination)<-\($0.mapped.map { "\($0)" } ?? "nothing")" }.joined(separator: ", ")
        return "\(subscriber) \(inside): \(each)"
    }
}

/// After one outbound packet from an inside endpoint to A:p, which inbound packets to its
/// mapping reached it: from A:p itself (the control), from A:q, from B:p.
public struct FilteringObservation: Sendable, Equatable {
    public var subscriber: String
    public var mapping: FlowEndpoint
    public var fromSameEndpoint: Bool
    public var fromOtherPort: Bool
    public var fromOtherAddress: Bool

    public init(subscriber: String, mapping: FlowEndpoint, fromSameEndpoint: Bool, fromOtherPort: Bool, fromOtherAddress: Bool) {
        self.subscriber = subscriber
        self.mapping = mapping
        self.fromSameEndpoint = fromSameEndpoint
        self.fromOtherPort = fromOtherPort
        self.fromOtherAddress = fromOtherAddress
    }

    /// RFC 4787 section 5; nil when not even the control packet arrived (nothing to conclude).
    public var behaviour: FilteringBehaviour? {
        guard fromSameEndpoint else { return nil }
        if fromOtherAddress { return .endpointIndependent }
        if fromOtherPort { return .addressDependent }
        return .addressAndPortDependent
    }

    public var text: String {
        func w(_ b: Bool) -> String { b ? "arrived" : "did not arrive" }
        return "\(subscriber) via \(mapping): from the same endpoint \(w(fromSameEndpoint)), from another port \(w(fromOtherPort)), from another address \(w(fromOtherAddress))"
    }
}

/// A subscriber sending to another subscriber's public mapping.
public struct HairpinObservation: Sendable, Equatable {
    public var proto: String
    public var sender: String
    public var receiver: String
    /// The receiver's public mapping the packet was sent to.
    public var target: FlowEndpoint
    /// The sender's own public mapping (what the receiver should see as the source).
    public var senderMapping: FlowEndpoint?
    /// The source the receiver saw, nil if nothing arrived.
    public var seenSource: FlowEndpoint?
    public var waitedMilliseconds: Int

    public init(proto: String, sender: String, receiver: String, target: FlowEndpoint, senderMapping: FlowEndpoint?,
                seenSource: FlowEndpoint?, waitedMilliseconds: Int) {
        self.proto = proto
        self.sender = sender
        self.receiver = receiver
        self.target = target
        self.senderMapping = senderMapping
        self.seenSource = seenSource
        self.waitedMilliseconds = waitedMilliseconds
    }

    public var arrived: Bool { seenSource != nil }
    public var text: String {
        let seen = seenSource.map { "arrived from \($0)" } ?? "nothing arrived in \(waitedMilliseconds) ms"
        return "\(proto) \(sender) -> \(receiver)'s mapping \(target): \(seen)" + (senderMapping.map { "; \(sender)'s own mapping is \($0)" } ?? "")
    }
}

/// A SYN from the uplink to a public address and port nothing maps.
public struct UnsolicitedSYNObservation: Sendable, Equatable {
    public var target: FlowEndpoint
    /// What came back ("TCP reset", "ICMP ... (icmp 3/3)"), nil if nothing.
    public var answer: String?
    public var answerMilliseconds: Double?
    public var waitedMilliseconds: Int
    /// The router's drop rule whose counter covered the SYN, read from the kernel ("silently dropped" evidence).
    public var droppedBy: String?

    public init(target: FlowEndpoint, answer: String?, answerMilliseconds: Double?, waitedMilliseconds: Int, droppedBy: String?) {
        self.target = target
        self.answer = answer
        self.answerMilliseconds = answerMilliseconds
        self.waitedMilliseconds = waitedMilliseconds
        self.droppedBy = droppedBy
    }
}

/// An ICMP error expected for a flow, as the socket that sent the quoted packet saw it.
public struct ICMPErrorObservation: Sendable, Equatable {
    public var flow: String
    /// e.g. "destination unreachable, port unreachable (icmp 3/3) from 192.0.2.1"; nil: none arrived.
    public var received: String?
    public var type: UInt8?
    public var code: UInt8?
    /// The outer source of the error, as it arrived.
    public var from: IPAddress?

    public init(flow: String, received: String?, type: UInt8? = nil, code: UInt8? = nil, from: IPAddress? = nil) {
        self.flow = flow
        self.received = received
        self.type = type
        self.code = code
        self.from = from
    }
}

/// A datagram of `bytes` that crossed the NAT in fragments: whether the receiver got it whole.
public struct FragmentObservation: Sendable, Equatable {
    public var flow: String
    public var bytes: Int
    public var arrivedWhole: Bool
    public init(flow: String, bytes: Int, arrivedWhole: Bool) {
        self.flow = flow
        self.bytes = bytes
        self.arrivedWhole = arrivedWhole
    }
    public var text: String { "\(flow): \(bytes) bytes " + (arrivedWhole ? "arrived whole" : "did not arrive") }
}

/// An ICMP port unreachable about an established TCP connection, sent by the uplink to the
/// connection's mapping: whether it reached the inside host, and whether the connection then
/// still carried data both ways.
public struct TCPAfterErrorObservation: Sendable, Equatable {
    public var flow: String
    public var errorArrived: Bool
    public var dataOutbound: Bool
    public var dataInbound: Bool
    public init(flow: String, errorArrived: Bool, dataOutbound: Bool, dataInbound: Bool) {
        self.flow = flow
        self.errorArrived = errorArrived
        self.dataOutbound = dataOutbound
        self.dataInbound = dataInbound
    }
}

/// The public endpoint of one flow before and after an ICMP error about it.
public struct MappingAfterError: Sendable, Equatable {
    public var flow: String
    public var before: FlowEndpoint?
    public var after: FlowEndpoint?
    public init(flow: String, before: FlowEndpoint?, after: FlowEndpoint?) {
        self.flow = flow
        self.before = before
        self.after = after
    }
}

/// A mapping's conntrack timeout (seconds left) before and after a packet in one direction,
/// with a pause in between so that a refresh shows.
public struct RefreshObservation: Sendable, Equatable {
    public var direction: String
    public var beforeSeconds: UInt32?
    public var afterSeconds: UInt32?
    public var pausedMilliseconds: Int
    public init(direction: String, beforeSeconds: UInt32?, afterSeconds: UInt32?, pausedMilliseconds: Int) {
        self.direction = direction
        self.beforeSeconds = beforeSeconds
        self.afterSeconds = afterSeconds
        self.pausedMilliseconds = pausedMilliseconds
    }
    /// The timer went back up after the packet (it would only fall while pausing).
    public var refreshed: Bool? {
        guard let b = beforeSeconds, let a = afterSeconds else { return nil }
        return a > b
    }
}

/// Everything the runtime measured and read; the verdicts are computed from this alone.
public struct ConformanceEvidence: Sendable {
    public var udpMappings: [MappingObservation] = []
    public var tcpMappings: [MappingObservation] = []
    public var icmpMappings: [MappingObservation] = []
    /// A UDP flow from a well-known inside port (0-1023).
    public var lowPortMapping: MappingObservation?
    /// Two subscribers with the same inside address and port, to the same destinations at once.
    public var udpCollision: [MappingObservation] = []
    public var tcpCollision: [MappingObservation] = []
    public var udpFiltering: FilteringObservation?
    /// For TCP the control is the probe's own connection to A:p; the others are SYNs to its mapping.
    public var tcpFiltering: FilteringObservation?
    /// A DF=1 datagram too big for a temporary lower-MTU route of the router: the ICMP error it got.
    public var fragmentationNeeded: ICMPErrorObservation?
    /// A DF=0 datagram too big for that route: whether the receiver got it whole.
    public var fragmentedOnTheWay: FragmentObservation?
    /// Datagrams the sender sent as fragments, in order and in reverse order.
    public var fragmentsInOrder: FragmentObservation?
    public var fragmentsOutOfOrder: FragmentObservation?
    public var udpHairpin: HairpinObservation?
    public var tcpHairpin: HairpinObservation?
    public var unsolicitedSYN: UnsolicitedSYNObservation?
    /// From outside to the inside host: a UDP datagram and a TCP SYN to a refused port.
    public var udpErrorInbound: ICMPErrorObservation?
    public var tcpErrorInbound: ICMPErrorObservation?
    /// From the inside host (its closed port) to the uplink sender of a reply.
    public var udpErrorOutbound: ICMPErrorObservation?
    /// The NAT's public address of the subscriber whose error went outward.
    public var udpErrorOutboundMapping: FlowEndpoint?
    public var mappingAfterError: MappingAfterError?
    /// An established TCP connection that got an ICMP error through the NAT.
    public var tcpAfterError: TCPAfterErrorObservation?
    public var outboundRefresh: RefreshObservation?
    public var inboundRefresh: RefreshObservation?
    /// sysctl name (without net.netfilter.) to value, read in the router's namespace.
    public var settings: [String: Int] = [:]
    /// Rules of the router's live ruleset that attach a conntrack helper (an ALG); nil: not read.
    public var helperRules: [String]?
    /// Rules of the router's live ruleset that enforce a per-subscriber quota (`ct count over`);
    /// nil: not read.
    public var quotaRules: [String]?
    /// Rules of the router's live ruleset that accept related packets (ICMP errors); nil: not read.
    public var relatedRules: [String]?
    /// Why a probe could not run, by probe name.
    public var problems: [String: String] = [:]

    public init() {}
}
