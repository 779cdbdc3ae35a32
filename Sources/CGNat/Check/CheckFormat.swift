/// How check rows are shown: an aligned table for people, JSON for programs.
public enum CheckFormat {
    /// Up to this many rows the table shows every row; above it, only failing rows (json keeps all).
    public static let fullTableRows = 100

    public static func table(_ report: CheckRun.Report, allRows: Bool = false) -> String {
        let header = ["FROM", "PROBE", "EXPECTED", "RESULT", "TIME", "DETAIL"]
        let full = allRows || report.results.count <= fullTableRows
        let shown = full ? report.results : report.results.filter { !$0.passed }
        let rows = shown.map { r in
            [r.from, r.name, r.expected, r.passed ? "ok" : "FAIL", format(r.milliseconds) + " ms",
             r.detail + (r.probe.note.map { " [\($0)]" } ?? "")]
        }
        var widths = header.map(\.count)
        for row in rows { for (i, c) in row.enumerated() where i < 5 { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in i < 5 ? c + String(repeating: " ", count: widths[i] - c.count) : c }
                .joined(separator: "  ")
        }
        var out = ""
        if !rows.isEmpty {
            out += line(header) + "\n"
            for row in rows { out += line(row) + "\n" }
        }
        if !full {
            out += "(\(report.results.count) rows; failing rows shown, --all for every row, --json for all with details)\n"
        }
        out += "by kind:\n"
        for k in summary(report) {
            let time = "median \(format(k.medianMilliseconds)) ms, max \(format(k.maxMilliseconds)) ms"
            let kind = k.kind.rawValue + String(repeating: " ", count: max(0, 16 - k.kind.rawValue.count))
            out += "  \(kind) \(k.passed)/\(k.rows) ok   \(time)\n"
        }
        out += "\(report.sampling.description)\(report.phases > 1 ? "; \(report.phases) phases (addresses shared across domains are probed from the uplink one domain at a time)" : "")\n"
        let passed = report.results.count - report.failures
        out += "\(report.results.count) rows: \(passed) ok, \(report.failures) failed, in \(format(report.wallMilliseconds)) ms (\(report.backend.rawValue) backend)\n"
        return out
    }

    public struct KindSummary {
        public var kind: RowKind
        public var rows: Int
        public var passed: Int
        public var medianMilliseconds: Double
        public var maxMilliseconds: Double
    }

    public static func summary(_ report: CheckRun.Report) -> [KindSummary] {
        RowKind.allCases.compactMap { kind in
            let rs = report.results.filter { $0.kind == kind }
            guard !rs.isEmpty else { return nil }
            let ms = rs.map(\.milliseconds).sorted()
            return KindSummary(kind: kind, rows: rs.count, passed: rs.filter(\.passed).count,
                               medianMilliseconds: ms[ms.count / 2], maxMilliseconds: ms.last ?? 0)
        }
    }

    /// What stops a blocked row: the rule by handle in its context, or a mechanism.
    public static func blockedBy(_ b: BlockedBy?, handles: [RuleRef: UInt64]) -> JSON {
        switch b {
        case nil: return .null
        case .mechanism(let m)?: return .object([("mechanism", .string(m))])
        case .rule(let r)?:
            return .object([
                ("context", .string(r.context)), ("family", .string(r.family)), ("table", .string(r.table)),
                ("chain", .string(r.chain)), ("handle", handles[r].map { .int(Int64($0)) } ?? .null),
                ("comment", .string(r.comment)),
            ])
        }
    }

    public static func json(_ report: CheckRun.Report) -> JSON {
        .object([
            ("backend", .string(report.backend.rawValue)),
            ("passed", .bool(report.passed)),
            ("wall_ms", .number(round1(report.wallMilliseconds))),
            ("sampling", .object([
                ("neighbours_per_subscriber", .int(Int64(report.sampling.neighbours))),
                ("cross_domain_per_subscriber", .int(Int64(report.sampling.crossDomain))),
                ("same_port_pairs_per_shared_address", .int(Int64(report.sampling.samePortPerAddress))),
            ])),
            ("phases", .int(Int64(report.phases))),
            ("summary", .array(summary(report).map { k in
                .object([("kind", .string(k.kind.rawValue)), ("rows", .int(Int64(k.rows))), ("passed", .int(Int64(k.passed))),
                         ("median_ms", .number(round1(k.medianMilliseconds))), ("max_ms", .number(round1(k.maxMilliseconds)))])
            })),
            ("rows", .array(report.results.map { r in
                .object([
                    ("kind", .string(r.kind.rawValue)),
                    ("from", .string(r.from)),
                    ("probe", .string(r.name)),
                    ("protocol", .string(r.probe.proto.rawValue)),
                    ("destination", .string(r.probe.destination.description)),
                    ("expected", .string(r.expected)),
                    ("passed", .bool(r.passed)),
                    ("ms", .number(round1(r.milliseconds))),
                    ("observed_source", JSON(r.observedSource?.description)),
                    ("observed_ports", .array(r.observedPorts.map { $0.map { .int(Int64($0)) } ?? .null })),
                    ("blocked_by", blockedBy(r.probe.blockedBy, handles: report.handles)),
                    ("detail", .string(r.detail)),
                    ("note", JSON(r.probe.note)),
                ])
            })),
        ])
    }

    static func round1(_ v: Double) -> Double { (v * 10).rounded() / 10 }
    static func format(_ v: Double) -> String {
        let r = round1(v)
        let whole = Int(r)
        return "\(whole).\(Int(((r - Double(whole)) * 10).rounded()))"
    }
}
