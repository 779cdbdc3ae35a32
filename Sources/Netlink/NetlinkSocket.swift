import CNetlinkShim
import Glibc

/// One netlink socket, opened in the network namespace of the calling thread (a socket keeps
/// its namespace for life; use it from any thread afterwards, but not from two at once).
public final class NetlinkSocket {
    public let protocolNumber: Int32
    private var socketFD: Int32
    private var lastSeq: UInt32
    /// The port id the kernel gave us (nl_pid after bind).
    public private(set) var portID: UInt32 = 0

    /// - Parameters:
    ///   - protocol: NETLINK_ROUTE (0), NETLINK_NETFILTER (12), ...
    ///   - groups: legacy multicast group bitmask to join at bind (conntrack events).
    public init(protocol: Int32, groups: UInt32 = 0) throws {
        protocolNumber = `protocol`
        let fd = Glibc.socket(AF_NETLINK, Int32(SOCK_RAW.rawValue) | Int32(SOCK_CLOEXEC.rawValue), `protocol`)
        guard fd >= 0 else { throw NetlinkError(step: "open netlink socket (protocol \(`protocol`))", errno: Glibc.errno) }
        socketFD = fd
        // Extended ACK: the kernel explains its refusals. CAP_ACK: errors need not echo our request.
        var one: Int32 = 1
        _ = setsockopt(fd, SOL_NETLINK, NETLINK_EXT_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        _ = setsockopt(fd, SOL_NETLINK, NETLINK_CAP_ACK, &one, socklen_t(MemoryLayout<Int32>.size))
        var addr = sockaddr_nl()
        addr.nl_family = sa_family_t(AF_NETLINK)
        addr.nl_groups = groups
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<sockaddr_nl>.size)) }
        }
        guard rc == 0 else {
            let e = Glibc.errno
            Glibc.close(fd)
            throw NetlinkError(step: "bind netlink socket (protocol \(`protocol`))", errno: e)
        }
        var len = socklen_t(MemoryLayout<sockaddr_nl>.size)
        var bound = sockaddr_nl()
        _ = withUnsafeMutablePointer(to: &bound) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
        }
        portID = bound.nl_pid
        // Start sequence numbers somewhere other than 0 so that stray replies are not matched by accident.
        var t = timespec()
        clock_gettime(CLOCK_MONOTONIC, &t)
        lastSeq = UInt32(truncatingIfNeeded: t.tv_nsec) & 0x00ff_ffff
    }

    deinit { close() }

    public func close() {
        if socketFD >= 0 { Glibc.close(socketFD); socketFD = -1 }
    }

    public var fd: Int32 { socketFD }

    /// The next sequence number (increments per request, never 0).
    public func nextSequence() -> UInt32 {
        lastSeq &+= 1
        if lastSeq == 0 { lastSeq = 1 }
        return lastSeq
    }

    /// Sets the receive buffer (SO_RCVBUFFORCE when privileged, else SO_RCVBUF).
    public func setReceiveBuffer(_ bytes: Int32) {
        var v = bytes
        if setsockopt(socketFD, SOL_SOCKET, SO_RCVBUFFORCE, &v, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            _ = setsockopt(socketFD, SOL_SOCKET, SO_RCVBUF, &v, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    /// Sets the send buffer (SO_SNDBUFFORCE when privileged, else SO_SNDBUF): a datagram larger
    /// than it is refused (EMSGSIZE), and an nftables batch must be one datagram.
    public func setSendBuffer(_ bytes: Int32) {
        var v = bytes
        if setsockopt(socketFD, SOL_SOCKET, SO_SNDBUFFORCE, &v, socklen_t(MemoryLayout<Int32>.size)) != 0 {
            _ = setsockopt(socketFD, SOL_SOCKET, SO_SNDBUF, &v, socklen_t(MemoryLayout<Int32>.size))
        }
    }

    /// Sends bytes that are already one or more complete messages (an nfnetlink batch) as one datagram.
    public func send(bytes: [UInt8], step: String) throws {
        guard socketFD >= 0 else { throw NetlinkError(step: step, errno: EBADF) }
        try sendBytes(bytes, step: step)
    }

    /// Sends the message as is (to the kernel, port 0).

    public func send(_ message: NetlinkMessage, step: String) throws {
        guard socketFD >= 0 else { throw NetlinkError(step: step, errno: EBADF) }
        try sendBytes(message.encoded(), step: step)
    }

    /// One datagram to the kernel: a message, or a batch of them back to back.
    private func sendBytes(_ bytes: [UInt8], step: @autoclosure () -> String) throws {
        var addr = sockaddr_nl()
        addr.nl_family = sa_family_t(AF_NETLINK)
        while true {
            let n = bytes.withUnsafeBytes { buf in
                withUnsafePointer(to: &addr) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        sendto(socketFD, buf.baseAddress, buf.count, 0, $0, socklen_t(MemoryLayout<sockaddr_nl>.size))
                    }
                }
            }
            if n == bytes.count { return }
            if n < 0 && Glibc.errno == EINTR { continue }
            throw NetlinkError(step: step(), errno: n < 0 ? Glibc.errno : EMSGSIZE)
        }
    }

    /// Receives one datagram (blocking unless `dontWait`) and splits it into messages.
    /// Returns nil when `dontWait` and nothing is queued. ENOBUFS is thrown as a NetlinkError.
    public func receive(step: String, dontWait: Bool = false) throws -> [NetlinkMessage]? {
        guard socketFD >= 0 else { throw NetlinkError(step: step, errno: EBADF) }
        let extra = dontWait ? Int32(MSG_DONTWAIT) : 0
        while true {
            // Peek at the real size first so that no datagram is ever truncated.
            let size = recv(socketFD, nil, 0, Int32(MSG_PEEK) | Int32(MSG_TRUNC) | extra)
            if size < 0 {
                let e = Glibc.errno
                if e == EINTR { continue }
                if dontWait && (e == EAGAIN || e == EWOULDBLOCK) { return nil }
                throw NetlinkError(step: step, errno: e)
            }
            var buf = [UInt8](repeating: 0, count: max(size, 16))
            let n = buf.withUnsafeMutableBytes { recv(socketFD, $0.baseAddress, $0.count, extra) }
            if n < 0 {
                let e = Glibc.errno
                if e == EINTR { continue }
                if dontWait && (e == EAGAIN || e == EWOULDBLOCK) { return nil }
                throw NetlinkError(step: step, errno: e)
            }
            return try NetlinkMessage.parse(Array(buf[0..<n]))
        }
    }

    private func prepare(_ message: NetlinkMessage, flags: UInt16) -> NetlinkMessage {
        var m = message
        m.flags |= flags
        m.seq = nextSequence()
        m.pid = 0
        return m
    }

    private func error(from m: NetlinkMessage, step: String) -> NetlinkError? {
        guard let info = m.errorInfo, info.errno != 0 else { return nil }
        return NetlinkError(step: step, errno: info.errno, kernelMessage: info.message, offset: info.offset)
    }

    /// Sends one request with NLM_F_REQUEST|NLM_F_ACK and waits for its ACK (matched by sequence
    /// number). A refusal throws NetlinkError with the kernel's extended-ACK message.
    public func request(_ message: NetlinkMessage, step: String) throws {
        let m = prepare(message, flags: NL.F_REQUEST | NL.F_ACK)
        try send(m, step: step)
        while true {
            for reply in try receive(step: step)! where reply.seq == m.seq {
                if reply.type == NL.NLMSG_ERROR {
                    if let e = error(from: reply, step: step) { throw e }
                    return
                }
                // Any other message with our sequence number (an echo) is not the ACK; keep reading.
            }
        }
    }

    /// Pipelined requests, read back as google/nftables reads a batch: every message gets
    /// NLM_F_REQUEST|NLM_F_ACK and a sequence number of its own, all go to the kernel in one
    /// datagram, then one acknowledgement per message is read and mapped back to its message by
    /// sequence number. The kernel handles the messages in order and goes on after a refusal, so
    /// every failure is returned, by position, with the kernel's extended-ACK message; `step`
    /// names a position for the error. Keep batches small enough that their acknowledgements fit
    /// the receive buffer (a few hundred).
    public func requestAll(_ messages: [NetlinkMessage], step: (Int) -> String) throws -> [(position: Int, error: NetlinkError)] {
        guard !messages.isEmpty else { return [] }
        guard socketFD >= 0 else { throw NetlinkError(step: step(0), errno: EBADF) }
        var bytes: [UInt8] = []
        var position: [UInt32: Int] = [:]
        position.reserveCapacity(messages.count)
        for (i, message) in messages.enumerated() {
            let m = prepare(message, flags: NL.F_REQUEST | NL.F_ACK)
            position[m.seq] = i
            bytes += m.encoded()
        }
        try sendBytes(bytes, step: step(0))
        var failures: [(position: Int, error: NetlinkError)] = []
        var pending = messages.count
        while pending > 0 {
            for reply in try receiveSmall(step: step(messages.count - pending)) where reply.type == NL.NLMSG_ERROR {
                guard let i = position.removeValue(forKey: reply.seq) else { continue }
                pending -= 1
                if let info = reply.errorInfo, info.errno != 0 {
                    failures.append((i, NetlinkError(step: step(i), errno: info.errno, kernelMessage: info.message, offset: info.offset)))
                }
            }
        }
        return failures.sorted { $0.position < $1.position }
    }

    /// One datagram of small replies (acknowledgements) into a reused buffer: one recv, no peek.
    private var smallBuffer = [UInt8](repeating: 0, count: 16384)
    private func receiveSmall(step: String) throws -> [NetlinkMessage] {
        while true {
            let n = smallBuffer.withUnsafeMutableBytes { recv(socketFD, $0.baseAddress, $0.count, Int32(MSG_TRUNC)) }
            if n < 0 {
                let e = Glibc.errno
                if e == EINTR { continue }
                throw NetlinkError(step: step, errno: e)
            }
            // An acknowledgement never is this large; a reply that is would have been cut.
            guard n <= smallBuffer.count else { throw NetlinkError(step: step, errno: EMSGSIZE, kernelMessage: "reply of \(n) bytes truncated") }
            return try NetlinkMessage.parse(Array(smallBuffer[0..<n]))
        }
    }

    /// Sends a GET request without NLM_F_DUMP and returns its single reply (or throws the
    /// kernel's error).
    public func get(_ message: NetlinkMessage, step: String) throws -> NetlinkMessage {
        let m = prepare(message, flags: NL.F_REQUEST)
        try send(m, step: step)
        while true {
            for reply in try receive(step: step)! where reply.seq == m.seq {
                if let e = error(from: reply, step: step) { throw e }
                if reply.type == NL.NLMSG_ERROR || reply.type == NL.NLMSG_DONE { continue }
                return reply
            }
        }
    }

    /// An NLM_F_DUMP request: returns every reply message until NLMSG_DONE (multi-part replies
    /// span several datagrams). A dump the kernel marks as interrupted (NLM_F_DUMP_INTR: the table
    /// changed under it) is restarted, a few times at most.
    public func dump(_ message: NetlinkMessage, step: String) throws -> [NetlinkMessage] {
        var attempt = 0
        while true {
            attempt += 1
            let m = prepare(message, flags: NL.F_REQUEST | NL.F_DUMP)
            try send(m, step: step)
            var out: [NetlinkMessage] = []
            var interrupted = false
            var done = false
            while !done {
                for reply in try receive(step: step)! where reply.seq == m.seq {
                    if reply.flags & NL.F_DUMP_INTR != 0 { interrupted = true }
                    switch reply.type {
                    case NL.NLMSG_DONE:
                        if let e = error(from: reply, step: step) { throw e }
                        done = true
                    case NL.NLMSG_ERROR:
                        if let e = error(from: reply, step: step) { throw e }
                        done = true
                    case NL.NLMSG_NOOP, NL.NLMSG_OVERRUN:
                        continue
                    default:
                        out.append(reply)
                    }
                    if done { break }
                }
            }
            if !interrupted { return out }
            if attempt >= 5 { throw NetlinkError(step: step, errno: EINTR, kernelMessage: "dump kept being interrupted by concurrent changes") }
        }
    }
}
