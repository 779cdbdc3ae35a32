import CNetlinkShim
import Glibc

/// Named network namespaces, made and removed the way iproute2 does (`ip netns add/del`), so that
/// `ip netns exec NAME` reaches them: a bind mount of the namespace onto /run/netns/NAME.
public enum NetNamespace {
    public static let runDirectory = "/run/netns"

    /// Identity of a namespace: the nsfs device and inode, as `stat` on its file shows them.
    /// Two namespaces are the same exactly when these match.
    public struct Identity: Hashable, Sendable, CustomStringConvertible {
        public let device: UInt64
        public let inode: UInt64
        public init(device: UInt64, inode: UInt64) { self.device = device; self.inode = inode }
        public var description: String { "\(device):\(inode)" }
    }

    public static func path(_ name: String) -> String { "\(runDirectory)/\(name)" }

    /// The identity of the namespace mounted at /run/netns/NAME, or nil if none is mounted there
    /// (a missing file, or a plain file left by a crash between create and mount).
    public static func identity(of name: String) -> Identity? {
        var st = stat()
        guard stat(path(name), &st) == 0 else { return nil }
        var root = stat()
        // A bind-mounted namespace lives on nsfs, never on the filesystem of /run/netns itself.
        guard stat(runDirectory, &root) == 0, st.st_dev != root.st_dev else { return nil }
        return Identity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    public static func identity(ofFD fd: Int32) -> Identity? {
        var st = stat()
        guard fstat(fd, &st) == 0 else { return nil }
        return Identity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
    }

    /// Whether something (a namespace or a stale file) already holds the name.
    public static func exists(_ name: String) -> Bool { access(path(name), F_OK) == 0 }

    public static func names() -> [String] { directoryEntries(runDirectory).sorted() }

    /// Makes /run/netns a shared mount (once per boot), so namespaces mounted there later are
    /// visible in other mount namespaces, as iproute2 does.
    nonisolated(unsafe) private static var runDirectoryPrepared = false

    static func prepareRunDirectory() throws {
        // Once per process: a thousand namespaces need not remount it a thousand times.
        if runDirectoryPrepared { return }
        if mkdir(runDirectory, 0o755) != 0 && errno != EEXIST { throw SystemError("mkdir \(runDirectory)") }
        if mount("", runDirectory, "none", UInt(MS_SHARED | MS_REC), nil) == 0 { runDirectoryPrepared = true; return }
        guard errno == EINVAL else { throw SystemError("make \(runDirectory) a shared mount") }
        guard mount(runDirectory, runDirectory, "none", UInt(MS_BIND | MS_REC), nil) == 0 else {
            throw SystemError("bind-mount \(runDirectory) onto itself")
        }
        guard mount("", runDirectory, "none", UInt(MS_SHARED | MS_REC), nil) == 0 else {
            throw SystemError("make \(runDirectory) a shared mount")
        }
        runDirectoryPrepared = true
    }

    /// The name is held by something else (a namespace or a file): nothing was created.
    public struct NameTaken: Error, CustomStringConvertible, Sendable {
        public let path: String
        public var description: String { "create \(path): File exists" }
    }

    /// Creates the namespace NAME and returns an open fd on it. `beforeMount` gets the new
    /// namespace's identity after `unshare` and before the bind mount gives it the name, so a
    /// caller can write it down first (a crash in between then leaves nothing it cannot prove is
    /// its own). `inside` runs on the creating thread while it is in the new namespace (set
    /// sysctls, open sockets there). Throws NameTaken if the name is taken; on any other failure
    /// nothing is left behind.
    public static func create(_ name: String, beforeMount: ((Identity) throws -> Void)? = nil,
                              inside: ((Int32) throws -> Void)? = nil) throws -> Int32 {
        try OSThread.run { try createOnThisThread(name, beforeMount: beforeMount, inside: inside) }
    }

    /// Runs `body` on a new OS thread inside a new network namespace of its own that has no name:
    /// the kernel frees it when the thread ends and nothing else holds it, so a scratch namespace
    /// (benchmarks, tests) leaves nothing behind whatever happens. Sockets opened in `body`
    /// belong to it.
    public static func runInScratch<T>(_ body: @escaping () throws -> T) throws -> T {
        try OSThread.run {
            guard cgn_unshare(cgn_clone_newnet()) == 0 else { throw SystemError("unshare a scratch network namespace") }
            return try body()
        }
    }

    /// `create` on the calling thread, which is left in the new namespace: only for a dedicated

    /// OS thread (a worker that makes many namespaces one after another, or one that ends after).
    public static func createOnThisThread(_ name: String, beforeMount: ((Identity) throws -> Void)? = nil,
                                          inside: ((Int32) throws -> Void)? = nil) throws -> Int32 {
        try prepareRunDirectory()
        let p = path(name)
        let marker = Glibc.open(p, O_RDONLY | O_CREAT | O_EXCL, 0)
        guard marker >= 0 else {
            if errno == EEXIST { throw NameTaken(path: p) }
            throw SystemError("create \(p)")
        }
        close(marker)
        do {
            guard cgn_unshare(cgn_clone_newnet()) == 0 else { throw SystemError("unshare a network namespace for \(name)") }
            if let beforeMount {
                var st = stat()
                guard stat("/proc/thread-self/ns/net", &st) == 0 else { throw SystemError("stat the new namespace of \(name)") }
                try beforeMount(Identity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)))
            }
            // /proc/thread-self, not /proc/self: only this thread is in the new namespace.
            guard mount("/proc/thread-self/ns/net", p, "none", UInt(MS_BIND), nil) == 0 else {
                throw SystemError("bind-mount the new namespace onto \(p)")
            }
            let fd = Glibc.open(p, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else { throw SystemError("open \(p)") }
            do { try inside?(fd) } catch { close(fd); throw error }
            return fd
        } catch {
            umount2(p, Int32(MNT_DETACH))
            unlink(p)
            throw error
        }
    }

