import CNetlinkShim
import Netlink

/// One nftables trace event (NFT_MSG_TRACE, linux/netfilter/nf_tables.h `enum nft_trace_attributes`),
/// as the kernel multicasts it to NFNLGRP_NFTRACE for packets with `meta nftrace set 1`.
///
/// The kernel sends the packet part (devices, headers, conntrack) only with the first event of each
/// chain evaluation; later events of the same chain carry just table, chain, rule and verdict.
public struct TraceEvent: Equatable, Sendable {
    public enum Kind: String, Sendable { case unspec, policy, `return`, rule }

    /// NFTA_TRACE_ID: the same for every event of one skb (a hash of its address: an id can be
    /// reused by a later packet once the skb is freed, and it survives a veth hop).
    public var id: UInt32
    public var kind: Kind
    /// Table family as the nfgenmsg says (NFPROTO_INET = 1, IPV4 = 2, IPV6 = 10, ...).
    public var tableFamily: UInt8
    public var table: String
    public var chain: String
    public var ruleHandle: UInt64?
    /// The verdict of a rule/return event (NF_DROP 0, NF_ACCEPT 1, NFT_CONTINUE -1, ...).
    public var verdict: Int32?
    /// Target chain of a jump/goto verdict.
    public var verdictChain: String?
    /// The chain's policy for policy events (NF_DROP 0, NF_ACCEPT 1).
    public var policy: UInt32?
    /// NFPROTO of the packet (2 = ipv4, 10 = ipv6).
    public var nfproto: UInt32?
    public var inputIndex: UInt32?
    public var outputIndex: UInt32?
    public var mark: UInt32?
    public var networkHeader: [UInt8]?
    public var transportHeader: [UInt8]?
    /// Conntrack (Linux 6.16+): NF_CT_STATE bits, direction (0 original, 1 reply), id and status.
    public var ctState: UInt32?
    public var ctDirection: UInt8?
    public var ctID: UInt32?
    public var ctStatus: UInt32?

    public init(id: UInt32, kind: Kind, tableFamily: UInt8 = 1, table: String, chain: String, ruleHandle: UInt64? = nil,
                verdict: Int32? = nil, verdictChain: String? = nil, policy: UInt32? = nil, nfproto: UInt32? = nil,
                inputIndex: UInt32? = nil, outputIndex: UInt32? = nil, mark: UInt32? = nil,
                networkHeader: [UInt8]? = nil, transportHeader: [UInt8]? = nil, ctState: UInt32? = nil,
                ctDirection: UInt8? = nil, ctID: UInt32? = nil, ctStatus: UInt32? = nil) {
        self.id = id; self.kind = kind; self.tableFamily = tableFamily; self.table = table; self.chain = chain
        self.ruleHandle = ruleHandle; self.verdict = verdict; self.verdictChain = verdictChain; self.policy = policy
        self.nfproto = nfproto; self.inputIndex = inputIndex; self.outputIndex = outputIndex; self.mark = mark
        self.networkHeader = networkHeader; self.transportHeader = transportHeader
        self.ctState = ctState; self.ctDirection = ctDirection; self.ctID = ctID; self.ctStatus = ctStatus
    }

    /// The verdict that decided this event, whether it came from a rule or from the chain's policy.
    public var effectiveVerdict: Int32? {
        if kind == .policy, let p = policy { return Int32(bitPattern: p) }
        return verdict
    }

    /// The packet's addresses, protocol and ports, from the headers the kernel copied.
    public var packet: PacketSummary? {
        networkHeader.flatMap { PacketSummary(network: $0, transport: transportHeader ?? []) }
    }
}

/// Numbers of linux/netfilter/nf_tables.h (trace) and linux/netfilter.h (verdicts).
public enum NFTrace {
    public static let messageType = UInt16(NFNL_SUBSYS_NFTABLES) << 8 | UInt16(NFT_MSG_TRACE.rawValue)
    /// NFNLGRP_NFTRACE; bit (group - 1) in the legacy bind mask.
    public static let group = UInt32(NFNLGRP_NFTRACE.rawValue)

