/// The conformance report as a table (one row per requirement) and as JSON.
public enum ConformanceFormat {
    public static func table(_ r: ConformanceReport, header: String? = nil, footer: String? = nil) -> String {
        var out = ""
        if let header { out += header + "\n" }
        let reqWidth = max(11, r.rows.map { "RFC \($0.requirement.key)".count }.max() ?? 0)
        func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
        out += pad("REQUIREMENT", reqWidth) + "  " + pad("LEVEL", 6) + "  " + pad("VERDICT", 8) + "  " + pad("HOW", 8) + "  EVIDENCE\n"
        var lastRFC = 0
        for row in r.rows {
            if row.requirement.rfc != lastRFC && lastRFC != 0 { out += "\n" }
            lastRFC = row.requirement.rfc
            out += pad("RFC \(row.requirement.key)", reqWidth) + "  " + pad(row.requirement.level.rawValue, 6) + "  "
                + pad(row.verdict.rawValue, 8) + "  " + pad(row.requirement.method.rawValue, 8) + "  "
                + row.requirement.summary + ": " + row.evidence + "\n"
        }
        out += "\n" + summary(r) + "\n"
        if let footer { out += footer + "\n" }
        return out
    }

    public static func summary(_ r: ConformanceReport) -> String {
        let counts = [ConformanceVerdict.pass, .fail, .notApplicable, .untested].map { "\(r.count($0)) \($0.rawValue)" }.joined(separator: ", ")
        let musts = r.mustFailures.map(\.requirement.key)
        return "\(r.rows.count) requirements: \(counts); " + (musts.isEmpty ? "no MUST fails" : "MUST failing: " + musts.joined(separator: ", "))
    }

    public static func json(_ r: ConformanceReport, extra: [(String, JSON)] = []) -> JSON {
        .object(extra + [
            ("passed", .bool(r.passed)),
            ("must_failures", .array(r.mustFailures.map { .string($0.requirement.key) })),
            ("rows", .array(r.rows.map { row in
                .object([
                    ("rfc", .int(Int64(row.requirement.rfc))),
                    ("requirement", .string(row.requirement.number)),
                    ("level", .string(row.requirement.level.rawValue)),
                    ("verdict", .string(row.verdict.rawValue)),
                    ("how", .string(row.requirement.method.rawValue)),
                    ("summary", .string(row.requirement.summary)),
                    ("evidence", .string(row.evidence)),
                ])
            })),
        ])
    }
}
