import NetAddress

/// How cgnat shows a lab whose domains hold many subscribers: by domain, with counts and ranges,
/// not host by host (graph, status and tmux share the threshold).
public enum LabScale {
    /// A subscriber domain with more hosts than this is shown as one group.
    public static let detailLimit = 8
}

extension Lab {
    /// Whether `graph` and `status` show this domain's hosts as a group.
    public func summarises(domain: String) -> Bool { hosts(in: domain).count > LabScale.detailLimit }

    /// Whether any domain is summarised.
    public var isSummarised: Bool { router.subscribers.contains { summarises(domain: $0.name) } }

    /// Hosts on subscriber domains (everyone but the uplink host).
    public var subscriberHosts: [Host] { hosts.filter { $0.attachment != .uplink } }
}

/// A group of hosts said in one breath: "100 subscribers d01_c001..d01_c100" with the range of
/// each kind of address they hold.
public struct HostGroupSummary: Equatable, Sendable {
    public var count: Int
    /// `first..last` in the lab's order (or the one name).
    public var names: String
    /// One entry per address family and prefix length, in the order the hosts hold them.
    public var addresses: [AddressRange]

    public init(_ hosts: [Host]) {
        count = hosts.count
        names = HostGroupSummary.range(hosts.map(\.name))
        var groups: [(family: IPFamily, length: Int, addresses: [IPAddress])] = []
        for p in hosts.flatMap(\.addresses) {
            if let i = groups.firstIndex(where: { $0.family == p.family && $0.length == p.length }) {
                groups[i].addresses.append(p.address)
            } else {
                groups.append((p.family, p.length, [p.address]))
            }
        }
        addresses = groups.map { AddressRange(Set($0.addresses).sorted(), length: $0.length, hosts: hosts.count) }
    }

    /// `a..z` for several names, the name itself for one.
    public static func range(_ names: [String]) -> String {
        guard let first = names.first else { return "" }
        return names.count == 1 ? first : "\(first)..\(names.last!)"
    }
}

/// The addresses of one family and prefix length across a group of hosts.
public struct AddressRange: Equatable, Sendable, CustomStringConvertible {
    public var low: IPAddress
    public var high: IPAddress
    /// Every address between low and high is there.
    public var consecutive: Bool
    public var length: Int
    public var count: Int
    /// Fewer addresses than hosts: not every host has one of this kind.
    public var partial: Bool

    public init(_ sorted: [IPAddress], length: Int, hosts: Int) {
        low = sorted.first!
        high = sorted.last!
        consecutive = zip(sorted, sorted.dropFirst()).allSatisfy { AddressRange.successor(of: $0) == $1 }
        self.length = length
        count = sorted.count
        partial = sorted.count != hosts
    }

    /// `lo-hi` when consecutive, `lo..hi` when there are gaps.
    public var span: String { count == 1 ? low.description : "\(low)\(consecutive ? "-" : "..")\(high)" }

    /// `(/10)`, or `(/32, 1 address)` when not every host has one.
    public var qualifier: String { partial ? "(/\(length), \(count) address\(count == 1 ? "" : "es"))" : "(/\(length))" }

    /// `100.64.0.1-100.64.0.100 (/10)`
    public var description: String { "\(span) \(qualifier)" }

    static func successor(of a: IPAddress) -> IPAddress? {
        var b = a.bytes
        var i = b.count - 1
        while i >= 0 {
            if b[i] < 255 { b[i] += 1; return IPAddress(family: a.family, bytes: b) }
            b[i] = 0
            i -= 1
        }
        return nil
    }
}
