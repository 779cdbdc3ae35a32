import Glibc
import Netlink

/// The ownership record of a lab: what `up` created and what runs on it, so that `down` removes
/// exactly that, also after a crash, and never a namespace of the same name that someone else
/// made. Append-only text under /run (tmpfs: it goes when the namespaces go). Every kernel object
/// is named here before it exists (write-ahead):
///
///     cgnat-lab 1
///     backend netns
///     pid 1234
///     pending cgnat-main          <- about to create the name; a plain file may be left if we crash
///     ns cgnat-main 4:4026532345  <- the new namespace's nsfs identity, written after unshare and
///                                    before the bind mount: a namespace mounted there with this
///                                    identity is ours
///     abandon cgnat-main          <- the name was taken by someone else: not ours, nothing made
///     complete
///     cgroup /sys/fs/cgroup/cgnat-LAB/vrf/blue   <- written before mkdir
///     proc 4321 987654 check      <- a command working on the lab (pid, start time, role): `down` ends it
///     tmux cgnat-LAB              <- a tmux server (-L socket name) that `down` ends
///     file /tmp/tmux-0/cgnat-LAB  <- a file that `down` removes
///
/// Next to it: LAB.lab (the resolved lab, LabCodec JSON, written before anything is built),
/// LAB.lock (see LabLock; it stays), LAB.down (exists while a `down` runs, or after one was killed).
public final class LabRecord {
    public static var directory = "/run/cgnat"

    public struct Registered: Equatable, Sendable {
        public var process: ProcessStamp
        public var role: String
    }

    public struct Contents: Equatable, Sendable {
        public var backend: Backend?
        public var pid: Int32?
        public var pending: [String] = []
        public var namespaces: [(name: String, identity: NetNamespace.Identity)] = []
        public var complete = false
        /// Cgroups made for commands run inside a VRF (`exec`/`shell` on the VRF backend).
        public var cgroups: [String] = []
        public var processes: [Registered] = []
        public var tmuxSockets: [String] = []
        public var files: [String] = []

        public static func == (a: Contents, b: Contents) -> Bool {
            a.backend == b.backend && a.pid == b.pid && a.pending == b.pending && a.complete == b.complete
                && a.namespaces.map(\.name) == b.namespaces.map(\.name)
                && a.namespaces.map(\.identity) == b.namespaces.map(\.identity)
                && a.cgroups == b.cgroups && a.processes == b.processes && a.tmuxSockets == b.tmuxSockets && a.files == b.files
        }

        /// The record starts with `cgnat-lab 1`: else it is not ours, or damaged.
        public var hasHeader = false
        /// Nothing at all was written (an `up` killed between creating the record and its first line).
        public var isBlank = true

        public init() {}

        /// Parses a record; unknown lines are ignored so newer records stay readable.
        public init(parsing text: String) {
            isBlank = text.allSatisfy(\.isWhitespace)
            for line in text.split(separator: "\n") {
                let f = line.split(separator: " ").map(String.init)
                guard let key = f.first else { continue }
                switch key {
                case "cgnat-lab": hasHeader = true
                case "backend": backend = f.count > 1 ? Backend(rawValue: f[1]) : nil
                case "pid": pid = f.count > 1 ? Int32(f[1]) : nil
                case "pending": if f.count > 1, !pending.contains(f[1]) { pending.append(f[1]) }
                case "abandon": if f.count > 1 { pending.removeAll { $0 == f[1] } }
                case "ns":
                    guard f.count > 2 else { continue }
                    let id = f[2].split(separator: ":")
                    if id.count == 2, let d = UInt64(id[0]), let i = UInt64(id[1]) {
                        namespaces.removeAll { $0.name == f[1] }
                        namespaces.append((f[1], .init(device: d, inode: i)))
                        pending.removeAll { $0 == f[1] }
                    }
                case "complete": complete = true
                case "cgroup": if f.count > 1, !cgroups.contains(f[1]) { cgroups.append(f[1]) }
                case "proc":
                    if f.count > 3, let pid = Int32(f[1]), let start = UInt64(f[2]) {
                        processes.append(Registered(process: ProcessStamp(pid: pid, start: start), role: f[3]))
                    }
                case "tmux": if f.count > 1, !tmuxSockets.contains(f[1]) { tmuxSockets.append(f[1]) }
                case "file": if f.count > 1, !files.contains(f[1]) { files.append(f[1]) }
                default: continue
                }
            }
        }
    }

    public static func path(_ lab: String) -> String { "\(directory)/\(lab).state" }
    /// The resolved lab `up` built (LabCodec JSON): every other command works from it.
    public static func labPath(_ lab: String) -> String { "\(directory)/\(lab).lab" }
    /// Exists while a `down` of the lab runs (or after one was killed): commands that get a
    /// SIGTERM look for it to tell "the lab went down" from an ordinary interrupt.
    public static func downMarkerPath(_ lab: String) -> String { "\(directory)/\(lab).down" }

