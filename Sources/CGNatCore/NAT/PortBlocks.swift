import NetAddress

/// Deterministic port-block allocation (RFC 7422): (domain, inside address) maps to one public
/// address (paired pooling, RFC 6888 REQ-2) and one contiguous range of ports, by arithmetic on
/// explicit policy values alone. The same function read backwards answers "who had this public
/// address and port" without a log. Domain ids (written in the lab, not file order) key the
/// subscriber's index, so reordering a file never remaps anyone.
public struct PortBlockPolicy: Equatable, Sendable {
    /// Public addresses, in order (every address of each prefix: a routed pool has no broadcast).
    public var pool: [IPPrefix]
    /// The inside addresses the policy covers in every domain (also those without a namespace).
    public var insideRange: IPPrefix
    /// Domains 1...maxDomainID are provisioned; a domain's id decides its subscribers' indexes.
    public var maxDomainID: UInt32
    public var ports: ClosedRange<UInt16>
    public var blockSize: Int
    public var blocksPerSubscriber: Int

    /// Defaults: the RFC 6888 well-known ports stay out; 64 blocks of 1024 per address would give
    /// 63 subscribers an address, so the default block is 512 ports, one per subscriber.
    public static let defaultPorts: ClosedRange<UInt16> = 1024...65535
    public static let defaultBlockSize = 512
    public static let defaultBlocksPerSubscriber = 1

    public init(pool: [IPPrefix], insideRange: IPPrefix, maxDomainID: UInt32, ports: ClosedRange<UInt16> = defaultPorts,
                blockSize: Int = defaultBlockSize, blocksPerSubscriber: Int = defaultBlocksPerSubscriber) {
        self.pool = pool
        self.insideRange = insideRange
        self.maxDomainID = maxDomainID
        self.ports = ports
        self.blockSize = blockSize
        self.blocksPerSubscriber = blocksPerSubscriber
    }

    public struct Allocation: Equatable, Sendable, CustomStringConvertible {
        public var publicAddress: IPAddress
        public var ports: ClosedRange<UInt16>
        public init(publicAddress: IPAddress, ports: ClosedRange<UInt16>) { self.publicAddress = publicAddress; self.ports = ports }
        public var description: String { "\(publicAddress) ports \(ports.lowerBound)-\(ports.upperBound)" }
    }

    public struct Owner: Equatable, Sendable {
        public var domainID: UInt32
        public var inside: IPAddress
        public init(domainID: UInt32, inside: IPAddress) { self.domainID = domainID; self.inside = inside }
    }

    public var publicAddressCount: Int { pool.reduce(0) { $0 + (1 << (32 - $1.length)) } }
    public var insideCount: Int { 1 << (32 - insideRange.length) }
    public var subscriberCount: Int { Int(maxDomainID) * insideCount }
    public var portsPerSubscriber: Int { blockSize * blocksPerSubscriber }
    public var subscribersPerAddress: Int { portsPerSubscriber > 0 ? ports.count / portsPerSubscriber : 0 }

    /// What makes the policy unusable, each naming the numbers and what to change; empty if none.
    public func problems() -> [String] {
        var out: [String] = []
        if pool.isEmpty { out.append("the pool has no public address; add one") }
        if pool.contains(where: { $0.family != .v4 }) || insideRange.family != .v4 { out.append("port blocks are IPv4 only (NAT44)") }
        if insideRange.length < 8 { out.append("inside range \(insideRange) covers over 16M addresses per domain; use a narrower range") }
        if blockSize < 1 || blocksPerSubscriber < 1 { out.append("block size and blocks per subscriber must be at least 1") }
        if maxDomainID < 1 { out.append("no domain is provisioned") }
        guard out.isEmpty else { return out }
        if portsPerSubscriber > ports.count {
            out.append("\(blocksPerSubscriber) block(s) of \(blockSize) ports exceed the port range \(ports.lowerBound)-\(ports.upperBound) (\(ports.count) ports)")
        } else if subscriberCount > subscribersPerAddress * publicAddressCount {
            out.append("pool too small: \(maxDomainID) domain(s) x \(insideCount) inside addresses = \(subscriberCount) subscribers x \(portsPerSubscriber) ports need \(subscriberCount * portsPerSubscriber) ports, but \(publicAddressCount) public address(es) x \(ports.count) ports give \(publicAddressCount * ports.count); add public addresses, narrow the inside range, or make blocks smaller (at most \(publicAddressCount * ports.count / max(subscriberCount, 1)) ports each)")
        }
        return out
    }

    private func publicAddress(_ n: Int) -> IPAddress? {
        var n = n
        for p in pool {
            let size = 1 << (32 - p.length)
            if n < size { return p.network.address.advanced(by: UInt64(n)) }
            n -= size
        }
        return nil
    }

    private func publicIndex(_ a: IPAddress) -> Int? {
        var base = 0
        for p in pool {
            let size = 1 << (32 - p.length)
            if p.contains(a) { return base + Int(a.distance(from: p.network.address)) }
            base += size
        }
        return nil
    }

