import NetAddress

public enum ConformanceVerdict: String, Sendable {
    case pass = "PASS"
    case fail = "FAIL"
    case notApplicable = "N/A"
    /// No probe exercises it yet: neither a pass nor a fail; the evidence says what is missing.
    case untested = "UNTESTED"
}

public struct ConformanceRow: Sendable {
    public var requirement: ConformanceRequirement
    public var verdict: ConformanceVerdict
    public var evidence: String
}

public struct ConformanceReport: Sendable {
    public var rows: [ConformanceRow]
    public var mustFailures: [ConformanceRow] { rows.filter { $0.requirement.level == .must && $0.verdict == .fail } }
    public var passed: Bool { mustFailures.isEmpty }
    public func count(_ v: ConformanceVerdict) -> Int { rows.filter { $0.verdict == v }.count }
}

/// The kernel settings the rows read, without the `net.netfilter.` prefix.
public enum ConformanceSettings {
    public static let udpTimeout = "nf_conntrack_udp_timeout"
    public static let udpStreamTimeout = "nf_conntrack_udp_timeout_stream"
    public static let tcpEstablished = "nf_conntrack_tcp_timeout_established"
    public static let icmpTimeout = "nf_conntrack_icmp_timeout"
    public static let checksum = "nf_conntrack_checksum"
    /// The states RFC 5382 calls transitory: partly open or partly closed.
    public static let tcpTransitory = ["nf_conntrack_tcp_timeout_syn_sent", "nf_conntrack_tcp_timeout_syn_recv",
                                       "nf_conntrack_tcp_timeout_fin_wait", "nf_conntrack_tcp_timeout_close_wait",
                                       "nf_conntrack_tcp_timeout_last_ack", "nf_conntrack_tcp_timeout_time_wait"]
    public static var all: [String] { [udpTimeout, udpStreamTimeout, tcpEstablished, icmpTimeout, checksum] + tcpTransitory }
}

/// Verdicts from evidence: pure, so every branch is unit-tested without root.
public enum Conformance {
    public static func evaluate(lab: Lab, evidence e: ConformanceEvidence) -> ConformanceReport {
        var rows: [ConformanceRow] = []
        for r in ConformanceCatalog.requirements where r.rfc != 6888 || r.number != "REQ-1" {
            let (v, text) = verdict(r, lab: lab, e)
            rows.append(ConformanceRow(requirement: r, verdict: v, evidence: text))
        }
        // RFC 6888 REQ-1 is about the three behavioural RFCs' MUSTs, so it comes from their rows.
        let req1 = ConformanceCatalog.requirement("6888 REQ-1")!
        let failing = rows.filter { $0.requirement.rfc != 6888 && $0.requirement.level == .must && $0.verdict == .fail }
        let untested = rows.filter { $0.requirement.rfc != 6888 && $0.requirement.level == .must && $0.verdict == .untested }
        let (v1, t1): (ConformanceVerdict, String)
        if !failing.isEmpty {
            (v1, t1) = (.fail, "MUSTs failing: " + failing.map(\.requirement.key).joined(separator: ", "))
        } else if !untested.isEmpty {
            (v1, t1) = (.untested, "no MUST fails; untested: " + untested.map(\.requirement.key).joined(separator: ", "))
        } else {
            (v1, t1) = (.pass, "every MUST of RFC 4787, 5382 and 5508 passes")
        }
        let at = rows.firstIndex { $0.requirement.rfc == 6888 } ?? rows.count
        rows.insert(ConformanceRow(requirement: req1, verdict: v1, evidence: t1), at: at)
        return ConformanceReport(rows: rows)
    }

    typealias Outcome = (ConformanceVerdict, String)

    static func missing(_ e: ConformanceEvidence, _ probe: String) -> Outcome {
        (.fail, "not measured: " + (e.problems[probe] ?? "the \(probe) probe gave nothing"))
    }

