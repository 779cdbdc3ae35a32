import Glibc
import Netlink

/// Runs the check matrix against a lab that is up.
public enum CheckRun {
    public struct Report {
        public var results: [ProbeResult]
        public var wallMilliseconds: Double
        public var backend: Backend
        /// Handles of the rules that stop blocked rows, as read back from the kernel.
        public var handles: [RuleRef: UInt64] = [:]
        public var sampling: CheckSampling = .standard
        public var phases = 1
        public var passed: Bool { results.allSatisfy(\.passed) }
        public var failures: Int { results.filter { !$0.passed }.count }
    }

    /// How long a probe may wait, in milliseconds.
    public static let timeoutRange = 1...60_000

    public static func run(lab: Lab, timeoutMilliseconds: Int = 400) throws -> Report {
        try LabControl.requireRoot("cgnat check")
        return try run(RunningLab.adopt(lab), timeoutMilliseconds: timeoutMilliseconds)
    }

    /// Probes the lab; throws if the lab went down meanwhile (no result is a success then).
    public static func run(_ running: RunningLab, timeoutMilliseconds: Int = 400) throws -> Report {
        try LabControl.requireRoot("cgnat check")
        guard timeoutRange.contains(timeoutMilliseconds) else {
            throw UsageError("check timeout \(timeoutMilliseconds) ms is out of range: use \(timeoutRange.lowerBound)...\(timeoutRange.upperBound)")
        }
        let lab = running.lab
        let start = monotonicMilliseconds()
        let backend = running.backend
        var fds: [String: Int32] = [:]   // by namespace
        defer { fds.values.forEach { close($0) } }
        // An endpoint per context, once: the matrix asks for one per row.
        var endpoints: [String: ProbeEndpoint] = [:]
        func endpoint(_ name: String) throws -> ProbeEndpoint {
            if let e = endpoints[name] { return e }
            let ctx = try running.context(named: name)
            if fds[ctx.namespace] == nil { fds[ctx.namespace] = try running.open(context: name).1 }
            let e = ProbeEndpoint(context: name, namespaceFD: fds[ctx.namespace]!, device: ctx.vrf)
            endpoints[name] = e
            return e
        }
        var used = Set<UInt16>()
        var rng = SystemRandomNumberGenerator()
        func port() -> UInt16 {
            // Fresh ports every run: a fixed TCP source port fails the next run (TIME_WAIT).
            while true {
                let p = UInt16.random(in: 20000...60000, using: &rng)
                if used.insert(p).inserted { return p }
            }
        }
        // The ruleset lives in the router context; its libnftables socket is opened first, while
        // fds are still low (see RuleCounters).
        // The bridges' source-binding tables live where the bridges are (netns: each domain's context).
        let bridgeContexts = lab.router.subscribers.filter { lab.hosts(in: $0.name).count >= 2 }
            .map { BridgeBinding.context(lab, domain: $0, backend: backend) }
        let counters = try RuleCounters(contexts: [lab.router.name] + bridgeContexts) { try endpoint($0).namespaceFD }
        let matrix = try CheckMatrix(lab: lab, backend: backend, endpoint: endpoint, port: port)

        // The rules that stop the blocked rows, by handle in the kernel; their counters prove
        // the drops.
        try counters.track(Set((matrix.probes + matrix.inbound.map(\.probe)).compactMap { p -> RuleRef? in
            if case .counted(let r) = p.evidence { return r }
            if case .rule(let r)? = p.blockedBy { return r } else { return nil }
        }))

        var results: [ProbeResult] = []
        let options = ProbeRunOptions(timeoutMilliseconds: timeoutMilliseconds)
        for phase in matrix.phases {
            // The probe routes live only for this phase: an upstream that routes the address to
            // the router, and the router routing it into the domain, so only the policy stops it.
            let routes = try ProbeRouteSet(phase.routes) { try endpoint($0).namespaceFD }
            defer { routes.remove() }
            counters.resetBaseline(only: Set((phase.probes + phase.inbound.map(\.probe) + phase.pairs.flatMap { [$0.first, $0.second] }).compactMap { p -> RuleRef? in
                if case .rule(let r)? = p.blockedBy { return r } else { return nil }
            }))
            // The inbound rows' openers run with the phase's other rows; each inbound row then
            // aims at the public address and port its opener was seen from.
            let ran = runChecks(probes: phase.probes + phase.inbound.map(\.opener), pairs: phase.pairs, options: options, evidence: counters)
            let openers = Array(ran[phase.probes.count..<(phase.probes.count + phase.inbound.count)])
            results += ran[..<phase.probes.count] + ran[(phase.probes.count + phase.inbound.count)...]
            if !phase.inbound.isEmpty {
                results += runInbound(phase.inbound, openers: openers, options: options, counters: counters)
            }
        }
        guard running.stillUp else { throw running.wentDown }
        return Report(results: results, wallMilliseconds: monotonicMilliseconds() - start, backend: backend,
                      handles: counters.handles, sampling: matrix.sampling, phases: matrix.phases.count)
    }
}

extension CheckRun {
    /// Runs each inbound row against the mapping its opener opened; a row whose opener did not
    /// see its mapping fails and says why.
    static func runInbound(_ rows: [InboundRow], openers: [ProbeResult], options: ProbeRunOptions,
                           counters: RuleCounters) -> [ProbeResult] {
        var aimed: [Probe] = []
        for (row, o) in zip(rows, openers) {
            if o.passed, let a = o.observedSource, let p = o.observedPort { aimed.append(row.aimed(at: a, port: p)) }
        }
        counters.resetBaseline()
        var ran = runChecks(probes: aimed, options: options, evidence: counters)[...]
        return zip(rows, openers).map { row, o in
            guard o.passed, o.observedSource != nil, o.observedPort != nil else {
                return ProbeResult(probe: row.probe, pair: nil, passed: false, detail: "mapping not opened (\(o.probe.from.context) \(o.name)): \(o.detail)",
                                   observedSource: nil, observedPort: nil, observedPorts: [nil], milliseconds: o.milliseconds)
            }
            var r = ran.removeFirst()
            r.detail += "; the mapping \(r.probe.destination) port \(r.probe.destinationPort ?? 0) was opened from port \(row.opener.sourcePort ?? 0)"
            return r
        }
    }
}

/// Routes added for a check and removed after it, also when it fails.
final class ProbeRouteSet {
    private var sockets: [String: RouteSocket] = [:]
    private var added: [(RouteSocket, Route)] = []

    init(_ routes: [ProbeRoute], namespaceFD: (String) throws -> Int32) throws {
        do {
            for pr in routes {
                let sock: RouteSocket
                if let s = sockets[pr.context] {
                    sock = s
                } else {
                    sock = try NetNamespace.run(in: try namespaceFD(pr.context)) { try RouteSocket() }
                    sockets[pr.context] = sock
                }
                let p = pr.route
                let route = Route(family: p.family, destination: p.destination, gateway: p.gateway,
                                  outputInterface: try p.device.map { try sock.linkIndex($0) },
                                  preferredSource: p.source, table: p.table)
                do {
                    try sock.addRoute(route)
                } catch let e as NetlinkError where e.errno == EEXIST {
                    // Left by a check that was killed before it could clean up (or one running
                    // now): take it over, so that the lab does not keep it.
                }
                added.append((sock, route))
            }
        } catch {
            remove()
            throw error
        }
    }

    func remove() {
        for (s, r) in added.reversed() { try? s.deleteRoute(r) }
        added = []
        sockets.values.forEach { $0.close() }
        sockets = [:]
    }
}
