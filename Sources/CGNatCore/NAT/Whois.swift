import NetAddress

/// "Who had this public address and port?" from the lab's policy alone (RFC 7422: the
/// deterministic blocks answer without a log). The live flows, when the lab is up, are the
/// runtime's to add.
public enum Whois {
    public enum Proto: String, Sendable, CaseIterable {
        case udp, tcp, icmp
        public var number: UInt8 { switch self { case .udp: return 17; case .tcp: return 6; case .icmp: return 1 } }
    }

    public struct Answer: Equatable, Sendable {
        public var publicAddress: IPAddress
        public var port: UInt16
        /// The subscriber the policy gives the port to; nil with `reason` when nobody holds it.
        public var domain: String?
        public var domainID: UInt32?
        public var inside: IPAddress?
        public var block: PortBlockPolicy.Allocation?
        /// Whether a host of the lab has that inside address (the policy covers addresses without one).
        public var host: String?
        public var reason: String?
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    /// Parses `ADDRESS:PORT` (IPv4; the port 1-65535, or an ICMP id 0-65535).
    public static func parseTarget(_ text: String) throws -> (IPAddress, UInt16) {
        guard let colon = text.lastIndex(of: ":"), let a = IPAddress(String(text[..<colon])), a.family == .v4,
              let p = UInt16(text[text.index(after: colon)...]) else {
            throw Failure(description: "'\(text)' is not ADDRESS:PORT: write a public IPv4 address and a port, e.g. 198.51.100.1:2040")
        }
        return (a, p)
    }

    public static func lookup(_ lab: Lab, address: IPAddress, port: UInt16) throws -> Answer {
        guard let policy = lab.portBlockPolicy else {
            throw Failure(description: "lab '\(lab.name)' maps ports at random (mapping: random): only a NAT log can say who held a port; use port blocks for answers from the policy")
        }
        var answer = Answer(publicAddress: address, port: port)
        guard lab.router.nat.pool.contains(where: { $0.contains(address) }) else {
            answer.reason = "\(address) is not in the pool (\(lab.router.nat.pool.map(\.description).joined(separator: ", ")))"
            return answer
        }
        guard let owner = policy.owner(publicAddress: address, port: port) else {
            answer.reason = policy.ports.contains(port)
                ? "port \(port) of \(address) is in no subscriber's block (the tail of the range, or past the last subscriber)"
                : "port \(port) is outside the translated range \(policy.ports.lowerBound)-\(policy.ports.upperBound)"
            return answer
        }
        answer.domainID = owner.domainID
        answer.inside = owner.inside
        answer.block = policy.allocation(domainID: owner.domainID, inside: owner.inside)
        guard let d = lab.router.subscribers.first(where: { $0.id == owner.domainID }) else {
            answer.reason = "the block belongs to domain id \(owner.domainID), which this lab does not have (provisioned, unused)"
            return answer
        }
        answer.domain = d.name
        answer.host = lab.hosts(in: d.name).first { $0.addresses.contains { $0.address == owner.inside } }?.name
        return answer
    }
}
