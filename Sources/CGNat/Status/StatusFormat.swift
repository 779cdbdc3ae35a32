import Netlink

public enum StatusFormat {
    public static func text(_ r: LabStatus.Report) -> String {
        var out = "lab \(r.lab): up, \(r.backend.rawValue) backend, from \(r.origin ?? "the built-in default lab")\n"
        for c in r.leftoverTrace {
            out += "warning: \(c) holds a table inet \(TraceTable.name) left by a killed trace (the next trace or down removes it)\n"
        }
        for c in r.contexts {
            out += "\n\(c.context.name)  (namespace \(c.context.namespace)" + (c.context.vrf.map { ", vrf \($0)" } ?? "") + ")\n"
            for i in c.interfaces {
                var line = "  \(i.name)"
                if let k = i.kind { line += " [\(k)]" }
                line += " \(i.up ? "UP" : "DOWN")/\(i.operState)"
                if let m = i.master { line += " master \(m)" }
                let addrs = i.addresses.filter { !$0.address.isLinkLocal || $0.address.bytes[15] <= 2 }
                if !addrs.isEmpty { line += "  " + addrs.map(\.description).joined(separator: " ") }
                out += line + "\n"
            }
            for rt in c.routes { out += "  route \(rt)\n" }
            for rule in c.rules { out += "  rule \(rule)\n" }
            if c.showsConntrack {
                out += "  conntrack: \(c.conntrack.count) entr\(c.conntrack.count == 1 ? "y" : "ies")\n"
                for e in c.conntrack.prefix(20) { out += "    \(LabStatus.describe(e))\n" }
            }
        }
        return out
    }

    public static func json(_ r: LabStatus.Report) -> JSON {
        .object([
            ("lab", .string(r.lab)),
            ("backend", .string(r.backend.rawValue)),
            ("origin", JSON(r.origin)),
            ("leftover_trace_tables", .array(r.leftoverTrace.map { .string($0) })),
            ("contexts", .array(r.contexts.map { c in
                var fields: [(String, JSON)] = [
                    ("name", .string(c.context.name)),
                    ("kind", .string(c.context.kind.rawValue)),
                    ("namespace", .string(c.context.namespace)),
                    ("vrf", JSON(c.context.vrf)),
                    ("interfaces", .array(c.interfaces.map { i in
                        .object([
                            ("name", .string(i.name)), ("kind", JSON(i.kind)), ("up", .bool(i.up)),
                            ("operstate", .string(i.operState)), ("master", JSON(i.master)),
                            ("addresses", .array(i.addresses.map { .string($0.description) })),
                        ])
                    })),
                    ("routes", .array(c.routes.map { .string($0) })),
                    ("rules", .array(c.rules.map { .string($0) })),
                ]
                if c.showsConntrack {
                    fields.append(("conntrack", .array(c.conntrack.map { e in
                        .object([
                            ("summary", .string(LabStatus.describe(e))),
                            ("protocol", .int(Int64(e.original.protocolNumber))),
                            ("original_source", .string(e.original.source.description)),
                            ("original_destination", .string(e.original.destination.description)),
                            ("reply_source", .string(e.reply.source.description)),
                            ("reply_destination", .string(e.reply.destination.description)),
                            ("zone", (e.originalZone ?? e.zone).map { .int(Int64($0)) } ?? .null),
                            ("zone_direction", .string(e.originalZone != nil ? "original" : e.zone != nil ? "both" : "none")),
                            ("mark", .int(Int64(e.mark))),
                        ])
                    })))
                }
                return .object(fields)
            })),
        ])
    }
}
