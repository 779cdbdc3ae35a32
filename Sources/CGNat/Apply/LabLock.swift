import Glibc
import Netlink

/// A process as the kernel knows it: pid plus its start time (clock ticks after boot, field 22 of
/// /proc/PID/stat), so a pid that was reused by another program is never taken for ours.
public struct ProcessStamp: Hashable, Sendable, CustomStringConvertible {
    public let pid: Int32
    public let start: UInt64
    public init(pid: Int32, start: UInt64) { self.pid = pid; self.start = start }

    public var description: String { "\(pid) \(start)" }

    /// The stamp of a live process (a zombie counts as gone: it only waits for its parent).
    public static func of(pid: Int32) -> ProcessStamp? {
        guard let text = readSmallFile("/proc/\(pid)/stat"), let close = text.lastIndex(of: ")") else { return nil }
        let fields = text[text.index(after: close)...].split(separator: " ")
        // fields[0] is the state (field 3), so starttime (field 22) is fields[19].
        guard fields.count > 19, fields[0] != "Z", fields[0] != "X", let start = UInt64(fields[19]) else { return nil }
        return ProcessStamp(pid: pid, start: start)
    }

    public static var current: ProcessStamp { of(pid: getpid())! }

    public var alive: Bool { ProcessStamp.of(pid: pid) == self }

    /// The process's command line, as `ps` would show it, for messages.
    public static func commandLine(pid: Int32) -> String? {
        guard let raw = readSmallFile("/proc/\(pid)/cmdline"), !raw.isEmpty else { return nil }
        var words = raw.split(separator: "\0", omittingEmptySubsequences: true).map(String.init)
        if let first = words.first, let slash = first.lastIndex(of: "/") { words[0] = String(first[first.index(after: slash)...]) }
        return words.joined(separator: " ")
    }
}

func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var data: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = read(fd, &buf, buf.count)
        if n <= 0 { break }
        data += buf[0..<n]
    }
    return String(decoding: data, as: UTF8.self)
}

/// The lock of one lab: `up` and `down` hold it exclusively for their whole run, commands that
/// register themselves in the record (check, events, trace, shell, tmux) hold it shared for the
/// moment they write their line. flock on /run/cgnat/LAB.lock, a file that outlives the record and
/// is never removed (removing it would let two processes lock two different files). The kernel
/// drops the lock when its holder dies, also by kill -9: a held lock always means a live holder.
public final class LabLock {
    public enum Mode: Sendable { case exclusive, shared }

    /// Another process holds the lab: who, and what it runs.
    public struct Busy: Error, CustomStringConvertible, Sendable {
        public let lab: String
        public let holder: Int32?
        public let command: String?
        public let waitedMilliseconds: Int
        public var description: String {
            let who = holder.map { "process \($0)" + (command.map { " (\($0))" } ?? "") } ?? "another process"
            return "lab '\(lab)' is busy: \(who) holds its lock (waited \(waitedMilliseconds) ms); wait for it to finish and try again"
        }
    }

    public static func path(_ lab: String) -> String { "\(LabRecord.directory)/\(lab).lock" }

    /// How long a command waits for the lock before it gives up; CGNAT_LOCK_WAIT_MS overrides
    /// (bounded to 0...60000).
    public static var defaultWaitMilliseconds: Int {
        if let v = getenv("CGNAT_LOCK_WAIT_MS").flatMap({ Int(String(cString: $0)) }) { return max(0, min(v, 60_000)) }
        return 3000
    }

    private let fd: Int32
    public let lab: String

    private init(lab: String, fd: Int32) { self.lab = lab; self.fd = fd }
    deinit { release() }

    private var released = false
    public func release() {
        guard !released else { return }
        released = true
        close(fd)   // closing the only descriptor drops the flock
    }

    public static func acquire(lab: String, _ mode: Mode, waitMilliseconds: Int = LabLock.defaultWaitMilliseconds) throws -> LabLock {
        if mkdir(LabRecord.directory, 0o755) != 0 && errno != EEXIST { throw SystemError("mkdir \(LabRecord.directory)") }
        // O_CLOEXEC: a child (tmux server, a shell) must not carry the lock on.
        let fd = open(path(lab), O_RDWR | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw SystemError("open \(path(lab))") }
        let op = (mode == .exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB
        let start = monotonicMilliseconds()
        while flock(fd, op) != 0 {
            let e = errno
            if e == EINTR { continue }
            guard e == EWOULDBLOCK else { close(fd); throw SystemError("lock \(path(lab))", errno: e) }
            let waited = monotonicMilliseconds() - start
            if waited >= Double(waitMilliseconds) {
                let holder = holderPID(fd: fd)
                close(fd)
                throw Busy(lab: lab, holder: holder, command: holder.flatMap { ProcessStamp.commandLine(pid: $0) },
                           waitedMilliseconds: Int(waited))
            }
            usleep(10_000)
        }
        return LabLock(lab: lab, fd: fd)
    }

    /// The pid holding a flock on the file behind `fd`, from /proc/locks (the kernel's own list).
    static func holderPID(fd: Int32) -> Int32? {
        var st = stat()
        guard fstat(fd, &st) == 0, let locks = readSmallFile("/proc/locks") else { return nil }
        for line in locks.split(separator: "\n") where !line.contains("->") {
            // "1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF"
            let f = line.split(separator: " ")
            guard f.count >= 6, f[1] == "FLOCK", let pid = Int32(f[4]) else { continue }
            let dev = f[5].split(separator: ":")
            if dev.count == 3, UInt64(dev[2]) == UInt64(st.st_ino) { return pid }
        }
        return nil
    }
}
