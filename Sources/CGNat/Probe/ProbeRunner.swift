import CNetlinkShim
import Glibc
import Netlink

/// Positive evidence for rows that a rule drops silently: the rule's packet counter. A worker
/// announces a probe just before it sends it (`fired`, which returns the probe's ticket); the
/// counter reader (`refresh`, called while the rows run) covers every ticket issued before its
/// read once the counter has risen by at least that many packets.
public protocol DropEvidence: AnyObject, Sendable {
    func fired(_ rule: RuleRef) -> Int
    func covered(_ rule: RuleRef, ticket: Int) -> Bool
    /// How the rule and its count read in a row's detail.
    func describe(_ rule: RuleRef) -> String
    /// Reads the counters once (called by the runner between waits, off the workers' threads).
    func refresh()
}

public struct ProbeRunOptions: Sendable {
    public var timeoutMilliseconds: Int
    /// OS threads, each an event loop over many rows: concurrency stays bounded at any lab size.
    public var workers: Int
    /// Rows in flight per worker at once; the next start as earlier ones are decided.
    public var inFlightPerWorker: Int
    public init(timeoutMilliseconds: Int = 400, workers: Int = 4, inFlightPerWorker: Int = 32) {
        self.timeoutMilliseconds = timeoutMilliseconds
        self.workers = workers
        self.inFlightPerWorker = inFlightPerWorker
    }
}

/// Runs every probe and returns one result per probe, in order.
public func runProbes(_ probes: [Probe], timeoutMilliseconds: Int = 400) -> [ProbeResult] {
    runChecks(probes: probes, pairs: [], options: ProbeRunOptions(timeoutMilliseconds: timeoutMilliseconds))
}

/// Runs every same-port pair; one result (row) per pair.
public func runPairs(_ pairs: [ProbePair], timeoutMilliseconds: Int = 400) -> [ProbeResult] {
    runChecks(probes: [], pairs: pairs, options: ProbeRunOptions(timeoutMilliseconds: timeoutMilliseconds))
}

public func runChecks(probes: [Probe], pairs: [ProbePair] = [], timeoutMilliseconds: Int = 400) -> [ProbeResult] {
    runChecks(probes: probes, pairs: pairs, options: ProbeRunOptions(timeoutMilliseconds: timeoutMilliseconds))
}

/// Runs probes and pairs on a fixed pool of worker threads. Rows are given to workers by their
/// far side (target namespace and interface), so each far side has one capture socket, shared by
/// its rows. Results: the probes in order, then the pairs in order.
///
/// A reach row is decided as soon as its answer came back and the target saw the packet; a
/// blocked row as soon as its evidence is in (the router's reject on the socket, or the rule's
/// counter covering it) with nothing seen at the target; only a row with no possible evidence
/// waits the whole timeout for a leak.
public func runChecks(probes: [Probe], pairs: [ProbePair] = [], options: ProbeRunOptions, evidence: DropEvidence? = nil) -> [ProbeResult] {
    let checks = probes.map { ProbeCheck(probes: [$0], pair: nil) } + pairs.map { ProbeCheck(pair: $0) }
    guard !checks.isEmpty else { return [] }
    raiseFileLimit()
    let timeout = Double(max(1, options.timeoutMilliseconds))
    // Far sides to workers, heaviest first onto the least loaded worker.
    var buckets: [String: [Int]] = [:]
    var bucketOrder: [String] = []
    for (i, c) in checks.enumerated() {
        let key = c.captureKey
        if buckets[key] == nil { bucketOrder.append(key) }
        buckets[key, default: []].append(i)
    }
    let workerCount = max(1, min(options.workers, bucketOrder.count))
    var assigned = [[Int]](repeating: [], count: workerCount)
    for key in bucketOrder.sorted(by: { buckets[$0]!.count > buckets[$1]!.count }) {
        let w = assigned.indices.min { assigned[$0].count < assigned[$1].count }!
        assigned[w] += buckets[key]!
    }
    let done = DoneCounter()
    let workers = assigned.map { idx in
        ProbeWorker(checks: idx.sorted().map { checks[$0] }, timeout: timeout,
                    inFlight: max(1, options.inFlightPerWorker), evidence: evidence)
    }
    let threads = workers.map { w in OSThread { w.run(); done.increment() } }
    // The counters are read here, between the workers' waits, until every worker is done.
    while done.value < workers.count {
        if let evidence { evidence.refresh() }
        usleep(evidence == nil ? 2000 : 500)
    }
    threads.forEach { $0.join() }
    // Closing an AF_PACKET socket waits for an RCU grace period: close them all at once, so that
    // the waits overlap instead of adding up.
    closeConcurrently(workers.flatMap(\.captureFDs))
    return checks.map { $0.finalResult ?? $0.failedResult("internal error: row not run") }
}

