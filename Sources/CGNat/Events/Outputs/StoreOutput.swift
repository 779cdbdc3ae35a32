import CNetlinkShim
import Glibc
import Netlink

/// The local NAT log store as an output of `cgnat events`: mapping records as JSON lines (and a
/// few control lines: run, policy, heartbeat, synced, close) to the `cgnat-store append` helper,
/// which links GRDB/SQLite so that `cgnat` does not. The reader thread only appends to a bounded
/// buffer; a writer thread of its own sends it down a non-blocking socket, so a slow disk never
/// stalls the netlink reader: what does not fit is counted as dropped.
public final class StoreOutput: EventOutput {
    public let name: String
    public let path: String
    let destination: Bool
    let capacity: Int
    let fd: Int32
    let pid: pid_t

    private var lock = pthread_mutex_t()
    private var cond = pthread_cond_t()
    private var pending: [UInt8] = []
    private var pendingItems = 0
    private var closing = false
    private var closeDeadline = 0.0
    private var childGone = false
    private var droppedCount: UInt64 = 0
    private var deliveredCount: UInt64 = 0
    private var syncedSent = false
    private var writer: OSThread?
    private var closed = false

    /// Heartbeats mark the run alive in the store; a gap after the last one is a logger that died.
    public static let heartbeatMilliseconds = 2000.0

    /// The helper: $CGNAT_STORE_HELPER, else `cgnat-store` next to the running binary.
    public static var helperPath: String {
        if let h = getenv("CGNAT_STORE_HELPER"), h.pointee != 0 { return String(cString: h) }
        let me = Spawn.selfPath
        let dir = me.lastIndex(of: "/").map { String(me[..<$0]) } ?? "."
        return "\(dir)/cgnat-store"
    }

    /// Where `whois --at` looks when given no --store: /var/lib/cgnat/LAB.db.
    public static func defaultPath(lab: String) -> String { "/var/lib/cgnat/\(lab).db" }

