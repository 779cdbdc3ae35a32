import Netlink

/// The mappings logged so far and still open, so that after the kernel dropped events a table
/// dump can tell which mappings were never logged (and which logged ones ended unseen). Pure.
public final class MappingLog {
    /// A live conntrack entry is unique by its original tuple and zone.
    struct Key: Hashable {
        var zone: UInt16
        var proto: UInt8
        var source: IPAddress
        var destination: IPAddress
        var sourcePort: UInt16
        var destinationPort: UInt16

        init(_ e: ConntrackEntry) {
            zone = e.originalZone ?? e.zone ?? 0
            proto = e.original.protocolNumber
            source = e.original.source
            destination = e.original.destination
            sourcePort = e.original.icmpID ?? e.original.sourcePort ?? 0
            destinationPort = e.original.icmpID != nil
                ? UInt16(e.original.icmpType ?? 0) << 8 | UInt16(e.original.icmpCode ?? 0)
                : e.original.destinationPort ?? 0
        }
    }

    let domains: DomainNames
    let filter: EventFilter
    private var open: [Key: MappingRecord] = [:]

    public init(domains: DomainNames, filter: EventFilter = EventFilter()) {
        self.domains = domains
        self.filter = filter
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
