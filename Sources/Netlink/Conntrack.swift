import Glibc

/// One direction of a connection. Addresses and ports as the kernel reports them (ports are
/// big-endian on the wire, host order here).
public struct ConntrackTuple: Equatable, Sendable {
    public var source: IPAddress
    public var destination: IPAddress
    public var protocolNumber: UInt8
    public var sourcePort: UInt16?
    public var destinationPort: UInt16?
    public var icmpID: UInt16?
    public var icmpType: UInt8?
    public var icmpCode: UInt8?

    public init(source: IPAddress, destination: IPAddress, protocolNumber: UInt8, sourcePort: UInt16? = nil,
                destinationPort: UInt16? = nil, icmpID: UInt16? = nil, icmpType: UInt8? = nil, icmpCode: UInt8? = nil) {
        self.source = source; self.destination = destination; self.protocolNumber = protocolNumber
        self.sourcePort = sourcePort; self.destinationPort = destinationPort
        self.icmpID = icmpID; self.icmpType = icmpType; self.icmpCode = icmpCode
    }
}

public struct ConntrackEntry: Equatable, Sendable {
    /// CTA_ID.
    public var id: UInt32?
    public var family: IPFamily
    public var original: ConntrackTuple
    public var reply: ConntrackTuple
    /// CTA_ZONE: a zone for both directions (`ct zone set`).
    public var zone: UInt16?
    /// CTA_TUPLE_ZONE inside the original tuple: a directional zone (`ct original zone set`).
    public var originalZone: UInt16?
    /// CTA_TUPLE_ZONE inside the reply tuple (`ct reply zone set`).
    public var replyZone: UInt16?
    /// CTA_MARK (0 when absent).
    public var mark: UInt32
    /// CTA_STATUS (IPS_* bits: 0x2 SEEN_REPLY, 0x4 ASSURED, 0x8 CONFIRMED, 0x10 SRC_NAT, 0x20 DST_NAT, ...).
    public var status: UInt32
    /// CTA_TIMEOUT: seconds left.
    public var timeout: UInt32?
    /// CTA_PROTOINFO_TCP_STATE (TCP_CONNTRACK_*: 3 ESTABLISHED, 7 TIME_WAIT, ...).
    public var tcpState: UInt8?
    /// CTA_TIMESTAMP start/stop, nanoseconds of CLOCK_REALTIME (needs net.netfilter.nf_conntrack_timestamp=1).
    public var start: UInt64?
    public var stop: UInt64?
    /// CTA_TIMESTAMP_EVENT (type 27, Linux 6.x): when the kernel emitted this event, nanoseconds.
    public var eventTime: UInt64?

    public init(id: UInt32? = nil, family: IPFamily, original: ConntrackTuple, reply: ConntrackTuple, zone: UInt16? = nil,
                originalZone: UInt16? = nil, replyZone: UInt16? = nil, mark: UInt32 = 0, status: UInt32 = 0,
                timeout: UInt32? = nil, tcpState: UInt8? = nil, start: UInt64? = nil, stop: UInt64? = nil, eventTime: UInt64? = nil) {
        self.id = id; self.family = family; self.original = original; self.reply = reply; self.zone = zone
        self.originalZone = originalZone; self.replyZone = replyZone; self.mark = mark; self.status = status
        self.timeout = timeout; self.tcpState = tcpState; self.start = start; self.stop = stop; self.eventTime = eventTime
    }

    public static let statusSourceNAT: UInt32 = 0x10
    public static let statusDestinationNAT: UInt32 = 0x20
}

public struct ConntrackEvent: Equatable, Sendable {
    public enum Kind: Sendable { case new, update, destroy }
    public var kind: Kind
    public var entry: ConntrackEntry
    public init(kind: Kind, entry: ConntrackEntry) { self.kind = kind; self.entry = entry }
}

