import CNetlinkShim
import Glibc
import Netlink

/// `cgnat trace`: runs a command in a context with nftables tracing on for its packets in every
/// router namespace, and collects the kernel's trace events.
///
/// Events of all router namespaces arrive on ONE NETLINK_NETFILTER socket, opened in the router's
/// namespace with NETLINK_LISTEN_ALL_NSID: the kernel then queues every namespace's events on it in
/// the order they happened (a packet crosses blue -> main -> uplink within one softirq, long before
/// a reader wakes up, and netlink messages carry no timestamps), and tags each with the nsid of the
/// namespace that sent it. On the VRF backend there is only the router namespace.
public enum TraceSession {
    public enum ChildOutput: Sendable { case inherit, stderr, discard }

    public struct Request: Sendable {
        public var lab: Lab
        public var context: String
        public var command: [String]
        /// An argv prefix that runs the command in the context (`cgnat exec --lab L CTX --`); nil:
        /// spawn it from a thread that has entered the context's namespace.
        public var launcher: [String]?
        public var childOutput: ChildOutput = .inherit
        /// How long to keep listening after the command ended (late replies, ICMP errors).
        public var graceMilliseconds: Int32 = 300

        public init(lab: Lab, context: String, command: [String], launcher: [String]? = nil) {
            self.lab = lab; self.context = context; self.command = command; self.launcher = launcher
        }
    }

    public struct Result: Sendable {
        public var packets: [TracedPacket]
        public var events: [RecordedTraceEvent]
        public var namespaces: [TraceNamespaceInfo]
        public var conntrack: [UInt32: ConntrackEntry]
        public var exitStatus: Int32
        public var table: TraceTable
        /// Set when the kernel dropped events (ENOBUFS): the trace is incomplete.
        public var lostEvents: Bool
        /// The raw trace messages as received (for recording test vectors).
        public var rawMessages: [(context: String, bytes: [UInt8])]
    }

    /// The running child, for signal handlers that forward SIGINT/SIGTERM to it.
    nonisolated(unsafe) public static var childPID: pid_t = 0
    /// Set by a signal handler: do not start the command; clean up.
    nonisolated(unsafe) public static var interrupted: Int32 = 0

    public static func forwardSignal(_ sig: Int32) {
        interrupted = 1
        let pid = childPID
        if pid > 0 { kill(pid, sig) }
    }

    struct Traced {
        var namespace: String
        var context: String
        var fd: Int32
    }

    /// The router namespaces a packet of the lab can cross, with the context that names each.
    static func routerNamespaces(_ lab: Lab, backend: Backend) -> [(namespace: String, context: String)] {
        var out: [(String, String)] = []
        let contexts = lab.contexts(backend: backend)
        for c in contexts where c.kind == .router && !out.contains(where: { $0.0 == c.namespace }) { out.append((c.namespace, c.name)) }
        for c in contexts where c.kind == .domain && !out.contains(where: { $0.0 == c.namespace }) { out.append((c.namespace, c.name)) }
        return out
    }

    /// The context's own addresses, and the NAT address its replies come back to (subscribers).
    static func addresses(of ctx: Context, lab: Lab) -> (own: [IPAddress], nat: [IPAddress]) {
        let r = lab.router
        switch ctx.kind {
        case .host:
            guard let h = lab.hosts.first(where: { $0.name == ctx.name }) else { return ([], []) }
            let own = (h.addresses + h.loopbackAddresses).map(\.address)
            return (own, h.attachment == .uplink ? [] : [r.nat.publicAddress])
        case .router:
            return (r.uplink.addresses.map(\.address), [])
        case .domain:
            let d = ctx.name.split(separator: ":").last.map(String.init) ?? ""
            if let s = lab.domain(named: d) { return (s.addresses.map(\.address), [r.nat.publicAddress]) }
            return (r.uplink.addresses.map(\.address), [])
        }
    }

    /// Addresses named in the command's arguments (ping's target, `-I` source, ...).
    public static func destinations(in command: [String]) -> [IPAddress] {
        var out: [IPAddress] = []
        for arg in command.dropFirst() {
            let bare = arg.split(separator: "%").first.map(String.init) ?? arg
            if let a = IPAddress(bare), !out.contains(a) { out.append(a) }
        }
        return out
    }

