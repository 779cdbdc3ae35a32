import Glibc
import Netlink

/// A step that failed, with the kernel's (or libnftables') own words.
public struct ApplyError: Error, CustomStringConvertible {
    public let step: String
    public let underlying: Error
    /// The failing step's position in the plan (0-based), when the failure belongs to one.
    public let index: Int?

    public init(step: String, underlying: Error, index: Int? = nil) {
        self.step = step
        self.underlying = underlying
        self.index = index
    }

    public var description: String {
        let what = index.map { "step \($0 + 1), \(step)" } ?? step
        if let e = underlying as? NetlinkError {
            // The step already says what was asked; the kernel says why it refused.
            let kernel = e.kernelMessage.flatMap { $0.isEmpty ? nil : " (kernel: \($0))" } ?? ""
            return "\(what): \(e.errnoText)\(kernel)"
        }
        return "\(what): \(underlying)"
    }
}

/// Set from a signal handler; `up` checks it between steps and rolls back.
nonisolated(unsafe) public var interruptRequested: sig_atomic_t = 0

/// Executes a plan natively, in three phases, each on dedicated OS threads (namespaces belong to
/// threads, DESIGN.md section 5):
///
/// 1. namespaces are created, each with the sysctls that must precede its links, by workers that
///    make one namespace after another on the same thread;
/// 2. every link (veth pairs, bridges, VRFs) is created from one rtnetlink socket with both ends'
///    namespaces given by fd (`IFLA_NET_NS_FD`), the only steps that reach into two namespaces;
/// 3. each namespace's remaining steps are sent pipelined on a socket opened inside it, and the
///    socket and the namespace's fd are released when its steps are done (two thousand
///    namespaces would exceed the default limit of 1024 fds otherwise).
///
/// Links are addressed by the ifindex the plan gave them (`Plan.linkIndexes`), never looked up.
/// Requests are pipelined: up to `pipelineDepth` are sent in one datagram, then their
/// acknowledgements read and mapped back to their steps by sequence number; an error names the
/// step and carries the kernel's extended-ACK message. On any failure, or an interrupt, the
/// caller tears down with the record, which names every namespace created so far.
public final class Applier {
    public struct Interrupted: Error, CustomStringConvertible {
        public var description: String { "interrupted" }
    }

    /// Test hooks: fail on purpose before a step (rollback), die without cleaning up after one
    /// (what a kill -9 leaves), pause between steps (to interrupt an `up` in flight; it also
    /// turns pipelining off, one request at a time).
    public var failBeforeStep: Int?
    public var crashAfterStep: Int?
    /// Die between recording the Nth new namespace's identity and mounting it (N from 0).
    public var crashBeforeMount: Int?
    private var namespacesStarted = 0
    public var stepDelayMilliseconds: Int = 0
    /// Worker threads for phases 1 and 3. rtnl is one global lock and namespace creation is
    /// serialised in the kernel too: measured on 2 cores, a second worker gained nothing
    /// (README, "At scale"), so the default is one. `CGNAT_APPLY_THREADS` overrides it.
    public var threads: Int = Applier.defaultThreads
    /// Requests in flight on one socket before their acknowledgements are read: the acks of a
    /// batch must fit the socket's receive buffer.
    public var pipelineDepth = 128
    /// Called with the number of steps done so far (from applier threads, serialised).
    public var progress: ((Int) -> Void)?

    public static var defaultThreads: Int {
        if let v = getenv("CGNAT_APPLY_THREADS"), let n = Int(String(cString: v)), n > 0 { return min(n, 64) }
        return 1
    }

    private let plan: Plan
    private let indexes: [String: [String: Int32]]
    private var lock = pthread_mutex_t()
    private var done = 0

    public init(plan: Plan) {
        self.plan = plan
        self.indexes = plan.linkIndexes
        pthread_mutex_init(&lock, nil)
    }

    deinit { pthread_mutex_destroy(&lock) }

    private func locked<T>(_ body: () throws -> T) rethrows -> T {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return try body()
    }