    /// Starts the helper on `path` and tells it a run starts with `lab` as the policy in force.
    public init(path: String, lab: Lab, retentionDays: Int? = nil, destination: Bool = true, capacity: Int = 32 << 20,
                helper: String = StoreOutput.helperPath) throws {
        self.path = path
        self.destination = destination
        self.capacity = capacity
        name = "store \(path)"
        guard access(helper, X_OK) == 0 else {
            throw UsageError("--store needs the store helper \(helper), which is missing (it is built and installed next to cgnat; set CGNAT_STORE_HELPER to use another)")
        }
        let dir = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        if !dir.isEmpty, access(dir, F_OK) != 0 {
            // The default place (/var/lib/cgnat) may not exist yet; one level is created, no more.
            if mkdir(dir, 0o755) != 0 {
                throw UsageError("--store \(path): cannot create the folder \(dir) (\(String(cString: strerror(errno)))): create it, or give another path")
            }
        }
        var sv: [Int32] = [-1, -1]
        // A socket, not a pipe: send(MSG_NOSIGNAL) turns a helper that died into EPIPE instead of
        // a SIGPIPE that would end `events`.
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &sv) == 0 else {
            throw SystemError("socketpair for the store helper")
        }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_adddup2(&actions, sv[1], 0)
        posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        var argv = [helper, "append", "--db", path]
        if let retentionDays { argv += ["--retention", String(retentionDays)] }
        let cargs = argv.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) } }
        var child: pid_t = 0
        // Its own process group: a Ctrl-C meant for `events` must not kill the helper before
        // `events` has sent it the close.
        let rc = Spawn.withCleanAttributes(ownProcessGroup: true) { posix_spawn(&child, helper, &actions, &$0, cargs, environ) }
        Glibc.close(sv[1])
        guard rc == 0 else {
            Glibc.close(sv[0])
            throw UsageError("cannot run the store helper \(helper): \(String(cString: strerror(rc)))")
        }
        pid = child
        fd = sv[0]
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        pthread_mutex_init(&lock, nil)
        pthread_cond_init(&cond, nil)
        let now = EventFormatter.realtimeNow()
        // The policy came into force when the lab came up: `up` writes the stored model once.
        var st = stat()
        let since = stat(LabRecord.labPath(lab.name), &st) == 0
            ? UInt64(st.st_mtim.tv_sec) * 1_000_000_000 + UInt64(st.st_mtim.tv_nsec) : now
        var policy = "{\"event\":\"policy\",\"time\":\"\(EventFormatter.isoTime(min(since, now)))\",\"lab\":"
        JSON.quote(lab.name, into: &policy)
        policy += ",\"policy\":"
        JSON.quote(LabCodec.encode(lab), into: &policy)
        policy += "}\n"
        // Deterministic blocks are allocated by the policy when the lab comes up: each one is
        // stored as a block record from then (the store keeps one open record per block, so a
        // restarted logger adds none), closed when the lab goes down: `block` evidence of whois --at.
        let sinceText = EventFormatter.isoTime(min(since, now))
        var blocks = ""
        for b in NATLogEvent.portBlocks(of: lab, timeMilliseconds: min(since, now) / 1_000_000) {
            guard let ports = b.ports, let inside = b.inside, let outside = b.outside else { continue }
            blocks += "{\"event\":\"block\",\"time\":\"\(sinceText)\",\"domain_id\":\(b.vrfID),\"domain\":"
            JSON.quote(b.domain ?? "", into: &blocks)
            blocks += ",\"inside\":\"\(inside)\",\"outside\":\"\(outside)\",\"first_port\":\(ports.lowerBound),\"last_port\":\(ports.upperBound)}\n"
        }
        control("{\"event\":\"run\",\"time\":\"\(EventFormatter.isoTime(now))\",\"pid\":\(getpid())}\n" + policy + blocks)
        writer = OSThread { [unowned self] in self.writeLoop() }
    }

    public var dropped: UInt64 { pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }; return droppedCount }
    public var delivered: UInt64 { pthread_mutex_lock(&lock); defer { pthread_mutex_unlock(&lock) }; return deliveredCount }

    public func submit(_ item: EventStream.Item) {
        guard case .record(let r) = item else { return }
        var line = EventFormatter.jsonLine(r, destination: destination)
        line += "\n"
        pthread_mutex_lock(&lock)
        if childGone || pending.count + line.utf8.count > capacity {
            droppedCount += 1
        } else {
            pending.append(contentsOf: line.utf8)
            pendingItems += 1
        }
        pthread_mutex_unlock(&lock)
    }

    public func flush() {
        // The first flush follows the dump of the mappings that existed at start: from then on
        // the store knows which sessions an earlier run left open really ended.
        if !syncedSent {
            syncedSent = true
            control("{\"event\":\"synced\",\"time\":\"\(EventFormatter.isoTime(EventFormatter.realtimeNow()))\"}\n")
        }
        pthread_mutex_lock(&lock)
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&lock)
    }

    /// Control lines go in whatever the buffer holds: they are few and small.
    private func control(_ text: String) {
        pthread_mutex_lock(&lock)
        pending.append(contentsOf: text.utf8)
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&lock)
    }

    private func writeLoop() {
        var lastBeat = monotonicMilliseconds()
        while true {
            pthread_mutex_lock(&lock)
            while pending.isEmpty && !closing && monotonicMilliseconds() - lastBeat < Self.heartbeatMilliseconds {
                var ts = timespec()
                clock_gettime(CLOCK_REALTIME, &ts)
                ts.tv_sec += 1
                pthread_cond_timedwait(&cond, &lock, &ts)
            }
            if !closing && monotonicMilliseconds() - lastBeat >= Self.heartbeatMilliseconds {
                lastBeat = monotonicMilliseconds()
                pending.append(contentsOf: "{\"event\":\"heartbeat\",\"time\":\"\(EventFormatter.isoTime(EventFormatter.realtimeNow()))\"}\n".utf8)
            }
            let chunk = pending, items = pendingItems, ending = closing
            pending = []
            pendingItems = 0
            pthread_mutex_unlock(&lock)
            let ok = chunk.isEmpty || send(chunk)
            pthread_mutex_lock(&lock)
            if ok { deliveredCount += UInt64(items) } else { droppedCount += UInt64(items); childGone = true }
            let done = ending && (pending.isEmpty || childGone)
            if childGone { droppedCount += UInt64(pendingItems); pending = []; pendingItems = 0 }
            pthread_mutex_unlock(&lock)
            if done { return }
        }
    }

    /// Sends all of `bytes`; waits while the helper is slow, except past the close's deadline.
    private func send(_ bytes: [UInt8]) -> Bool {
        var off = 0
        while off < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + off, bytes.count - off, Int32(MSG_NOSIGNAL)) }
            if n > 0 { off += n; continue }
            if n < 0 && errno == EINTR { continue }
            guard n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) else { return false }
            pthread_mutex_lock(&lock)
            let late = closing && monotonicMilliseconds() > closeDeadline
            pthread_mutex_unlock(&lock)
            if late { return false }
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&pfd, 1, 100)
        }
        return true
    }

    /// Sends the close (sessions still open end now, as "lab down" or "logger stopped") and what is
    /// queued, then gives the helper a moment to commit. Bounded: `down` kills what is still
    /// running a second after its SIGTERM, and the helper finishes its last commit on its own.
    public func close(labWentDown: Bool) {
        guard !closed else { return }
        closed = true
        let reason = labWentDown ? "lab down" : "logger stopped"
        pthread_mutex_lock(&lock)
        pending.append(contentsOf: "{\"event\":\"close\",\"time\":\"\(EventFormatter.isoTime(EventFormatter.realtimeNow()))\",\"reason\":\"\(reason)\"}\n".utf8)
        closing = true
        closeDeadline = monotonicMilliseconds() + 400
        pthread_cond_signal(&cond)
        pthread_mutex_unlock(&lock)
        writer?.join()
        writer = nil
        Glibc.close(fd)   // end of input: the helper commits and exits
        let until = monotonicMilliseconds() + 400
        var status: Int32 = 0
        while monotonicMilliseconds() < until {
            let r = waitpid(pid, &status, WNOHANG)
            if r == pid || (r < 0 && errno != EINTR) { return }
            usleep(5000)
        }
    }

    deinit {
        close(labWentDown: false)
        pthread_cond_destroy(&cond)
        pthread_mutex_destroy(&lock)
    }
}