    /// Writes the resolved lab atomically (a reader never sees half a file).
    public static func storeLab(_ lab: Lab) throws {
        if mkdir(directory, 0o755) != 0 && errno != EEXIST { throw SystemError("mkdir \(directory)") }
        let final = labPath(lab.name)
        let tmp = "\(final).\(getpid())"
        let fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw SystemError("create \(tmp)") }
        let bytes = Array(LabCodec.encode(lab).utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { close(fd); unlink(tmp); throw SystemError("write \(tmp)") }
            off += n
        }
        close(fd)
        guard rename(tmp, final) == 0 else { unlink(tmp); throw SystemError("rename \(tmp) to \(final)") }
    }

    /// Removes the stored lab and any half-written copy an `up` killed mid-write left
    /// (`LAB.lab.PID`; the caller holds the lab's lock, so no `up` is writing one now).
    public static func removeStoredLab(_ lab: String) {
        unlink(labPath(lab))
        let prefix = "\(lab).lab."
        for f in directoryEntries(directory) where f.hasPrefix(prefix) && Int32(f.dropFirst(prefix.count)) != nil {
            unlink("\(directory)/\(f)")
        }
    }

    /// The resolved lab stored by `up`, or nil if there is none (or it cannot be read).
    public static func loadLab(_ name: String) throws -> Lab? {
        guard let text = readSmallFile(labPath(name)) else { return nil }
        return try LabCodec.decode(text)
    }

    private let fd: Int32
    public let lab: String

    private init(lab: String, fd: Int32) { self.lab = lab; self.fd = fd }
    deinit { close(fd) }

    /// Starts a record for a lab that must not be up yet (O_EXCL: two `up`s cannot both win).
    public static func begin(lab: String, backend: Backend) throws -> LabRecord {
        if mkdir(directory, 0o755) != 0 && errno != EEXIST { throw SystemError("mkdir \(directory)") }
        let fd = open(path(lab), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else {
            if errno == EEXIST { throw alreadyUp(lab) }
            throw SystemError("create \(path(lab))")
        }
        let r = LabRecord(lab: lab, fd: fd)
        try r.append("cgnat-lab 1")
        try r.append("backend \(backend.rawValue)")
        try r.append("pid \(getpid())")
        return r
    }

    /// What a record found under the lab's exclusive lock means: no `up` or `down` runs, so a
    /// record that is not complete was left by one that died.
    static func alreadyUp(_ lab: String) -> UsageError {
        guard let c = load(lab: lab) else { return UsageError("lab '\(lab)' is already up: run `cgnat down --lab \(lab)` first") }
        if access(downMarkerPath(lab), F_OK) == 0 {
            return UsageError("lab '\(lab)' was half taken down by a `down` that died: run `cgnat down --lab \(lab)` again")
        }
        if !c.complete {
            let who = c.pid.map { " (process \($0) is gone)" } ?? ""
            return UsageError("lab '\(lab)' was left half-built by an `up` or `down` that died\(who): run `cgnat down --lab \(lab)` to clean it up")
        }
        return UsageError("lab '\(lab)' is already up (\(c.backend?.rawValue ?? "?") backend): use it, or run `cgnat down --lab \(lab)` first")
    }

    public func append(_ line: String) throws {
        let bytes = Array((line + "\n").utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { throw SystemError("write \(LabRecord.path(lab))") }
    }

    /// Adds a line to the record of a lab that is up (things made after `up`: cgroups, tmux,
    /// registered commands). Under the lab's shared lock, so a `down` (which holds it
    /// exclusively) either sees the line or runs before it, when the record is gone and this fails.
    public static func note(lab: String, _ line: String) throws {
        let lock = try LabLock.acquire(lab: lab, .shared)
        defer { lock.release() }
        let fd = open(path(lab), O_WRONLY | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else {
            if errno == ENOENT { throw UsageError("lab '\(lab)' is not up (it went down): run `cgnat up --lab \(lab)` first") }
            throw SystemError("open \(path(lab))")
        }
        defer { close(fd) }
        let bytes = Array((line + "\n").utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { throw SystemError("write \(path(lab))") }
    }

    public static func load(lab: String) -> Contents? {
        readSmallFile(path(lab)).map { Contents(parsing: $0) }
    }

    /// The record file's identity (device, inode): a `down` and a new `up` in between give a new one.
    public static func fileIdentity(lab: String) -> NetNamespace.Identity? {
        var st = stat()
        guard stat(path(lab), &st) == 0 else { return nil }
        return .init(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    public static func remove(lab: String) { unlink(path(lab)) }

    /// Labs that have a record on this machine.
    public static func labs() -> [String] {
        directoryEntries(directory).filter { $0.hasSuffix(".state") }.map { String($0.dropLast(6)) }.sorted()
    }
}