    /// A namespace to create, with the sysctls right after it in the plan (steps `index...last`).
    private struct Creation {
        var index: Int
        var last: Int
        var sysctls: [(String, String)]
    }

    public func apply(record: LabRecord) throws {
        let steps = plan.steps
        var creations: [Creation] = []
        var links: [Int] = []
        var perNamespace: [String: [Int]] = [:]
        var order: [String] = []
        var i = 0
        while i < steps.count {
            if case .createNamespace(let ns) = steps[i] {
                var batch: [(String, String)] = []
                var j = i + 1
                // A fault asked for inside the batch ends the batch before it (the hook must fire).
                let batchEnd = failBeforeStep.map { $0 > i ? min($0, steps.count) : steps.count } ?? steps.count
                while j < batchEnd, case .sysctl(let sns, let k, let v) = steps[j], sns == ns {
                    batch.append((k, v)); j += 1
                }
                creations.append(Creation(index: i, last: j - 1, sysctls: batch))
                i = j
                continue
            }
            if steps[i].createsLink {
                links.append(i)
            } else {
                let ns = steps[i].namespace
                if perNamespace[ns] == nil { order.append(ns) }
                perNamespace[ns, default: []].append(i)
            }
            i += 1
        }
        let t0 = monotonicMilliseconds()
        try parallel(creations.map { c in { try self.create(c, record: record) } })
        let t1 = monotonicMilliseconds()
        try createLinks(links)
        let t2 = monotonicMilliseconds()
        try parallel(order.map { ns in { try self.configure(ns, perNamespace[ns]!) } })
        // Where the time goes, for measuring at scale (README, "At scale").
        if getenv("CGNAT_APPLY_TIMING") != nil {
            fputs("applier: namespaces \(Int(t1 - t0)) ms, links \(Int(t2 - t1)) ms, configure \(Int(monotonicMilliseconds() - t2)) ms\n", stderr)
        }
        try record.append("complete")
    }

    // MARK: hooks and progress

    private func willRun(_ i: Int) throws {
        if interruptRequested != 0 { throw ApplyError(step: "before \(plan.steps[i].summary)", underlying: Interrupted()) }
        if let f = failBeforeStep, f == i {
            throw ApplyError(step: plan.steps[i].summary, underlying: UsageError("fault injected before step \(i)"), index: i)
        }
    }

    private func didRun<C: Collection>(_ indices: C) where C.Element == Int {
        if let c = crashAfterStep, indices.contains(c) { _exit(9) }
        if stepDelayMilliseconds > 0 { usleep(useconds_t(stepDelayMilliseconds * 1000)) }
        if let progress {
            locked {
                done += indices.count
                progress(done)
            }
        }
    }

    /// Runs the tasks on up to `threads` OS threads, each taking the next task when it is done
    /// with one (threads are reused, not one per namespace). After a failure no new task starts;
    /// the failure of the earliest step is thrown.
    private func parallel(_ tasks: [() throws -> Void]) throws {
        guard !tasks.isEmpty else { return }
        var next = 0
        var failures: [Error] = []
        let workers = max(1, min(threads, tasks.count))
        let results = OSThread.all((0..<workers).map { _ in {
            while true {
                let t: Int? = self.locked {
                    guard failures.isEmpty, next < tasks.count else { return nil }
                    next += 1
                    return next - 1
                }
                guard let t else { return }
                do { try tasks[t]() } catch { self.locked { failures.append(error) } }
            }
        } })
        for case .failure(let e) in results { failures.append(e) }
        guard !failures.isEmpty else { return }
        throw failures.min { a, b in
            ((a as? ApplyError)?.index ?? Int.max) < ((b as? ApplyError)?.index ?? Int.max)
        }!
    }

    private func wrap<T>(_ i: Int, _ body: () throws -> T) throws -> T {
        do { return try body() } catch let e as ApplyError { throw e } catch {
            throw ApplyError(step: plan.steps[i].summary, underlying: error, index: i)
        }
    }

