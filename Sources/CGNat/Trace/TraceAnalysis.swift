import Netlink

/// A trace event as received, with the context (router namespace) it came from.
public struct RecordedTraceEvent: Equatable, Sendable {
    /// Context label of the namespace that sent it: `main`, `main:blue`, ...
    public var context: String
    public var event: TraceEvent
    public init(context: String, event: TraceEvent) { self.context = context; self.event = event }
}

/// What is known about one traced namespace: interface names and its ruleset.
public struct TraceNamespaceInfo: Equatable, Sendable {
    public var context: String
    public var links: [UInt32: String]
    public var rules: RuleIndex
    public init(context: String, links: [UInt32: String], rules: RuleIndex) {
        self.context = context; self.links = links; self.rules = rules
    }
}

/// One line of a packet's path: a rule that matched, a chain's policy, or the packet passing a hook.
public struct TraceHop: Equatable, Sendable {
    public enum Kind: String, Sendable {
        /// The packet entered a hook (first seen in prerouting or output of a namespace).
        case enter
        /// A rule of the lab's ruleset matched, or a chain's policy/return decided.
        case rule, policy, `return`
        /// The packet got through a hook (the trace table's last chain saw it).
        case passed
    }

    public var context: String
    public var kind: Kind
    public var hook: String?
    public var priority: String?
    public var table: String
    public var chain: String
    public var ruleHandle: UInt64?
    public var rule: String?
    public var verdict: String?
    public var input: String?
    public var output: String?
    public var packet: PacketSummary?
    public var mark: UInt32?
    public var ct: TraceConntrack?
}

/// The conntrack view of a packet at a hop (kernel 6.16+), with the entry's zones and NAT when the
/// table or its events showed that entry.
public struct TraceConntrack: Equatable, Sendable {
    public var state: String?
    public var direction: String?
    public var id: UInt32?
    public var status: [String]
    public var originalZone: UInt16?
    public var replyZone: UInt16?
    /// `snat 100.64.0.2 -> 100.64.0.1` etc., from the entry's tuples.
    public var nat: String?

    public var description: String {
        var parts: [String] = []
        if let s = state { parts.append("ct \(s)") }
        if let d = direction { parts.append(d) }
        if originalZone != nil || replyZone != nil {
            parts.append("zone orig \(originalZone.map(String.init) ?? "0") reply \(replyZone.map(String.init) ?? "0")")
        }
        if let n = nat { parts.append(n) }
        if let id { parts.append("id \(id)") }
        return parts.joined(separator: " ")
    }
}

public struct TraceVerdict: Equatable, Sendable, CustomStringConvertible {
    public enum Result: String, Sendable { case delivered, dropped, lost }
    public var result: Result
    /// Context where the packet left, was delivered or died.
    public var context: String?
    public var detail: String
    public var description: String { "\(result.rawValue) \(detail)" }
}

public struct TracedPacket: Equatable, Sendable {
    public var traceID: UInt32
    public var hops: [TraceHop]
    public var verdict: TraceVerdict
    /// The packet as first seen.
    public var packet: PacketSummary? { hops.lazy.compactMap(\.packet).first }
}