    /// EIM over every observation given; the collision case included.
    static func mapping(_ obs: [MappingObservation], _ e: ConformanceEvidence, probe: String) -> Outcome {
        guard !obs.isEmpty else { return missing(e, probe) }
        if let bad = obs.first(where: { !$0.complete || $0.flows.count < 2 }) {
            return (.fail, "not measured: a flow did not arrive: \(bad.text)" + (e.problems[probe].map { " (\($0))" } ?? ""))
        }
        let broken = obs.filter { $0.behaviour != .endpointIndependent }
        if broken.isEmpty {
            return (.pass, "endpoint-independent for " + obs.map { "\($0.subscriber) (\($0.inside) -> \($0.mappedEndpoints.first!))" }.joined(separator: ", ")
                    + " towards " + destinations(obs[0]))
        }
        return (.fail, broken.map { "\($0.behaviour!.rawValue): \($0.text)" }.joined(separator: "; "))
    }

    static func destinations(_ o: MappingObservation) -> String {
        let addresses = Set(o.flows.map(\.destination.address)).count
        let ports = Set(o.flows.map(\.destination.port)).count
        return ports > 1 ? "\(o.flows.count) destinations (\(addresses) addresses x \(ports) ports)" : "\(addresses) addresses"
    }

    static func timer(_ e: ConformanceEvidence, _ names: [String], atLeast minimum: Int) -> Outcome {
        var parts: [String] = []
        var ok = true
        for n in names {
            guard let v = e.settings[n] else { return (.fail, "not read: net.netfilter.\(n)") }
            parts.append("\(n)=\(v)")
            if v < minimum { ok = false }
        }
        return (ok ? .pass : .fail, parts.joined(separator: ", ") + (ok ? " (>= \(minimum) s)" : " (below \(minimum) s)"))
    }

