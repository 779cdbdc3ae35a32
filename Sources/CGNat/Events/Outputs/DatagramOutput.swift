import CNetlinkShim
import Glibc
import Netlink

/// How an output turns NAT log events into datagrams. Used on the sender's thread only.
protocol NATLogEncoder: AnyObject {
    /// Datagrams due now whatever the events (IPFIX templates on their timer); `nowMs` is
    /// CLOCK_REALTIME in milliseconds.
    func periodic(nowMs: UInt64, monotonicMs: Double) -> [[UInt8]]
    /// The datagrams for these events, each with the number of events in it.
    func encode(_ events: [NATLogEvent], nowMs: UInt64) -> [(bytes: [UInt8], records: Int)]
}

/// What an output sends to: a UDP host:port or a local datagram socket path.
public enum DatagramTarget: Equatable, Sendable, CustomStringConvertible {
    case udp(host: String, port: UInt16)
    case unix(path: String)

    /// `HOST:PORT` or `[V6]:PORT`; a path (starting with `/`) is a unix datagram socket.
    public static func parse(_ text: String, option: String) throws -> DatagramTarget {
        if text.hasPrefix("/") { return .unix(path: text) }
        var host = Substring(text), port = Substring("")
        if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            if rest.hasPrefix(":") { port = rest.dropFirst() }
        } else if let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") {
            host = text[..<colon]
            port = text[text.index(after: colon)...]
        }
        guard !host.isEmpty, let p = UInt16(port), p > 0 else {
            throw UsageError("\(option) '\(text)' is not HOST:PORT (e.g. 127.0.0.1:4739, [::1]:4739)" + (option == "--syslog" ? " or a socket path" : ""))
        }
        return .udp(host: String(host), port: p)
    }

    public var description: String {
        switch self {
        case .udp(let h, let p): return h.contains(":") ? "[\(h)]:\(p)" : "\(h):\(p)"
        case .unix(let path): return path
        }
    }

    /// A connected, non-blocking datagram socket in the calling thread's namespace.
    func connect(option: String) throws -> Int32 {
        switch self {
        case .unix(let path):
            let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw SystemError("\(option): socket") }
            var sa = sockaddr_un()
            sa.sun_family = sa_family_t(AF_UNIX)
            let bytes = Array(path.utf8)
            guard bytes.count < MemoryLayout.size(ofValue: sa.sun_path) else {
                Glibc.close(fd)
                throw UsageError("\(option): socket path '\(path)' is too long")
            }
            withUnsafeMutableBytes(of: &sa.sun_path) { raw in
                for (i, b) in bytes.enumerated() { raw[i] = b }
            }
            let rc = withUnsafePointer(to: &sa) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            if rc != 0 {
                let e = errno
                Glibc.close(fd)
                throw UsageError("\(option): cannot reach the datagram socket \(path): \(String(cString: strerror(e)))"
                                 + " (is a syslog daemon running? or give HOST:PORT)")
            }
            return fd
        case .udp(let host, let port):
            var hints = addrinfo()
            hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
            hints.ai_flags = AI_NUMERICSERV
            var res: UnsafeMutablePointer<addrinfo>?
            let rc = getaddrinfo(host, String(port), &hints, &res)
            guard rc == 0, let ai = res else {
                throw UsageError("\(option): cannot resolve '\(host)': \(String(cString: gai_strerror(rc)))")
            }
            defer { freeaddrinfo(res) }
            let fd = socket(ai.pointee.ai_family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw SystemError("\(option): socket") }
            guard Glibc.connect(fd, ai.pointee.ai_addr, ai.pointee.ai_addrlen) == 0 else {
                let e = errno
                Glibc.close(fd)
                throw UsageError("\(option): cannot send to \(self): \(String(cString: strerror(e)))")
            }
            return fd
        }
    }
}

/// An output that sends datagrams from a thread of its own: the reader only appends to a bounded
/// queue (never blocks on the network); when the queue is full, or a datagram cannot be sent
/// (the receiver is gone, its socket stays full), events are dropped and counted.
class DatagramOutput: EventOutput {
    let name: String
    private let fd: Int32
    private let encoder: NATLogEncoder
    private let capacity: Int
    private let map: (EventStream.Item) -> NATLogEvent?

    private var lock = pthread_mutex_t()
    private var wake = pthread_cond_t()
    /// Guarded by `lock`.
    private var queue: [NATLogEvent] = []
    private var closing = false
    private var closeDeadline: Double = 0
    private var droppedCount: UInt64 = 0
    private var deliveredCount: UInt64 = 0
    /// Sent by the sender thread before anything queued after it (port blocks at start).
    private var preamble: [NATLogEvent]
    private var epilogue: [NATLogEvent] = []
    private var thread: OSThread?

    /// How long a full receiver (a unix socket nobody reads) may hold one datagram before it is dropped.
    static let sendWaitMs: Int32 = 20
    /// How long close() keeps sending what is queued.
    static let closeWaitMs: Double = 3000

    /// What to send last when the lab went down (port-block releases), given the time in ms.
    private let onLabDown: (UInt64) -> [NATLogEvent]

