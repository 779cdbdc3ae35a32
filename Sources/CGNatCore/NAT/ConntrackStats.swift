/// The kernel's conntrack statistics of one network namespace, as `/proc/net/stat/nf_conntrack`
/// shows them there: a header of field names, then one line of hexadecimal counters per CPU.
/// Summed over the CPUs, except `entries`, which every line repeats (the table's size).
public struct ConntrackStats: Equatable, Sendable {
    /// Counter name to value, in the kernel's order.
    public var counters: [(name: String, value: UInt64)]

    /// What a CGN operator watches: `insert_failed` is the clash race lost (two flows of one
    /// tuple confirmed at once; the packet is dropped), `clashres` the same race resolved,
    /// `drop` packets dropped because no entry could be made (table full, or the race lost),
    /// `early_drop` unreplied entries evicted to make room in a full table.
    public static let watched = ["insert_failed", "drop", "early_drop", "clashres"]

    public init(counters: [(name: String, value: UInt64)]) { self.counters = counters }

    public static func == (a: ConntrackStats, b: ConntrackStats) -> Bool {
        a.counters.map(\.name) == b.counters.map(\.name) && a.counters.map(\.value) == b.counters.map(\.value)
    }

    public subscript(name: String) -> UInt64? { counters.first { $0.name == name }?.value }

    /// The watched counters that are in this kernel's file, in `watched` order.
    public var watchedCounters: [(name: String, value: UInt64)] {
        ConntrackStats.watched.compactMap { n in self[n].map { (n, $0) } }
    }

    /// Parses the file's text; nil if it is not that file (no header, a line of other width, not hex).
    public static func parse(_ text: String) -> ConntrackStats? {
        let lines = text.split(separator: "\n").map { $0.split(whereSeparator: { $0 == " " || $0 == "\t" }) }.filter { !$0.isEmpty }
        guard let header = lines.first, !header.isEmpty, lines.count >= 2 else { return nil }
        let names = header.map(String.init)
        var sums = [UInt64](repeating: 0, count: names.count)
        for (k, line) in lines.dropFirst().enumerated() {
            guard line.count == names.count else { return nil }
            for (i, field) in line.enumerated() {
                guard let v = UInt64(field, radix: 16) else { return nil }
                if names[i] == "entries" { if k == 0 { sums[i] = v } } else { sums[i] &+= v }
            }
        }
        return ConntrackStats(counters: Array(zip(names, sums)).map { (name: $0.0, value: $0.1) })
    }
}
