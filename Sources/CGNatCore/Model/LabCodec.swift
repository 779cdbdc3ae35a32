import NetAddress

/// The resolved lab as JSON: what `up FILE` stores next to the lab's record, so that every later
/// command works on the lab by name without the file (and without the YAML reader, which needs
/// Foundation). Lossless: `decode(encode(lab)) == lab`.
public enum LabCodec {
    public static let version: Int64 = 1

    public struct DecodeError: Error, CustomStringConvertible {
        public var path: String
        public var message: String
        public var description: String { "resolved lab: \(path): \(message)" }
    }

    public static func encode(_ lab: Lab) -> String {
        func prefixes(_ p: [IPPrefix]) -> JSON { .array(p.map { .string($0.description) }) }
        func addresses(_ a: [IPAddress]) -> JSON { .array(a.map { .string($0.description) }) }
        let r = lab.router
        let router: JSON = .object([
            ("name", .string(r.name)),
            ("uplink", .object([
                ("name", .string(r.uplink.name)), ("interface", .string(r.uplink.interface)),
                ("addresses", prefixes(r.uplink.addresses)), ("gateways", addresses(r.uplink.gateways)),
            ])),
            ("subscribers", .array(r.subscribers.map { d in
                .object([("name", .string(d.name)), ("id", .int(Int64(d.id))), ("bridge", .string(d.bridge)),
                         ("addresses", prefixes(d.addresses)), ("routed", prefixes(d.routed))])
            })),
            ("nat", natJSON(r.nat)),
        ])
        let hosts: JSON = .array(lab.hosts.map { h in
            let attachment: JSON
            switch h.attachment {
            case .uplink: attachment = .string("uplink")
            case .domain(let d): attachment = .object([("domain", .string(d))])
            }
            return .object([
                ("name", .string(h.name)), ("attachment", attachment), ("interface", .string(h.interface)),
                ("addresses", prefixes(h.addresses)), ("loopback", prefixes(h.loopbackAddresses)),
                ("routes", .array(h.routes.map { rt in
                    .object([("to", .string(rt.destination.description)), ("via", .string(rt.gateway.description)),
                             ("src", JSON(rt.source?.description))])
                })),
            ])
        })
        let expectations: JSON = .array(lab.expectations.map { e in
            .object([("from", .string(e.from)), ("to", .string(e.to.description)), ("proto", .string(e.proto.rawValue)),
                     ("outcome", .string(e.outcome.rawValue)), ("source", JSON(e.source?.description)),
                     ("location", JSON(e.location))])
        })
        return JSON.object([
            ("cgnat-resolved-lab", .int(version)), ("name", .string(lab.name)), ("origin", JSON(lab.origin)),
            ("router", router), ("hosts", hosts), ("expectations", expectations),
        ]).serialized()
    }

    public static func decode(_ text: String) throws -> Lab {
        let root: JSON
        do { root = try JSON.parse(text) } catch { throw DecodeError(path: "$", message: "\(error)") }
        var r = Reader(path: "$")
        guard root["cgnat-resolved-lab"]?.intValue == version else {
            throw DecodeError(path: "$", message: "not a resolved lab of version \(version)")
        }
        let routerJ = try r.member(root, "router")
        let up = try r.member(routerJ, "uplink")
        let router = Router(
            name: try r.string(routerJ, "name"),
            uplink: UplinkDomain(name: try r.string(up, "name"), interface: try r.string(up, "interface"),
                                 addresses: try r.prefixes(up, "addresses"), gateways: try r.addresses(up, "gateways")),
            subscribers: try r.array(routerJ, "subscribers").map { d in
                let id = try r.int(d, "id")
                guard let id32 = UInt32(exactly: id) else { throw DecodeError(path: "subscribers.id", message: "out of range") }
                return SubscriberDomain(name: try r.string(d, "name"), id: id32, bridge: try r.string(d, "bridge"),
                                        addresses: try r.prefixes(d, "addresses"), routed: try r.prefixes(d, "routed"))
            },
            nat: try decodeNAT(try r.member(routerJ, "nat"), r))
        let hosts = try r.array(root, "hosts").map { h -> Host in
            let attachment: Host.Attachment
            let a = try r.member(h, "attachment")
            if a.stringValue == "uplink" { attachment = .uplink } else { attachment = .domain(try r.string(a, "domain")) }
            return Host(name: try r.string(h, "name"), attachment: attachment, interface: try r.string(h, "interface"),
                        addresses: try r.prefixes(h, "addresses"), loopbackAddresses: try r.prefixes(h, "loopback"),
                        routes: try r.array(h, "routes").map { rt in
                            HostRoute(try r.prefix(rt, "to"), via: try r.address(rt, "via"), source: try r.optionalAddress(rt, "src"))
                        })
        }
        let expectations = try r.array(root, "expectations").map { e -> Expectation in
            guard let proto = ProbeProtocol(rawValue: try r.string(e, "proto")),
                  let outcome = Expectation.Outcome(rawValue: try r.string(e, "outcome")) else {
                throw DecodeError(path: "expectations", message: "bad proto or outcome")
            }
            return Expectation(from: try r.string(e, "from"), to: try r.address(e, "to"), proto: proto, outcome: outcome,
                               source: try r.optionalAddress(e, "source"), location: e["location"]?.stringValue)
        }
        return Lab(name: try r.string(root, "name"), router: router, hosts: hosts, expectations: expectations,
                   origin: root["origin"]?.stringValue)
    }

