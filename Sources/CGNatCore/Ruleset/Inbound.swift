import NetAddress

extension Ruleset {
    public static let inboundZoneMap = "public_zone"
    public static let inboundZoneICMPMap = "public_zone_icmp"
    public static let inboundZoneErrorMap = "public_zone_error"
    public static let mappingsMap = "mappings"
    public static let mappingMarksMap = "mapping_marks"

    /// The parts of the ruleset that let traffic in to a subscriber: zones at both edges,
    /// endpoint-independent filtering, hairpinning, and the router's silence towards unsolicited
    /// SYNs (DESIGN.md section 7; issue 9).
    ///
    /// Subscribers of different domains share inside addresses, so their translated flows carry
    /// the domain as a conntrack zone in both directions. A zone set for the original direction
    /// only leaves the reply tuple in zone 0: an inbound connection's reply tuple is an inside
    /// tuple, and another domain's subscriber with the same address and port matched it and left
    /// with the wrong mapping. On the uplink side the zone comes from the public port's block (the
    /// port-block policy read backwards), so replies find their flow and inbound flows are created
    /// in their subscriber's domain.
    ///
    /// Hairpinning: a packet to a public address of the pool leaves by the hairpin loop, is
    /// translated like any outbound flow (so it carries the sender's public mapping), and comes
    /// back in by the loop's other end as inbound traffic, filtered like external traffic: under
    /// address-and-port-dependent filtering it arrives when the other side has sent to the sender's
    /// mapping (a hole punch), under endpoint-independent filtering at once. Two conntrack entries,
    /// each in one domain's zone: one entry could not be, since a zone has one id for both
    /// directions and a hairpinned flow joins two domains.
    struct Inbound {
        let lab: Lab
        let devices: Devices
        let marks: String
        let policy: PortBlockPolicy?

        init(lab: Lab, devices: Devices, marks: String) {
            self.lab = lab
            self.devices = devices
            self.marks = marks
            policy = lab.portBlockPolicy
        }

        var nat: NATPolicy { lab.router.nat }
        var endpointIndependent: Bool { policy != nil && nat.filtering == .endpointIndependent }

        /// Where packets from outside enter (raw hook: real devices), as an nft set.
        var uplinkIngress: String { nftSet([devices.uplinkEgress] + (devices.hairpinIn.map { [$0] } ?? [])) }
        /// What the forward hook shows as their input device.
        var forwardInputs: String { nftSet([devices.uplinkForwardInput] + (devices.hairpinIn.map { [$0] } ?? [])) }
        /// Where translated flows leave.
        var egress: String { nftSet([devices.uplinkEgress] + (devices.hairpinOut.map { [$0] } ?? [])) }

        private func nftSet(_ names: [String]) -> String {
            var seen: [String] = []
            for n in names where !seen.contains(n) { seen.append(n) }
            return seen.count == 1 ? nftQuote(seen[0]) : "{ " + seen.map(nftQuote).joined(separator: ", ") + " }"
        }

        /// The domain of each run of public ports; ICMP query ids share the ports' blocks.
        var maps: [String] {
            guard let policy else { return [] }
            let runs = policy.domainRuns(domainIDs: lab.router.subscribers.map(\.id))
            func elements(_ f: ((publicAddress: IPAddress, ports: ClosedRange<UInt16>, domainID: UInt32)) -> String) -> String {
                runs.isEmpty ? "" : "\n\t\telements = { " + runs.map(f).joined(separator: ",\n\t\t\t") + " }"
            }
            let text = elements { "\($0.publicAddress) . \($0.ports.lowerBound)-\($0.ports.upperBound) : \($0.domainID)" }
            // ICMP errors quote the packet that caused them: its source is our public address and
            // port (offsets for inner headers without options); nft takes raw payload only as integers.
            let raw = elements { r in
                let a = r.publicAddress.bytes.reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
                return "\(a) . \(r.ports.lowerBound)-\(r.ports.upperBound) : \(r.domainID)"
            }
            var out = ["""
                \t# The domain (conntrack zone) of a public port, from the port-block policy: replies and
                \t# inbound flows are tracked in their subscriber's domain, as its outbound flows are.
                \tmap \(Ruleset.inboundZoneMap) {
                \t\ttypeof ip daddr . th dport : ct zone
                \t\tflags interval\(text)
                \t}
                \tmap \(Ruleset.inboundZoneICMPMap) {
                \t\ttypeof ip daddr . icmp id : ct zone
                \t\tflags interval\(text)
                \t}
                \tmap \(Ruleset.inboundZoneErrorMap) {
                \t\ttypeof @th,160,32 . @th,224,16 : ct zone
                \t\tflags interval\(raw)
                \t}
                """]
            if endpointIndependent {
                out.append("""
                    \t# Endpoint-independent filtering: each live mapping (protocol . public address . port)
                    \t# to its inside address and port, learned in the packet path after SNAT.
                    \tmap \(Ruleset.mappingsMap) {
                    \t\ttypeof meta l4proto . ip daddr . th dport : ip daddr . th dport
                    \t\tsize 262144
                    \t\tflags dynamic,timeout
                    \t\ttimeout \(NATTimers.learnedTimeout(.udp))s
                    \t}
                    \t# ... and to its domain's mark. A lookup of this map also says whether the mapping
                    \t# exists: Linux 6.1 refuses a map used as a plain set (EINVAL).
                    \tmap \(Ruleset.mappingMarksMap) {
                    \t\ttypeof meta l4proto . ip daddr . th dport : meta mark
                    \t\tsize 262144
                    \t\tflags dynamic,timeout
                    \t\ttimeout \(NATTimers.learnedTimeout(.udp))s
                    \t}
                    """)
            }
            return out
        }