    public static func run(_ req: Request) throws -> Result {
        try LabControl.requireRoot("cgnat trace")
        guard !req.command.isEmpty else { throw UsageError("trace needs a command: cgnat trace CONTEXT -- CMD ARGS...") }
        let running = try RunningLab.adopt(req.lab)
        let backend = running.backend
        let (ctx, ctxFD) = try running.open(context: req.context)
        defer { close(ctxFD) }
        _ = try Nftables.preflight()
        // One trace per lab at a time (they share the table's name); a table left by a trace that
        // was killed (-9: no cleanup ran) is removed here.
        if let other = otherTraces(running).first {
            throw UsageError("another trace (process \(other.pid)) is running in lab '\(req.lab.name)': wait for it to end")
        }

        let (own, nat) = addresses(of: ctx, lab: req.lab)
        let table = TraceTable(sources: own, destinations: destinations(in: req.command), natAddresses: nat)
        var traced: [Traced] = []
        defer { traced.forEach { close($0.fd) } }
        for (ns, label) in routerNamespaces(req.lab, backend: backend) {
            traced.append(Traced(namespace: ns, context: label, fd: try NetNamespace.open(ns)))
        }
        guard let listener = traced.first else { throw UsageError("lab \(req.lab.name) has no router namespace") }

        // The one socket for every namespace's events, and the nsid of each namespace as seen from it.
        let socket: NetlinkSocket = try NetNamespace.run(in: listener.fd) {
            let s = try NetlinkSocket(protocol: 12, groups: 1 << (NFTrace.group - 1) | ConntrackSocket.newEvents)
            var one: Int32 = 1
            guard setsockopt(s.fd, SOL_NETLINK, NETLINK_LISTEN_ALL_NSID, &one, socklen_t(MemoryLayout<Int32>.size)) == 0 else {
                throw SystemError("listen to trace events of all namespaces (NETLINK_LISTEN_ALL_NSID)")
            }
            s.setReceiveBuffer(8 << 20)
            return s
        }
        defer { socket.close() }
        var contextByNSID: [Int32: String] = [:]
        for t in traced.dropFirst() {
            let id = try NetNamespace.run(in: listener.fd) { try nsid(of: t.fd) }
            contextByNSID[id] = t.context
        }

        // Trace tables in, always out again (also after an error or a signal: callers install
        // handlers that only set `interrupted` and forward the signal to the child).
        var installed: [Traced] = []
        defer {
            for t in installed { _ = try? NetNamespace.run(in: t.fd) { try Nftables().run(TraceTable.deleteText) } }
        }
        var infos: [TraceNamespaceInfo] = []
        for t in traced {
            installed.append(t)
            let info = try NetNamespace.run(in: t.fd) { () -> TraceNamespaceInfo in
                try Nftables().run("add table inet \(TraceTable.name)\n" + TraceTable.deleteText)
                try Nftables().run(table.text)
                let listing = try Nftables(output: .handle).run("list ruleset")
                let rs = try RouteSocket()
                defer { rs.close() }
                let links = Dictionary(try rs.links().map { (UInt32(bitPattern: $0.index), $0.name) }, uniquingKeysWith: { a, _ in a })
                return TraceNamespaceInfo(context: t.context, links: links, rules: RuleIndex(listing: listing))
            }
            infos.append(info)
        }

        // Reader thread: everything that arrives until told to stop.
        var stopPipe: [Int32] = [-1, -1]
        guard pipe(&stopPipe) == 0 else { throw SystemError("pipe") }
        for f in stopPipe { _ = fcntl(f, F_SETFD, FD_CLOEXEC) }
        defer { close(stopPipe[0]); close(stopPipe[1]) }
        let collector = Collector(fd: socket.fd, stopFD: stopPipe[0])
        let reader = OSThread { collector.run() }
        var status: Int32 = -1
        do {
            if interrupted == 0 {
                status = try spawnAndWait(req, namespaceFD: ctxFD)
            }
            var ts = timespec(tv_sec: Int(req.graceMilliseconds / 1000), tv_nsec: Int(req.graceMilliseconds % 1000) * 1_000_000)
            var rem = timespec()
            while nanosleep(&ts, &rem) != 0 && errno == EINTR { ts = rem }
        } catch {
            _ = write(stopPipe[1], "x", 1)
            reader.join()
            throw error
        }
        _ = write(stopPipe[1], "x", 1)
        reader.join()

        // Conntrack entries the events did not show (flows older than the trace).
        var conntrack: [UInt32: ConntrackEntry] = [:]
        for t in traced {
            if let entries = try? NetNamespace.run(in: t.fd, { () -> [ConntrackEntry] in
                let c = try ConntrackSocket()
                defer { c.close() }
                return try c.dump()
            }) {
                for e in entries { if let id = e.id { conntrack[id] = e } }
            }
        }
        var events: [RecordedTraceEvent] = []
        var raw: [(String, [UInt8])] = []
        for (nsidValue, m) in collector.messages {
            let label = nsidValue.flatMap { contextByNSID[$0] } ?? (nsidValue == nil ? listener.context : nil)
            guard let label else { continue }   // another namespace with an nsid here: not ours
            if let e = NFTrace.decode(m) {
                events.append(RecordedTraceEvent(context: label, event: e))
                raw.append((label, m.encoded()))
            } else if let ev = ConntrackMessage.decodeEvent(m), let id = ev.entry.id, ev.kind == .new {
                conntrack[id] = ev.entry
            }
        }
        let vrfs = Set(req.lab.contexts(backend: backend).compactMap(\.vrf))
        let joined = TraceAnalysis.joinVRFPasses(TraceAnalysis.packets(events, namespaces: infos, conntrack: conntrack), vrfDevices: vrfs)
        let packets = backend == .vrf ? TraceAnalysis.labelVRFDomains(joined, devices: req.lab.vrfDomainDevices()) : joined
        return Result(packets: packets, events: events, namespaces: infos, conntrack: conntrack, exitStatus: status,
                      table: table, lostEvents: collector.overrun, rawMessages: raw)
    }