public enum TraceAnalysis {
    /// Splits the event stream into packets and explains each. Events must be in kernel order
    /// (one socket receives every namespace's events).
    ///
    /// The kernel sends the packet's devices, headers and conntrack state with the first event of
    /// each chain evaluation only. Trace ids cannot say which events belong to one packet: an id is
    /// a hash over the skb's address, flow hash and input interface, so it changes after a veth hop
    /// and even between hooks behind a bridge, and a later skb at the same address may reuse it. So
    /// a packet is followed by its headers: a chain evaluation continues the open packet of the same
    /// namespace with the same trace id, or else one whose headers match (a new id in a later hook,
    /// or the next namespace after the packet left through a veth). A packet ends when it is
    /// dropped, delivered locally, or leaves the router.
    public static func packets(_ events: [RecordedTraceEvent], namespaces: [TraceNamespaceInfo],
                               conntrack: [UInt32: ConntrackEntry] = [:]) -> [TracedPacket] {
        struct ChainInfo { var input: String?; var output: String?; var packet: PacketSummary?; var ct: TraceConntrack?; var mark: UInt32? }
        struct Open {
            var id: UInt32
            var hops: [TraceHop] = []
            var context: String
            var hook: String?
            var finished = false
            var left = false
            var header: PacketSummary?
            var chain = ChainInfo()
            var chainShown = false
        }
        let info = Dictionary(namespaces.map { ($0.context, $0) }, uniquingKeysWith: { a, _ in a })
        var packets: [Open] = []
        var current: [UInt32: Int] = [:]   // trace id -> packet it was last seen on

        for rec in events {
            let e = rec.event
            let ns = info[rec.context]
            let own = e.table == TraceTable.name
            let isMark = own && TraceTable.markChains[e.chain] != nil
            let hook = own ? (TraceTable.markChains[e.chain] ?? TraceTable.seenChains[e.chain])
                           : ns?.rules.chain(table: e.table, chain: e.chain)?.hook
            let starts = e.packet != nil || e.inputIndex != nil || e.outputIndex != nil

            var index: Int
            if starts {
                let header = e.packet
                func same(_ a: PacketSummary?, _ b: PacketSummary?) -> Bool {
                    guard let a, let b else { return false }
                    return a.source == b.source && a.destination == b.destination && a.protocolNumber == b.protocolNumber
                        && a.sourcePort == b.sourcePort && a.destinationPort == b.destinationPort && a.icmpID == b.icmpID
                        && a.icmpType == b.icmpType
                }
                if !isMark, let i = current[e.id], !packets[i].finished, packets[i].context == rec.context {
                    index = i
                } else if isMark, let i = packets.indices.last(where: {
                    packets[$0].finished && packets[$0].left && packets[$0].context != rec.context && same(packets[$0].header, header)
                }) {
                    index = i   // next namespace after a veth hop
                    packets[i].finished = false
                    packets[i].left = false
                } else if !isMark, let i = packets.indices.last(where: {
                    !packets[$0].finished && packets[$0].context == rec.context && same(packets[$0].header, header)
                }) {
                    index = i   // same packet, new trace id
                } else {
                    packets.append(Open(id: e.id, context: rec.context))
                    index = packets.count - 1
                }
                var ci = ChainInfo()
                ci.input = e.inputIndex.map { ns?.links[$0] ?? "if\($0)" }
                ci.output = e.outputIndex.map { ns?.links[$0] ?? "if\($0)" }
                ci.packet = e.packet
                ci.mark = e.mark
                // At raw priority a `ct zone set` packet carries the zone's template, not its entry.
                let template = (e.ctStatus ?? 0) & 2048 != 0
                if !template, e.ctState != nil || e.ctID != nil {
                    var ct = TraceConntrack(state: e.ctState.map(NFTrace.ctStateName),
                                            direction: e.ctDirection.map { $0 == 0 ? "original" : "reply" },
                                            id: e.ctID, status: e.ctStatus.map(NFTrace.ctStatusNames) ?? [])
                    if let id = e.ctID, let entry = conntrack[id] {
                        ct.originalZone = entry.originalZone ?? entry.zone
                        ct.replyZone = entry.replyZone ?? entry.zone
                        ct.nat = natText(entry)
                    }
                    ci.ct = ct
                }
                packets[index].chain = ci
                packets[index].chainShown = false
                if let h = header { packets[index].header = h }
                packets[index].context = rec.context
                current[e.id] = index
            } else if let i = current[e.id] {
                index = i
            } else {
                packets.append(Open(id: e.id, context: rec.context))
                index = packets.count - 1
                current[e.id] = index
            }
            if let h = hook { packets[index].hook = h }
            if let m = e.mark { packets[index].chain.mark = m }

            let ci = packets[index].chain
            var hop = TraceHop(context: rec.context, kind: .rule, hook: packets[index].hook, table: e.table, chain: e.chain)
            hop.priority = own ? nil : ns?.rules.chain(table: e.table, chain: e.chain)?.priority
            hop.input = ci.input
            hop.output = ci.output
            hop.packet = ci.packet
            hop.ct = ci.ct
            hop.mark = ci.mark
            if let v = e.effectiveVerdict { hop.verdict = NFTrace.verdictName(v) }
            if let c = e.verdictChain, let v = hop.verdict { hop.verdict = "\(v) \(c)" }
            let drops = e.effectiveVerdict.map { $0 >= 0 && $0 & 0xff == NFTrace.NF_DROP } ?? false

            var show = false
            if own {
                // The trace table's chains only say where the packet is: their first event.
                if starts {
                    show = true
                    hop.kind = isMark ? .enter : .passed
                    hop.verdict = nil
                    if e.chain == "seen_post" { packets[index].finished = true; packets[index].left = true }
                    if e.chain == "seen_in" { packets[index].finished = true }
                }
            } else {
                switch e.kind {
                case .rule:
                    // A rule event without a handle is the end of the chain's rules (no match).
                    if let h = e.ruleHandle {
                        show = true
                        hop.ruleHandle = h
                        hop.rule = ns?.rules.rule(table: e.table, chain: e.chain, handle: h)
                    }
                case .policy:
                    hop.kind = .policy
                    show = drops || !packets[index].chainShown
                case .return:
                    hop.kind = .return
                    show = e.verdict != NFTrace.NFT_CONTINUE
                case .unspec:
                    break
                }
                if drops { show = true; packets[index].finished = true }
            }
            if show {
                packets[index].hops.append(hop)
                if !own { packets[index].chainShown = true }
            }
        }
        return packets.filter { !$0.hops.isEmpty }.map { TracedPacket(traceID: $0.id, hops: $0.hops, verdict: verdict($0.hops)) }
    }

