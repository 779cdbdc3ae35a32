import Glibc
import Netlink

/// Reads many event datagrams per system call (recvmmsg) from a ctnetlink event socket. Each
/// conntrack event is a datagram of its own; at tens of thousands per second the two calls per
/// datagram of NetlinkSocket.receive (peek for the size, then read) cost more than the decoding.
final class EventReceiver {
    static let slots = 64
    /// Conntrack events are well under 1 KiB; a datagram that does not fit is reported as an error.
    static let slotSize = 16 << 10

    /// recvmmsg(2) is a GNU extension the Glibc module does not show: look it up once.
    /// `struct mmsghdr` is a msghdr followed by `unsigned int msg_len`, laid out here by hand.
    typealias RecvMMsg = @convention(c) (Int32, UnsafeMutableRawPointer, UInt32, Int32, UnsafeMutableRawPointer?) -> Int32
    static let recvmmsgFunction: RecvMMsg? = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "recvmmsg")
        .map { unsafeBitCast($0, to: RecvMMsg.self) }
    static let lengthOffset = MemoryLayout<msghdr>.size
    static let headerStride = (MemoryLayout<msghdr>.size + MemoryLayout<UInt32>.size + 7) / 8 * 8

    private let fd: Int32
    private let buffer: UnsafeMutableRawPointer
    private let iovecs: UnsafeMutablePointer<iovec>
    private let headers: UnsafeMutableRawPointer

    init(fd: Int32) {
        self.fd = fd
        buffer = UnsafeMutableRawPointer.allocate(byteCount: Self.slots * Self.slotSize, alignment: 8)
        iovecs = .allocate(capacity: Self.slots)
        headers = .allocate(byteCount: Self.slots * Self.headerStride, alignment: 8)
        for i in 0..<Self.slots {
            iovecs[i] = iovec(iov_base: buffer + i * Self.slotSize, iov_len: Self.slotSize)
        }
    }

    private func header(_ i: Int) -> UnsafeMutablePointer<msghdr> {
        (headers + i * Self.headerStride).assumingMemoryBound(to: msghdr.self)
    }

    private func length(_ i: Int) -> Int {
        Int((headers + i * Self.headerStride + Self.lengthOffset).load(as: UInt32.self))
    }

    deinit {
        buffer.deallocate()
        iovecs.deallocate()
        headers.deallocate()
    }

    enum Outcome { case messages([[NetlinkMessage]]), empty, overrun }

    /// What is queued now (never blocks): up to `slots` datagrams, each split into messages.
    func receive() throws -> Outcome {
        guard let recvmmsg = Self.recvmmsgFunction else { return try receiveOne() }
        memset(headers, 0, Self.slots * Self.headerStride)
        for i in 0..<Self.slots {
            header(i).pointee.msg_iov = iovecs + i
            header(i).pointee.msg_iovlen = 1
        }
        while true {
            let n = recvmmsg(fd, headers, UInt32(Self.slots), Int32(MSG_DONTWAIT), nil)
            if n < 0 {
                guard let o = try Self.outcome(ofError: errno) else { continue }
                return o
            }
            if n == 0 { return .empty }
            var out: [[NetlinkMessage]] = []
            out.reserveCapacity(Int(n))
            for i in 0..<Int(n) {
                let len = length(i)
                if header(i).pointee.msg_flags & Int32(MSG_TRUNC) != 0 {
                    throw NetlinkError(step: "receive conntrack events: a datagram larger than \(Self.slotSize) bytes", errno: EMSGSIZE)
                }
                let bytes = Array(UnsafeRawBufferPointer(start: buffer + i * Self.slotSize, count: len))
                out.append(try NetlinkMessage.parse(bytes))
            }
            return .messages(out)
        }
    }

    /// What a failed receive means: nil to retry (EINTR), nothing queued, events lost (ENOBUFS),
    /// or a real error.
    private static func outcome(ofError e: Int32) throws -> Outcome? {
        if e == EINTR { return nil }
        if e == EAGAIN || e == EWOULDBLOCK { return .empty }
        if e == ENOBUFS { return .overrun }
        throw NetlinkError(step: "receive conntrack events", errno: e)
    }

    /// Without recvmmsg: one datagram per call, into the first slot.
    private func receiveOne() throws -> Outcome {
        while true {
            let n = recv(fd, buffer, Self.slotSize, Int32(MSG_DONTWAIT))
            if n < 0 {
                guard let o = try Self.outcome(ofError: errno) else { continue }
                return o
            }
            return .messages([try NetlinkMessage.parse(Array(UnsafeRawBufferPointer(start: buffer, count: n)))])
        }
    }
}
