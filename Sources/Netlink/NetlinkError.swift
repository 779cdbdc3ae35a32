import Glibc

/// A request the kernel refused: what we were doing, the errno, and the kernel's own explanation
/// from the extended ACK (NLMSGERR_ATTR_MSG), when it sent one.
public struct NetlinkError: Error, CustomStringConvertible, Sendable, Equatable {
    public let step: String
    /// Positive errno.
    public let errno: Int32
    /// NLMSGERR_ATTR_MSG of the extended ACK.
    public let kernelMessage: String?
    /// NLMSGERR_ATTR_OFFS: byte offset of the offending attribute in the request, if the kernel named one.
    public let offset: UInt32?

    public init(step: String, errno: Int32, kernelMessage: String? = nil, offset: UInt32? = nil) {
        self.step = step
        self.errno = errno
        self.kernelMessage = kernelMessage
        self.offset = offset
    }

    /// Text of `errno` ("File exists").
    public var errnoText: String { String(cString: strerror(errno)) }

    public var description: String {
        if let m = kernelMessage, !m.isEmpty { return "\(step): \(errnoText) (kernel: \(m))" }
        return "\(step): \(errnoText)"
    }
}

/// The kernel dropped conntrack events because our receive buffer was full (ENOBUFS). How many is
/// unknown: report it and resynchronise by dumping the table.
public struct ConntrackOverrun: Error, CustomStringConvertible, Sendable {
    public let step: String
    /// Events that were read before the kernel reported the loss: still valid, log them first.
    public let received: [ConntrackEvent]
    public init(step: String, received: [ConntrackEvent] = []) { self.step = step; self.received = received }
    public var description: String { "\(step): conntrack events were lost (receive buffer overrun, ENOBUFS); dump the table to resynchronise" }
}