final class DoneCounter: @unchecked Sendable {
    private var mutex = pthread_mutex_t()
    private var count = 0
    init() { pthread_mutex_init(&mutex, nil) }
    func increment() { pthread_mutex_lock(&mutex); count += 1; pthread_mutex_unlock(&mutex) }
    var value: Int { pthread_mutex_lock(&mutex); defer { pthread_mutex_unlock(&mutex) }; return count }
}

/// Closes fds on up to 16 threads at once.
func closeConcurrently(_ fds: [Int32]) {
    guard !fds.isEmpty else { return }
    let n = min(16, fds.count)
    let threads = (0..<n).map { t in OSThread { for i in stride(from: t, to: fds.count, by: n) { close(fds[i]) } } }
    threads.forEach { $0.join() }
}

/// Thousands of rows hold thousands of sockets: lift the soft fd limit to the hard one.
func raiseFileLimit() {
    var lim = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim) == 0, lim.rlim_cur < lim.rlim_max else { return }
    lim.rlim_cur = lim.rlim_max
    _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &lim)
}

/// Listener ports in use by this process, per target namespace: a TCP SYN is told apart by its
/// destination port on a shared capture.
final class ListenerPorts: @unchecked Sendable {
    static let shared = ListenerPorts()
    private var mutex = pthread_mutex_t()
    private var used = Set<String>()
    init() { pthread_mutex_init(&mutex, nil) }
    func claim(_ key: String, _ port: UInt16) -> Bool {
        pthread_mutex_lock(&mutex); defer { pthread_mutex_unlock(&mutex) }
        return used.insert("\(key)/\(port)").inserted
    }
    func release(_ key: String, _ port: UInt16) {
        pthread_mutex_lock(&mutex); defer { pthread_mutex_unlock(&mutex) }
        used.remove("\(key)/\(port)")
    }
}

/// One capture socket at a far side, shared by the rows that look there.
final class SharedCapture {
    let fd: Int32
    var byToken: [[UInt8]: (ProbeCheck, Int)] = [:]
    var byTCPPort: [UInt16: ProbeCheck] = [:]
    init(fd: Int32) { self.fd = fd }

    func drain(now: Double) {
        PacketCapture.read(fd, tokenLength: ProbeSender.tokenLength) { packet, ifindex in
            if let t = packet.token, let (check, sender) = byToken[t], check.proto == packet.proto {
                if packet.proto == .udp && packet.destinationPort != check.listenerPort { return }
                check.sightings.append(Sighting(source: packet.source, port: packet.port, destination: packet.destination,
                                                sender: sender, milliseconds: now, interfaceIndex: ifindex))
            } else if packet.proto == .tcp, let check = byTCPPort[packet.destinationPort] {
                check.sightings.append(Sighting(source: packet.source, port: packet.port, destination: packet.destination,
                                                sender: nil, milliseconds: now, interfaceIndex: ifindex))
            }
        }
    }
}

/// One OS thread: sets rows up (entering each row's namespaces), fires them, and decides them in
/// one epoll loop, with at most `inFlight` rows open at a time.
final class ProbeWorker {
    let checks: [ProbeCheck]
    let timeout: Double
    let inFlight: Int
    let evidence: DropEvidence?
    var captures: [String: SharedCapture] = [:]
    var captureFDs: [Int32] { captures.values.map(\.fd) }
    private var epfd: Int32 = -1
    private enum Role { case capture(SharedCapture), listener(ProbeCheck), sender(ProbeCheck, ProbeSender) }
    private var roles: [Role] = []

    init(checks: [ProbeCheck], timeout: Double, inFlight: Int, evidence: DropEvidence?) {
        self.checks = checks
        self.timeout = timeout
        self.inFlight = inFlight
        self.evidence = evidence
    }

