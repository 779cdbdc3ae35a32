import NetAddress

/// "Who held this public address and port at that moment?" from what the NAT log store says
/// (the JSON of `cgnat-store query`): the policy version in force then (through `Whois.lookup` on
/// that version's lab), stored sessions whose start and end enclose the moment, stored block
/// allocations, and whether the moment falls where the logger was not running. Pure.
public enum WhoisAt {
    public struct Session: Equatable, Sendable {
        public var domain: String
        public var domainID: UInt32
        public var proto: String
        public var inside: String
        public var insidePort: Int?
        public var destination: String?
        public var destinationPort: Int?
        public var startMs: Int64
        public var endMs: Int64?
        public var endReason: String?
        public var conntrackID: Int64?
    }

    public struct Uncertain: Equatable, Sendable {
        public var fromMs: Int64?
        public var toMs: Int64?
        public var reason: String
    }

    public struct Answer: Equatable, Sendable {
        public var address: IPAddress
        public var port: UInt16
        public var atMs: Int64
        public var protocols: [Whois.Proto]
        /// The subscriber: from a session when one encloses the moment, else a stored block, else the policy.
        public var domain: String?
        public var domainID: UInt32?
        public var inside: String?
        public var insidePort: Int?
        public var host: String?
        /// `policy`, `session`, `block`: what says so.
        public var evidence: [String] = []
        public var policy: Whois.Answer?
        public var policyLab: String?
        public var policySinceMs: Int64?
        public var policyNote: String?
        public var sessions: [Session] = []
        public var uncertain: Uncertain?
        public var found: Bool { domain != nil }
    }

    public struct Failure: Error, CustomStringConvertible { public var description: String }

    static func int(_ j: JSON?) -> Int64? { j?.intValue }

    public static func answer(store j: JSON, address: IPAddress, port: UInt16, atMs: Int64, protocols: [Whois.Proto]) throws -> Answer {
        var a = Answer(address: address, port: port, atMs: atMs, protocols: protocols)
        var lab: Lab?
        if let p = j["policy"], let text = p["lab_json"]?.stringValue {
            do { lab = try LabCodec.decode(text) } catch {
                throw Failure(description: "the store's policy version of lab '\(p["lab"]?.stringValue ?? "?")' cannot be read (\(error)): is it from another cgnat version?")
            }
            a.policyLab = p["lab"]?.stringValue
            a.policySinceMs = int(p["since_ms"])
        }
        if let lab {
            do {
                let w = try Whois.lookup(lab, address: address, port: port)
                a.policy = w
                if w.domain != nil { a.evidence.append("policy") } else { a.policyNote = w.reason }
            } catch let e as Whois.Failure { a.policyNote = e.description }
        } else {
            a.policyNote = "no policy version was in force then (the store starts later)"
        }
        let wanted = Set(protocols.map { Int64($0.number) })
        for s in j["sessions"]?.arrayValue ?? [] {
            guard let proto = int(s["proto"]), wanted.contains(proto), let domain = s["domain"]?.stringValue,
                  let inside = s["inside"]?.stringValue, let start = int(s["start_ms"]) else { continue }
            a.sessions.append(Session(
                domain: domain, domainID: UInt32(int(s["domain_id"]) ?? 0), proto: protoName(proto), inside: inside,
                insidePort: int(s["inside_port"]).map(Int.init), destination: s["destination"]?.stringValue,
                destinationPort: int(s["destination_port"]).map(Int.init), startMs: start, endMs: int(s["end_ms"]),
                endReason: s["end_reason"]?.stringValue, conntrackID: int(s["ct_id"])))
        }
        let blocks = j["blocks"]?.arrayValue ?? []
        if let s = a.sessions.first {
            a.evidence.append("session")
            (a.domain, a.domainID, a.inside, a.insidePort) = (s.domain, s.domainID, s.inside, s.insidePort)
        } else if let b = blocks.first, let d = b["domain"]?.stringValue, let inside = b["inside"]?.stringValue {
            (a.domain, a.domainID, a.inside) = (d, UInt32(int(b["domain_id"]) ?? 0), inside)
        } else if let p = a.policy, let d = p.domain {
            (a.domain, a.domainID, a.inside) = (d, p.domainID, p.inside?.description)
        }
        if !blocks.isEmpty { a.evidence.append("block") }
        if let inside = a.inside, let d = a.domain, let lab, let ip = IPAddress(inside) {
            a.host = lab.hosts(in: d).first { $0.addresses.contains { $0.address == ip } }?.name
        }
        if let u = j["uncertain"], let reason = u["reason"]?.stringValue {
            a.uncertain = Uncertain(fromMs: int(u["from_ms"]), toMs: int(u["to_ms"]), reason: reason)
        }
        return a
    }