    /// On the VRF backend one packet crosses the hooks more than once, each pass with a new trace
    /// id: PREROUTING with the slave (bridge, muplink) as input, then again with the VRF device;
    /// POSTROUTING with the VRF device as output, then OUTPUT and POSTROUTING with the real one.
    /// Such a second pass continues the packet whose last headers it carries.
    public static func joinVRFPasses(_ packets: [TracedPacket], vrfDevices: Set<String>) -> [TracedPacket] {
        guard !vrfDevices.isEmpty else { return packets }
        func lastHeader(_ p: TracedPacket) -> PacketSummary? { p.hops.last(where: { $0.packet != nil })?.packet }
        func sameFlow(_ a: PacketSummary?, _ b: PacketSummary?) -> Bool {
            guard let a, let b else { return false }
            return a.source == b.source && a.destination == b.destination && a.protocolNumber == b.protocolNumber
                && a.sourcePort == b.sourcePort && a.destinationPort == b.destinationPort && a.icmpID == b.icmpID
                && a.icmpType == b.icmpType
        }
        var out: [TracedPacket] = []
        for p in packets {
            let first = p.hops.first
            let handedOver = out.lastIndex { prev in
                guard prev.verdict.result != .dropped, let last = prev.hops.last, last.context == first?.context,
                      sameFlow(lastHeader(prev), p.packet) else { return false }
                // Into the VRF: the earlier pass ended in prerouting, this one enters from the VRF device.
                let intoVRF = prev.verdict.result == .lost && last.hook == "prerouting"
                    && first?.hook == "prerouting" && first?.input.map(vrfDevices.contains) == true
                // Out of the VRF: the earlier pass "left" through the VRF device, this one is the real egress.
                let outOfVRF = prev.verdict.result == .delivered && last.output.map(vrfDevices.contains) == true
                    && (first?.hook == "output" || first?.hook == "postrouting")
                return intoVRF || outOfVRF
            }
            if let i = handedOver {
                let hops = out[i].hops + p.hops
                out[i] = TracedPacket(traceID: out[i].traceID, hops: hops, verdict: verdict(hops))
            } else {
                out.append(p)
            }
        }
        return out
    }

    /// On the VRF backend every hop happens in `main`; name the domain instead (`main:blue`),
    /// from the device the hook is about: the input device on the way in, the output on the way out.
    public static func labelVRFDomains(_ packets: [TracedPacket], devices: [String: String]) -> [TracedPacket] {
        packets.map { p in
            let hops = p.hops.map { h -> TraceHop in
                var h = h
                let outbound = h.hook == "output" || h.hook == "postrouting"
                if let dev = (outbound ? h.output ?? h.input : h.input ?? h.output), let ctx = devices[dev] { h.context = ctx }
                return h
            }
            return TracedPacket(traceID: p.traceID, hops: hops, verdict: verdict(hops))
        }
    }

    static func natText(_ e: ConntrackEntry) -> String? {
        var parts: [String] = []
        if e.reply.destination != e.original.source { parts.append("snat \(e.original.source) -> \(e.reply.destination)") }
        if e.reply.source != e.original.destination { parts.append("dnat \(e.original.destination) -> \(e.reply.source)") }
        return parts.isEmpty ? nil : parts.joined(separator: ", ")
    }

    /// Where the packet ended: the first drop, else where it was last seen.
    public static func verdict(_ hops: [TraceHop]) -> TraceVerdict {
        if let d = hops.first(where: { $0.kind != .passed && $0.kind != .enter && $0.verdict == "drop" }) {
            var what = "\(d.context) \(d.hook ?? "?")"
            if d.chain != d.hook { what += " chain \(d.chain)" }
            if let r = d.rule {
                what += " rule \"\(r)\""
                if r.contains("reject") {
                    let words = r.split(separator: " ").map(String.init)
                    if let i = words.firstIndex(of: "reject") {
                        let tail = words[(i + 1)...].prefix { $0 != "comment" }
                        let how = tail.last.map { $0 == "reject" ? "reject" : "\($0) reject" } ?? "reject"
                        what += " (\(tail.isEmpty ? "reject" : how))"
                    }
                } else {
                    what += " (drop)"
                }
            } else if d.kind == .policy {
                what += " (policy drop)"
            }
            return TraceVerdict(result: .dropped, context: d.context, detail: "at \(what)")
        }
        guard let last = hops.last else { return TraceVerdict(result: .lost, context: nil, detail: "(no events)") }
        if last.kind == .passed && last.chain == "seen_post" {
            return TraceVerdict(result: .delivered, context: last.context,
                                detail: "(left \(last.context) via \(last.output ?? "?"))")
        }
        if last.kind == .passed && last.chain == "seen_in" {
            return TraceVerdict(result: .delivered, context: last.context,
                                detail: "(to \(last.context) itself, input on \(last.input ?? "?"))")
        }
        return TraceVerdict(result: .lost, context: last.context,
                            detail: "after \(last.context) \(last.hook ?? "?") (no later hook saw it: no route, or dropped outside nftables)")
    }

    /// The command's outcome in one line: the first dropped packet, else the first packet's fate.
    public static func summary(_ packets: [TracedPacket]) -> String {
        guard let first = packets.first else { return "verdict: no packets traced" }
        let p = packets.first { $0.verdict.result == .dropped } ?? packets.first { $0.verdict.result == .lost } ?? first
        return "verdict: \(p.verdict)"
    }
}