    static func verdict(_ r: ConformanceRequirement, lab: Lab, _ e: ConformanceEvidence) -> Outcome {
        let nat = lab.router.nat
        let blocks = lab.portBlockPolicy
        let allUDP = e.udpMappings + e.udpCollision
        switch r.key {
        // MARK: RFC 4787
        case "4787 REQ-1":
            return mapping(allUDP, e, probe: "udp mapping")
        case "4787 REQ-2":
            return pooling(lab, e)
        case "4787 REQ-3":
            return overloading(e.udpCollision, e, probe: "udp collision")
        case "4787 REQ-3a":
            guard let o = e.lowPortMapping, let m = o.flows.first?.mapped else { return missing(e, "low port") }
            let ok = m.port < 1024
            return (ok ? .pass : .fail, "inside port \(o.inside.port) left as \(m)" + (ok ? "" : ": outside 0-1023"))
        case "4787 REQ-4":
            let pairs = allUDP.compactMap { o in o.flows.first?.mapped.map { (o.inside.port, $0.port) } }
            guard !pairs.isEmpty else { return missing(e, "udp mapping") }
            let kept = pairs.filter { $0.0 % 2 == $0.1 % 2 }
            let text = pairs.map { "\($0.0)->\($0.1)" }.joined(separator: ", ")
            return (kept.count == pairs.count ? .pass : .fail, "parity kept for \(kept.count) of \(pairs.count) mappings: \(text)")
        case "4787 REQ-5":
            return timer(e, [ConformanceSettings.udpTimeout, ConformanceSettings.udpStreamTimeout], atLeast: 120)
        case "4787 REQ-5a":
            return (.notApplicable, "the lab has no per-application UDP timers (one conntrack timer pair for every port)")
        case "4787 REQ-5b":
            guard let v = e.settings[ConformanceSettings.udpTimeout] else { return (.fail, "not read: \(ConformanceSettings.udpTimeout)") }
            return (.pass, "net.netfilter.\(ConformanceSettings.udpTimeout) (now \(v)) and _stream are sysctls of the router's namespace")
        case "4787 REQ-5c":
            return timer(e, [ConformanceSettings.udpTimeout, ConformanceSettings.udpStreamTimeout], atLeast: 300)
        case "4787 REQ-6":
            return refresh(e.outboundRefresh, e, probe: "refresh")
        case "4787 REQ-6a":
            let (v, t) = refresh(e.inboundRefresh, e, probe: "refresh")
            // A MAY: either answer conforms once measured; the row says which one the NAT gives.
            return e.inboundRefresh?.refreshed != nil ? (.pass, t + " (a permission: either conforms)") : (v, t)
        case "4787 REQ-7":
            return (.notApplicable, "the uplink's addresses are static (the lab file), never configured dynamically")
        case "4787 REQ-8":
            guard let f = e.udpFiltering else { return missing(e, "udp filtering") }
            guard let b = f.behaviour else { return (.fail, "not measured: the control packet did not arrive: \(f.text)") }
            return (b == .addressAndPortDependent ? .fail : .pass, "\(b.rawValue): \(f.text)")
        case "4787 REQ-8a", "5382 REQ-3a":
            // `filtering` in the lab's nat policy; endpoint-independent needs port blocks.
            guard lab.portBlockPolicy != nil else {
                return (.notApplicable, "with mapping random filtering is address-and-port dependent only (endpoint-independent needs port blocks)")
            }
            return (.pass, "an option of the NAT policy (filtering: address-port-dependent | endpoint-independent); this lab: \(lab.router.nat.filtering.rawValue)")
        case "4787 REQ-9":
            return hairpin(e.udpHairpin, e, probe: "udp hairpin", source: false)
        case "4787 REQ-9a":
            return hairpin(e.udpHairpin, e, probe: "udp hairpin", source: true)
        case "4787 REQ-10", "5382 REQ-6":
            guard let h = e.helperRules else { return missing(e, "ruleset") }
            return h.isEmpty ? (.pass, "no conntrack helper (ALG) in the router's live ruleset; automatic helper assignment is gone from the kernel")
                             : (.fail, "helpers attached: " + h.joined(separator: "; "))
        case "4787 REQ-10a":
            guard let h = e.helperRules else { return missing(e, "ruleset") }
            return h.isEmpty ? (.notApplicable, "the NAT has no ALGs") : (.pass, "each helper is its own nftables rule")
        case "4787 REQ-11":
            let kinds = allUDP.compactMap(\.behaviour)
            guard !kinds.isEmpty else { return missing(e, "udp mapping") }
            let distinct = Set(kinds.map(\.rawValue))
            if distinct.count == 1 {
                return (.pass, "the same mapping behaviour (\(distinct.first!)) for all \(kinds.count) inside endpoints, the collision case included")
            }
            return (.fail, "mapping behaviour changes with the case: " + allUDP.map { "\($0.subscriber) \($0.inside): \($0.behaviour?.rawValue ?? "incomplete")" }.joined(separator: ", "))
        case "4787 REQ-12":
            guard let m = e.mappingAfterError else { return missing(e, "icmp error") }
            guard let b = m.before else { return (.fail, "not measured: \(m.flow): the first datagram was not seen at the uplink") }
            guard let a = m.after else { return (.fail, "\(m.flow): after the ICMP error, the next datagram was not seen at the uplink (left as \(b) before)") }
            return (a == b ? .pass : .fail, "\(m.flow): left as \(b) before the ICMP error and as \(a) after it")
        case "4787 REQ-12a":
            guard let rules = e.relatedRules else { return missing(e, "ruleset") }
            guard let rule = rules.first else { return (.fail, "the router's live ruleset has no rule accepting `ct state related`") }
            let byAddress = rule.contains("saddr")
            return (byAddress ? .fail : .pass, "related ICMP errors are accepted " + (byAddress ? "only by source address" : "whatever their source") + ": \(rule)")
        case "4787 REQ-12b":
            return icmpError(e.udpErrorInbound, e, probe: "icmp error", type: 3)
        case "4787 REQ-13":
            guard let o = e.fragmentationNeeded else { return missing(e, "fragments") }
            guard let got = o.received else { return (.fail, "\(o.flow): no ICMP error came back") }
            return (o.type == 3 && o.code == 4 ? .pass : .fail, "\(o.flow): \(got)")
        case "4787 REQ-13a":
            guard let o = e.fragmentedOnTheWay else { return missing(e, "fragments") }
            return (o.arrivedWhole ? .pass : .fail, o.text + (o.arrivedWhole ? " (the order of the fragments on the wire is not observed)" : ""))
        case "4787 REQ-14":
            guard let i = e.fragmentsInOrder, let o = e.fragmentsOutOfOrder else { return missing(e, "fragments") }
            return (i.arrivedWhole && o.arrivedWhole ? .pass : .fail, i.text + "; " + o.text)
        case "4787 REQ-14a":
            return (.untested, "no probe floods the router with fragments (its reassembly limits are net.ipv4.ipfrag_* and nf_conntrack_frag6_*)")

        // MARK: RFC 5382
        case "5382 REQ-1":
            return mapping(e.tcpMappings + e.tcpCollision, e, probe: "tcp mapping")
        case "5382 REQ-2":
            guard !e.tcpMappings.isEmpty else { return missing(e, "tcp mapping") }
            let n = e.tcpMappings.reduce(0) { $0 + $1.flows.filter { $0.mapped != nil }.count }
            let all = e.tcpMappings.reduce(0) { $0 + $1.flows.count }
            return (n == all ? .pass : .fail, "\(n) of \(all) outbound three-way handshakes completed through the NAT; inbound connections are not permitted by the policy")
        case "5382 REQ-2a":
            return (.untested, "no probe opens a TCP connection simultaneously from both sides")
        case "5382 REQ-3":
            guard let f = e.tcpFiltering else { return missing(e, "tcp filtering") }
            guard let b = f.behaviour else { return (.fail, "not measured: the control connection did not complete: \(f.text)") }
            return (b == .addressAndPortDependent ? .fail : .pass, "\(b.rawValue): \(f.text)")
        case "5382 REQ-3b":
            return (.notApplicable, "one filtering option applies to TCP and UDP alike; the RFC allows but does not ask for them to differ")
        case "5382 REQ-4":
            return unsolicitedSYN(e, strictSilence: false)
        case "5382 REQ-4a":
            return unsolicitedSYN(e, strictSilence: true)
        case "5382 REQ-5":
            let (v1, t1) = timer(e, [ConformanceSettings.tcpEstablished], atLeast: 7440)
            let (v2, t2) = timer(e, ConformanceSettings.tcpTransitory, atLeast: 240)
            return (v1 == .pass && v2 == .pass ? .pass : .fail, "established: \(t1); transitory: \(t2)")
        case "5382 REQ-5a":
            guard let v = e.settings[ConformanceSettings.tcpEstablished] else { return (.fail, "not read: \(ConformanceSettings.tcpEstablished)") }
            return (.pass, "net.netfilter.nf_conntrack_tcp_timeout_* (established now \(v)) are sysctls of the router's namespace")
        case "5382 REQ-7":
            return overloading(e.tcpCollision, e, probe: "tcp collision")
        case "5382 REQ-8":
            return hairpin(e.tcpHairpin, e, probe: "tcp hairpin", source: false)
        case "5382 REQ-8a":
            return hairpin(e.tcpHairpin, e, probe: "tcp hairpin", source: true)
        case "5382 REQ-9":
            return icmpError(e.tcpErrorInbound, e, probe: "tcp icmp error", type: 3)
        case "5382 REQ-10":
            guard let o = e.tcpAfterError else { return missing(e, "tcp after icmp error") }
            guard o.errorArrived else { return (.fail, "not measured: \(o.flow): the ICMP error did not reach the inside host") }
            let ok = o.dataOutbound && o.dataInbound
            func w(_ b: Bool) -> String { b ? "passed" : "did NOT pass" }
            return (ok ? .pass : .fail, "\(o.flow): the error reached the inside host; then data outbound \(w(o.dataOutbound)), inbound \(w(o.dataInbound))")

        // MARK: RFC 5508
        case "5508 REQ-1":
            guard !e.icmpMappings.isEmpty else { return missing(e, "icmp mapping") }
            let n = e.icmpMappings.reduce(0) { $0 + $1.flows.filter { $0.mapped != nil }.count }
            let all = e.icmpMappings.reduce(0) { $0 + $1.flows.count }
            return (n == all ? .pass : .fail, "\(n) of \(all) echo requests arrived at the uplink through the NAT and were answered")
        case "5508 REQ-1a":
            return mapping(e.icmpMappings, e, probe: "icmp mapping")
        case "5508 REQ-2":
            return timer(e, [ConformanceSettings.icmpTimeout], atLeast: 60)
        case "5508 REQ-2a":
            guard let v = e.settings[ConformanceSettings.icmpTimeout] else { return (.fail, "not read: \(ConformanceSettings.icmpTimeout)") }
            return (.pass, "net.netfilter.\(ConformanceSettings.icmpTimeout) (now \(v)) is a sysctl of the router's namespace")
        case "5508 REQ-3":
            guard let v = e.settings[ConformanceSettings.checksum] else { return (.fail, "not read: \(ConformanceSettings.checksum)") }
            return (v != 0 ? .pass : .fail, "\(ConformanceSettings.checksum)=\(v): " + (v != 0 ? "conntrack verifies checksums, so a bad ICMP error matches no flow and is not translated" : "conntrack does not verify checksums"))
        case "5508 REQ-3a", "5508 REQ-3b", "5508 REQ-3c", "5508 REQ-3d":
            return (.untested, "no probe crafts ICMP errors with broken or unusual embedded packets")
        case "5508 REQ-4":
            return icmpError(e.udpErrorInbound, e, probe: "icmp error", type: 3)
        case "5508 REQ-5":
            return icmpError(e.udpErrorOutbound, e, probe: "icmp error outbound", type: 3)
        case "5508 REQ-5c":
            guard let o = e.udpErrorOutbound, o.received != nil else { return icmpError(e.udpErrorOutbound, e, probe: "icmp error outbound", type: 3) }
            guard let m = e.udpErrorOutboundMapping, let from = o.from else { return (.fail, "not measured: the error's outer source is unknown") }
            return (from == m.address ? .pass : .fail, "the error arrived from \(from); the subscriber's public address is \(m.address)")
        case "5508 REQ-6":
            return (.untested, "no probe sends an ICMP error about an echo session")
        case "5508 REQ-7", "5508 REQ-7a":
            // Hairpinned ICMP errors need hairpinning first.
            guard let h = e.udpHairpin else { return missing(e, "udp hairpin") }
            if !h.arrived { return (.fail, "no hairpinning at all, so no hairpinned ICMP error either: " + h.text) }
            return (.untested, "hairpinning works (\(h.text)); no probe sends an ICMP error back along the hairpin")
        case "5508 REQ-8":
            return refusal(lab, e)
        case "5508 REQ-9":
            return (.notApplicable, "the lab offers no policy that stops ICMP messages towards an interface")
        case "5508 REQ-10":
            return (.untested, "only Destination Unreachable is probed (REQ-4, REQ-5); time exceeded, parameter problem and the other types of the list are not")
        case "5508 REQ-11":
            return (.notApplicable, "a permission: any handling of non-query, non-error ICMP conforms")

        // MARK: RFC 6888
        case "6888 REQ-2":
            return pooling(lab, e, required: true)
        case "6888 REQ-3":
            let ranges = nat.pool.map { "\($0)" }.joined(separator: ", ")
            return (.pass, "the pool is a list of prefixes of any size, contiguous or not (this lab: \(ranges))")
        case "6888 REQ-4":
            if let blocks {
                return (.pass, "port blocks: each subscriber gets \(blocks.blocksPerSubscriber) block(s) of \(blocks.blockSize) ports (ICMP ids too)")
            }
            return (.fail, "mapping: random uses the whole port range of the pool for every subscriber: no per-subscriber port limit" + (nat.sessionLimit.map { " (only a session limit of \($0))" } ?? ""))
        case "6888 REQ-5":
            guard let q = e.quotaRules else { return missing(e, "ruleset") }
            if let l = nat.sessionLimit, !q.isEmpty { return (.pass, "at most \(l) sessions per subscriber: \(q[0])") }
            if nat.sessionLimit != nil { return (.fail, "the lab asks for a session limit but the router's live ruleset has no `ct count` rule") }
            return (.fail, "no session limit in this lab (the `sessions:` key of the NAT policy sets one)")
        case "6888 REQ-6":
            let routed = lab.router.subscribers.flatMap(\.routed).filter { $0.family == .v4 }
            return (.fail, "translation is chosen by source (inside prefix, routed prefixes \(routed.map { "\($0)" }.joined(separator: ", ")) are not translated); no setting exempts destination addresses or ports")
        case "6888 REQ-7":
            guard let f = e.udpFiltering else { return missing(e, "udp filtering") }
            guard let b = f.behaviour else { return (.fail, "not measured: the control packet did not arrive: \(f.text)") }
            return (b == .endpointIndependent ? .pass : .fail, "\(b.rawValue): \(f.text)")
        case "6888 REQ-8":
            if blocks != nil {
                return (.fail, "conntrack may give a port to a new mapping as soon as its entry expires; port blocks keep it within its own subscriber's block")
            }
            return (.fail, "conntrack may give a port to a new mapping of any subscriber as soon as its entry expires")
        case "6888 REQ-9":
            return (.fail, "the lab implements no mapping-control protocol (no PCP server)")
        case "6888 REQ-10":
            return (.pass, "cgnat status, check, events and whois manage and observe the lab; no SNMP (RFC 4008) agent")
        case "6888 REQ-11a":
            if blocks != nil { return (.pass, "a flow that finds no free port in its block is dropped when conntrack confirms it" + (nat.sessionLimit != nil ? "; one over the session limit by a counted drop rule" : "")) }
            return (.pass, "a flow that finds no free port is dropped when conntrack confirms it")
        case "6888 REQ-11b":
            if let q = e.quotaRules, q.contains(where: { $0.contains("reject") }) { return (.pass, "quota rule rejects: \(q[0])") }
            return (.fail, "refused flows are dropped silently (no ICMP host unreachable)")
        case "6888 REQ-11c":
            return (.fail, "no notification is sent when a flow is refused (cgnat events logs mappings, not refusals)")
        case "6888 REQ-11d":
            return (.pass, "a quota or a full block refuses the new flow; existing entries stay (only a full conntrack table, nf_conntrack_max, evicts unreplied entries)")
        case "6888 REQ-12":
            return (.pass, "`cgnat events --no-destination` leaves destinations out of the log; the default log includes them")
        case "6888 REQ-13":
            if let blocks { return (.fail, "static blocks of \(blocks.blockSize) ports: a subscriber cannot use another's idle ports") }
            return (.pass, "every subscriber draws on the whole port range of the pool")
        case "6888 REQ-14":
            if blocks != nil { return (.pass, "deterministic port blocks: nothing per flow needs logging (cgnat whois reverses public address:port to the subscriber)") }
            return (.fail, "random mapping: each flow's port must be logged to trace it back")
        case "6888 REQ-15":
            if let blocks { return (.fail, "a subscriber's ports stay within its known block of \(blocks.blockSize)") }
            return (.pass, "fully-random ports over the whole range")
        default:
            return (.fail, "no evaluator for \(r.key)")
        }
    }