/// ctnetlink message builders and decoders (linux/netfilter/nfnetlink_conntrack.h).
public enum ConntrackMessage {
    static let NFNL_SUBSYS_CTNETLINK: UInt16 = 1
    static let IPCTNL_MSG_CT_NEW: UInt16 = 0, IPCTNL_MSG_CT_GET: UInt16 = 1, IPCTNL_MSG_CT_DELETE: UInt16 = 2
    static let CTA_TUPLE_ORIG: UInt16 = 1, CTA_TUPLE_REPLY: UInt16 = 2, CTA_STATUS: UInt16 = 3, CTA_PROTOINFO: UInt16 = 4
    static let CTA_TIMEOUT: UInt16 = 7, CTA_MARK: UInt16 = 8, CTA_ID: UInt16 = 12, CTA_ZONE: UInt16 = 18
    static let CTA_TIMESTAMP: UInt16 = 20, CTA_TIMESTAMP_EVENT: UInt16 = 27
    static let CTA_TUPLE_IP: UInt16 = 1, CTA_TUPLE_PROTO: UInt16 = 2, CTA_TUPLE_ZONE: UInt16 = 3
    static let CTA_IP_V4_SRC: UInt16 = 1, CTA_IP_V4_DST: UInt16 = 2, CTA_IP_V6_SRC: UInt16 = 3, CTA_IP_V6_DST: UInt16 = 4
    static let CTA_PROTO_NUM: UInt16 = 1, CTA_PROTO_SRC_PORT: UInt16 = 2, CTA_PROTO_DST_PORT: UInt16 = 3
    static let CTA_PROTO_ICMP_ID: UInt16 = 4, CTA_PROTO_ICMP_TYPE: UInt16 = 5, CTA_PROTO_ICMP_CODE: UInt16 = 6
    static let CTA_PROTO_ICMPV6_ID: UInt16 = 7, CTA_PROTO_ICMPV6_TYPE: UInt16 = 8, CTA_PROTO_ICMPV6_CODE: UInt16 = 9
    static let CTA_PROTOINFO_TCP: UInt16 = 1, CTA_PROTOINFO_TCP_STATE: UInt16 = 1
    static let CTA_TIMESTAMP_START: UInt16 = 1, CTA_TIMESTAMP_STOP: UInt16 = 2

    public static let newType = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_NEW
    public static let getType = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_GET
    public static let deleteType = NFNL_SUBSYS_CTNETLINK << 8 | IPCTNL_MSG_CT_DELETE

    /// struct nfgenmsg: family, version (NFNETLINK_V0), res_id (big-endian).
    static func nfgenmsg(_ family: UInt8) -> [UInt8] { [family, 0, 0, 0] }

    /// `conntrack -L [-f ipv6]`: IPCTNL_MSG_CT_GET with NLM_F_DUMP.
    public static func dump(family: IPFamily?) -> NetlinkMessage {
        NetlinkMessage(type: getType, flags: NL.F_REQUEST | NL.F_DUMP, fixed: nfgenmsg(family?.rawValue ?? 0))
    }

    static func tuple(_ attrs: [NetlinkAttribute], family: IPFamily) -> (ConntrackTuple, UInt16?)? {
        guard let ipAttrs = attrs[type: CTA_TUPLE_IP]?.nested else { return nil }
        let (s, d) = family == .v4 ? (CTA_IP_V4_SRC, CTA_IP_V4_DST) : (CTA_IP_V6_SRC, CTA_IP_V6_DST)
        guard let src = ipAttrs[type: s]?.address(family), let dst = ipAttrs[type: d]?.address(family) else { return nil }
        let proto = attrs[type: CTA_TUPLE_PROTO]?.nested ?? []
        var t = ConntrackTuple(source: src, destination: dst, protocolNumber: proto[type: CTA_PROTO_NUM]?.u8 ?? 0)
        t.sourcePort = proto[type: CTA_PROTO_SRC_PORT]?.u16be
        t.destinationPort = proto[type: CTA_PROTO_DST_PORT]?.u16be
        t.icmpID = (proto[type: CTA_PROTO_ICMP_ID] ?? proto[type: CTA_PROTO_ICMPV6_ID])?.u16be
        t.icmpType = (proto[type: CTA_PROTO_ICMP_TYPE] ?? proto[type: CTA_PROTO_ICMPV6_TYPE])?.u8
        t.icmpCode = (proto[type: CTA_PROTO_ICMP_CODE] ?? proto[type: CTA_PROTO_ICMPV6_CODE])?.u8
        return (t, attrs[type: CTA_TUPLE_ZONE]?.u16be)
    }