    /// The subscriber's index, 0-based: domains in id order, then inside addresses in order.
    public func index(domainID: UInt32, inside: IPAddress) -> Int? {
        guard (1...maxDomainID).contains(domainID), inside.family == .v4, insideRange.contains(inside) else { return nil }
        let offset = Int(inside.distance(from: insideRange.network.address))
        return Int(domainID - 1) * insideCount + offset
    }

    public func allocation(domainID: UInt32, inside: IPAddress) -> Allocation? {
        guard problems().isEmpty, let i = index(domainID: domainID, inside: inside),
              let addr = publicAddress(i / subscribersPerAddress) else { return nil }
        let first = Int(ports.lowerBound) + (i % subscribersPerAddress) * portsPerSubscriber
        return Allocation(publicAddress: addr, ports: UInt16(first)...UInt16(first + portsPerSubscriber - 1))
    }

    /// The policy read backwards, a run at a time: the ports of each public address that belong to
    /// one domain. Subscriber indexes are consecutive within a domain, so its blocks are contiguous
    /// on each address, and a domain's whole share is a handful of ranges however many subscribers
    /// it has. The uplink side sets an inbound packet's conntrack zone from this (issue 9: the
    /// domain must be known at both edges, or one subscriber's reply can match another's flow).
    public func domainRuns(domainIDs: [UInt32]) -> [(publicAddress: IPAddress, ports: ClosedRange<UInt16>, domainID: UInt32)] {
        guard problems().isEmpty, subscribersPerAddress > 0 else { return [] }
        var out: [(publicAddress: IPAddress, ports: ClosedRange<UInt16>, domainID: UInt32)] = []
        for d in domainIDs.sorted() where (1...maxDomainID).contains(d) {
            let first = Int(d - 1) * insideCount, last = Int(d) * insideCount - 1
            for a in (first / subscribersPerAddress)...(last / subscribersPerAddress) {
                guard let addr = publicAddress(a) else { break }
                let lo = max(first, a * subscribersPerAddress) - a * subscribersPerAddress
                let hi = min(last, a * subscribersPerAddress + subscribersPerAddress - 1) - a * subscribersPerAddress
                let p0 = Int(ports.lowerBound) + lo * portsPerSubscriber, p1 = Int(ports.lowerBound) + (hi + 1) * portsPerSubscriber - 1
                out.append((addr, UInt16(p0)...UInt16(p1), d))
            }
        }
        return out
    }

    /// Who holds `port` of `publicAddress`, by the policy alone; nil for a port outside every block.
    public func owner(publicAddress a: IPAddress, port: UInt16) -> Owner? {
        guard problems().isEmpty, a.family == .v4, let ai = publicIndex(a), ports.contains(port) else { return nil }
        let slot = (Int(port) - Int(ports.lowerBound)) / portsPerSubscriber
        guard slot < subscribersPerAddress else { return nil }  // the range's tail that no block fills
        let i = ai * subscribersPerAddress + slot
        guard i < subscriberCount else { return nil }
        let domain = UInt32(i / insideCount + 1)
        let inside = insideRange.network.address.advanced(by: UInt64(i % insideCount))
        return Owner(domainID: domain, inside: inside)
    }
}

/// Conntrack timers of the router, set in the namespace that does the NAT (they are per
/// namespace) and shown by `render`: UDP mappings live at least 2 minutes, also unreplied ones
/// (RFC 4787 REQ-5: the kernel's default for those is 30 s); ICMP query mappings 60 s (RFC 5508
/// REQ-9 hint); TCP established at least 2 h 4 min (RFC 5382 REQ-5; the default 5 days is kept),
/// transitory TCP states 4 min.
public enum NATTimers {
    public static let sysctls: [(key: String, value: String)] = [
        ("net.netfilter.nf_conntrack_udp_timeout", "120"),
        ("net.netfilter.nf_conntrack_udp_timeout_stream", "120"),
        ("net.netfilter.nf_conntrack_icmp_timeout", "60"),
        ("net.netfilter.nf_conntrack_tcp_timeout_established", "432000"),
        // RFC 5382 REQ-5: a partly open or partly closed connection lives at least 4 minutes
        // (the kernel's defaults are 30-120 s). TIME_WAIT holds the public port as long.
        ("net.netfilter.nf_conntrack_tcp_timeout_syn_sent", "240"),
        ("net.netfilter.nf_conntrack_tcp_timeout_syn_recv", "240"),
        ("net.netfilter.nf_conntrack_tcp_timeout_fin_wait", "240"),
        ("net.netfilter.nf_conntrack_tcp_timeout_close_wait", "240"),
        ("net.netfilter.nf_conntrack_tcp_timeout_last_ack", "240"),
        ("net.netfilter.nf_conntrack_tcp_timeout_time_wait", "240"),
    ]

    public enum Proto: String, Sendable { case udp, tcp }

    /// How long a learned mapping (endpoint-independent filtering) lives after its last outbound
    /// packet: UDP as its conntrack timer; TCP the RFC 5382 REQ-5 minimum (2 h 4 min), not the
    /// 5-day established timer, since an entry outlives a closed connection until it expires.
    public static func learnedTimeout(_ p: Proto) -> Int {
        switch p {
        case .udp: return 120
        case .tcp: return 7440
        }
    }
}