    /// Removes the name (unmount and unlink). The kernel frees the namespace once nothing else
    /// (a process, an open fd, a socket) holds it.
    public static func delete(_ name: String) throws {
        try unmount(name)
        try unlinkName(name)
    }

    /// The two halves of `delete`, for callers that must survive a crash between them.
    public static func unmount(_ name: String) throws {
        let p = path(name)
        if umount2(p, Int32(MNT_DETACH)) != 0 && errno != EINVAL && errno != ENOENT {
            throw SystemError("unmount \(p)")
        }
    }

    public static func unlinkName(_ name: String) throws {
        let p = path(name)
        if unlink(p) != 0 && errno != ENOENT { throw SystemError("remove \(p)") }
    }

    /// What holds /run/netns/NAME: nothing, a mounted namespace, or a plain file (left by a
    /// crash between creating the name and mounting, or between unmounting and unlinking).
    public enum Occupant: Equatable, Sendable {
        case none
        case namespace(Identity)
        /// A regular file that is not a mount; `empty` when it has no bytes (what cgnat and
        /// iproute2 leave).
        case plainFile(empty: Bool)
        case other
    }

    public static func occupant(_ name: String) -> Occupant {
        var st = stat()
        guard lstat(path(name), &st) == 0 else { return .none }
        if let id = identity(of: name) { return .namespace(id) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { return .other }
        return .plainFile(empty: st.st_size == 0)
    }

    /// Opens /run/netns/NAME.
    public static func open(_ name: String) throws -> Int32 {
        let fd = Glibc.open(path(name), O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw SystemError("open namespace \(name)") }
        return fd
    }

    /// Runs `body` on a fresh thread that has entered the namespace behind `fd`. Sockets opened
    /// there stay in that namespace and may be used from any thread afterwards.
    public static func run<T>(in fd: Int32, _ body: @escaping () throws -> T) throws -> T {
        try OSThread.run {
            guard cgn_setns(fd, cgn_clone_newnet()) == 0 else { throw SystemError("enter network namespace") }
            return try body()
        }
    }

    /// Moves the calling thread into the namespace (for `exec`, just before execve).
    public static func enter(_ fd: Int32) throws {
        guard cgn_setns(fd, cgn_clone_newnet()) == 0 else { throw SystemError("enter network namespace") }
    }

    /// The kernel's cookie of the namespace a socket lives in (SO_NETNS_COOKIE, Linux 5.14+).
    public static func cookie(ofSocket fd: Int32) -> UInt64? {
        var cookie: UInt64 = 0
        var len = socklen_t(MemoryLayout<UInt64>.size)
        guard getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, &cookie, &len) == 0 else { return nil }
        return cookie
    }
}

/// Writes a sysctl of the calling thread's network namespace (/proc/sys/net follows the thread).
public func writeSysctl(_ key: String, _ value: String) throws {
    let path = sysctlPath(key)
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { throw SystemError("sysctl \(key)=\(value): open \(path)") }
    defer { close(fd) }
    let bytes = Array(value.utf8)
    guard write(fd, bytes, bytes.count) == bytes.count else { throw SystemError("sysctl \(key)=\(value)") }
}

public func readSysctl(_ key: String) -> String? {
    let path = sysctlPath(key)
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var buf = [UInt8](repeating: 0, count: 256)
    let n = read(fd, &buf, buf.count)
    guard n >= 0 else { return nil }
    var text = String(decoding: buf[0..<n], as: UTF8.self)
    while text.last?.isWhitespace == true { text.removeLast() }
    return text
}

/// `net.ipv4.conf.t-blue.forwarding` -> `/proc/sys/net/ipv4/conf/t-blue/forwarding`. Interface
/// names may not contain `/`, and a dot in one is written `/` by sysctl(8) convention; we never use dots.
func sysctlPath(_ key: String) -> String {
    "/proc/sys/" + String(key.map { $0 == "." ? "/" : $0 })
}

/// The names in a directory, without `.` and `..`; empty if it cannot be read.
public func directoryEntries(_ path: String) -> [String] {
    guard let dir = opendir(path) else { return [] }
    defer { closedir(dir) }
    var out: [String] = []
    while let ent = readdir(dir) {
        let name = withUnsafeBytes(of: ent.pointee.d_name) { String(cString: $0.bindMemory(to: CChar.self).baseAddress!) }
        if name != "." && name != ".." { out.append(name) }
    }
    return out
}