    func run() {
        if epfd < 0 { epfd = epoll_create1(Int32(EPOLL_CLOEXEC)) }
        guard epfd >= 0 else {
            let e = errnoText(errno)
            for c in checks { c.finalResult = c.failedResult("epoll: \(e)") }
            return
        }
        defer { close(epfd) }
        var next = 0
        var active: [ProbeCheck] = []
        var events = [epoll_event](repeating: epoll_event(), count: 128)
        while next < checks.count || !active.isEmpty {
            while active.count < inFlight && next < checks.count {
                let c = checks[next]
                next += 1
                start(c)
                if c.finalResult == nil { active.append(c) }
            }
            let now = probeNow()
            var wait = active.map { $0.firedAt + timeout - now }.min() ?? 0
            // Rows waiting on a counter are polled: the reader runs on another thread.
            if active.contains(where: { $0.waitsOnCounter }) { wait = min(wait, 1) }
            let n = epoll_wait(epfd, &events, Int32(events.count), Int32(max(0, wait.rounded(.up))))
            if n < 0 && errno != EINTR { break }
            if n > 0 {
                for e in events[0..<Int(n)] {
                    switch roles[Int(e.data.u64)] {
                    case .capture(let cap): cap.drain(now: probeNow())
                    case .listener(let c): c.serveListener()
                    case .sender(let c, let s): c.handleSender(s, revents: Int16(truncatingIfNeeded: e.events))
                    }
                }
            }
            // Whatever arrived at the far sides until now counts before any row is decided.
            let t = probeNow()
            for cap in captures.values { cap.drain(now: t) }
            active.removeAll { c in
                guard c.decided(evidence: evidence) || t >= c.firedAt + timeout else { return false }
                finish(c, at: t)
                return true
            }
        }
        for c in active { finish(c, at: probeNow()) }
    }

    private func add(_ fd: Int32, _ role: Role, events: UInt32 = EPOLLIN.rawValue) {
        roles.append(role)
        var ev = epoll_event()
        ev.events = events
        ev.data.u64 = UInt64(roles.count - 1)
        _ = epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev)
    }

    /// Sets the row up and fires it; a row that cannot be set up is decided at once.
    private func start(_ c: ProbeCheck) {
        setUp(c)
        c.firedAt = probeNow()
        c.endedAt = c.firedAt
        if c.farError == nil {
            for s in c.senders where s.fd >= 0 {
                if case .counted(let rule) = s.probe.evidence, let evidence { s.ticket = evidence.fired(rule) }
            }
            c.fire()
        } else {
            finish(c, at: c.firedAt)
        }
    }

    /// Opens the row's far side (shared capture, listener) in the target namespace and each
    /// sender's socket in its own; this thread is the worker's own, so it may wander between namespaces.
    func setUp(_ c: ProbeCheck) {
        c.timeout = timeout
        if epfd < 0 { epfd = epoll_create1(Int32(EPOLL_CLOEXEC)) }
        guard c.farError == nil else { return }
        do {
            try NetNamespace.enter(c.target.namespaceFD)
            let cap = try capture(for: c)
            if c.proto != .icmp { try c.openListener() }
            c.capture = cap
            for (i, s) in c.senders.enumerated() { cap.byToken[s.token] = (c, i) }
            if c.proto == .tcp { cap.byTCPPort[c.listenerPort] = c }
            if c.listenerFD >= 0 { add(c.listenerFD, .listener(c)) }
        } catch {
            c.farError = "setup at \(c.target.context): \(error)"
            return
        }
        for s in c.senders {
            do {
                try NetNamespace.enter(s.probe.from.namespaceFD)
                s.fd = try c.openSender(s.probe)
                // Edge-triggered: a datagram socket is always writable; each event is read to EAGAIN.
                add(s.fd, .sender(c, s), events: EPOLLIN.rawValue | EPOLLOUT.rawValue | EPOLLERR.rawValue | EPOLLET.rawValue)
            } catch {
                s.setupError = "setup at \(s.probe.from.context): \(error)"
            }
        }
    }

    /// Closes the shared captures and the event loop's fd (the runner closes captures itself,
    /// all at once, after every worker is done).
    func closeForTests() {
        captureFDs.forEach { close($0) }
        captures = [:]
        if epfd >= 0 { close(epfd); epfd = -1 }
    }

    private func capture(for c: ProbeCheck) throws -> SharedCapture {
        if let cap = captures[c.captureKey] { return cap }
        let cap = SharedCapture(fd: try PacketCapture.open(interface: c.targetInterface))
        captures[c.captureKey] = cap
        add(cap.fd, .capture(cap))
        return cap
    }

    private func finish(_ c: ProbeCheck, at t: Double) {
        c.endedAt = t
        for s in c.senders where s.fd >= 0 {
            let late = drainErrorQueue(s.fd)
            if !late.isEmpty { s.errors += late; s.errorAt = s.errorAt ?? t }
        }
        c.finalResult = c.result(evidence: evidence)
        if let cap = c.capture {
            for s in c.senders { cap.byToken[s.token] = nil }
            if c.proto == .tcp { cap.byTCPPort[c.listenerPort] = nil }
        }
        c.closeAll()
    }
}