        /// Conntrack zones: the domain, for both directions of translated TCP, UDP and ICMP (the
        /// uplink side sets the same zone from the public port); for routed traffic and for
        /// address-only protocols (whose replies name no port) the original direction only.
        func zoneRules(ingressMap: String) -> String {
            let comment = nftQuote(Comment.zones)
            guard policy != nil else {
                return """
                    \t\t# Subscribers share \(nat.inside): keep their flows apart with conntrack zones, set for
                    \t\t# the ORIGINAL direction only, so replies arriving upstream (zone 0) still find them.
                    \t\tct original zone set iifname map { \(ingressMap) } comment \(comment)
                    """
            }
            let up = uplinkIngress
            // The first zone set on a packet holds: the both-direction rule comes first.
            return """
                \t\t# Subscribers share \(nat.inside): their translated flows carry the domain as a conntrack
                \t\t# zone in both directions; the uplink side sets it from the public port's block.
                \t\tip saddr \(nat.inside) meta l4proto { tcp, udp, icmp } ct zone set iifname map { \(ingressMap) } comment \(comment)
                \t\tct original zone set iifname map { \(ingressMap) } comment \(comment)
                \t\tiifname \(up) meta l4proto { tcp, udp } ct zone set ip daddr . th dport map @\(Ruleset.inboundZoneMap) comment \(nftQuote(Comment.inboundZone))
                \t\tiifname \(up) icmp type echo-reply ct zone set ip daddr . icmp id map @\(Ruleset.inboundZoneICMPMap) comment \(nftQuote(Comment.inboundZone))
                \t\tiifname \(up) icmp type { destination-unreachable, time-exceeded, parameter-problem } ct zone set @th,160,32 . @th,224,16 map @\(Ruleset.inboundZoneErrorMap) comment \(nftQuote(Comment.inboundZone))
                """
        }

        /// Endpoint-independent filtering: a new flow from outside to a live mapping is sent to
        /// its inside address and port, marked with the mapping's domain (so the fwmark rules route
        /// it there). The mark, not `ct status dnat`, says it was let in: a DNAT that changes
        /// nothing (the seed's public address is also an inside address) sets no status.
        var dstnat: [String] {
            guard endpointIndependent else { return [] }
            let key = "meta l4proto . ip daddr . th dport"
            return ["iifname \(uplinkIngress) meta l4proto { tcp, udp } meta mark set \(key) map @\(Ruleset.mappingMarksMap) ct mark set meta mark dnat ip to \(key) map @\(Ruleset.mappingsMap) comment \(nftQuote(Comment.endpointIndependent))"]
        }

        var forwardAccept: [String] {
            guard endpointIndependent else { return [] }
            return ["iifname \(forwardInputs) ct state new ct mark { \(marks) } counter accept comment \(nftQuote(Comment.endpointIndependent))"]
        }

        /// Learning, after SNAT: every outbound packet of a translated flow refreshes its mapping
        /// (RFC 4787 REQ-6: outbound refresh). An entry keeps the inside port it was created with
        /// until it expires (nft updates refresh the timeout, not the data).
        var learnChain: [String] {
            guard endpointIndependent else { return [] }
            let match = "oifname \(egress) ct direction original ct mark { \(marks) } ct original ip saddr \(nat.inside)"
            let rules = [NATTimers.Proto.udp, .tcp].map { p in
                let key = "meta l4proto . ct reply ip daddr . ct reply proto-dst timeout \(NATTimers.learnedTimeout(p))s"
                return "\t\t\(match) meta l4proto \(p.rawValue) update @\(Ruleset.mappingsMap) { \(key) : ct original ip saddr . ct original proto-src } update @\(Ruleset.mappingMarksMap) { \(key) : ct mark } comment \(nftQuote(Comment.learn))"
            }
            return ["\tchain learn {\n\t\ttype filter hook postrouting priority srcnat + 1; policy accept;\n" + rules.joined(separator: "\n") + "\n\t}"]
        }

        /// A public address that is the router's own would answer an unsolicited SYN with a RST
        /// within milliseconds; RFC 5382 REQ-4 wants no answer for at least 6 s. New UDP delivered
        /// there is counted (and answered port unreachable by the router's UDP stack).
        var inputChain: [String] {
            let pool = nat.pool.map(\.description).joined(separator: ", ")
            let inputs = nftSet([devices.uplinkForwardInput, devices.uplinkEgress])
            return ["""
                \tchain input {
                \t\ttype filter hook input priority filter; policy accept;
                \t\tiifname \(inputs) ip daddr { \(pool) } tcp flags & (fin | syn | rst | ack) == syn ct state new counter drop comment \(nftQuote(Comment.unsolicitedSYN))
                \t\t# Counts only: `check`'s evidence that inbound UDP to a public address of the router's
                \t\t# own, which nothing translated, ended here and was not forwarded to a subscriber.
                \t\tiifname \(inputs) ip daddr { \(pool) } meta l4proto udp ct state new counter comment \(nftQuote(Comment.localUDP))
                \t}
                """]
        }
    }
}