    static let TABLE = a(NFTA_TRACE_TABLE), CHAIN = a(NFTA_TRACE_CHAIN), RULE_HANDLE = a(NFTA_TRACE_RULE_HANDLE)
    static let TYPE = a(NFTA_TRACE_TYPE), VERDICT = a(NFTA_TRACE_VERDICT), ID = a(NFTA_TRACE_ID)
    static let NETWORK_HEADER = a(NFTA_TRACE_NETWORK_HEADER), TRANSPORT_HEADER = a(NFTA_TRACE_TRANSPORT_HEADER)
    static let IIF = a(NFTA_TRACE_IIF), OIF = a(NFTA_TRACE_OIF), MARK = a(NFTA_TRACE_MARK)
    static let NFPROTO = a(NFTA_TRACE_NFPROTO), POLICY = a(NFTA_TRACE_POLICY)
    // Added after NFTA_TRACE_PAD in Linux 6.16 ("netfilter: nf_tables: add packets conntrack state to
    // debug trace info"); the installed uapi header may predate them.
    static let CT_ID = UInt16(NFTA_TRACE_PAD.rawValue) + 1, CT_DIRECTION = CT_ID + 1
    static let CT_STATUS = CT_ID + 2, CT_STATE = CT_ID + 3
    static let VERDICT_CODE = UInt16(NFTA_VERDICT_CODE.rawValue), VERDICT_CHAIN = UInt16(NFTA_VERDICT_CHAIN.rawValue)
    private static func a(_ v: nft_trace_attributes) -> UInt16 { UInt16(v.rawValue) }

    public static let NF_DROP: Int32 = 0, NF_ACCEPT: Int32 = 1, NF_STOLEN: Int32 = 2, NF_QUEUE: Int32 = 3
    public static let NF_REPEAT: Int32 = 4, NF_STOP: Int32 = 5
    public static let NFT_CONTINUE: Int32 = -1, NFT_BREAK: Int32 = -2, NFT_JUMP: Int32 = -3
    public static let NFT_GOTO: Int32 = -4, NFT_RETURN: Int32 = -5

    /// Decodes one NFT_MSG_TRACE message; nil for anything else.
    public static func decode(_ m: NetlinkMessage) -> TraceEvent? {
        guard m.type == messageType, m.payload.count >= 4 else { return nil }
        let a = m.attributes(after: 4)
        guard let id = a[type: ID]?.u32be else { return nil }
        let kind: TraceEvent.Kind
        switch a[type: TYPE]?.u32be ?? 0 {
        case 1: kind = .policy
        case 2: kind = .return
        case 3: kind = .rule
        default: kind = .unspec
        }
        var e = TraceEvent(id: id, kind: kind, tableFamily: m.payload[0],
                           table: a[type: TABLE]?.string ?? "", chain: a[type: CHAIN]?.string ?? "")
        e.ruleHandle = a[type: RULE_HANDLE]?.u64be
        if let v = a[type: VERDICT]?.nested {
            e.verdict = v[type: VERDICT_CODE]?.u32be.map { Int32(bitPattern: $0) }
            e.verdictChain = v[type: VERDICT_CHAIN]?.string
        }
        e.policy = a[type: POLICY]?.u32be
        e.nfproto = a[type: NFPROTO]?.u32be
        e.inputIndex = a[type: IIF]?.u32be
        e.outputIndex = a[type: OIF]?.u32be
        e.mark = a[type: MARK]?.u32be
        e.networkHeader = a[type: NETWORK_HEADER]?.payload
        e.transportHeader = a[type: TRANSPORT_HEADER]?.payload
        e.ctState = a[type: CT_STATE]?.u32be
        e.ctDirection = a[type: CT_DIRECTION]?.u8
        // Like CTA_ID, the id goes out unswapped; read it the way ConntrackMessage reads CTA_ID.
        e.ctID = a[type: CT_ID]?.u32be
        e.ctStatus = a[type: CT_STATUS]?.u32be
        return e
    }

    public static func verdictName(_ v: Int32) -> String {
        switch v {
        case NF_DROP: return "drop"
        case NF_ACCEPT: return "accept"
        case NF_STOLEN: return "stolen"
        case NF_QUEUE: return "queue"
        case NF_REPEAT: return "repeat"
        case NF_STOP: return "stop"
        case NFT_CONTINUE: return "continue"
        case NFT_BREAK: return "break"
        case NFT_JUMP: return "jump"
        case NFT_GOTO: return "goto"
        case NFT_RETURN: return "return"
        default:
            // NF_QUEUE with a queue number in the upper bits, NF_DROP with an errno.
            if v & 0xff == NF_QUEUE { return "queue" }
            if v & 0xff == NF_DROP { return "drop" }
            return "verdict \(v)"
        }
    }

    /// `ct state` words for NF_CT_STATE bits.
    public static func ctStateName(_ bits: UInt32) -> String {
        var out: [String] = []
        if bits & 1 != 0 { out.append("invalid") }
        if bits & 2 != 0 { out.append("established") }
        if bits & 4 != 0 { out.append("related") }
        if bits & 8 != 0 { out.append("new") }
        if bits & 64 != 0 { out.append("untracked") }
        return out.isEmpty ? "0x\(String(bits, radix: 16))" : out.joined(separator: ",")
    }

