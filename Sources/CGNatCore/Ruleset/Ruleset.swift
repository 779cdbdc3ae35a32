import NetAddress

/// The nftables ruleset of the router, generated from the lab. Loaded in one transaction
/// (`nft -f` semantics) into the namespace that does the NAT.
public struct Ruleset: Equatable, Sendable {
    public static let tableName = "cgnat"
    /// The chain whose rules stop what must not pass.
    public static let forwardChain = "forward"

    /// Every rule carries a comment of its own: `check` finds a rule's handle in the kernel by it
    /// (`nft -a -j list table`), so a row can name the rule that stops it.
    public enum Comment {
        public static let zones = "conntrack zone of the subscriber domain"
        public static let ctMark = "domain mark on new connections"
        public static let packetMark = "packet mark from the connection"
        public static let established = "replies and related"
        public static let unsolicited = "unsolicited IPv4 from the uplink"
        public static let sessionLimit = "session limit per subscriber"
        public static let noPortBlock = "CGN no port block"
        public static let inboundZone = "domain of a public port, from its block"
        public static let endpointIndependent = "endpoint-independent filtering: inbound to a live mapping"
        public static let learn = "learn the mapping for endpoint-independent filtering"
        public static let unsolicitedSYN = "unsolicited SYN to a public address (RFC 5382 REQ-4)"
        public static let localUDP = "new UDP to a public address, delivered to the router itself"
        /// One per domain and family: a source the domain does not own (BCP 38).
        public static func spoofed(_ family: IPFamily, from domain: String) -> String {
            "spoofed \(family == .v4 ? "IPv4" : "IPv6") source from \(domain)"
        }
        /// One rule on the netns backend (`from` nil); one per ingress VRF on the VRF backend.
        public static func interDomain(from vrf: String?) -> String {
            "IPv4 between subscriber domains" + (vrf.map { ", from \($0)" } ?? "")
        }
    }

    /// Devices as the router's netfilter hooks see them on this backend.
    public struct Devices: Equatable, Sendable {
        /// Subscriber ingress device of each domain, by domain name: zones and marks key on it.
        public var subscriberIngress: [(domain: SubscriberDomain, device: String)]
        /// Device that unsolicited uplink traffic shows as input in the forward hook.
        public var uplinkForwardInput: String
        /// Real egress device where SNAT must match (never a VRF device: DESIGN.md section 2).
        public var uplinkEgress: String
        /// How the forward hook tells IPv4 between subscriber domains.
        public var interDomain: InterDomain
        /// The hairpin loop's ends (`Conventions.hairpinOut`/`hairpinIn`), when the lab hairpins.
        public var hairpinOut: String?
        public var hairpinIn: String?

        public init(subscriberIngress: [(domain: SubscriberDomain, device: String)], uplinkForwardInput: String, uplinkEgress: String,
                    interDomain: InterDomain, hairpinOut: String? = nil, hairpinIn: String? = nil) {
            self.subscriberIngress = subscriberIngress
            self.uplinkForwardInput = uplinkForwardInput
            self.uplinkEgress = uplinkEgress
            self.interDomain = interDomain
            self.hairpinOut = hairpinOut
            self.hairpinIn = hairpinIn
        }

        public static func == (a: Devices, b: Devices) -> Bool {
            a.uplinkForwardInput == b.uplinkForwardInput && a.uplinkEgress == b.uplinkEgress && a.interDomain == b.interDomain
                && a.hairpinOut == b.hairpinOut && a.hairpinIn == b.hairpinIn
                && a.subscriberIngress.map(\.device) == b.subscriberIngress.map(\.device)
                && a.subscriberIngress.map(\.domain) == b.subscriberIngress.map(\.domain)
        }
    }

    public enum InterDomain: Equatable, Sendable {
        /// netns: domains reach the router over their own links, in and out.
        case links([String])
        /// VRF: the forward hook sees the ingress VRF and the leak target (`up`), not the final
        /// domain, so the rule names each domain's VRF and the other domains' routed addresses.
        case vrfs([(vrf: String, foreign: [IPPrefix])])