/// `cgnat-store query`: the store's answer about one public mapping at one moment.
public enum StoreQuery {
    public static func run(path: String, outside: IPAddress, port: UInt16, atMilliseconds at: Int64, protos: [UInt8]) throws -> JSON {
        let helper = StoreOutput.helperPath
        guard access(helper, X_OK) == 0 else {
            throw UsageError("whois --at needs the store helper \(helper), which is missing (it is built and installed next to cgnat; set CGNAT_STORE_HELPER to use another)")
        }
        guard access(path, F_OK) == 0 else {
            throw UsageError("no NAT log store at \(path): `cgnat events --store \(path)` writes one; give --store FILE for another")
        }
        let r = try LabSource.capture([helper, "query", "--db", path, "--outside", outside.description, "--port", String(port),
                                       "--at", String(at), "--proto", protos.map(String.init).joined(separator: ",")])
        guard r.status == 0 else {
            var e = r.stderr
            while e.last == "\n" { e.removeLast() }
            throw UsageError(e.isEmpty ? "\(helper) query failed (exit \(r.status))" : e)
        }
        do { return try JSON.parse(r.stdout) } catch {
            throw UsageError("\(helper) answered something cgnat cannot read (\(error)): are cgnat and cgnat-store from the same build?")
        }
    }
}
