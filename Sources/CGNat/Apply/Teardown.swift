import Glibc
import Netlink

/// Removes what a lab's record says was made for it, and only that. Restartable at any point:
/// every action is idempotent, the record goes last, and only when nothing of ours is left.
public enum Teardown {
    public struct Report: Sendable {
        /// Namespaces unmounted and unlinked.
        public var removed: [String] = []
        /// Plain files left in /run/netns by a crash (between naming and mounting a namespace, or
        /// between unmounting and unlinking one): removed.
        public var leftoverFiles: [String] = []
        /// Names that hold something we cannot prove is ours: left alone.
        public var foreign: [String] = []
        /// Processes found inside the lab's namespaces and ended.
        public var killed: [Int32] = []
        /// Commands registered in the record (check, events, trace, shell, tmux) that were ended.
        public var ended: [LabRecord.Registered] = []
        public var notUp = false
    }

    /// Test hook: die as kill -9 would right after action N of the teardown (N from 0).
    public struct Faults: Sendable {
        public var crashAfterStep: Int?
        public init(crashAfterStep: Int? = nil) { self.crashAfterStep = crashAfterStep }
    }

    /// Takes the lab's lock (waiting briefly for an `up` or `down` that holds it), then tears down.
    public static func down(lab: String, faults: Faults = Faults()) throws -> Report {
        let lock = try LabLock.acquire(lab: lab, .exclusive)
        defer { lock.release() }
        return try downLocked(lab: lab, faults: faults)
    }

    /// The teardown itself; the caller holds the lab's exclusive lock (`up` rolling back does).
    static func downLocked(lab: String, faults: Faults = Faults()) throws -> Report {
        var report = Report()
        var step = 0
        func done() {
            if faults.crashAfterStep == step { _exit(9) }
            step += 1
        }
        let marker = LabRecord.downMarkerPath(lab)
        guard let record = LabRecord.load(lab: lab) else {
            // Leftovers of an `up` killed before its record existed, or of a `down` killed after
            // removing it.
            LabRecord.removeStoredLab(lab)
            unlink(marker)
            report.notUp = true
            return report
        }
        // A record that is not cgnat's (or damaged) proves nothing: keep it and touch nothing,
        // rather than report a lab down whose namespaces are still there.
        guard record.hasHeader || record.isBlank else {
            let left = NetNamespace.names().filter { $0.hasPrefix(lab + "-") }
            throw UsageError("the record \(LabRecord.path(lab)) of lab '\(lab)' is unreadable (no 'cgnat-lab 1' line: damaged, or not written by cgnat); left it and everything alone" + (left.isEmpty ? "" : "; namespaces named \(lab)-*: \(left.prefix(10).joined(separator: ", "))\(left.count > 10 ? " and \(left.count - 10) more" : "")") + ". Check them (ip netns identify, ip netns pids), remove what is the lab's with `ip netns del`, then the record")
        }
        // Commands that get our SIGTERM see this file and say "lab X went down".
        let m = open(marker, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        if m >= 0 { close(m) }
        done()

        // Commands working on the lab first: they hold sockets in its namespaces and should say
        // why they end. Only processes whose start time matches: a reused pid is someone else.
        let me = getpid()
        let registered = record.processes.filter { $0.process.pid != me && $0.process.alive }
        report.ended = registered
        // An interactive shell ignores SIGTERM; SIGHUP is what ends it (its terminal went away).
        end(registered.map(\.process), grace: 1000, signal: { p in
            registered.first { $0.process == p }?.role == "shell" ? SIGHUP : SIGTERM
        })
        done()

        // Processes still inside keep a namespace alive after its name is gone (tmux shells,
        // `exec`): end them first, as `ip netns pids` would find them.
        let ours = record.namespaces.filter { NetNamespace.identity(of: $0.name) == $0.identity }
        report.killed = killProcesses(in: Set(ours.map(\.identity)))
        done()

        for ns in record.namespaces.reversed() {
            switch NetNamespace.occupant(ns.name) {
            case .none:
                continue
            case .namespace(let now) where now == ns.identity:
                try NetNamespace.unmount(ns.name)
                done()
                try NetNamespace.unlinkName(ns.name)
                done()
                report.removed.append(ns.name)
            case .plainFile(empty: true):
                try NetNamespace.unlinkName(ns.name)
                done()
                report.leftoverFiles.append(ns.name)
            case .namespace, .plainFile, .other:
                report.foreign.append(ns.name)
            }
        }
        // Names we were about to create: only an empty plain file can be ours there (the identity
        // line comes before any mount, so a namespace mounted at a pending name is someone else's).
        for name in record.pending {
            switch NetNamespace.occupant(name) {
            case .plainFile(empty: true):
                try NetNamespace.unlinkName(name)
                done()
                report.leftoverFiles.append(name)
            case .none: continue
            default: report.foreign.append(name)
            }
        }

        VRFBinding.removeCgroups(record.cgroups)
        done()
        // The lab's tmux server (`cgnat tmux`) runs on the host; its shells died with the
        // namespaces, but the events window would stay.
        for socket in Set(record.tmuxSockets + [TmuxSession.socketName(lab: lab)]) where TmuxSession.serverExists(socket: socket) {
            TmuxSession.killServer(socket: socket)
        }
        for f in record.files { unlink(f) }
        unlink("\(LabRecord.directory)/\(lab).bashrc")   // the prompt file of `cgnat shell`
        done()
        LabRecord.remove(lab: lab)
        done()
        LabRecord.removeStoredLab(lab)
        unlink(marker)
        return report
    }

    /// SIGTERM, then SIGKILL to what is still alive after `grace` ms.
    static func end(_ processes: [ProcessStamp], grace: Int, signal: (ProcessStamp) -> Int32 = { _ in SIGTERM }) {
        guard !processes.isEmpty else { return }
        for p in processes { kill(p.pid, signal(p)) }
        let deadline = monotonicMilliseconds() + Double(grace)
        while monotonicMilliseconds() < deadline {
            if processes.allSatisfy({ !$0.alive }) { return }
            usleep(5_000)
        }
        for p in processes where p.alive { kill(p.pid, SIGKILL) }
    }

    /// Sends SIGTERM, then SIGKILL after a grace period, to every process whose network namespace
    /// is one of `namespaces`. Returns the pids found.
    static func killProcesses(in namespaces: Set<NetNamespace.Identity>) -> [Int32] {
        guard !namespaces.isEmpty else { return [] }
        let found = processes(in: namespaces).compactMap { ProcessStamp.of(pid: $0) }
        end(found, grace: 500)
        return found.map(\.pid)
    }

    public static func processes(in namespaces: Set<NetNamespace.Identity>) -> [Int32] {
        let me = getpid()
        var out: [Int32] = []
        for name in directoryEntries("/proc") {
            guard let pid = Int32(name), pid != me else { continue }
            var st = stat()
            guard stat("/proc/\(pid)/ns/net", &st) == 0 else { continue }
            if namespaces.contains(.init(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))) { out.append(pid) }
        }
        return out
    }
}
