import Glibc
import Netlink

/// One line of the NAT mapping log (RFC 6888 REQ-12, RFC 7422): a conntrack event or dump entry
/// seen as a mapping of a subscriber's inside address and port to an outside address and port.
public struct MappingRecord: Equatable, Sendable {
    public enum Kind: String, Sendable { case new, update, destroy }
    public var kind: Kind
    /// Logged from a table dump after the kernel dropped events, not from an event.
    public var resync: Bool
    /// When it happened, nanoseconds of CLOCK_REALTIME: the kernel's event time (NEW), the stop
    /// time (DESTROY), the start time (resync), else when we read it.
    public var time: UInt64
    /// The subscriber domain (lab model's SubscriberDomain.id); 0 = the uplink or the router itself.
    public var domainID: UInt32
    public var domain: String
    /// The original-direction conntrack zone and the ct mark as the kernel reported them.
    public var zone: UInt16
    public var mark: UInt32
    public var protocolNumber: UInt8
    /// Original source: the subscriber's own address and port (ICMP: the echo id).
    public var inside: IPAddress
    public var insidePort: UInt16?
    /// Reply destination: what the far side sees. Differs from `inside` when NAT changed something.
    public var outside: IPAddress
    public var outsidePort: UInt16?
    /// Original destination.
    public var destination: IPAddress
    public var destinationPort: UInt16?
    public var nat: Bool
    /// CTA_TIMESTAMP start/stop (nanoseconds), when the kernel sent them.
    public var start: UInt64?
    public var stop: UInt64?
    /// CTA_ID.
    public var id: UInt32?

    public var protocolName: String { EventFormatter.protocolName(protocolNumber) }
}

/// Names of the lab's domains by id, for the domain column.
public struct DomainNames: Sendable {
    public var uplink: String
    public var byID: [UInt32: String]

    public init(lab: Lab) {
        uplink = lab.router.uplink.name
        byID = Dictionary(lab.router.subscribers.map { ($0.id, $0.name) }, uniquingKeysWith: { a, _ in a })
    }

    public func name(_ id: UInt32) -> String { id == 0 ? uplink : byID[id] ?? "domain-\(id)" }
}

/// Which events `--context` lets through: a list of (domain, addresses) clauses, any of which
/// may match; an empty filter lets everything through.
public struct EventFilter: Sendable {
    public struct Clause: Sendable, Equatable {
        public var domainID: UInt32
        /// Inside addresses of a host context; nil = any address in the domain.
        public var addresses: [IPAddress]?
    }

    public var clauses: [Clause]

    public init(clauses: [Clause] = []) { self.clauses = clauses }

    /// Builds the filter from context names: a subscriber host (`blue_c1`) is its domain and its
    /// addresses; a domain (`main:blue`) the whole domain; `uplink` the uplink host's addresses in
    /// domain 0; `main` / `main:up` the router's own flows (domain 0).
    public init(lab: Lab, contexts: [String], backend: Backend = .netns) throws {
        var clauses: [Clause] = []
        let known = lab.contexts(backend: backend).map(\.name)
        let r = lab.router.name
        for name in contexts {
            guard known.contains(name) else {
                throw UsageError("unknown context '\(name)': the contexts of lab '\(lab.name)' are \(known.joined(separator: ", "))")
            }
            if let host = lab.hosts.first(where: { $0.name == name }) {
                let addrs = (host.addresses + host.loopbackAddresses).map(\.address)
                switch host.attachment {
                case .uplink: clauses.append(Clause(domainID: 0, addresses: addrs))
                case .domain(let d): clauses.append(Clause(domainID: lab.domain(named: d)?.id ?? 0, addresses: addrs))
                }
            } else if name == r {
                clauses.append(Clause(domainID: 0, addresses: lab.router.uplink.addresses.map(\.address)))
            } else if name == "\(r):\(lab.router.uplink.name)" {
                clauses.append(Clause(domainID: 0, addresses: nil))
            } else if name.hasPrefix("\(r):"), let d = lab.domain(named: String(name.dropFirst(r.count + 1))) {
                clauses.append(Clause(domainID: d.id, addresses: nil))
            }
        }
        self.clauses = clauses
    }

    public var isEmpty: Bool { clauses.isEmpty }

