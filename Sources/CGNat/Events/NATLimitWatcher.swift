import CGNatCore
import Netlink
import Glibc

/// The NAT's own reports of refused flows, read from the counters of the rules that refuse
/// them: "session limit per subscriber" (a subscriber over its session quota, RFC 6888 REQ-4)
/// and "CGN no port block" (an inside address that the pool gives no address and block). The
/// kernel counts them without saying who, so each rise of a counter between two reads is one
/// event for the NAT log (RFC 8158 quota exceeded, addresses exhausted), without the subscriber.
public final class NATLimitWatcher {
    private let nft: Nftables
    private let sessionLimit: Int?
    private var last: [String: UInt64] = [:]

    /// The libnftables context opens its socket in the router's namespace (`namespaceFD`).
    public init(namespaceFD: Int32, lab: Lab) throws {
        nft = try NetNamespace.run(in: namespaceFD) { try Nftables(output: [.handle, .json]) }
        sessionLimit = lab.router.nat.sessionLimit
        _ = poll(nowMilliseconds: 0)   // the counters as they are: only rises after this count
    }

    static let watched: [(chain: String, comment: String)] = [
        (Ruleset.forwardChain, Ruleset.Comment.sessionLimit),
        ("srcnat", Ruleset.Comment.noPortBlock),
    ]

    /// Reads the counters and returns an event per counter that rose since the last read.
    public func poll(nowMilliseconds now: UInt64) -> [(event: NATLogEvent, refused: UInt64)] {
        var out: [(event: NATLogEvent, refused: UInt64)] = []
        for (chain, comment) in Self.watched {
            guard let text = try? nft.run("list chain inet \(Ruleset.tableName) \(chain)"),
                  let rules = try? RuleCounters.rules(fromJSON: text),
                  let packets = rules.first(where: { $0.rule.comment == comment })?.rule.packets else { continue }
            defer { last[comment] = packets }
            guard let before = last[comment], packets > before else { continue }
            let kind: NATLogEvent.Kind = comment == Ruleset.Comment.sessionLimit
                ? .quotaExceeded(limit: UInt32(clamping: sessionLimit ?? 0)) : .addressesExhausted
            out.append((NATLogEvent(kind: kind, timeMilliseconds: now), packets - before))
        }
        return out
    }
}
