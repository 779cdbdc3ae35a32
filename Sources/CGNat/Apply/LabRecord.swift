import Glibc
import Netlink

/// The ownership record of a lab: which namespaces `up` created, by identity (nsfs inode), so
/// that `down` removes exactly those, also after a crash, and never a namespace of the same name
/// that someone else made. Append-only text under /run (tmpfs: it goes when the namespaces go).
///
///     cgnat-lab 1
///     backend netns
///     pid 1234
///     pending cgnat-main          <- about to create; a plain file may be left if we crash here
///     ns cgnat-main 4:4026532345  <- created and mounted: ours
///     complete
public final class LabRecord {
    public static var directory = "/run/cgnat"

    public struct Contents: Equatable, Sendable {
        public var backend: Backend?
        public var pid: Int32?
        public var pending: [String] = []
        public var namespaces: [(name: String, identity: NetNamespace.Identity)] = []
        public var complete = false
        /// Cgroups made for commands run inside a VRF (`exec`/`shell` on the VRF backend).
        public var cgroups: [String] = []

        public static func == (a: Contents, b: Contents) -> Bool {
            a.backend == b.backend && a.pid == b.pid && a.pending == b.pending && a.complete == b.complete
                && a.namespaces.map(\.name) == b.namespaces.map(\.name)
                && a.namespaces.map(\.identity) == b.namespaces.map(\.identity)
        }

        public init() {}

        /// Parses a record; unknown lines are ignored so newer records stay readable.
        public init(parsing text: String) {
            for line in text.split(separator: "\n") {
                let f = line.split(separator: " ").map(String.init)
                guard let key = f.first else { continue }
                switch key {
                case "backend": backend = f.count > 1 ? Backend(rawValue: f[1]) : nil
                case "pid": pid = f.count > 1 ? Int32(f[1]) : nil
                case "pending": if f.count > 1 { pending.append(f[1]) }
                case "ns":
                    guard f.count > 2 else { continue }
                    let id = f[2].split(separator: ":")
                    if id.count == 2, let d = UInt64(id[0]), let i = UInt64(id[1]) {
                        namespaces.append((f[1], .init(device: d, inode: i)))
                        pending.removeAll { $0 == f[1] }
                    }
                case "complete": complete = true
                case "cgroup": if f.count > 1, !cgroups.contains(f[1]) { cgroups.append(f[1]) }
                default: continue
                }
            }
        }
    }

    public static func path(_ lab: String) -> String { "\(directory)/\(lab).state" }

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

    static func alreadyUp(_ lab: String) -> UsageError {
        guard let c = load(lab: lab) else { return UsageError("lab '\(lab)' is already up: run `cgnat down --lab \(lab)` first") }
        if !c.complete, let pid = c.pid, kill(pid, 0) == 0 || errno == EPERM {
            return UsageError("lab '\(lab)' is being brought up by process \(pid); wait for it, or run `cgnat down --lab \(lab)`")
        }
        if !c.complete {
            return UsageError("lab '\(lab)' was left half-built by a crashed `up`: run `cgnat down --lab \(lab)` to clean it up")
        }
        return UsageError("lab '\(lab)' is already up (\(c.backend?.rawValue ?? "?") backend): use it, or run `cgnat down --lab \(lab)` first")
    }

    public func append(_ line: String) throws {
        let bytes = Array((line + "\n").utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { throw SystemError("write \(LabRecord.path(lab))") }
    }

    /// Adds a line to the record of a lab that is up (things made after `up`, such as cgroups).
    public static func note(lab: String, _ line: String) throws {
        let fd = open(path(lab), O_WRONLY | O_APPEND | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open \(path(lab))") }
        defer { close(fd) }
        let bytes = Array((line + "\n").utf8)
        guard write(fd, bytes, bytes.count) == bytes.count else { throw SystemError("write \(path(lab))") }
    }

    public static func load(lab: String) -> Contents? {
        let fd = open(path(lab), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var data: [UInt8] = []
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = read(fd, &buf, buf.count)
            if n <= 0 { break }
            data += buf[0..<n]
        }
        return Contents(parsing: String(decoding: data, as: UTF8.self))
    }

    public static func remove(lab: String) { unlink(path(lab)) }

    /// Labs that have a record on this machine.
    public static func labs() -> [String] {
        directoryEntries(directory).filter { $0.hasSuffix(".state") }.map { String($0.dropLast(6)) }.sorted()
    }
}
