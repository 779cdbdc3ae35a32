/// Text and JSON renderings of a trace.
public enum TraceFormat {
    public static func text(_ packets: [TracedPacket]) -> String {
        var lines: [String] = []
        for (n, p) in packets.enumerated() {
            lines.append("packet \(n + 1)  trace \(hex(p.traceID))  \(p.packet?.description ?? "")")
            var shownPacket = p.packet
            var shownCT: String?
            var shownDevices: String?
            for h in p.hops {
                var words = ["[\(h.context)]", pad(h.hook ?? "?", 11)]
                switch h.kind {
                case .enter:
                    words.append("enter")
                case .passed:
                    words.append("passed")
                case .rule, .return, .policy:
                    if let pr = h.priority { words.append(pr) }
                    words.append(h.chain)
                    if h.kind == .rule {
                        words.append("rule \"\(h.rule ?? "handle \(h.ruleHandle.map(String.init) ?? "?")")\"")
                    } else {
                        words.append(h.kind.rawValue)
                    }
                    if let v = h.verdict { words.append("-> \(v)") }
                }
                var devices: [String] = []
                if let i = h.input { devices.append("iif \(i)") }
                if let o = h.output { devices.append("oif \(o)") }
                let dev = devices.joined(separator: " ")
                if !devices.isEmpty, dev != shownDevices || h.kind == .enter || h.kind == .passed {
                    words.append(" " + dev)
                }
                shownDevices = dev
                if let pk = h.packet, pk != shownPacket {
                    words.append(" \(pk)")
                    shownPacket = pk
                }
                if let ct = h.ct?.description, !ct.isEmpty, ct != shownCT {
                    words.append(" \(ct)")
                    shownCT = ct
                }
                if let m = h.mark, m != 0, h.kind == .passed { words.append(" mark \(hex(m))") }
                lines.append("  " + words.joined(separator: " "))
            }
            lines.append("  verdict: \(p.verdict)")
        }
        lines.append(TraceAnalysis.summary(packets))
        return lines.joined(separator: "\n") + "\n"
    }

    public static func json(_ packets: [TracedPacket], command: [String], context: String, exitStatus: Int32?) -> JSON {
        func opt(_ s: String?) -> JSON { s.map(JSON.string) ?? .null }
        func packetJSON(_ p: PacketSummary?) -> JSON {
            guard let p else { return .null }
            var o: [(String, JSON)] = [("source", .string(p.source.description)), ("destination", .string(p.destination.description)),
                                       ("protocol", .string(p.protocolName))]
            if let v = p.sourcePort { o.append(("source_port", .int(Int64(v)))) }
            if let v = p.destinationPort { o.append(("destination_port", .int(Int64(v)))) }
            if let v = p.icmpTypeName { o.append(("icmp_type", .string(v))) }
            if let v = p.icmpCode { o.append(("icmp_code", .int(Int64(v)))) }
            if let v = p.icmpID { o.append(("icmp_id", .int(Int64(v)))) }
            return .object(o)
        }
        let list: [JSON] = packets.map { p in
            .object([
                ("trace_id", .string(hex(p.traceID))),
                ("packet", packetJSON(p.packet)),
                ("hops", .array(p.hops.map { h in
                    var o: [(String, JSON)] = [("context", .string(h.context)), ("kind", .string(h.kind.rawValue)),
                                               ("hook", opt(h.hook)), ("priority", opt(h.priority)),
                                               ("table", .string(h.table)), ("chain", .string(h.chain))]
                    o.append(("rule_handle", h.ruleHandle.map { .int(Int64($0)) } ?? .null))
                    o.append(("rule", opt(h.rule)))
                    o.append(("verdict", opt(h.verdict)))
                    o.append(("iif", opt(h.input)))
                    o.append(("oif", opt(h.output)))
                    o.append(("packet", packetJSON(h.packet)))
                    o.append(("mark", h.mark.map { .int(Int64($0)) } ?? .null))
                    if let ct = h.ct {
                        o.append(("ct", .object([
                            ("state", opt(ct.state)), ("direction", opt(ct.direction)),
                            ("id", ct.id.map { .int(Int64($0)) } ?? .null),
                            ("status", .array(ct.status.map(JSON.string))),
                            ("original_zone", ct.originalZone.map { .int(Int64($0)) } ?? .null),
                            ("reply_zone", ct.replyZone.map { .int(Int64($0)) } ?? .null),
                            ("nat", opt(ct.nat)),
                        ])))
                    } else {
                        o.append(("ct", .null))
                    }
                    return .object(o)
                })),
                ("verdict", .object([("result", .string(p.verdict.result.rawValue)), ("context", opt(p.verdict.context)),
                                     ("detail", .string(p.verdict.detail))])),
            ])
        }
        return .object([
            ("context", .string(context)),
            ("command", .array(command.map(JSON.string))),
            ("exit_status", exitStatus.map { .int(Int64($0)) } ?? .null),
            ("packets", .array(list)),
            ("verdict", .string(TraceAnalysis.summary(packets))),
        ])
    }

    static func hex(_ v: UInt32) -> String { String(v, radix: 16) }

    static func pad(_ s: String, _ n: Int) -> String { s.count >= n ? s : s + String(repeating: " ", count: n - s.count) }
}
