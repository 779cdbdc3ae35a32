import NetAddress

/// Where a probe runs or where it is observed: a context name (for reports) and an open fd on its
/// network namespace (/run/netns/NAME). `device`, when set, binds every socket opened there to that
/// device (SO_BINDTODEVICE), as the VRF backend needs for sockets inside a VRF.
public struct ProbeEndpoint: Sendable, CustomStringConvertible {
    public var context: String
    public var namespaceFD: Int32
    public var device: String?

    public init(context: String, namespaceFD: Int32, device: String? = nil) {
        self.context = context
        self.namespaceFD = namespaceFD
        self.device = device
    }

    public var description: String { context }
}

public enum ProbeProtocol: String, Sendable, CustomStringConvertible {
    case icmp, udp, tcp
    public var description: String { rawValue }
}

public enum ProbeExpectation: Sendable, Equatable, CustomStringConvertible {
    /// The far side must see the packet (from `source` if given) and the sender must get the answer.
    case reach(source: IPAddress?)
    /// Nothing may arrive at the target and the sender must get no answer. An ICMP error (for
    /// example admin-prohibited from the router) or a local send error still passes; the detail says which.
    case blocked

    public var description: String {
        switch self {
        case .reach(let source?): return "reach from \(source)"
        case .reach(nil): return "reach"
        case .blocked: return "blocked"
        }
    }
}

/// What a row proves, for the per-kind summary of large labs.
public enum RowKind: String, Sendable, CaseIterable, CustomStringConvertible {
    case gateway, neighbour
    case crossDomain = "cross-domain"
    case crossDomainV4 = "cross-domain-v4"
    case uplinkV6 = "uplink-v6"
    case routerV6 = "router-v6"
    case nat
    case routedOut = "routed-out"
    case routedIn = "routed-in"
    case inboundV6 = "inbound-v6"
    case unsolicited
    case routerUplink = "router-uplink"
    case samePort = "same-port"
    /// A host sends with its bridge neighbour's address: the bridge's source binding drops it.
    case spoofNeighbour = "spoof-neighbour"
    case inboundMapping = "inbound-mapping"
    case inboundUnheld = "inbound-unheld"
    case expectation
    public var description: String { rawValue }
}

/// An nftables rule of the lab's ruleset, named by the comment `Ruleset` puts on it; `check`
/// resolves it to its handle in the kernel (in `context`'s namespace) after `up`.
public struct RuleRef: Hashable, Sendable, CustomStringConvertible {
    public var context: String
    public var family: String
    public var table: String
    public var chain: String
    public var comment: String
    public init(context: String, family: String = "inet", table: String, chain: String, comment: String) {
        self.context = context
        self.family = family
        self.table = table
        self.chain = chain
        self.comment = comment
    }
    public var description: String { "\(context) \(family) \(table) \(chain) \"\(comment)\"" }
}

/// What stops a row expected blocked: a rule of the ruleset, or something that is not a rule.
public enum BlockedBy: Hashable, Sendable {
    case rule(RuleRef)
    case mechanism(String)
}

/// How a blocked row concludes before its timeout: from positive evidence where it can exist.
public enum BlockEvidence: Sendable, Equatable {
    /// The router's own ICMP admin-prohibited error on the sender's socket (it quotes this probe).
    case reject
    /// The blocking rule's packet counter, read before and during the run, covers this probe.
    case counted(RuleRef)
    /// No evidence can exist: wait the whole timeout for a leak.
    case wait
}