        public static func == (a: InterDomain, b: InterDomain) -> Bool {
            switch (a, b) {
            case (.links(let x), .links(let y)): return x == y
            case (.vrfs(let x), .vrfs(let y)): return x.map(\.vrf) == y.map(\.vrf) && x.map(\.foreign) == y.map(\.foreign)
            default: return false
            }
        }
    }

    public var text: String
    /// Maps declared in `text` whose elements are not in it: the plan loads them by netlink
    /// (NFT_MSG_NEWSETELEM) right after the text (see `inlineElementLimit`).
    public var elementsByNetlink: [NftMap]

    public init(lab: Lab, devices: Devices) {
        let nat = lab.router.nat
        let ingressMap = devices.subscriberIngress.map { "\(nftQuote($0.device)) : \($0.domain.id)" }.joined(separator: ", ")
        let interDomain: [String]
        func reject(_ vrf: String?) -> String {
            "counter reject with icmp type admin-prohibited comment \(nftQuote(Comment.interDomain(from: vrf)))"
        }
        switch devices.interDomain {
        case .links(let links):
            let set = links.map(nftQuote).joined(separator: ", ")
            interDomain = ["iifname { \(set) } oifname { \(set) } meta nfproto ipv4 \(reject(nil))"]
        case .vrfs(let list):
            interDomain = list.filter { !$0.foreign.filter { $0.family == .v4 }.isEmpty }.map { entry in
                let dst = entry.foreign.filter { $0.family == .v4 }.map(\.description).joined(separator: ", ")
                return "iifname \(nftQuote(entry.vrf)) ip daddr { \(dst) } \(reject(entry.vrf))"
            }
        }
        let marks = devices.subscriberIngress.map { String($0.domain.id) }.joined(separator: ", ")
        let inbound = Inbound(lab: lab, devices: devices, marks: marks)
        let routedV4 = lab.router.subscribers.flatMap(\.routed).filter { $0.family == .v4 }.map(\.description)
        let uplinkSide = inbound.forwardInputs
        let unsolicited = routedV4.isEmpty
            ? "iifname \(uplinkSide) meta nfproto ipv4 counter drop"
            : "iifname \(uplinkSide) ip daddr != { \(routedV4.joined(separator: ", ")) } counter drop"
        // RFC 6888 REQ-4: a subscriber (domain mark . inside address) opens at most this many
        // IPv4 sessions at once; conntrack counts them (nf_conncount), the extra ones are dropped.
        var sessionRules = ""
        var sessionSet = ""
        if let limit = nat.sessionLimit {
            sessionSet = "\tset subscriber_sessions {\n\t\ttype mark . ipv4_addr\n\t\tsize 1048576\n\t\tflags dynamic\n\t}"
            sessionRules = "\n\t\tct state new ct mark { \(marks) } ip saddr \(nat.inside) add @subscriber_sessions { ct mark . ip saddr ct count over \(limit) } counter drop comment \(nftQuote(Comment.sessionLimit))"
        }
        // BCP 38: a domain sends only from what it owns (the shared inside space, its own subnets,
        // its routed prefixes; for IPv6 also link-local and the unspecified address of DAD).
        // Dropped before conntrack, so a spoofed flood never fills the table, and never leaves
        // untranslated with someone else's address.
        var antiSpoof: [String] = []
        for (d, device) in devices.subscriberIngress {
            func owned(_ f: IPFamily) -> [String] {
                var out: [String] = f == .v4 ? [nat.inside.network.description] : ["fe80::/10", "::/128"]
                for p in d.addresses.map(\.network) + d.routed where p.family == f && !out.contains(p.description) { out.append(p.description) }
                return out
            }
            antiSpoof.append("iifname \(nftQuote(device)) ip saddr != { \(owned(.v4).joined(separator: ", ")) } counter drop comment \(nftQuote(Comment.spoofed(.v4, from: d.name)))")
            antiSpoof.append("iifname \(nftQuote(device)) ip6 saddr != { \(owned(.v6).joined(separator: ", ")) } counter drop comment \(nftQuote(Comment.spoofed(.v6, from: d.name)))")
        }
        var lines: [String] = []
        lines.append("# cgnat ruleset for lab \(lab.name): IPv4 from subscriber domains is translated once, on \(devices.uplinkEgress).")
        lines.append("table inet \(Ruleset.tableName) {")
        if !sessionSet.isEmpty { lines.append(sessionSet) }
        lines.append(contentsOf: inbound.maps)
        lines.append("""
            \tchain pre_raw {
            \t\ttype filter hook prerouting priority raw; policy accept;
            """ + antiSpoof.map { "\n\t\t" + $0 }.joined() + "\n" + inbound.zoneRules(ingressMap: ingressMap) + "\n\t}")
        lines.append("""
            \tchain pre_mangle {
            \t\ttype filter hook prerouting priority mangle; policy accept;
            \t\t# De-NATed replies all go to the public addresses: the connection's mark says which
            \t\t# domain they belong to, and an fwmark rule picks that domain's return table.
            \t\tct state new ct mark set iifname map { \(ingressMap) } comment \(nftQuote(Comment.ctMark))
            \t\tmeta mark set ct mark comment \(nftQuote(Comment.packetMark))
            \t}
            """)
        lines.append(contentsOf: inbound.inputChain)
        lines.append("""
            \tchain forward {
            \t\ttype filter hook forward priority filter; policy accept;
            \t\tct state established,related accept comment \(nftQuote(Comment.established))
            """ + inbound.forwardAccept.map { "\n\t\t" + $0 }.joined() + "\n" + """
            \t\t# Nothing opens IPv4 connections into the subscriber space except to routed addresses.
            \t\t\(unsolicited) comment \(nftQuote(Comment.unsolicited))
            \t\t# Subscriber domains share addresses with each other and with the NAT address: IPv4
            \t\t# between them would be answered to the wrong host, so it is refused.
            """ + interDomain.map { "\n\t\t" + $0 }.joined() + sessionRules + "\n\t}")
        lines.append("""
            \t# A nat chain per family that uses zones must exist, or clashing reply tuples are dropped.
            \tchain dstnat {
            \t\ttype nat hook prerouting priority dstnat; policy accept;
            """ + inbound.dstnat.map { "\n\t\t" + $0 }.joined() + "\n\t}")
        let srcnat = Ruleset.srcnat(lab: lab, egress: inbound.egress, marks: marks)
        lines.append(contentsOf: srcnat.lines)
        lines.append(contentsOf: inbound.learnChain)
        lines.append("}")
        text = lines.joined(separator: "\n") + "\n"
        elementsByNetlink = srcnat.byNetlink
    }

