import Glibc
import Netlink

/// Runs the check matrix against a lab that is up.
public enum CheckRun {
    public struct Report {
        public var results: [ProbeResult]
        public var wallMilliseconds: Double
        public var backend: Backend
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
        func endpoint(_ name: String) throws -> ProbeEndpoint {
            guard let ctx = lab.context(named: name, backend: backend) else { throw UsageError("internal: no context \(name)") }
            if fds[ctx.namespace] == nil { fds[ctx.namespace] = try running.open(context: name).1 }
            return ProbeEndpoint(context: name, namespaceFD: fds[ctx.namespace]!, device: ctx.vrf)
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
        let matrix = try CheckMatrix(lab: lab, backend: backend, endpoint: endpoint, port: port)

        // The upstream's probe routes live only for this run.
        var added: [Route] = []
        var uplinkRoutes: RouteSocket?
        if !matrix.probeRoutes.isEmpty, let uplink = lab.uplinkHost {
            let fd = try endpoint(uplink.name).namespaceFD
            let sock = try NetNamespace.run(in: fd) { try RouteSocket() }
            uplinkRoutes = sock
            for pr in matrix.probeRoutes {
                let route = Route(family: pr.family, destination: pr.destination, gateway: pr.gateway,
                                  outputInterface: try pr.device.map { try sock.linkIndex($0) },
                                  preferredSource: pr.source, table: pr.table)
                do {
                    try sock.addRoute(route)
                } catch let e as NetlinkError where e.errno == EEXIST {
                    // Left by a check that was killed before it could clean up (or one running
                    // now): take it over, so that the lab does not keep it.
                }
                added.append(route)
            }
        }
        defer {
            for r in added { try? uplinkRoutes?.deleteRoute(r) }
            uplinkRoutes?.socket.close()
        }

        let results = runChecks(probes: matrix.probes, pairs: matrix.pairs, timeoutMilliseconds: timeoutMilliseconds)
        guard running.stillUp else { throw running.wentDown }
        return Report(results: results, wallMilliseconds: monotonicMilliseconds() - start, backend: backend)
    }
}