    private static func natJSON(_ nat: NATPolicy) -> JSON {
        let mapping: JSON
        switch nat.mapping {
        case .random: mapping = .object([("kind", .string("random"))])
        case .portBlocks(let b):
            mapping = .object([
                ("kind", .string("port-blocks")), ("inside_range", JSON(b.insideRange?.description)),
                ("ports", .array([.int(Int64(b.ports.lowerBound)), .int(Int64(b.ports.upperBound))])),
                ("block_size", b.blockSize.map { .int(Int64($0)) } ?? .null), ("blocks", .int(Int64(b.blocksPerSubscriber))),
            ])
        }
        return .object([("inside", .string(nat.inside.description)), ("pool", .array(nat.pool.map { .string($0.description) })),
                        ("mapping", mapping), ("sessions", nat.sessionLimit.map { .int(Int64($0)) } ?? .null),
                        ("filtering", .string(nat.filtering.rawValue))])
    }

    private static func decodeNAT(_ j: JSON, _ r: Reader) throws -> NATPolicy {
        let inside = try r.prefix(j, "inside")
        let pool = try r.prefixes(j, "pool")
        let m = try r.member(j, "mapping")
        let sessions = j["sessions"]?.intValue.map(Int.init)
        // Records written before filtering existed had address-and-port-dependent filtering.
        var filtering = NATPolicy.Filtering.addressPortDependent
        if let f = j["filtering"]?.stringValue {
            guard let v = NATPolicy.Filtering(rawValue: f) else { throw DecodeError(path: "nat.filtering", message: "unknown filtering '\(f)'") }
            filtering = v
        }
        switch try r.string(m, "kind") {
        case "random": return NATPolicy(inside: inside, pool: pool, mapping: .random, sessionLimit: sessions, filtering: filtering)
        case "port-blocks":
            let ports = try r.array(m, "ports").compactMap { $0.intValue.flatMap { UInt16(exactly: $0) } }
            guard ports.count == 2, ports[0] <= ports[1] else { throw DecodeError(path: "nat.mapping.ports", message: "not a port range") }
            var range: IPPrefix?
            if let s = m["inside_range"], s != .null {
                guard let t = s.stringValue, let p = IPPrefix(t) else { throw DecodeError(path: "nat.mapping.inside_range", message: "not a prefix") }
                range = p
            }
            let size = m["block_size"]?.intValue.map(Int.init)
            return NATPolicy(inside: inside, pool: pool, mapping: .portBlocks(.init(
                insideRange: range, ports: ports[0]...ports[1], blockSize: size, blocksPerSubscriber: Int(try r.int(m, "blocks")))),
                sessionLimit: sessions, filtering: filtering)
        case let k: throw DecodeError(path: "nat.mapping.kind", message: "unknown mapping '\(k)'")
        }
    }

    private struct Reader {
        var path: String
        func fail(_ key: String, _ m: String) -> DecodeError { DecodeError(path: key, message: m) }
        func member(_ o: JSON, _ k: String) throws -> JSON {
            guard let v = o[k] else { throw fail(k, "missing") }
            return v
        }
        func string(_ o: JSON, _ k: String) throws -> String {
            guard let s = try member(o, k).stringValue else { throw fail(k, "not a string") }
            return s
        }
        func int(_ o: JSON, _ k: String) throws -> Int64 {
            guard let i = try member(o, k).intValue else { throw fail(k, "not an integer") }
            return i
        }
        func array(_ o: JSON, _ k: String) throws -> [JSON] {
            guard let a = try member(o, k).arrayValue else { throw fail(k, "not an array") }
            return a
        }
        func address(_ o: JSON, _ k: String) throws -> IPAddress {
            guard let a = IPAddress(try string(o, k)) else { throw fail(k, "not an address") }
            return a
        }
        func optionalAddress(_ o: JSON, _ k: String) throws -> IPAddress? {
            guard let v = o[k], v != .null else { return nil }
            guard let s = v.stringValue, let a = IPAddress(s) else { throw fail(k, "not an address") }
            return a
        }
        func prefix(_ o: JSON, _ k: String) throws -> IPPrefix {
            guard let p = IPPrefix(try string(o, k)) else { throw fail(k, "not a prefix") }
            return p
        }
        func prefixes(_ o: JSON, _ k: String) throws -> [IPPrefix] {
            try array(o, k).map { v in
                guard let s = v.stringValue, let p = IPPrefix(s) else { throw fail(k, "not a prefix") }
                return p
            }
        }
        func addresses(_ o: JSON, _ k: String) throws -> [IPAddress] {
            try array(o, k).map { v in
                guard let s = v.stringValue, let a = IPAddress(s) else { throw fail(k, "not an address") }
                return a
            }
        }
    }
}
