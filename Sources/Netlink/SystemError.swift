import Glibc

/// A failed system call, with what we were doing and the kernel's errno text.
public struct SystemError: Error, CustomStringConvertible, Sendable {
    public let step: String
    public let errno: Int32

    public init(_ step: String, errno: Int32 = Glibc.errno) {
        self.step = step
        self.errno = errno
    }

    public var description: String { "\(step): \(String(cString: strerror(errno)))" }
}