    public func matches(_ r: MappingRecord) -> Bool {
        if clauses.isEmpty { return true }
        return clauses.contains { c in c.domainID == r.domainID && (c.addresses.map { $0.contains(r.inside) } ?? true) }
    }
}

/// Pure: conntrack entries to mapping records, and records to text or JSON lines.
public enum EventFormatter {
    public static func protocolName(_ n: UInt8) -> String {
        switch n {
        case 1: return "icmp"
        case 6: return "tcp"
        case 17: return "udp"
        case 58: return "icmpv6"
        case 132: return "sctp"
        case 136: return "udplite"
        default: return "proto-\(n)"
        }
    }

    /// The subscriber domain of an entry: its original-direction zone (or both-direction zone),
    /// else its ct mark; 0 when neither is set (the uplink, or the router's own traffic).
    public static func domainID(of e: ConntrackEntry) -> UInt32 {
        if let z = e.originalZone ?? e.zone, z != 0 { return UInt32(z) }
        return e.mark
    }

    /// Whether NAT changed the connection: the kernel says so (IPS_SRC_NAT / IPS_DST_NAT, set only
    /// when a tuple really changed), or the reply tuple is not the inverse of the original.
    public static func natApplied(_ e: ConntrackEntry) -> Bool {
        if e.status & (ConntrackEntry.statusSourceNAT | ConntrackEntry.statusDestinationNAT) != 0 { return true }
        return e.reply.destination != e.original.source || e.reply.source != e.original.destination
            || port(e.reply, source: false) != port(e.original, source: true)
            || port(e.reply, source: true) != port(e.original, source: false)
    }

    /// A tuple's port on one side; ICMP has the echo id on both.
    static func port(_ t: ConntrackTuple, source: Bool) -> UInt16? {
        if let id = t.icmpID { return id }
        return source ? t.sourcePort : t.destinationPort
    }

    public static func record(_ e: ConntrackEntry, kind: MappingRecord.Kind, resync: Bool = false, now: UInt64,
                              domains: DomainNames) -> MappingRecord {
        let id = domainID(of: e)
        let time: UInt64
        switch kind {
        case .new: time = resync ? (e.start ?? now) : (e.eventTime ?? e.start ?? now)
        case .update: time = e.eventTime ?? now
        case .destroy: time = e.stop ?? e.eventTime ?? now
        }
        let isICMP = e.original.icmpID != nil
        // A flow let in from outside (endpoint-independent filtering, the second leg of a
        // hairpin) was DNATed to the subscriber: the subscriber is its reply's source, the public
        // mapping its original destination, the remote its original source.
        let inbound = e.status & ConntrackEntry.statusDestinationNAT != 0 && e.status & ConntrackEntry.statusSourceNAT == 0
        let inside = inbound ? e.reply : e.original, outside = inbound ? e.original : e.reply
        return MappingRecord(
            kind: kind, resync: resync, time: time, domainID: id, domain: domains.name(id),
            zone: e.originalZone ?? e.zone ?? 0, mark: e.mark, protocolNumber: e.original.protocolNumber,
            inside: inside.source, insidePort: port(inside, source: true),
            outside: outside.destination, outsidePort: port(outside, source: false),
            destination: inbound ? e.original.source : e.original.destination,
            destinationPort: isICMP ? nil : (inbound ? e.original.sourcePort : e.original.destinationPort),
            nat: natApplied(e), start: kind == .new && !resync ? (e.start ?? e.eventTime) : e.start,
            stop: kind == .destroy ? e.stop : nil, id: e.id)
    }

    // MARK: times

    /// RFC 3339 UTC with microseconds: 2025-01-02T03:04:05.123456Z.
    public static func isoTime(_ ns: UInt64) -> String {
        var t = time_t(ns / 1_000_000_000)
        var tm = Glibc.tm()
        gmtime_r(&t, &tm)
        return "\(pad(Int(tm.tm_year) + 1900, 4))-\(pad(Int(tm.tm_mon) + 1, 2))-\(pad(Int(tm.tm_mday), 2))T"
            + "\(pad(Int(tm.tm_hour), 2)):\(pad(Int(tm.tm_min), 2)):\(pad(Int(tm.tm_sec), 2)).\(pad(Int(ns % 1_000_000_000 / 1000), 6))Z"
    }