    // MARK: phase 1: namespaces

    /// On a worker thread, which is left in the namespace it made (the next one moves it on).
    private func create(_ c: Creation, record: LabRecord) throws {
        try willRun(c.index)
        try wrap(c.index) {
            switch plan.steps[c.index] {
            case .createNamespace(let name):
                // Write-ahead: the name before it exists, the namespace's identity before the mount
                // gives it the name; `down` can then prove what is ours after a crash at any point.
                try locked { try record.append("pending \(name)") }
                var sysctlError: Error?
                let crash: Bool = locked {
                    defer { namespacesStarted += 1 }
                    return crashBeforeMount == namespacesStarted
                }
                let fd: Int32
                do {
                    fd = try NetNamespace.createOnThisThread(name, beforeMount: { id in
                        try self.locked { try record.append("ns \(name) \(id.device):\(id.inode)") }
                        if crash { _exit(9) }
                    }) { _ in
                        do { for (k, v) in c.sysctls { try writeSysctl(k, v) } } catch { sysctlError = error }
                    }
                } catch let e as NetNamespace.NameTaken {
                    try? locked { try record.append("abandon \(name)") }   // someone else's: `down` must not touch it
                    throw UsageError("\(e): a namespace of that name exists and is not this lab's (remove it, or choose another --lab)")
                }
                close(fd)   // released at once: the name reaches it again
                if let e = sysctlError { throw e }
            default:
                preconditionFailure("not a namespace step")
            }
        }
        didRun(c.index...c.last)
    }

    // MARK: phase 2: links

    /// Every link from one socket, opened inside the lab's first namespace (so that nothing could
    /// ever land in the host's own), both ends placed by namespace fd. The fds of a batch are
    /// closed with it.
    private func createLinks(_ links: [Int]) throws {
        guard !links.isEmpty, let anchor = plan.namespaces.first else { return }
        try OSThread.run {
            let anchorFD = try NetNamespace.open(anchor)
            defer { close(anchorFD) }
            try NetNamespace.enter(anchorFD)
            let route = try RouteSocket()
            defer { route.close() }
            var fds: [String: Int32] = [:]
            defer { fds.values.forEach { close($0) } }
            func fd(_ ns: String) throws -> Int32 {
                if let f = fds[ns] { return f }
                let f = try NetNamespace.open(ns)
                fds[ns] = f
                return f
            }
            try self.pipeline(links, on: route, release: { fds.values.forEach { close($0) }; fds = [:] }) { i in
                switch self.plan.steps[i] {
                case .addVeth(let ns, let name, let pns, let peer, let index, let peerIndex):
                    return RouteMessage.addVeth(name: name, peerName: peer, namespaceFD: try fd(ns), peerNamespaceFD: try fd(pns),
                                                index: index, peerIndex: peerIndex,
                                                mac: Conventions.mac(linkIndex: index).bytes,
                                                peerMAC: Conventions.mac(linkIndex: peerIndex).bytes)
                case .addBridge(let ns, let name, let index):
                    return RouteMessage.addBridge(name: name, index: index, mac: Conventions.mac(linkIndex: index).bytes,
                                                  namespaceFD: try fd(ns))
                case .addVRF(let ns, let name, let table, let index):
                    return RouteMessage.addVRF(name: name, table: table, index: index, namespaceFD: try fd(ns))
                default:
                    preconditionFailure("not a link step")
                }
            } local: { _ in preconditionFailure("links are all netlink requests") }
        }
    }

    // MARK: phase 3: everything else, namespace by namespace