    /// `ct status` words for the IPS_* bits that say something about NAT and confirmation.
    public static func ctStatusNames(_ bits: UInt32) -> [String] {
        let names: [(UInt32, String)] = [(1, "expected"), (2, "seen-reply"), (4, "assured"), (8, "confirmed"),
                                         (16, "snat"), (32, "dnat"), (128, "snat-done"), (256, "dnat-done"),
                                         (512, "dying"), (4096, "untracked")]
        return names.filter { bits & $0.0 != 0 }.map(\.1)
    }
}

/// Addresses, protocol and the interesting transport fields of a traced packet.
public struct PacketSummary: Equatable, Sendable, CustomStringConvertible {
    public var source: IPAddress
    public var destination: IPAddress
    public var protocolNumber: UInt8
    public var sourcePort: UInt16?
    public var destinationPort: UInt16?
    public var icmpType: UInt8?
    public var icmpCode: UInt8?
    public var icmpID: UInt16?

    public init(source: IPAddress, destination: IPAddress, protocolNumber: UInt8, sourcePort: UInt16? = nil,
                destinationPort: UInt16? = nil, icmpType: UInt8? = nil, icmpCode: UInt8? = nil, icmpID: UInt16? = nil) {
        self.source = source; self.destination = destination; self.protocolNumber = protocolNumber
        self.sourcePort = sourcePort; self.destinationPort = destinationPort
        self.icmpType = icmpType; self.icmpCode = icmpCode; self.icmpID = icmpID
    }

    /// Parses an IPv4 or IPv6 header (NFTA_TRACE_NETWORK_HEADER) and, when given, the transport
    /// header (NFTA_TRACE_TRANSPORT_HEADER).
    public init?(network h: [UInt8], transport t: [UInt8]) {
        guard let first = h.first else { return nil }
        switch first >> 4 {
        case 4:
            guard h.count >= 20 else { return nil }
            source = IPAddress(family: .v4, bytes: Array(h[12..<16]))
            destination = IPAddress(family: .v4, bytes: Array(h[16..<20]))
            protocolNumber = h[9]
        case 6:
            guard h.count >= 40 else { return nil }
            source = IPAddress(family: .v6, bytes: Array(h[8..<24]))
            destination = IPAddress(family: .v6, bytes: Array(h[24..<40]))
            protocolNumber = h[6]
        default:
            return nil
        }
        let r = ByteReader(t)
        switch protocolNumber {
        case 6, 17, 132, 136:   // tcp, udp, sctp, udplite
            if t.count >= 4 { sourcePort = r.u16be(0); destinationPort = r.u16be(2) }
        case 1, 58:             // icmp, ipv6-icmp
            if t.count >= 2 { icmpType = t[0]; icmpCode = t[1] }
            if t.count >= 6, let ty = icmpType, PacketSummary.isEcho(ty, protocolNumber) { icmpID = r.u16be(4) }
        default:
            break
        }
    }

    static func isEcho(_ type: UInt8, _ proto: UInt8) -> Bool {
        proto == 1 ? (type == 8 || type == 0) : (type == 128 || type == 129)
    }

    public var protocolName: String {
        switch protocolNumber {
        case 1: return "icmp"
        case 6: return "tcp"
        case 17: return "udp"
        case 58: return "icmpv6"
        case 132: return "sctp"
        default: return "proto \(protocolNumber)"
        }
    }

    public var icmpTypeName: String? {
        guard let t = icmpType else { return nil }
        let v4: [UInt8: String] = [0: "echo-reply", 3: "destination-unreachable", 5: "redirect", 8: "echo-request",
                                   11: "time-exceeded", 12: "parameter-problem"]
        let v6: [UInt8: String] = [1: "destination-unreachable", 2: "packet-too-big", 3: "time-exceeded",
                                   4: "parameter-problem", 128: "echo-request", 129: "echo-reply",
                                   133: "nd-router-solicit", 134: "nd-router-advert",
                                   135: "nd-neighbor-solicit", 136: "nd-neighbor-advert"]
        return (protocolNumber == 1 ? v4[t] : v6[t]) ?? "type \(t)"
    }

    /// `100.64.0.2 > 192.0.2.1 icmp echo-request id 7`, `100.64.0.1:4000 > 192.0.2.1:80 tcp`.
    public var description: String {
        func ep(_ a: IPAddress, _ p: UInt16?) -> String {
            guard let p else { return a.description }
            return a.family == .v6 ? "[\(a)]:\(p)" : "\(a):\(p)"
        }
        var s = "\(ep(source, sourcePort)) > \(ep(destination, destinationPort)) \(protocolName)"
        if let n = icmpTypeName {
            s += " \(n)"
            if let c = icmpCode, c != 0 { s += " code \(c)" }
            if let id = icmpID { s += " id \(id)" }
        }
        return s
    }
}