    /// The ruleset as `nft -f` input with every element in it: `text`, then `add element`
    /// commands for the maps that `up` loads by netlink (what `render --ruleset` prints).
    public var fullText: String {
        text + elementsByNetlink.map { $0.addElementCommands(table: Ruleset.tableName) }.joined()
    }
}

extension Ruleset {
    public static let portMap = "subscriber_ports"
    public static let addressMap = "subscriber_addresses"

    /// SNAT on the real egress device (on VRFs the first POSTROUTING pass sees the VRF device).
    /// With port blocks: one named map from (domain mark, inside address) to (public address,
    /// block) for TCP, UDP and ICMP ids (nft wants an L4 match before a port range), an
    /// address-only map for other protocols (GRE, ESP), and a drop for an inside address that no
    /// block covers, so nothing leaves untranslated.
    /// Above this many elements in all, the maps are declared empty in the text and loaded by
    /// netlink: measured (`cgnat-bench maps`), nft -f spends most of its time parsing elements, the
    /// netlink batch does not parse. Below it the elements stay in the text, so `up` loads the
    /// ruleset in one transaction. Above it the NAT fails closed between the two transactions: a
    /// lookup in an empty map matches nothing, so "CGN no port block" drops. Measured with
    /// `cgnat-bench maps` (2 maps of n elements, this 2-core machine, busy): 1k 21 ms as text
    /// against 6 ms by netlink, 10k 237 against 61, 131k 4.0 s against 0.98 s; 4096 keeps the
    /// seed and labs up to a few thousand subscribers in one transaction at a cost of tens of ms.

