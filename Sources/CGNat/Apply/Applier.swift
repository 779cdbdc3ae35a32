import Glibc
import Netlink

/// A step that failed, with the kernel's (or libnftables') own words.
public struct ApplyError: Error, CustomStringConvertible {
    public let step: String
    public let underlying: Error
    public var description: String { "\(step): \(underlying)" }
}

/// Set from a signal handler; `up` checks it between steps and rolls back.
nonisolated(unsafe) public var interruptRequested: sig_atomic_t = 0

/// Executes a plan natively: one rtnetlink socket per namespace (opened inside it, usable from
/// here), sysctls written on a thread inside the namespace, the ruleset loaded by libnftables
/// created inside the namespace. On any failure, or an interrupt, the caller tears down with the
/// record, which names everything created so far.
public final class Applier {
    final class Namespace {
        let fd: Int32
        let route: RouteSocket
        var indexes: [String: Int32] = [:]
        init(fd: Int32, route: RouteSocket) { self.fd = fd; self.route = route }
        deinit { route.socket.close(); close(fd) }

        func index(_ link: String) throws -> Int32 {
            if let i = indexes[link] { return i }
            let i = try route.linkIndex(link)
            indexes[link] = i
            return i
        }
    }

    public struct Interrupted: Error, CustomStringConvertible {
        public var description: String { "interrupted" }
    }

    /// Test hooks: fail on purpose before a step (rollback), die without cleaning up after one
    /// (what a kill -9 leaves), pause between steps (to interrupt an `up` in flight).
    public var failBeforeStep: Int?
    public var crashAfterStep: Int?
    /// Die between recording the Nth new namespace's identity and mounting it (N from 0).
    public var crashBeforeMount: Int?
    private var namespacesStarted = 0
    public var stepDelayMilliseconds: Int = 0
    private var namespaces: [String: Namespace] = [:]
    private let plan: Plan

    public init(plan: Plan) { self.plan = plan }

    public func apply(record: LabRecord) throws {
        let steps = plan.steps
        var i = 0
        while i < steps.count {
            if interruptRequested != 0 { throw ApplyError(step: "before \(steps[i].summary)", underlying: Interrupted()) }
            if let f = failBeforeStep, f == i {
                throw ApplyError(step: steps[i].summary, underlying: UsageError("fault injected before step \(i)"))
            }
            let step = steps[i]
            // Sysctls that follow a step in the same namespace run together on one thread.
            var batch: [(String, String)] = []
            var j = i + 1
            // A fault asked for inside the batch ends the batch before it (the hook must fire).
            let batchEnd = failBeforeStep.map { $0 > i ? min($0, steps.count) : steps.count } ?? steps.count
            while j < batchEnd, case .sysctl(let ns, let k, let v) = steps[j], ns == step.namespace {
                batch.append((k, v)); j += 1
            }
            if case .sysctl(_, let k, let v) = step { batch.insert((k, v), at: 0) }
            do {
                try run(step, sysctls: batch, record: record)
            } catch let e as ApplyError {
                throw e
            } catch {
                throw ApplyError(step: step.summary, underlying: error)
            }
            if let c = crashAfterStep, c >= i, c < j { _exit(9) }
            if stepDelayMilliseconds > 0 { usleep(useconds_t(stepDelayMilliseconds * 1000)) }
            i = j
        }
        try record.append("complete")
    }

    private func handle(_ ns: String) throws -> Namespace {
        guard let h = namespaces[ns] else { throw UsageError("internal: namespace \(ns) used before it was created") }
        return h
    }

    private func run(_ step: Step, sysctls: [(String, String)], record: LabRecord) throws {
        switch step {
        case .createNamespace(let name):
            // Write-ahead: the name before it exists, the namespace's identity before the mount
            // gives it the name; `down` can then prove what is ours after a crash at any point.
            try record.append("pending \(name)")
            var route: RouteSocket?
            var sysctlError: Error?
            let fd: Int32
            do {
                let crash = crashBeforeMount == namespacesStarted
                namespacesStarted += 1
                fd = try NetNamespace.create(name, beforeMount: { id in
                    try record.append("ns \(name) \(id.device):\(id.inode)")
                    if crash { _exit(9) }
                }) { _ in
                    route = try RouteSocket()
                    do { for (k, v) in sysctls { try writeSysctl(k, v) } } catch { sysctlError = error }
                }
            } catch let e as NetNamespace.NameTaken {
                try? record.append("abandon \(name)")   // someone else's: `down` must not touch it
                throw ApplyError(step: step.summary, underlying: UsageError("\(e): a namespace of that name exists and is not this lab's (remove it, or choose another --lab)"))
            }
            namespaces[name] = Namespace(fd: fd, route: route!)
            if let e = sysctlError { throw e }
            return
        case .sysctl(let ns, _, _):
            try writeSysctls(sysctls, in: ns)
            return
        case .addVeth(let ns, let name, let pns, let peer, let index, let peerIndex):
            try handle(ns).route.addVeth(name: name, peerName: peer, peerNamespaceFD: try handle(pns).fd,
                                         index: index, peerIndex: peerIndex)
        case .addBridge(let ns, let name):
            try handle(ns).route.addBridge(name: name)
        case .addVRF(let ns, let name, let table):
            try handle(ns).route.addVRF(name: name, table: table)
        case .setMaster(let ns, let link, let master):
            let h = try handle(ns)
            try h.route.setLink(index: try h.index(link), master: try h.index(master))
        case .setUp(let ns, let link):
            let h = try handle(ns)
            try h.route.setLink(index: try h.index(link), up: true)
        case .addAddress(let ns, let link, let address):
            let h = try handle(ns)
            try h.route.addAddress(index: try h.index(link), address)
        case .addRoute(let ns, let r):
            let h = try handle(ns)
            try h.route.addRoute(Route(
                family: r.family, destination: r.destination, gateway: r.gateway,
                outputInterface: try r.device.map { try h.index($0) }, preferredSource: r.source,
                table: r.table, scope: r.gateway == nil && r.kind == .unicast ? 253 : 0,
                kind: r.kind == .unreachable ? .unreachable : .unicast))
        case .addRule(let ns, let r):
            try handle(ns).route.addRule(Applier.rule(r))
        case .deleteRule(let ns, let r):
            try handle(ns).route.deleteRule(Applier.rule(r))
        case .loadRuleset(let ns, let text):
            _ = try NetNamespace.run(in: try handle(ns).fd) { try Nftables().run(text) }
        }
        if !sysctls.isEmpty {
            try writeSysctls(sysctls, in: step.namespace)
        }
    }

    /// A batch of sysctls, written on one thread inside the namespace.
    private func writeSysctls(_ sysctls: [(String, String)], in ns: String) throws {
        try NetNamespace.run(in: try handle(ns).fd) { for (k, v) in sysctls { try writeSysctl(k, v) } }
    }

    static func rule(_ r: PlannedRule) -> Rule {
        Rule(family: r.family, priority: r.priority, table: r.table, fwmark: r.fwmark,
             fwmask: r.fwmark == nil ? nil : 0xffff_ffff, l3mdev: r.l3mdev,
             action: r.action == .unreachable ? .unreachable : .toTable)
    }
}
