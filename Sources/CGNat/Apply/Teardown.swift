import Glibc
import Netlink

/// Removes what a lab's record says `up` made, and only that.
public enum Teardown {
    public struct Report: Sendable {
        public var removed: [String] = []
        /// Names that exist but are not the namespace we created: left alone.
        public var foreign: [String] = []
        public var killed: [Int32] = []
        public var notUp = false
    }

    public static func down(lab: String) throws -> Report {
        var report = Report()
        guard let record = LabRecord.load(lab: lab) else {
            report.notUp = true
            return report
        }
        let ours = record.namespaces.filter { NetNamespace.identity(of: $0.name) == $0.identity }
        report.foreign = record.namespaces.filter { ns in
            guard let now = NetNamespace.identity(of: ns.name) else { return false }
            return now != ns.identity
        }.map(\.name)
        // Processes still inside keep a namespace alive after its name is gone (tmux shells,
        // `exec`): end them first, as `ip netns pids` would find them.
        report.killed = killProcesses(in: Set(ours.map(\.identity)))
        for ns in ours.reversed() {
            try NetNamespace.delete(ns.name)
            report.removed.append(ns.name)
        }
        // A crash between creating the name and mounting the namespace leaves an empty plain file.
        for name in record.pending where NetNamespace.exists(name) && NetNamespace.identity(of: name) == nil {
            var st = stat()
            if stat(NetNamespace.path(name), &st) == 0, st.st_size == 0, (st.st_mode & S_IFMT) == S_IFREG {
                unlink(NetNamespace.path(name))
                report.removed.append(name)
            }
        }
        VRFBinding.removeCgroups(record.cgroups)
        // The lab's tmux server (`cgnat tmux`) runs on the host; its shells died with the
        // namespaces, but the events window would stay.
        if TmuxSession.serverExists(lab: lab) { TmuxSession(lab: lab, contexts: [], cgnat: "").kill() }
        unlink("\(LabRecord.directory)/\(lab).bashrc")   // the prompt file of `cgnat shell`
        LabRecord.remove(lab: lab)
        return report
    }

    /// Sends SIGTERM, then SIGKILL after a grace period, to every process whose network namespace
    /// is one of `namespaces`. Returns the pids found.
    static func killProcesses(in namespaces: Set<NetNamespace.Identity>) -> [Int32] {
        guard !namespaces.isEmpty else { return [] }
        let found = processes(in: namespaces)
        guard !found.isEmpty else { return [] }
        for pid in found { kill(pid, SIGTERM) }
        for _ in 0..<50 {   // up to 500 ms
            if found.allSatisfy({ kill($0, 0) != 0 }) { return found }
            usleep(10_000)
        }
        for pid in found where kill(pid, 0) == 0 { kill(pid, SIGKILL) }
        return found
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
