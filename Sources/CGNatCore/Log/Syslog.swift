import NetAddress

/// RFC 5424 syslog lines for NAT log events:
/// `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD-ID param="value" ...] MSG`, the NAT
/// fields as structured data. Pure.
public enum Syslog {
    /// local0 (16): what CGN syslog exports commonly use; severity informational (6).
    public static let facility = 16
    public static let severity = 6
    /// SD-IDs without `@` are IANA-registered names only (RFC 5424 section 7.2): ours is a
    /// private one under 32473, the enterprise number RFC 5612 reserves for documentation.
    public static let sdID = "nat@32473"

    public struct Header: Sendable {
        public var hostname: String
        public var appName: String
        public var procID: String
        public init(hostname: String, appName: String = "cgnat", procID: String) {
            self.hostname = hostname
            self.appName = appName
            self.procID = procID
        }
    }

    public static func line(_ e: NATLogEvent, header h: Header) -> String {
        var s = "<\(facility * 8 + severity)>1 "
        s += timestamp(e.timeMilliseconds)
        s += " " + headerField(h.hostname, max: 255) + " " + headerField(h.appName, max: 48)
        s += " " + headerField(h.procID, max: 128) + " " + headerField(e.name, max: 32) + " "
        var params: [(String, String)] = [("event", String(e.natEvent)), ("vrf", String(e.vrfID))]
        if let domain = e.domain { params.append(("domain", domain)) }
        var text = ""
        switch e.kind {
        case .sessionCreate, .sessionDelete:
            params.append(("proto", String(e.protocolNumber)))
            if let a = e.inside { params.append(("inside", a.description)); params.append(("insidePort", String(e.insidePort))) }
            if let a = e.outside { params.append(("outside", a.description)); params.append(("outsidePort", String(e.outsidePort))) }
            // ICMP has an echo id in the port fields, and no destination port.
            let ports = e.protocolNumber != 1 && e.protocolNumber != 58
            if let a = e.destination {
                params.append(("destination", a.description))
                if ports { params.append(("destinationPort", String(e.destinationPort))) }
            }
            text = "\(e.kind == .sessionCreate ? "session create" : "session delete") proto \(e.protocolNumber)"
                + " \(e.inside.map { "\($0):\(e.insidePort)" } ?? "-") -> \(e.outside.map { "\($0):\(e.outsidePort)" } ?? "-")"
                + (e.destination.map { ports ? " to \($0):\(e.destinationPort)" : " to \($0)" } ?? "")
        case .portBlockAllocation, .portBlockDeallocation:
            if let a = e.inside { params.append(("inside", a.description)) }
            if let a = e.outside { params.append(("outside", a.description)) }
            if let p = e.ports { params.append(("portStart", String(p.lowerBound))); params.append(("portEnd", String(p.upperBound))) }
            text = "\(e.kind == .portBlockAllocation ? "port block allocated" : "port block released")"
                + " \(e.inside?.description ?? "-") -> \(e.outside?.description ?? "-")"
                + (e.ports.map { " ports \($0.lowerBound)-\($0.upperBound)" } ?? "")
        case .quotaExceeded(let limit):
            params.append(("limit", String(limit)))
            text = "session limit per subscriber (\(limit)) exceeded"
        case .addressesExhausted:
            text = "no public address or port block for a subscriber"
        }
        s += "[" + sdID
        for (k, v) in params { s += " \(k)=\"\(escape(v))\"" }
        s += "] " + text
        return s
    }

    /// PARAM-VALUE escaping (RFC 5424 section 6.3.3): `"`, `\` and `]` get a backslash.
    public static func escape(_ v: String) -> String {
        var out = ""
        out.reserveCapacity(v.utf8.count)
        for c in v {
            if c == "\"" || c == "\\" || c == "]" { out.append("\\") }
            out.append(c)
        }
        return out
    }

    /// A header field: printable US-ASCII without spaces, at most `max` characters, `-` if empty.
    static func headerField(_ v: String, max: Int) -> String {
        let kept = v.unicodeScalars.filter { $0.value > 32 && $0.value < 127 }.prefix(max)
        return kept.isEmpty ? "-" : String(String.UnicodeScalarView(kept))
    }

    /// RFC 3339 UTC with milliseconds (RFC 5424 TIMESTAMP), from milliseconds since the epoch:
    /// the format `whois --at` reads and the store writes.
    public static func timestamp(_ ms: UInt64) -> String { Timestamp.format(milliseconds: Int64(ms)) }
}