    /// Decodes an IPCTNL_MSG_CT_NEW / CT_DELETE message (dump entry or event). Unknown attributes
    /// are skipped; nil for other messages or non-IP families.
    public static func decodeEntry(_ m: NetlinkMessage) -> ConntrackEntry? {
        guard m.type == newType || m.type == deleteType, m.payload.count >= 4,
              let family = IPFamily(rawValue: m.payload[0]) else { return nil }
        let attrs = m.attributes(after: 4)
        guard let (orig, origZone) = attrs[type: CTA_TUPLE_ORIG].flatMap({ tuple($0.nested, family: family) }),
              let (reply, replyZone) = attrs[type: CTA_TUPLE_REPLY].flatMap({ tuple($0.nested, family: family) })
        else { return nil }
        let ts = attrs[type: CTA_TIMESTAMP]?.nested ?? []
        return ConntrackEntry(
            id: attrs[type: CTA_ID]?.u32be, family: family, original: orig, reply: reply,
            zone: attrs[type: CTA_ZONE]?.u16be, originalZone: origZone, replyZone: replyZone,
            mark: attrs[type: CTA_MARK]?.u32be ?? 0, status: attrs[type: CTA_STATUS]?.u32be ?? 0,
            timeout: attrs[type: CTA_TIMEOUT]?.u32be,
            tcpState: attrs[type: CTA_PROTOINFO]?.nested[type: CTA_PROTOINFO_TCP]?.nested[type: CTA_PROTOINFO_TCP_STATE]?.u8,
            start: ts[type: CTA_TIMESTAMP_START]?.u64be, stop: ts[type: CTA_TIMESTAMP_STOP]?.u64be,
            eventTime: attrs[type: CTA_TIMESTAMP_EVENT]?.u64be)
    }

    /// An event: CT_NEW with NLM_F_CREATE is a new connection, CT_NEW without it an update,
    /// CT_DELETE a destroyed one.
    public static func decodeEvent(_ m: NetlinkMessage) -> ConntrackEvent? {
        guard let entry = decodeEntry(m) else { return nil }
        let kind: ConntrackEvent.Kind = m.type == deleteType ? .destroy : (m.flags & NL.F_CREATE != 0 ? .new : .update)
        return ConntrackEvent(kind: kind, entry: entry)
    }
}

/// A ctnetlink (NETLINK_NETFILTER) socket in the calling thread's network namespace: table dumps
/// and, with `groups`, event subscription. Use separate sockets for dumps and events: a dump on
/// an event socket skips the events that arrive meanwhile.
public final class ConntrackSocket {
    /// Group bits for `groups` (NFNLGRP_CONNTRACK_NEW = 1, UPDATE = 2, DESTROY = 3 as a bitmask).
    public static let newEvents: UInt32 = 1 << 0
    public static let updateEvents: UInt32 = 1 << 1
    public static let destroyEvents: UInt32 = 1 << 2

    public let socket: NetlinkSocket

    public init(groups: UInt32 = 0) throws {
        socket = try NetlinkSocket(protocol: 12 /* NETLINK_NETFILTER */, groups: groups)
        if groups != 0 { socket.setReceiveBuffer(4 << 20) }
    }

    public func close() { socket.close() }

    public func dump(family: IPFamily? = nil) throws -> [ConntrackEntry] {
        try socket.dump(ConntrackMessage.dump(family: family), step: "dump conntrack table")
            .compactMap(ConntrackMessage.decodeEntry)
    }

    /// Waits up to `timeoutMilliseconds` (-1 = forever, 0 = just look) for events, then returns all
    /// that are queued. Throws ConntrackOverrun when the kernel reports lost events (ENOBUFS); it
    /// carries the events read before that, which are still valid.
    public func receiveEvents(timeoutMilliseconds: Int32) throws -> [ConntrackEvent] {
        let step = "receive conntrack events"
        var pfd = pollfd(fd: socket.fd, events: Int16(POLLIN), revents: 0)
        let rc = poll(&pfd, 1, timeoutMilliseconds)
        if rc < 0 {
            if errno == EINTR { return [] }
            throw NetlinkError(step: step, errno: errno)
        }
        if rc == 0 { return [] }
        var out: [ConntrackEvent] = []
        while true {
            let batch: [NetlinkMessage]?
            do {
                batch = try socket.receive(step: step, dontWait: true)
            } catch let e as NetlinkError where e.errno == ENOBUFS {
                throw ConntrackOverrun(step: step, received: out)
            }
            guard let messages = batch else { break }
            for m in messages {
                if m.type == NL.NLMSG_OVERRUN { throw ConntrackOverrun(step: step, received: out) }
                if let ev = ConntrackMessage.decodeEvent(m) { out.append(ev) }
            }
        }
        return out
    }
}