/// One sender of a check: its probe, socket and what came back.
final class ProbeSender {
    static let tokenLength = 22
    var probe: Probe
    let token: [UInt8]
    var fd: Int32 = -1
    var setupError: String?
    var sendError: String?
    var connecting = false
    var connected = false
    var replyFrom: IPAddress?
    var replyAt: Double?
    /// What the far-side listener said it saw ("src=ADDR port=PORT").
    var reported: (IPAddress, UInt16)?
    var answerComplete = false
    var errors: [String] = []
    var errorAt: Double?
    var tcpBuffer: [UInt8] = []
    /// Issued by the drop evidence when the probe was sent.
    var ticket: Int?

    init(_ probe: Probe) {
        self.probe = probe
        let hex = Array("0123456789abcdef".utf8)
        var rng = SystemRandomNumberGenerator()
        token = Array("cgnat-".utf8) + (0..<16).map { _ in hex[Int(rng.next() % 16)] }
    }

    var failedEarly: Bool { setupError != nil || sendError != nil }
    var rejected: Bool { !errors.isEmpty }
    /// The router's own refusal: ICMP admin-prohibited (IPv4 3/13, IPv6 1/1).
    var adminProhibited: Bool { errors.contains { $0.contains("(icmp 3/13)") || $0.contains("(icmpv6 1/1)") } }
    /// Whether this sender has its answer (or failed), so waiting longer changes nothing for it.
    var answered: Bool {
        if failedEarly || rejected { return true }
        switch probe.proto {
        case .icmp, .udp: return replyFrom != nil
        case .tcp: return replyFrom != nil && answerComplete
        }
    }
}

/// One row: one far side (a shared capture and, for UDP/TCP, a listener on a fresh port at the
/// target) and one or two senders (a same-port pair).
final class ProbeCheck {
    let pair: ProbePair?
    let senders: [ProbeSender]
    let target: ProbeEndpoint
    let targetInterface: String?
    let destination: IPAddress
    let proto: ProbeProtocol
    var farError: String?
    var capture: SharedCapture?
    var listenerFD: Int32 = -1
    var listenerPort: UInt16 = 0
    var sightings: [Sighting] = []
    var firedAt = 0.0
    var endedAt = 0.0
    var timeout = 0.0
    var finalResult: ProbeResult?

    init(probes: [Probe], pair: ProbePair?) {
        self.pair = pair
        senders = probes.map(ProbeSender.init)
        let first = probes[0]
        target = first.target
        targetInterface = first.targetInterface
        destination = first.destination
        proto = first.proto
    }

    convenience init(pair: ProbePair) {
        var a = pair.first, b = pair.second
        let port = a.sourcePort ?? b.sourcePort ?? UInt16.random(in: 20000...60000)
        a.sourcePort = port
        b.sourcePort = port
        var fixed = pair
        fixed.first = a
        fixed.second = b
        self.init(probes: [a, b], pair: fixed)
        if a.destination != b.destination || a.proto != b.proto {
            farError = "a pair needs the same destination and protocol (\(a.destination) \(a.proto), \(b.destination) \(b.proto))"
        }
    }