    /// Time of day for text lines, local time unless `utc`: 03:04:05.123456.
    public static func clockTime(_ ns: UInt64, utc: Bool = false) -> String {
        var t = time_t(ns / 1_000_000_000)
        var tm = Glibc.tm()
        if utc { gmtime_r(&t, &tm) } else { localtime_r(&t, &tm) }
        return "\(pad(Int(tm.tm_hour), 2)):\(pad(Int(tm.tm_min), 2)):\(pad(Int(tm.tm_sec), 2)).\(pad(Int(ns % 1_000_000_000 / 1000), 6))"
    }

    static func pad(_ v: Int, _ width: Int) -> String {
        let s = String(v)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }

    public static func realtimeNow() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(ts.tv_sec) * 1_000_000_000 + UInt64(ts.tv_nsec)
    }

    // MARK: text

    static func endpoint(_ a: IPAddress, _ p: UInt16?) -> String {
        guard let p else { return a.description }
        return a.family == .v6 ? "[\(a)]:\(p)" : "\(a):\(p)"
    }

    static func column(_ s: String, _ width: Int) -> String {
        s.count >= width ? s : s + String(repeating: " ", count: width - s.count)
    }

    static func rightColumn(_ s: String, _ width: Int) -> String {
        s.count >= width ? s : String(repeating: " ", count: width - s.count) + s
    }

    static let widths = (time: 15, event: 7, domain: 6, zone: 4, proto: 6, endpoint: 22)

    public static func textHeader(destination: Bool = true) -> String {
        let w = widths
        var s = column("TIME", w.time) + " " + column("EVENT", w.event) + " " + column("DOMAIN", w.domain) + " "
            + rightColumn("ZONE", w.zone) + " " + column("PROTO", w.proto) + " " + column("INSIDE", w.endpoint) + " "
            + column("OUTSIDE", w.endpoint) + " "
        if destination { s += column("DESTINATION", w.endpoint) + " " }
        return s + "NAT"
    }

    /// One aligned line per event: time, event, domain, zone, protocol, inside, outside,
    /// destination, `nat` or `-`, then `resync` when it came from a table dump.
    public static func text(_ r: MappingRecord, destination: Bool = true, utc: Bool = false) -> String {
        let w = widths
        var s = column(clockTime(r.time, utc: utc), w.time) + " " + column(r.kind.rawValue.uppercased(), w.event) + " "
            + column(r.domain, w.domain) + " " + rightColumn(String(r.zone), w.zone) + " " + column(r.protocolName, w.proto) + " "
            + column(endpoint(r.inside, r.insidePort), w.endpoint) + " " + column(endpoint(r.outside, r.outsidePort), w.endpoint) + " "
        if destination { s += column(endpoint(r.destination, r.destinationPort), w.endpoint) + " " }
        s += r.nat ? "nat" : "-"
        if r.resync { s += "  resync" }
        return s
    }

    // MARK: JSON

    /// The NAT mapping log line: event, time, domain, zone, mark, protocol, inside and outside
    /// address and port, destination (unless omitted), nat, start and stop times, conntrack id.
    public static func json(_ r: MappingRecord, destination: Bool = true) -> JSON {
        func port(_ p: UInt16?) -> JSON { p.map { .int(Int64($0)) } ?? .null }
        func time(_ t: UInt64?) -> JSON { t.map { .string(isoTime($0)) } ?? .null }
        var o: [(String, JSON)] = [
            ("event", .string(r.kind.rawValue)),
            ("time", .string(isoTime(r.time))),
            ("domain", .string(r.domain)),
            ("domain_id", .int(Int64(r.domainID))),
            ("zone", .int(Int64(r.zone))),
            ("mark", .int(Int64(r.mark))),
            ("protocol", .string(r.protocolName)),
            ("inside", .string(r.inside.description)),
            ("inside_port", port(r.insidePort)),
            ("outside", .string(r.outside.description)),
            ("outside_port", port(r.outsidePort)),
        ]
        if destination {
            o.append(("destination", .string(r.destination.description)))
            o.append(("destination_port", port(r.destinationPort)))
        }
        o.append(("nat", .bool(r.nat)))
        o.append(("start", time(r.start)))
        o.append(("stop", time(r.stop)))
        o.append(("id", r.id.map { .int(Int64($0)) } ?? .null))
        if r.resync { o.append(("resync", .bool(true))) }
        return .object(o)
    }

    /// `json(r, destination:).serialized()`, written directly: at tens of thousands of events a
    /// second the JSON value tree costs more than everything else together.
    public static func jsonLine(_ r: MappingRecord, destination: Bool = true) -> String {
        var s = ""
        s.reserveCapacity(420)
        func port(_ p: UInt16?) { if let p { s += String(p) } else { s += "null" } }
        func time(_ t: UInt64?) { if let t { s += "\""; s += isoTime(t); s += "\"" } else { s += "null" } }
        s += "{\"event\":\""; s += r.kind.rawValue
        s += "\",\"time\":\""; s += isoTime(r.time)
        s += "\",\"domain\":"; JSON.quote(r.domain, into: &s)
        s += ",\"domain_id\":"; s += String(r.domainID)
        s += ",\"zone\":"; s += String(r.zone)
        s += ",\"mark\":"; s += String(r.mark)
        s += ",\"protocol\":\""; s += r.protocolName
        s += "\",\"inside\":\""; s += r.inside.description
        s += "\",\"inside_port\":"; port(r.insidePort)
        s += ",\"outside\":\""; s += r.outside.description
        s += "\",\"outside_port\":"; port(r.outsidePort)
        if destination {
            s += ",\"destination\":\""; s += r.destination.description
            s += "\",\"destination_port\":"; port(r.destinationPort)
        }
        s += ",\"nat\":"; s += r.nat ? "true" : "false"
        s += ",\"start\":"; time(r.start)
        s += ",\"stop\":"; time(r.stop)
        s += ",\"id\":"; if let id = r.id { s += String(id) } else { s += "null" }
        if r.resync { s += ",\"resync\":true" }
        s += "}"
        return s
    }

    // MARK: overruns

    public static func overrunText(time: UInt64, overruns: Int, utc: Bool = false) -> String {
        column(clockTime(time, utc: utc), widths.time) + " " + column("OVERRUN", widths.event)
            + " the kernel dropped conntrack events (ENOBUFS, overrun \(overruns)); resynchronising from a table dump"
    }

    public static func overrunJSON(time: UInt64, overruns: Int) -> JSON {
        .object([
            ("event", .string("overrun")), ("time", .string(isoTime(time))), ("overruns", .int(Int64(overruns))),
            ("detail", .string("the kernel dropped conntrack events (ENOBUFS); resynchronising from a table dump")),
        ])
    }

    public static func resyncText(_ s: ResyncSummary, utc: Bool = false) -> String {
        column(clockTime(s.time, utc: utc), widths.time) + " " + column("RESYNC", widths.event)
            + " table has \(s.tableEntries) entries: logged \(s.logged) not seen before, \(s.closed) logged ones are gone (stop time unknown)"
            + (s.notEmitted > 0 ? "; \(s.notEmitted) more not logged (--count reached)" : "")
            + (s.droppedEvents.map { "; the kernel dropped \($0) event\($0 == 1 ? "" : "s")" } ?? "")
    }

    public static func resyncJSON(_ s: ResyncSummary) -> JSON {
        .object([
            ("event", .string("resync")), ("time", .string(isoTime(s.time))), ("table_entries", .int(Int64(s.tableEntries))),
            ("logged", .int(Int64(s.logged))), ("closed", .int(Int64(s.closed))),
            ("not_logged", .int(Int64(s.notEmitted))), ("dropped_events", s.droppedEvents.map { .int(Int64($0)) } ?? .null),
        ])
    }
}

/// What a resynchronisation found.
public struct ResyncSummary: Equatable, Sendable {
    public var time: UInt64
    public var tableEntries: Int
    /// Mappings in the table that had not been logged (emitted with resync: true).
    public var logged: Int
    /// Logged mappings no longer in the table: their DESTROY was lost (emitted as destroy with resync: true).
    public var closed: Int
    /// Mappings the dump found that were not printed because --count was reached first.
    public var notEmitted: Int = 0
    /// Events the kernel dropped on the event socket since the previous resync (its drop counter,
    /// SO_MEMINFO), when it could be read: mappings opened and closed within the gap are in it.
    public var droppedEvents: Int? = nil
}