    /// Live `trace` commands of the lab other than this process (from the record).
    static func otherTraces(_ running: RunningLab) -> [ProcessStamp] {
        let me = getpid()
        let record = LabRecord.load(lab: running.name) ?? running.record
        return record.processes.filter { $0.role == "trace" && $0.process.pid != me && $0.process.alive }.map(\.process)
    }

    /// Router contexts that hold a `table inet cgnat_trace` no running trace owns (a trace
    /// killed by SIGKILL leaves it; the next trace or `down` removes it).
    public static func leftoverTables(_ running: RunningLab) -> [String] {
        guard otherTraces(running).isEmpty else { return [] }
        var out: [String] = []
        for (ns, label) in routerNamespaces(running.lab, backend: running.backend) {
            guard let fd = try? NetNamespace.open(ns) else { continue }
            defer { close(fd) }
            let listed = (try? NetNamespace.run(in: fd) { try Nftables().run("list tables") }) ?? ""
            if listed.split(separator: "\n").contains(where: { $0.trimmingCharacters() == "table inet \(TraceTable.name)" }) {
                out.append(label)
            }
        }
        return out
    }

    /// The nsid the calling thread's namespace uses for the namespace behind `fd`; assigns one
    /// (as `ip netns set NAME auto` does) when there is none yet.
    static func nsid(of fd: Int32) throws -> Int32 {
        let RTM_NEWNSID: UInt16 = 88, RTM_GETNSID: UInt16 = 90, NETNSA_NSID: UInt16 = 1, NETNSA_FD: UInt16 = 3
        let s = try NetlinkSocket(protocol: 0)
        defer { s.close() }
        func get() throws -> Int32 {
            let m = NetlinkMessage(type: RTM_GETNSID, flags: 0, fixed: [0, 0, 0, 0]) { $0.u32(NETNSA_FD, UInt32(bitPattern: fd)) }
            return try s.get(m, step: "get nsid").attributes(after: 4)[type: NETNSA_NSID]?.i32 ?? -1
        }
        let id = try get()
        if id >= 0 { return id }
        let add = NetlinkMessage(type: RTM_NEWNSID, flags: 0, fixed: [0, 0, 0, 0]) {
            $0.u32(NETNSA_FD, UInt32(bitPattern: fd)); $0.i32(NETNSA_NSID, -1)
        }
        do { try s.request(add, step: "assign nsid") } catch let e as NetlinkError where e.errno == EEXIST {}
        let again = try get()
        guard again >= 0 else { throw NetlinkError(step: "assign nsid", errno: ENOENT) }
        return again
    }

