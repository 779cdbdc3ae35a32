import CNetlinkShim
import Glibc
import Netlink

/// Runs every probe concurrently (one OS thread each) and returns one result per probe, in order.
/// Nothing prints; every socket and thread is closed or joined before this returns.
public func runProbes(_ probes: [Probe], timeoutMilliseconds: Int = 400) -> [ProbeResult] {
    runChecks(probes: probes, pairs: [], timeoutMilliseconds: timeoutMilliseconds)
}

/// Runs every same-port pair concurrently; one result (row) per pair.
public func runPairs(_ pairs: [ProbePair], timeoutMilliseconds: Int = 400) -> [ProbeResult] {
    runChecks(probes: [], pairs: pairs, timeoutMilliseconds: timeoutMilliseconds)
}

/// Runs probes and pairs all at once: every check opens its far side (capture, listener) and its
/// sender sockets on its own thread, all threads meet at a barrier, then every sender fires at the
/// same moment. Results: the probes in order, then the pairs in order.
///
/// A reach row is decided as soon as its answer came back and the target saw the packet; a blocked
/// row waits the whole timeout for a leak (so the matrix takes about `timeoutMilliseconds`).
public func runChecks(probes: [Probe], pairs: [ProbePair] = [], timeoutMilliseconds: Int = 400) -> [ProbeResult] {
    let checks = probes.map { ProbeCheck(probes: [$0], pair: nil) } + pairs.map { ProbeCheck(pair: $0) }
    guard !checks.isEmpty else { return [] }
    let barrier = ProbeBarrier(count: checks.count)
    let timeout = Double(max(1, timeoutMilliseconds))
    let outcomes = OSThread.all(checks.map { check in { () -> ProbeResult in check.run(barrier: barrier, timeout: timeout) } })
    return zip(checks, outcomes).map { check, outcome in
        switch outcome {
        case .success(let r): return r
        case .failure(let e): return check.failedResult("internal error: \(e)")
        }
    }
}

/// One sender of a check: its probe, socket and what came back.
final class ProbeSender {
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

    init(_ probe: Probe) {
        self.probe = probe
        let hex = Array("0123456789abcdef".utf8)
        var rng = SystemRandomNumberGenerator()
        token = Array("cgnat-".utf8) + (0..<16).map { _ in hex[Int(rng.next() % 16)] }
    }

    var failedEarly: Bool { setupError != nil || sendError != nil }
    var rejected: Bool { !errors.isEmpty }
    /// Whether this sender has its answer (or failed), so waiting longer changes nothing for it.
    var answered: Bool {
        if failedEarly || rejected { return true }
        switch probe.proto {
        case .icmp, .udp: return replyFrom != nil
        case .tcp: return replyFrom != nil && answerComplete
        }
    }
}

/// One row: one far side (capture and, for UDP/TCP, a listener on a fresh port at the target) and
/// one or two senders (a same-port pair).
final class ProbeCheck {
    let pair: ProbePair?
    let senders: [ProbeSender]
    let target: ProbeEndpoint
    let targetInterface: String?
    let destination: IPAddress
    let proto: ProbeProtocol
    var farError: String?
    var captureFD: Int32 = -1
    var listenerFD: Int32 = -1
    var listenerPort: UInt16 = 0
    var sightings: [Sighting] = []
    var firedAt = 0.0
    var endedAt = 0.0
    var timeout = 0.0

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

    // MARK: running

    func run(barrier: ProbeBarrier, timeout: Double) -> ProbeResult {
        self.timeout = timeout
        defer { closeAll() }
        setup()
        barrier.wait()
        firedAt = probeNow()
        endedAt = firedAt
        if farError == nil {
            fire()
            loop(deadline: firedAt + timeout)
        }
        return result()
    }

    /// Opens the capture and listener in the target namespace, then each sender's socket in its own
    /// namespace. This thread is private to the check, so it may wander between namespaces.
    func setup() {
        guard farError == nil else { return }
        do {
            try NetNamespace.enter(target.namespaceFD)
            captureFD = try PacketCapture.open(interface: targetInterface)
            if proto != .icmp { try openListener() }
        } catch {
            farError = "setup at \(target.context): \(error)"
            return
        }
        for s in senders {
            do {
                try NetNamespace.enter(s.probe.from.namespaceFD)
                s.fd = try openSender(s.probe)
            } catch {
                s.setupError = "setup at \(s.probe.from.context): \(error)"
            }
        }
    }