    public static let inlineElementLimit = 4096

    static func srcnat(lab: Lab, egress: String, marks: String) -> (lines: [String], byNetlink: [NftMap]) {
        let nat = lab.router.nat
        let head = "\tchain srcnat {\n\t\ttype nat hook postrouting priority srcnat; policy accept;"
        let match = "oifname \(egress) ct mark { \(marks) } ip saddr \(nat.inside)"
        guard let policy = lab.portBlockPolicy else {
            let end = nat.pool.last!
            let first = nat.publicAddress, last = end.network.address.advanced(by: UInt64((1 << (32 - end.length)) - 1))
            let to = nat.pool.count == 1 && nat.pool[0].length == 32 ? "\(first)" : "\(first)-\(last)"
            return (["""
                \(head)
                \t\t# mapping: random. A new public port per destination: address-and-port-dependent
                \t\t# mapping (breaks RFC 4787 REQ-1); kept to show the difference.
                \t\t\(match) counter snat ip to \(to) fully-random comment "CGN"
                \t}
                """], [])
        }
        var maps = portBlockMaps(lab: lab, policy: policy)
        let inline = maps.reduce(0) { $0 + $1.elements.count } <= inlineElementLimit
        if !inline { for i in maps.indices { maps[i].size = maps[i].elements.count } }
        return (["""
            \t# Deterministic port blocks (RFC 7422): \(policy.portsPerSubscriber) ports of one public address per
            \t# subscriber (domain mark . inside address), \(policy.subscribersPerAddress) subscribers per address, ports
            \t# \(policy.ports.lowerBound)-\(policy.ports.upperBound). Disjoint blocks keep a subscriber's mapping for every
            \t# destination (endpoint-independent, RFC 4787 REQ-1) also when two subscribers share an
            \t# inside address and port, and no flow of one can take another's port.
            \(maps.map { $0.declaration(withElements: inline) }.joined(separator: "\n"))
            \(head)
            \t\t\(match) meta l4proto { tcp, udp } counter snat ip to ct mark . ip saddr map @\(portMap) comment "CGN ports"
            \t\t\(match) meta l4proto icmp counter snat ip to ct mark . ip saddr map @\(portMap) comment "CGN icmp ids"
            \t\t\(match) meta l4proto != { tcp, udp, icmp } counter snat ip to ct mark . ip saddr map @\(addressMap) comment "CGN address only"
            \t\t# Reached only by an inside address that no block covers: never leave untranslated.
            \t\t\(match) counter drop comment \(nftQuote(Comment.noPortBlock))
            \t}
            """], inline ? [] : maps)
    }

    /// `subscriber_ports` (domain mark . inside address to public address . port block) and
    /// `subscriber_addresses` (the same to the public address alone): one element per domain and
    /// inside address of the policy's range.
    static func portBlockMaps(lab: Lab, policy: PortBlockPolicy) -> [NftMap] {
        var ports = NftMap(name: portMap, key: .init([.mark, .ipv4Address]),
                           data: .init([.ipv4Address, .inetService], interval: true))
        var addresses = NftMap(name: addressMap, key: .init([.mark, .ipv4Address]), data: .init([.ipv4Address]))
        let domains = lab.router.subscribers.sorted(by: { $0.id < $1.id })
        ports.elements.reserveCapacity(domains.count * policy.insideCount)
        addresses.elements.reserveCapacity(domains.count * policy.insideCount)
        for d in domains {
            for i in 0..<policy.insideCount {
                let inside = policy.insideRange.network.address.advanced(by: UInt64(i))
                guard let a = policy.allocation(domainID: d.id, inside: inside) else { continue }
                let key: [NftMap.Value] = [.mark(d.id), .ipv4(inside)]
                ports.elements.append(.init(key: key, data: [.ipv4(a.publicAddress), .range(.service(a.ports.lowerBound), .service(a.ports.upperBound))]))
                addresses.elements.append(.init(key: key, data: [.ipv4(a.publicAddress)]))
            }
        }
        return [ports, addresses]
    }

}

func nftQuote(_ s: String) -> String { "\"\(s)\"" }