    init(name: String, fd: Int32, encoder: NATLogEncoder, capacity: Int, preamble: [NATLogEvent] = [],
         onLabDown: @escaping (UInt64) -> [NATLogEvent] = { _ in [] },
         map: @escaping (EventStream.Item) -> NATLogEvent?) {
        self.name = name
        self.onLabDown = onLabDown
        self.fd = fd
        self.encoder = encoder
        self.capacity = capacity
        self.preamble = preamble
        self.map = map
        pthread_mutex_init(&lock, nil)
        pthread_cond_init(&wake, nil)
        queue.reserveCapacity(min(capacity, 1 << 16))
        thread = OSThread { [unowned self] in self.senderLoop() }
    }

    var dropped: UInt64 { locked { droppedCount } }
    var delivered: UInt64 { locked { deliveredCount } }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(&lock)
        defer { pthread_mutex_unlock(&lock) }
        return body()
    }

    func submit(_ item: EventStream.Item) {
        guard let e = map(item) else { return }
        pthread_mutex_lock(&lock)
        if queue.count < capacity { queue.append(e) } else { droppedCount += 1 }
        pthread_mutex_unlock(&lock)
    }

    func flush() {
        pthread_mutex_lock(&lock)
        if !queue.isEmpty { pthread_cond_signal(&wake) }
        pthread_mutex_unlock(&lock)
    }

    func close(labWentDown: Bool) {
        close(epilogue: labWentDown ? onLabDown(EventFormatter.realtimeNow() / 1_000_000) : [])
    }

    private func close(epilogue events: [NATLogEvent]) {
        pthread_mutex_lock(&lock)
        guard !closing else { pthread_mutex_unlock(&lock); return }
        closing = true
        epilogue = events
        closeDeadline = monotonicMilliseconds() + Self.closeWaitMs
        pthread_cond_signal(&wake)
        pthread_mutex_unlock(&lock)
        thread?.join()
        thread = nil
        Glibc.close(fd)
    }

    private func senderLoop() {
        var pendingPreamble = preamble[...]
        let preambleTotal = preamble.count
        preamble = []
        while true {
            var batch: [NATLogEvent] = []
            var stop = false
            pthread_mutex_lock(&lock)
            if queue.isEmpty && !closing && pendingPreamble.isEmpty {
                // Wake at least every 200 ms: templates are due on a timer.
                var ts = timespec()
                clock_gettime(CLOCK_REALTIME, &ts)
                ts.tv_nsec += 200_000_000
                if ts.tv_nsec >= 1_000_000_000 { ts.tv_sec += 1; ts.tv_nsec -= 1_000_000_000 }
                pthread_cond_timedwait(&wake, &lock, &ts)
            }
            swap(&batch, &queue)
            if closing {
                if batch.isEmpty && pendingPreamble.isEmpty { batch = epilogue; epilogue = []; stop = true }
                else if monotonicMilliseconds() > closeDeadline {
                    // Out of time: what is left is lost, and says so.
                    droppedCount += UInt64(batch.count + pendingPreamble.count + epilogue.count)
                    pthread_mutex_unlock(&lock)
                    return
                }
            }
            pthread_mutex_unlock(&lock)

            let now = EventFormatter.realtimeNow() / 1_000_000
            for d in encoder.periodic(nowMs: now, monotonicMs: monotonicMilliseconds()) { _ = send(d) }
            // Port blocks at start go out in slices between the live events, so a large policy
            // does not hold the session log back, paced (about 30,000 a second) so that a
            // collector with a default socket buffer keeps up with the burst.
            if !pendingPreamble.isEmpty {
                if pendingPreamble.count < preambleTotal { usleep(2000) }
                let slice = pendingPreamble.prefix(64)
                pendingPreamble = pendingPreamble.dropFirst(slice.count)
                batch = Array(slice) + batch
            }
            if !batch.isEmpty {
                var ok: UInt64 = 0, lost: UInt64 = 0
                for d in encoder.encode(batch, nowMs: now) {
                    if send(d.bytes) { ok += UInt64(d.records) } else { lost += UInt64(d.records) }
                }
                pthread_mutex_lock(&lock)
                deliveredCount += ok
                droppedCount += lost
                pthread_mutex_unlock(&lock)
            }
            if stop { return }
        }
    }

    /// One datagram; a full receiver gets a short wait, then the datagram is given up.
    private func send(_ bytes: [UInt8]) -> Bool {
        while true {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if n == bytes.count { return true }
            if n >= 0 { return false }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK, ENOBUFS:
                var p = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                if poll(&p, 1, Self.sendWaitMs) <= 0 { return false }
                let again = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                return again == bytes.count
            default:
                // ECONNREFUSED (nobody listens on that UDP port), a route gone: lost.
                return false
            }
        }
    }
}

extension NATLogEvent {
    /// The session event of a conntrack record: IPv4 flows of subscriber domains (NAT44); the
    /// router's own flows (domain 0), IPv6 and UPDATE events are no NAT44 sessions.
    init?(record r: MappingRecord, destination: Bool) {
        guard r.kind != .update, r.domainID != 0, r.inside.family == .v4 else { return nil }
        self.init(kind: r.kind == .new ? .sessionCreate : .sessionDelete, timeMilliseconds: r.time / 1_000_000,
                  vrfID: r.domainID, protocolNumber: r.protocolNumber,
                  inside: r.inside, insidePort: r.insidePort ?? 0, outside: r.outside, outsidePort: r.outsidePort ?? 0,
                  destination: destination ? r.destination : nil, destinationPort: destination ? r.destinationPort ?? 0 : 0,
                  domain: r.domain)
    }
}