    var where_: String { "\(target.context)/\(targetInterface ?? "any")" }
    /// The far side: target namespace (by its fd) and capture interface.
    var captureKey: String { "\(target.namespaceFD)/\(targetInterface ?? "")" }
    /// Listener ports are unique per target namespace.
    var portKey: String { "\(target.namespaceFD)" }
    var waitsOnCounter: Bool {
        senders.contains { if case .counted = $0.probe.evidence { return true } else { return false } }
    }

    // MARK: sockets

    func openListener() throws {
        let family = destination.family
        let type = proto == .udp ? SockType.dgram : SockType.stream
        // A row that names its listener port gets that one or none.
        let fixed = senders[0].probe.listenerPort
        for _ in 0..<(fixed == nil ? 64 : 1) {
            let port = fixed ?? UInt16.random(in: 20000...60000)
            guard ListenerPorts.shared.claim(portKey, port) else { continue }
            let fd: Int32
            do {
                fd = try openSocket(afOf(family), type, 0, device: target.device, what: "\(proto) listener")
            } catch {
                ListenerPorts.shared.release(portKey, port)
                throw error
            }
            if family == .v6 { _ = setIntOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1) }
            if proto == .tcp { _ = setIntOption(fd, SOL_SOCKET, SO_REUSEADDR, 1) }
            // The destination's own address if it is local here (replies then leave from it);
            // otherwise every address, so that a packet that leaks here is still answered.
            var ok = bindSocket(fd, destination, port: port)
            if !ok && errno == EADDRNOTAVAIL { ok = bindSocket(fd, .any(family), port: port) }
            if ok && proto == .tcp && listen(fd, 16) != 0 { ok = false }
            if !ok {
                let e = errno
                close(fd)
                ListenerPorts.shared.release(portKey, port)
                if e == EADDRINUSE && fixed == nil { continue }
                throw ProbeSetupError("bind \(proto) listener on port \(port)", errno: e)
            }
            listenerFD = fd
            listenerPort = port
            return
        }
        throw ProbeSetupError(message: "no free listener port")
    }

    func openSender(_ p: Probe) throws -> Int32 {
        let family = p.destination.family
        if let b = p.bindAddress, b.family != family {
            throw ProbeSetupError(message: "bind address \(b) and destination \(p.destination) differ in family")
        }
        let fd: Int32
        switch p.proto {
        case .icmp:
            let icmpProto = family == .v4 ? Int32(IPPROTO_ICMP) : Int32(IPPROTO_ICMPV6)
            do {
                fd = try openSocket(afOf(family), SockType.dgram, icmpProto, device: p.from.device, what: "icmp echo")
            } catch let e as ProbeSetupError where e.code == EACCES {
                throw ProbeSetupError(message: "\(e) (net.ipv4.ping_group_range must include gid \(getgid()))")
            }
        case .udp:
            fd = try openSocket(afOf(family), SockType.dgram, 0, device: p.from.device, what: "udp")
        case .tcp:
            fd = try openSocket(afOf(family), SockType.stream, 0, device: p.from.device, what: "tcp")
        }
        _ = enableRecvErr(fd, family)
        if p.proto != .icmp { _ = setIntOption(fd, SOL_SOCKET, SO_REUSEADDR, 1) }
        if p.kind == .spoofNeighbour {
            // Sending from an address that is not this host's: bind allows it with IP_TRANSPARENT,
            // and the route lookup too (FLOWI_FLAG_ANYSRC; IP_FREEBIND covers only the bind).
            _ = family == .v4 ? setIntOption(fd, Int32(SOL_IP), 19 /* IP_TRANSPARENT */, 1)
                              : setIntOption(fd, Int32(SOL_IPV6), 75 /* IPV6_TRANSPARENT */, 1)
        }
        if p.bindAddress != nil || p.sourcePort != nil {
            guard bindSocket(fd, p.bindAddress ?? .any(family), port: p.sourcePort ?? 0) else {
                let e = errno
                close(fd)
                throw ProbeSetupError("bind \(p.bindAddress.map { "\($0)" } ?? "*"):\(p.sourcePort ?? 0)", errno: e)
            }
        }
        return fd
    }

    func fire() {
        for s in senders where s.fd >= 0 {
            let p = s.probe
            switch p.proto {
            case .icmp:
                let id = p.sourcePort ?? 0
                let type: UInt8 = p.destination.family == .v4 ? 8 : 128
                let packet: [UInt8] = [type, 0, 0, 0, UInt8(id >> 8), UInt8(id & 0xff), 0, 1] + s.token
                let n = SocketAddress(p.destination, port: 0).withPointer { sendto(s.fd, packet, packet.count, 0, $0, $1) }
                if n < 0 { s.sendError = "send failed: \(errnoText(errno))" }
            case .udp:
                let ok = SocketAddress(p.destination, port: p.destinationPort ?? listenerPort).withPointer { connect(s.fd, $0, $1) == 0 }
                if !ok { s.sendError = "send failed: \(errnoText(errno))"; continue }
                if send(s.fd, s.token, s.token.count, 0) < 0 { s.sendError = "send failed: \(errnoText(errno))" }
            case .tcp:
                let rc = SocketAddress(p.destination, port: p.destinationPort ?? listenerPort).withPointer { connect(s.fd, $0, $1) }
                if rc == 0 {
                    s.connected = true
                    s.replyFrom = p.destination
                    s.replyAt = probeNow()
                } else if errno == EINPROGRESS {
                    s.connecting = true
                } else {
                    s.sendError = "connect failed: \(errnoText(errno))"
                }
            }
        }
    }

    /// Whether waiting longer can change the row.
    func decided(evidence: DropEvidence?) -> Bool {
        if farError != nil { return true }
        for (i, s) in senders.enumerated() {
            switch s.probe.expect {
            case .blocked:
                if s.failedEarly { continue }
                // A leak decides the row at once (it fails).
                if observation(i) != nil || (proto == .tcp && !sightings.isEmpty) || s.replyFrom != nil { continue }
                switch s.probe.evidence {
                case .reject:
                    if !s.adminProhibited { return false }
                case .counted(let rule):
                    guard let evidence, let t = s.ticket, evidence.covered(rule, ticket: t) else { return false }
                case .wait:
                    return false
                }
            case .reach:
                if !s.answered { return false }
                if !s.failedEarly && !s.rejected && observation(i) == nil { return false }
            }
        }
        return true
    }

    func serveListener() {
        var buf = [UInt8](repeating: 0, count: 2048)
        if proto == .udp {
            while true {
                var from = sockaddr_storage()
                var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
                let n = buf.withUnsafeMutableBytes { raw in
                    withUnsafeMutablePointer(to: &from) {
                        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(listenerFD, raw.baseAddress, raw.count, 0, $0, &len) }
                    }
                }
                guard n >= 0 else { return }
                guard let (addr, port) = parseSocketAddress(from) else { continue }
                let answer = Array("src=\(addr) port=\(port) ".utf8) + buf[0..<n]
                withUnsafePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { _ = sendto(listenerFD, answer, answer.count, 0, $0, len) }
                }
            }
        } else {
            while true {
                var from = sockaddr_storage()
                var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
                let conn = withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(listenerFD, $0, &len) }
                }
                guard conn >= 0 else { return }
                if let (addr, port) = parseSocketAddress(from) {
                    let answer = Array("src=\(addr) port=\(port)\n".utf8)
                    _ = send(conn, answer, answer.count, Int32(MSG_NOSIGNAL))
                }
                close(conn)
            }
        }
    }

    func handleSender(_ s: ProbeSender, revents: Int16) {
        guard s.fd >= 0 else { return }
        let now = probeNow()
        func noteErrors(_ fallback: Int32) {
            var errs = drainErrorQueue(s.fd)
            if errs.isEmpty && fallback != 0 && fallback != EAGAIN {
                errs = [errnoText(fallback) + (fallback == ECONNREFUSED && proto == .tcp ? " (TCP reset)" : "")]
            }
            if !errs.isEmpty {
                s.errors += errs
                s.errorAt = s.errorAt ?? now
            }
        }
        if s.connecting {
            guard revents & Int16(POLLOUT | POLLERR | POLLHUP) != 0 else { return }
            s.connecting = false
            let e = socketError(s.fd)
            if e == 0 {
                s.connected = true
                s.replyFrom = destination
                s.replyAt = now
            } else {
                noteErrors(e)
                closeSender(s)
                return
            }
        }
        if revents & Int16(POLLERR) != 0 && !s.connected {
            noteErrors(socketError(s.fd))
        }
        guard revents & Int16(POLLIN | POLLHUP) != 0 || s.connected else { return }
        var buf = [UInt8](repeating: 0, count: 2048)
        while s.fd >= 0 {
            var from = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = buf.withUnsafeMutableBytes { raw in
                withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(s.fd, raw.baseAddress, raw.count, 0, $0, &len) }
                }
            }
            if n < 0 {
                let e = errno
                if e != EAGAIN && e != EWOULDBLOCK {
                    noteErrors(e)
                    if proto == .tcp { s.answerComplete = true; closeSender(s) }
                }
                return
            }
            let data = Array(buf[0..<n])
            switch proto {
            case .icmp:
                let replyType: UInt8 = destination.family == .v4 ? 0 : 129
                guard n >= 8, data[0] == replyType,
                      data.withUnsafeBytes({ containsBytes($0, from: 8, s.token) }) else { continue }
                if s.replyFrom == nil {
                    s.replyFrom = parseSocketAddress(from)?.0
                    s.replyAt = now
                }
            case .udp:
                guard data.withUnsafeBytes({ containsBytes($0, from: 0, s.token) }) else { continue }
                if s.replyFrom == nil {
                    s.replyFrom = parseSocketAddress(from)?.0
                    s.replyAt = now
                    s.reported = parseReport(data)
                    s.answerComplete = true
                }
            case .tcp:
                if n == 0 {
                    s.answerComplete = true
                    s.reported = s.reported ?? parseReport(s.tcpBuffer)
                    closeSender(s)
                    return
                }
                s.tcpBuffer += data
                if s.tcpBuffer.contains(UInt8(ascii: "\n")) {
                    s.reported = parseReport(s.tcpBuffer)
                    s.answerComplete = true
                    closeSender(s)
                    return
                }
            }
        }
    }

    /// Parses "src=ADDR port=PORT ..." as the listener writes it.
    func parseReport(_ data: [UInt8]) -> (IPAddress, UInt16)? {
        let text = String(decoding: data.prefix(200), as: UTF8.self)
        var addr: IPAddress?
        var port: UInt16?
        for word in text.split(whereSeparator: { $0 == " " || $0 == "\n" }) {
            if word.hasPrefix("src=") { addr = IPAddress(String(word.dropFirst(4))) }
            if word.hasPrefix("port=") { port = UInt16(word.dropFirst(5)) }
        }
        guard let addr, let port else { return nil }
        return (addr, port)
    }

    /// Closing a socket also removes it from any epoll set.
    func closeSender(_ s: ProbeSender) {
        if s.fd >= 0 { close(s.fd); s.fd = -1 }
        s.connecting = false
    }

    /// Closes the row's own sockets (not the shared capture).
    func closeAll() {
        for s in senders { closeSender(s) }
        if listenerFD >= 0 {
            close(listenerFD)
            listenerFD = -1
            ListenerPorts.shared.release(portKey, listenerPort)
        }
    }

    // MARK: verdict

    /// Where the target saw sender i's packet: by token (ICMP, UDP); for TCP by the source the
    /// listener reported, or the only SYN when there is one sender.
    func observation(_ i: Int) -> Sighting? {
        switch proto {
        case .icmp, .udp:
            return sightings.first { $0.sender == i }
        case .tcp:
            if let (a, p) = senders[i].reported {
                return sightings.first { $0.source == a && $0.port == p }
            }
            return senders.count == 1 ? sightings.first : nil
        }
    }

    func portWord() -> String { proto == .icmp ? "id" : "port" }

    func describeSighting(_ o: Sighting) -> String {
        "seen at \(where_) from \(o.source) \(portWord()) \(o.port)"
    }

    /// One sender's verdict: passed, detail, its observation.
    func verdict(_ i: Int, evidence: DropEvidence?) -> (Bool, String, Sighting?) {
        let s = senders[i]
        if let e = s.setupError { return (false, e, nil) }
        let obs = observation(i)
        var answer: String
        if let from = s.replyFrom {
            switch proto {
            case .icmp: answer = "reply from \(from)"
            case .udp: answer = "answer from \(from)"
            case .tcp: answer = "connected to \(from)"
            }
            if let (a, p) = s.reported { answer += " (listener saw \(a) port \(p))" }
        } else if let e = s.sendError {
            answer = e
        } else if !s.errors.isEmpty {
            answer = "rejected: " + s.errors.joined(separator: ", ")
        } else {
            answer = "no reply"
        }
        if s.replyFrom != nil && !s.errors.isEmpty { answer += "; errors: " + s.errors.joined(separator: ", ") }
        switch s.probe.expect {
        case .reach(let source):
            guard s.replyFrom != nil else {
                return (false, answer + "; " + (obs.map(describeSighting) ?? "not seen at \(where_)"), obs)
            }
            guard let o = obs else { return (false, answer + ", but not seen at \(where_)", nil) }
            if let source, o.source != source {
                return (false, answer + "; " + describeSighting(o) + ", expected from \(source)", o)
            }
            return (true, answer + "; " + describeSighting(o), o)
        case .blocked:
            // A leak: any packet of this sender at the target (for TCP any SYN to the listener).
            let leak = obs ?? (proto == .tcp ? sightings.first : nil)
            if let l = leak { return (false, "LEAK: " + describeSighting(l) + "; " + answer, l) }
            if s.replyFrom != nil { return (false, "LEAK: " + answer + "; not seen at \(where_)", nil) }
            let unseen = "not seen at \(where_)"
            switch s.probe.evidence {
            case .wait:
                return (true, answer + "; " + unseen + " in \(Int(timeout)) ms", nil)
            case .reject:
                if s.adminProhibited { return (true, answer + "; " + unseen, nil) }
                return (false, "NOT REFUSED by the router (no admin-prohibited): " + answer + "; " + unseen, nil)
            case .counted(let rule):
                let text = evidence?.describe(rule) ?? "\(rule)"
                if let evidence, let t = s.ticket, evidence.covered(rule, ticket: t) {
                    // A counter of a rule that does not drop: the row's mechanism stopped it there.
                    if case .mechanism? = s.probe.blockedBy { return (true, "ended in \(rule.context): counted by \(text); " + unseen, nil) }
                    return (true, "dropped: counted by \(text); " + unseen, nil)
                }
                return (false, "NOT COUNTED by \(text) (something else stopped it): " + answer + "; " + unseen, nil)
            }
        }
    }

    func result(evidence: DropEvidence? = nil) -> ProbeResult {
        let first = senders[0].probe
        if let e = farError { return failedResult(e) }
        let verdicts = senders.indices.map { verdict($0, evidence: evidence) }
        var passed = verdicts.allSatisfy { $0.0 }
        var detail: String
        let observed = verdicts.map { $0.2 }
        if senders.count == 1 {
            detail = verdicts[0].1
        } else {
            detail = zip(senders, verdicts).map { "\($0.probe.from.context): \($1.1)" }.joined(separator: "; ")
            let ports = observed.compactMap { $0?.port }
            let bothReach = senders.allSatisfy { if case .reach = $0.probe.expect { return true } else { return false } }
            if bothReach {
                if ports.count == senders.count && Set(ports).count == ports.count {
                    detail += "; distinct \(portWord())s " + ports.map(String.init).joined(separator: " and ")
                } else if ports.count == senders.count {
                    passed = false
                    detail += "; SAME \(portWord()) \(ports[0]) at the target: not remapped"
                } else {
                    passed = false
                }
            }
        }
        var ms = endedAt - firedAt
        if passed && senders.allSatisfy({ if case .reach = $0.probe.expect { return true } else { return false } }) {
            ms = senders.indices.map { i in max(senders[i].replyAt ?? endedAt, observed[i]?.milliseconds ?? endedAt) }.max()! - firedAt
        }
        return ProbeResult(probe: first, pair: pair, passed: passed, detail: detail,
                           observedSource: observed[0]?.source, observedPort: observed[0]?.port,
                           observedPorts: observed.map { $0?.port }, milliseconds: max(0, ms))
    }

    func failedResult(_ detail: String) -> ProbeResult {
        ProbeResult(probe: senders[0].probe, pair: pair, passed: false, detail: detail, observedSource: nil,
                    observedPort: nil, observedPorts: senders.map { _ in nil }, milliseconds: max(0, endedAt - firedAt))
    }
}