    func openListener() throws {
        let family = destination.family
        let type = proto == .udp ? SockType.dgram : SockType.stream
        for _ in 0..<32 {
            let port = UInt16.random(in: 20000...60000)
            let fd = try openSocket(afOf(family), type, 0, device: target.device, what: "\(proto) listener")
            if family == .v6 { _ = setIntOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1) }
            if proto == .tcp { _ = setIntOption(fd, SOL_SOCKET, SO_REUSEADDR, 1) }
            // The destination's own address if it is local here (replies then leave from it);
            // otherwise every address, so that a packet that leaks here is still answered.
            var ok = bindSocket(fd, destination, port: port)
            if !ok && errno == EADDRNOTAVAIL { ok = bindSocket(fd, .any(family), port: port) }
            if !ok {
                let e = errno
                close(fd)
                if e == EADDRINUSE { continue }
                throw ProbeSetupError("bind \(proto) listener on port \(port)", errno: e)
            }
            if proto == .tcp && listen(fd, 16) != 0 {
                let e = errno
                close(fd)
                throw ProbeSetupError("listen on port \(port)", errno: e)
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
                let ok = SocketAddress(p.destination, port: listenerPort).withPointer { connect(s.fd, $0, $1) == 0 }
                if !ok { s.sendError = "send failed: \(errnoText(errno))"; continue }
                if send(s.fd, s.token, s.token.count, 0) < 0 { s.sendError = "send failed: \(errnoText(errno))" }
            case .tcp:
                let rc = SocketAddress(p.destination, port: listenerPort).withPointer { connect(s.fd, $0, $1) }
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

    private enum Role { case capture, listener, sender(ProbeSender) }

    func loop(deadline: Double) {
        let match = CaptureMatch(proto: proto, port: listenerPort, tokens: senders.map(\.token))
        while true {
            let now = probeNow()
            endedAt = now
            if now >= deadline || decided() { break }
            var fds: [pollfd] = []
            var roles: [Role] = []
            if captureFD >= 0 { fds.append(pollfd(fd: captureFD, events: Int16(POLLIN), revents: 0)); roles.append(.capture) }
            if listenerFD >= 0 { fds.append(pollfd(fd: listenerFD, events: Int16(POLLIN), revents: 0)); roles.append(.listener) }
            for s in senders where s.fd >= 0 {
                var events = Int16(POLLIN)
                if s.connecting { events |= Int16(POLLOUT) }
                fds.append(pollfd(fd: s.fd, events: events, revents: 0))
                roles.append(.sender(s))
            }
            let wait = Int32(max(1, (deadline - now).rounded(.up)))
            let n = poll(&fds, nfds_t(fds.count), wait)
            if n < 0 && errno != EINTR { break }
            guard n > 0 else { continue }
            for (pfd, role) in zip(fds, roles) where pfd.revents != 0 {
                switch role {
                case .capture: sightings += PacketCapture.read(captureFD, match: match, now: probeNow())
                case .listener: serveListener()
                case .sender(let s): handleSender(s, revents: pfd.revents)
                }
            }
        }
        // Whatever arrived at the target until now counts, also for rows decided early.
        if captureFD >= 0 { sightings += PacketCapture.read(captureFD, match: match, now: probeNow()) }
        for s in senders where s.fd >= 0 {
            let late = drainErrorQueue(s.fd)
            if !late.isEmpty { s.errors += late; s.errorAt = s.errorAt ?? probeNow() }
        }
    }

    /// Whether waiting longer can change the row.
    func decided() -> Bool {
        if farError != nil { return true }
        for (i, s) in senders.enumerated() {
            switch s.probe.expect {
            case .blocked:
                // Only a packet that never left can no longer leak.
                if !s.failedEarly { return false }
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

    func closeSender(_ s: ProbeSender) {
        if s.fd >= 0 { close(s.fd); s.fd = -1 }
        s.connecting = false
    }

    func closeAll() {
        for s in senders { closeSender(s) }
        if listenerFD >= 0 { close(listenerFD); listenerFD = -1 }
        if captureFD >= 0 { close(captureFD); captureFD = -1 }
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
    func verdict(_ i: Int) -> (Bool, String, Sighting?) {
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
            return (true, answer + "; not seen at \(where_)", nil)
        }
    }

    func result() -> ProbeResult {
        let first = senders[0].probe
        if let e = farError { return failedResult(e) }
        let verdicts = senders.indices.map(verdict)
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