    static func pooling(_ lab: Lab, _ e: ConformanceEvidence, required: Bool = false) -> Outcome {
        let poolSize = lab.router.nat.pool.reduce(0) { $0 + (1 << (32 - min(32, $1.length))) }
        let obs = e.udpMappings + e.tcpMappings + e.icmpMappings
        guard !obs.isEmpty else { return missing(e, "udp mapping") }
        let bySubscriber = Dictionary(grouping: obs, by: \.subscriber)
        var parts: [String] = []
        var ok = true
        for (name, list) in bySubscriber.sorted(by: { $0.key < $1.key }) {
            let addresses = Set(list.flatMap { $0.flows.compactMap { $0.mapped?.address } })
            if addresses.count != 1 { ok = false }
            parts.append("\(name): \(addresses.sorted().map { "\($0)" }.joined(separator: ", "))")
        }
        let text = "public addresses of every UDP, TCP and ICMP flow: " + parts.joined(separator: "; ")
        if poolSize <= 1 && !required {
            return (.notApplicable, "one public address, no pool (\(text))")
        }
        return (ok ? .pass : .fail, text)
    }

    static func overloading(_ pair: [MappingObservation], _ e: ConformanceEvidence, probe: String) -> Outcome {
        guard pair.count == 2 else { return e.problems[probe].map { (.fail, "not measured: \($0)") } ?? (.notApplicable, "no two subscribers of the lab share an inside address") }
        guard pair.allSatisfy(\.complete) else { return (.fail, "not measured: a flow did not arrive: " + pair.map(\.text).joined(separator: "; ")) }
        let shared = pair[0].mappedEndpoints.intersection(pair[1].mappedEndpoints)
        let text = "\(pair[0].subscriber) and \(pair[1].subscriber) from the same \(pair[0].inside) at once: "
            + pair.map { "\($0.subscriber) -> \($0.mappedEndpoints.sorted { $0.description < $1.description }.map(\.description).joined(separator: ","))" }.joined(separator: "; ")
        return shared.isEmpty ? (.pass, text) : (.fail, text + "; SHARED \(shared.map(\.description).joined(separator: ", "))")
    }