    static func protoName(_ n: Int64) -> String {
        Whois.Proto.allCases.first { Int64($0.number) == n }?.rawValue ?? "proto-\(n)"
    }

    static func time(_ ms: Int64?) -> String { ms.map { Timestamp.format(milliseconds: $0) } ?? "?" }

    public static func text(_ a: Answer) -> String {
        var out = "\(a.address):\(a.port) (\(a.protocols.map(\.rawValue).joined(separator: ", "))) at \(time(a.atMs)): "
        if let d = a.domain, let inside = a.inside {
            out += "domain \(d) (id \(a.domainID ?? 0)), inside \(inside)\(a.insidePort.map { ":\($0)" } ?? "")"
            out += a.host.map { " (host \($0))" } ?? ""
            out += "; evidence: \(a.evidence.isEmpty ? "none" : a.evidence.joined(separator: ", "))\n"
        } else {
            out += "nobody\(a.policyNote.map { ": \($0)" } ?? "")\n"
        }
        if let u = a.uncertain {
            out += "  uncertain: \(u.reason) (no log from \(time(u.fromMs)) to \(u.toMs.map { Timestamp.format(milliseconds: $0) } ?? "now")): the log cannot say who held it then\n"
        }
        for s in a.sessions {
            out += "  session \(s.proto): \(s.domain) \(s.inside)\(s.insidePort.map { ":\($0)" } ?? "")"
            if let dst = s.destination { out += " -> \(dst)\(s.destinationPort.map { ":\($0)" } ?? "")" }
            out += " from \(time(s.startMs)) to \(s.endMs.map { Timestamp.format(milliseconds: $0) } ?? "(open)")"
            if let r = s.endReason { out += " (\(r))" }
            out += s.conntrackID.map { ", conntrack id \($0)" } ?? ""
            out += "\n"
        }
        if a.sessions.isEmpty && a.uncertain == nil { out += "  no stored session encloses that moment\n" }
        if let p = a.policy, let b = p.block, let lab = a.policyLab {
            out += "  policy of lab \(lab) (in force since \(time(a.policySinceMs))): block \(b.ports.lowerBound)-\(b.ports.upperBound) of \(b.publicAddress) is \(p.domain ?? "?") \(p.inside?.description ?? "?")\n"
        } else if let note = a.policyNote, a.domain != nil {
            out += "  policy: \(note)\n"
        }
        return out
    }

    public static func json(_ a: Answer) -> JSON {
        func opt(_ v: Int64?) -> JSON { v.map { .int($0) } ?? .null }
        func t(_ v: Int64?) -> JSON { v.map { .string(Timestamp.format(milliseconds: $0)) } ?? .null }
        return .object([
            ("address", .string(a.address.description)), ("port", .int(Int64(a.port))), ("at", t(a.atMs)),
            ("protocols", .array(a.protocols.map { .string($0.rawValue) })),
            ("domain", JSON(a.domain)), ("domain_id", a.domainID.map { .int(Int64($0)) } ?? .null),
            ("inside", JSON(a.inside)), ("inside_port", a.insidePort.map { .int(Int64($0)) } ?? .null), ("host", JSON(a.host)),
            ("evidence", .array(a.evidence.map { .string($0) })),
            ("policy", .object([
                ("lab", JSON(a.policyLab)), ("since", t(a.policySinceMs)), ("domain", JSON(a.policy?.domain)),
                ("inside", JSON(a.policy?.inside?.description)),
                ("block", a.policy?.block.map { b in .object([("public", .string(b.publicAddress.description)),
                                                               ("first", .int(Int64(b.ports.lowerBound))), ("last", .int(Int64(b.ports.upperBound)))]) } ?? .null),
                ("note", JSON(a.policyNote)),
            ])),
            ("sessions", .array(a.sessions.map { s in .object([
                ("proto", .string(s.proto)), ("domain", .string(s.domain)), ("domain_id", .int(Int64(s.domainID))),
                ("inside", .string(s.inside)), ("inside_port", s.insidePort.map { .int(Int64($0)) } ?? .null),
                ("destination", JSON(s.destination)), ("destination_port", s.destinationPort.map { .int(Int64($0)) } ?? .null),
                ("start", t(s.startMs)), ("end", t(s.endMs)), ("end_reason", JSON(s.endReason)), ("conntrack_id", opt(s.conntrackID)),
            ]) })),
            ("uncertain", a.uncertain.map { u in .object([("from", t(u.fromMs)), ("to", t(u.toMs)), ("reason", .string(u.reason))]) } ?? .null),
        ])
    }
}
