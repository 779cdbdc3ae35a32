/// How check rows are shown: an aligned table for people, JSON for programs.
public enum CheckFormat {
    public static func table(_ report: CheckRun.Report) -> String {
        let header = ["FROM", "PROBE", "EXPECTED", "RESULT", "TIME", "DETAIL"]
        let rows = report.results.map { r in
            [r.from, r.name, r.expected, r.passed ? "ok" : "FAIL", format(r.milliseconds) + " ms",
             r.detail + (r.probe.note.map { " [\($0)]" } ?? "")]
        }
        var widths = header.map(\.count)
        for row in rows { for (i, c) in row.enumerated() where i < 5 { widths[i] = max(widths[i], c.count) } }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in i < 5 ? c + String(repeating: " ", count: widths[i] - c.count) : c }
                .joined(separator: "  ")
        }
        var out = line(header) + "\n"
        for row in rows { out += line(row) + "\n" }
        let passed = report.results.count - report.failures
        out += "\(report.results.count) rows: \(passed) ok, \(report.failures) failed, in \(format(report.wallMilliseconds)) ms (\(report.backend.rawValue) backend)\n"
        return out
    }

    public static func json(_ report: CheckRun.Report) -> JSON {
        .object([
            ("backend", .string(report.backend.rawValue)),
            ("passed", .bool(report.passed)),
            ("wall_ms", .number(round1(report.wallMilliseconds))),
            ("rows", .array(report.results.map { r in
                .object([
                    ("from", .string(r.from)),
                    ("probe", .string(r.name)),
                    ("protocol", .string(r.probe.proto.rawValue)),
                    ("destination", .string(r.probe.destination.description)),
                    ("expected", .string(r.expected)),
                    ("passed", .bool(r.passed)),
                    ("ms", .number(round1(r.milliseconds))),
                    ("observed_source", JSON(r.observedSource?.description)),
                    ("observed_ports", .array(r.observedPorts.map { $0.map { .int(Int64($0)) } ?? .null })),
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