    static func hairpin(_ h: HairpinObservation?, _ e: ConformanceEvidence, probe: String, source: Bool) -> Outcome {
        guard let h else { return e.problems[probe].map { (.fail, "not measured: \($0)") } ?? (.notApplicable, "the lab has a single subscriber") }
        guard let seen = h.seenSource else { return (.fail, h.text) }
        if !source { return (.pass, h.text) }
        guard let m = h.senderMapping else { return (.fail, "not measured: the sender's own mapping is unknown; " + h.text) }
        return (seen == m ? .pass : .fail, h.text)
    }

    static func icmpError(_ o: ICMPErrorObservation?, _ e: ConformanceEvidence, probe: String, type: UInt8) -> Outcome {
        guard let o else { return missing(e, probe) }
        guard let got = o.received else { return (.fail, "\(o.flow): no ICMP error reached the sender") }
        return (o.type == type ? .pass : .fail, "\(o.flow): \(got)")
    }

    static func refresh(_ r: RefreshObservation?, _ e: ConformanceEvidence, probe: String) -> Outcome {
        guard let r else { return missing(e, probe) }
        guard let b = r.beforeSeconds, let a = r.afterSeconds, let refreshed = r.refreshed else {
            return (.fail, "not measured: the mapping's conntrack entry was not found")
        }
        return (refreshed ? .pass : .fail, "\(r.direction) packet after \(r.pausedMilliseconds) ms: conntrack timeout \(b) s -> \(a) s" + (refreshed ? " (refreshed)" : " (not refreshed)"))
    }