    /// On a worker thread: enters the namespace, runs its steps in plan order, and releases the
    /// namespace's fd and socket.
    private func configure(_ ns: String, _ steps: [Int]) throws {
        let fd = try wrap(steps[0]) { try NetNamespace.open(ns) }
        defer { close(fd) }
        try wrap(steps[0]) { try NetNamespace.enter(fd) }
        let route = try wrap(steps[0]) { try RouteSocket() }
        defer { route.close() }
        let links = indexes[ns] ?? [:]
        func index(_ link: String) throws -> Int32 {
            guard let i = links[link] else { throw UsageError("internal: the plan creates no link \(link) in \(ns)") }
            return i
        }
        try pipeline(steps, on: route, release: {}) { i in
            switch self.plan.steps[i] {
            case .setMaster(_, let link, let master):
                return RouteMessage.setLink(index: try index(link), master: try index(master))
            case .setUp(_, let link):
                return RouteMessage.setLink(index: try index(link), up: true)
            case .setAddrGenModeNone(_, let link):
                return RouteMessage.setAddrGenModeNone(index: try index(link))
            case .addNeighbour(_, let link, let address, let mac):
                return RouteMessage.addPermanentNeighbour(index: try index(link), address: address, mac: mac.bytes)
            case .addAddress(_, let link, let address):
                return RouteMessage.addAddress(index: try index(link), address)
            case .addRoute(_, let r):
                return RouteMessage.addRoute(Route(
                    family: r.family, destination: r.destination, gateway: r.gateway,
                    outputInterface: try r.device.map { try index($0) }, preferredSource: r.source,
                    table: r.table, scope: r.gateway == nil && r.kind == .unicast ? RouteScope.link : RouteScope.universe,
                    kind: r.kind == .unreachable ? .unreachable : .unicast))
            case .addRule(_, let r):
                return RouteMessage.addRule(Applier.rule(r))
            case .deleteRule(_, let r):
                return RouteMessage.deleteRule(Applier.rule(r))
            case .sysctl, .loadRuleset, .loadSetElements:
                return nil
            case .createNamespace, .addVeth, .addBridge, .addVRF:
                preconditionFailure("namespace and link steps run in phases 1 and 2")
            }
        } local: { i in
            // This thread is inside the namespace: /proc/sys/net and libnftables follow it.
            switch self.plan.steps[i] {
            case .sysctl(_, let k, let v): try writeSysctl(k, v)
            case .loadRuleset(_, let text): _ = try Nftables().run(text)
            // After the ruleset that declares the maps, on this namespace's thread (the socket opens here).
            case .loadSetElements(_, let table, let maps): try SetElementLoader.load(table: table, maps: maps)

            default: preconditionFailure("a netlink step")
            }
        }
    }

    /// Sends the steps' requests in batches of `pipelineDepth` (one at a time with a step delay),
    /// running steps that are no request (`message` gives nil) in order between batches.
    private func pipeline(_ indices: [Int], on route: RouteSocket, release: () -> Void,
                          message: (Int) throws -> NetlinkMessage?, local: (Int) throws -> Void) throws {
        var batch: [Int] = []
        var messages: [NetlinkMessage] = []
        let depth = stepDelayMilliseconds > 0 ? 1 : pipelineDepth
        func flush() throws {
            guard !batch.isEmpty else { return }
            defer { release() }
            let sent = batch
            batch = []
            let failures = try route.socket.requestAll(messages) { self.plan.steps[sent[$0]].summary }
            messages = []
            if let f = failures.first {
                throw ApplyError(step: plan.steps[sent[f.position]].summary, underlying: f.error, index: sent[f.position])
            }
            didRun(sent)
        }
        for i in indices {
            do { try willRun(i) } catch { try flush(); throw error }
            if let m = try wrap(i, { try message(i) }) {
                batch.append(i)
                messages.append(m)
                if batch.count >= depth { try flush() }
            } else {
                try flush()
                try wrap(i) { try local(i) }
                didRun([i])
            }
        }
        try flush()
    }

    static func rule(_ r: PlannedRule) -> Rule {
        Rule(family: r.family, priority: r.priority, table: r.table, fwmark: r.fwmark,
             fwmask: r.fwmark == nil ? nil : 0xffff_ffff, l3mdev: r.l3mdev,
             action: r.action == .unreachable ? .unreachable : .toTable)
    }
}
