import Netlink

/// The mappings logged so far and still open, so that after the kernel dropped events a table
/// dump can tell which mappings were never logged (and which logged ones ended unseen). Pure.
public final class MappingLog {
    /// A live conntrack entry is unique by its original tuple and zone.
    struct Key: Hashable {
        var zoneProtoPorts: UInt64
        var source: (UInt64, UInt64)
        var destination: (UInt64, UInt64)

        init(_ e: ConntrackEntry) {
            let zone = UInt64(e.originalZone ?? e.zone ?? 0)
            let sport = UInt64(e.original.icmpID ?? e.original.sourcePort ?? 0)
            let dport = UInt64(e.original.icmpID != nil
                ? UInt16(e.original.icmpType ?? 0) << 8 | UInt16(e.original.icmpCode ?? 0)
                : e.original.destinationPort ?? 0)
            zoneProtoPorts = zone << 48 | UInt64(e.original.protocolNumber) << 40 | UInt64(e.family.rawValue) << 32 | sport << 16 | dport
            source = Key.pack(e.original.source)
            destination = Key.pack(e.original.destination)
        }

        static func pack(_ a: IPAddress) -> (UInt64, UInt64) {
            var hi: UInt64 = 0, lo: UInt64 = 0
            for (i, b) in a.bytes.enumerated() {
                if i < 8 { hi = hi << 8 | UInt64(b) } else { lo = lo << 8 | UInt64(b) }
            }
            return (hi, lo)
        }

        static func == (a: Key, b: Key) -> Bool {
            a.zoneProtoPorts == b.zoneProtoPorts && a.source == b.source && a.destination == b.destination
        }

        func hash(into h: inout Hasher) {
            h.combine(zoneProtoPorts); h.combine(source.0); h.combine(source.1)
            h.combine(destination.0); h.combine(destination.1)
        }
    }

    let domains: DomainNames
    let filter: EventFilter
    private var open: [Key: MappingRecord] = [:]

    public init(domains: DomainNames, filter: EventFilter = EventFilter()) {
        self.domains = domains
        self.filter = filter
        open.reserveCapacity(1 << 14)
    }

    /// Mappings logged and not yet seen to end.
    public var openCount: Int { open.count }

    /// The record to log for an event, or nil when it is filtered out or was already logged by a
    /// resynchronisation (the same connection, by conntrack id).
    public func handle(_ ev: ConntrackEvent, now: UInt64) -> MappingRecord? {
        let kind: MappingRecord.Kind = ev.kind == .new ? .new : ev.kind == .update ? .update : .destroy
        let r = EventFormatter.record(ev.entry, kind: kind, now: now, domains: domains)
        guard filter.matches(r) else { return nil }
        let key = Key(ev.entry)
        switch kind {
        case .new:
            if let seen = open[key], seen.resync, seen.id != nil, seen.id == r.id { return nil }
            open[key] = r
        case .update:
            break
        case .destroy:
            open[key] = nil
        }
        return r
    }

    /// Compares a table dump with what was logged: a DESTROY (resync: true, stop unknown) for every
    /// logged mapping that is gone, then a NEW (resync: true) for every current mapping not yet logged.
    public func resync(_ table: [ConntrackEntry], now: UInt64) -> (records: [MappingRecord], summary: ResyncSummary) {
        var out: [MappingRecord] = []
        var gone: [MappingRecord] = []
        var present = Set<Key>()
        for e in table {
            let key = Key(e)
            present.insert(key)
            let r = EventFormatter.record(e, kind: .new, resync: true, now: now, domains: domains)
            guard filter.matches(r) else { continue }
            if let seen = open[key] {
                if seen.id == nil || r.id == nil || seen.id == r.id { continue }
                // The same tuple, another connection: the logged one ended unseen.
                gone.append(closed(seen, now: now))
            }
            open[key] = r
            out.append(r)
        }
        for (key, r) in open where !present.contains(key) {
            gone.append(closed(r, now: now))
            open[key] = nil
        }
        gone.sort { $0.start ?? $0.time < $1.start ?? $1.time }
        return (gone + out, ResyncSummary(time: now, tableEntries: table.count, logged: out.count, closed: gone.count))
    }

    private func closed(_ r: MappingRecord, now: UInt64) -> MappingRecord {
        var d = r
        d.kind = .destroy
        d.resync = true
        d.time = now
        d.stop = nil
        return d
    }
}