    static func unsolicitedSYN(_ e: ConformanceEvidence, strictSilence: Bool) -> Outcome {
        guard let s = e.unsolicitedSYN else { return missing(e, "unsolicited syn") }
        if let answer = s.answer {
            let ms = s.answerMilliseconds.map { " after \(Double(Int($0 * 10)) / 10) ms" } ?? ""
            return (.fail, "SYN to \(s.target) from the uplink: \(answer)\(ms)")
        }
        guard let rule = s.droppedBy else {
            // Silence for a bounded wait says nothing about 6 s.
            return (.fail, "SYN to \(s.target): no answer in \(s.waitedMilliseconds) ms, but no drop rule counted it: nothing shows it stays unanswered for 6 s")
        }
        return (.pass, "SYN to \(s.target): no answer in \(s.waitedMilliseconds) ms and dropped silently by \(rule) (a drop never answers)")
    }

    static func refusal(_ lab: Lab, _ e: ConformanceEvidence) -> Outcome {
        guard let q = e.quotaRules else { return missing(e, "ruleset") }
        if let r = q.first(where: { $0.contains("reject") && $0.contains("admin-prohibited") }) { return (.pass, "quota: \(r)") }
        let where_ = lab.portBlockPolicy != nil ? "no free port in the subscriber's block" : "no free port"
        let what = q.isEmpty ? "\(where_): conntrack drops the flow silently" : "over the session limit: dropped silently (\(q[0]))"
        return (.fail, what + "; no ICMP admin-prohibited")
    }
}