/// One row of the check matrix: send one packet (ICMP echo, UDP datagram or TCP SYN) from `from`
/// to `destination` and watch for it at `target`.
public struct Probe: Sendable {
    public var name: String
    public var from: ProbeEndpoint
    /// Source address to bind (like `ping -I ADDR`).
    public var bindAddress: IPAddress?
    /// UDP/TCP source port; for ICMP the echo identifier. nil: the kernel picks.
    public var sourcePort: UInt16?
    public var destination: IPAddress
    public var proto: ProbeProtocol
    /// Where the packet should (or must not) arrive. UDP/TCP listeners and the capture live here.
    public var target: ProbeEndpoint
    /// Capture interface in the target namespace (e.g. "client1"); nil: every interface.
    public var targetInterface: String?
    public var expect: ProbeExpectation
    /// UDP/TCP: the port to send to and the listener's port at the target, when the row needs
    /// particular ones (an inbound row: the mapped public port, and the inside port it maps to).
    /// nil: one fresh port for both.
    public var destinationPort: UInt16?
    public var listenerPort: UInt16?
    /// Why this row's detail legitimately differs between backends (shown with the row).
    public var note: String?
    public var kind: RowKind
    /// For a row expected blocked: what stops it, and how the row concludes.
    public var blockedBy: BlockedBy?
    public var evidence: BlockEvidence

    public init(name: String, from: ProbeEndpoint, bindAddress: IPAddress? = nil, sourcePort: UInt16? = nil,
                destination: IPAddress, proto: ProbeProtocol, target: ProbeEndpoint,
                targetInterface: String? = nil, expect: ProbeExpectation, note: String? = nil,
                kind: RowKind = .expectation, blockedBy: BlockedBy? = nil, evidence: BlockEvidence = .wait) {
        self.name = name
        self.from = from
        self.bindAddress = bindAddress
        self.sourcePort = sourcePort
        self.destination = destination
        self.proto = proto
        self.target = target
        self.targetInterface = targetInterface
        self.expect = expect
        self.note = note
        self.kind = kind
        self.blockedBy = blockedBy
        self.evidence = evidence
    }
}

/// Two senders that fire at the same moment with the same source port (or echo id) to the same
/// destination, port and protocol. The far side (capture and listener) is `first`'s target. The pair
/// passes when each probe passes on its own and the target saw distinct ports (echo ids) for them.
/// If neither probe names a source port, one random port is chosen for both.
public struct ProbePair: Sendable {
    public var name: String
    public var first: Probe
    public var second: Probe

    public init(name: String, first: Probe, second: Probe) {
        self.name = name
        self.first = first
        self.second = second
    }
}

public struct ProbeResult: Sendable {
    /// The probe (for a pair: its first probe).
    public var probe: Probe
    /// Set when this row is a pair.
    public var pair: ProbePair?
    public var passed: Bool
    /// What happened, e.g. "reply from 192.0.2.1; seen at uplink/client1 from 100.64.0.1 id 3012".
    public var detail: String
    /// Source address and port (echo id for ICMP) as seen at the target (for a pair: the first's).
    public var observedSource: IPAddress?
    public var observedPort: UInt16?
    /// Observed ports (echo ids) of every sender, in order; nil where nothing was seen.
    public var observedPorts: [UInt16?]
    /// From the moment the packet was sent until the row was decided: the answer (and the sighting
    /// at the target) for a passing reach, the full wait for a blocked row or a failure.
    public var milliseconds: Double

    public init(probe: Probe, pair: ProbePair?, passed: Bool, detail: String, observedSource: IPAddress?,
                observedPort: UInt16?, observedPorts: [UInt16?], milliseconds: Double) {
        self.probe = probe
        self.pair = pair
        self.passed = passed
        self.detail = detail
        self.observedSource = observedSource
        self.observedPort = observedPort
        self.observedPorts = observedPorts
        self.milliseconds = milliseconds
    }

    /// The row's name: the pair's, or the probe's.
    public var name: String { pair?.name ?? probe.name }
    /// The sending context(s), e.g. "blue_c1" or "blue_c1+red_c1".
    public var from: String { pair.map { "\($0.first.from.context)+\($0.second.from.context)" } ?? probe.from.context }
    public var expected: String { pair == nil ? probe.expect.description : "\(probe.expect), distinct ports" }
    public var kind: RowKind { pair == nil ? probe.kind : .samePort }
}