    static func spawnAndWait(_ req: Request, namespaceFD: Int32) throws -> Int32 {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        switch req.childOutput {
        case .inherit: break
        case .stderr: posix_spawn_file_actions_adddup2(&actions, 2, 1)
        case .discard:
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
            posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0)
        }
        // Signals the caller ignores or handles come back to their defaults in the child.
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for sig in [SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGQUIT] { sigaddset(&defaults, sig) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigdefault(&attr, &defaults)
        posix_spawnattr_setsigmask(&attr, &none)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let argv = (req.launcher ?? []) + req.command
        Output.flush()
        let pid: pid_t = try OSThread.run {
            // A child inherits the namespaces of the thread that spawns it.
            if req.launcher == nil { try NetNamespace.enter(namespaceFD) }
            let cargs = argv.map { strdup($0) } + [nil]
            defer { cargs.forEach { free($0) } }
            var pid: pid_t = 0
            let rc = posix_spawnp(&pid, argv[0], &actions, &attr, cargs, environ)
            guard rc == 0 else { throw UsageError("\(argv[0]): \(String(cString: strerror(rc)))") }
            return pid
        }
        childPID = pid
        defer { childPID = 0 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { throw SystemError("wait for \(argv[0])") }
        }
        return (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }
}

/// Reads the trace socket on its own thread, with the nsid of each message's namespace
/// (nil: the socket's own namespace).
final class Collector: @unchecked Sendable {
    let fd: Int32
    let stopFD: Int32
    var messages: [(Int32?, NetlinkMessage)] = []
    var overrun = false

    init(fd: Int32, stopFD: Int32) { self.fd = fd; self.stopFD = stopFD }

    func run() {
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var control = [UInt8](repeating: 0, count: 64)
        var stopping = false
        while true {
            var fds = [pollfd(fd: fd, events: Int16(POLLIN), revents: 0), pollfd(fd: stopFD, events: Int16(POLLIN), revents: 0)]
            let rc = poll(&fds, 2, stopping ? 0 : 100)
            if rc < 0 { if errno == EINTR { continue }; return }
            if fds[1].revents != 0 { stopping = true }
            if fds[0].revents == 0 {
                if stopping { return }
                continue
            }
            // Drain what is queued.
            while true {
                let got = receive(&buffer, &control)
                if got == 0 { break }
                if got < 0 { break }
            }
        }
    }

    /// One datagram: > 0 bytes read, 0 nothing queued, < 0 error.
    private func receive(_ buffer: inout [UInt8], _ control: inout [UInt8]) -> Int {
        var iov = iovec()
        var msg = msghdr()
        let n: Int = buffer.withUnsafeMutableBytes { buf in
            control.withUnsafeMutableBytes { ctl in
                iov.iov_base = buf.baseAddress
                iov.iov_len = buf.count
                return withUnsafeMutablePointer(to: &iov) { iovp in
                    msg.msg_iov = iovp
                    msg.msg_iovlen = 1
                    msg.msg_control = ctl.baseAddress
                    msg.msg_controllen = ctl.count
                    return recvmsg(fd, &msg, Int32(MSG_DONTWAIT))
                }
            }
        }
        if n < 0 {
            let e = errno
            if e == EAGAIN || e == EWOULDBLOCK { return 0 }
            if e == EINTR { return 1 }
            if e == ENOBUFS { overrun = true; return 1 }
            return -1
        }
        // cmsghdr: size_t len, int level, int type, then data (aligned to size_t).
        var nsid: Int32?
        let hdr = MemoryLayout<Int>.size + 8
        var off = 0
        while off + hdr <= Int(msg.msg_controllen) {
            let r = ByteReader(control[off..<Int(msg.msg_controllen)])
            let len = Int(r.u64(0))
            if len < hdr { break }
            if r.i32(8) == SOL_NETLINK && r.i32(12) == NETLINK_LISTEN_ALL_NSID { nsid = r.i32(hdr) }
            off += (len + 7) & ~7
        }
        if let ms = try? NetlinkMessage.parse(Array(buffer[0..<n])) {
            for m in ms {
                if m.type == NL.NLMSG_OVERRUN { overrun = true; continue }
                messages.append((nsid, m))
            }
        }
        return max(n, 1)
    }
}
