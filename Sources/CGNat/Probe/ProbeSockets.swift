import CNetlinkShim
import Glibc
import Netlink

// Low-level helpers for the probe engine: socket creation, addresses, clocks, ICMP error queues.

/// Milliseconds on the monotonic clock.
func probeNow() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) * 1000 + Double(ts.tv_nsec) / 1_000_000
}

func errnoText(_ e: Int32) -> String { String(cString: strerror(e)) }

/// A probe setup failure: the step, and the errno text.
struct ProbeSetupError: Error, CustomStringConvertible {
    let description: String
    let code: Int32
    init(_ step: String, errno e: Int32 = Glibc.errno) { description = "\(step): \(errnoText(e))"; code = e }
    init(message: String) { description = message; code = 0 }
}

enum SockType {
    static let dgram = Int32(SOCK_DGRAM.rawValue)
    static let stream = Int32(SOCK_STREAM.rawValue)
    static let flags = Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue)
}

func afOf(_ family: IPFamily) -> Int32 { family == .v4 ? AF_INET : AF_INET6 }

/// A sockaddr_in/sockaddr_in6 for ADDR:PORT.
struct SocketAddress {
    var storage = sockaddr_storage()
    var length: socklen_t = 0

    init(_ address: IPAddress, port: UInt16) {
        withUnsafeMutableBytes(of: &storage) { raw in
            if address.family == .v4 {
                var sin = sockaddr_in()
                sin.sin_family = sa_family_t(AF_INET)
                sin.sin_port = port.bigEndian
                withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: address.bytes) }
                raw.storeBytes(of: sin, as: sockaddr_in.self)
            } else {
                var sin6 = sockaddr_in6()
                sin6.sin6_family = sa_family_t(AF_INET6)
                sin6.sin6_port = port.bigEndian
                withUnsafeMutableBytes(of: &sin6.sin6_addr) { $0.copyBytes(from: address.bytes) }
                raw.storeBytes(of: sin6, as: sockaddr_in6.self)
            }
        }
        length = socklen_t(address.family == .v4 ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
    }

    func withPointer<T>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
        withUnsafeBytes(of: storage) { body($0.baseAddress!.assumingMemoryBound(to: sockaddr.self), length) }
    }
}

/// Address and port of a sockaddr_in/sockaddr_in6, nil for other families.
func parseSocketAddress(_ raw: UnsafeRawPointer) -> (IPAddress, UInt16)? {
    let family = raw.load(as: sa_family_t.self)
    if Int32(family) == AF_INET {
        let sin = raw.loadUnaligned(as: sockaddr_in.self)
        let bytes = withUnsafeBytes(of: sin.sin_addr) { Array($0) }
        return (IPAddress(family: .v4, bytes: bytes), UInt16(bigEndian: sin.sin_port))
    }
    if Int32(family) == AF_INET6 {
        let sin6 = raw.loadUnaligned(as: sockaddr_in6.self)
        let bytes = withUnsafeBytes(of: sin6.sin6_addr) { Array($0) }
        return (IPAddress(family: .v6, bytes: bytes), UInt16(bigEndian: sin6.sin6_port))
    }
    return nil
}

func parseSocketAddress(_ storage: sockaddr_storage) -> (IPAddress, UInt16)? {
    withUnsafeBytes(of: storage) { parseSocketAddress($0.baseAddress!) }
}

func setIntOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32) -> Bool {
    var v = value
    return setsockopt(fd, level, name, &v, socklen_t(MemoryLayout<Int32>.size)) == 0
}

/// Opens a non-blocking socket in the calling thread's namespace, bound to `device` if given.
func openSocket(_ domain: Int32, _ type: Int32, _ proto: Int32, device: String?, what: String) throws -> Int32 {
    let fd = socket(domain, type | SockType.flags, proto)
    guard fd >= 0 else { throw ProbeSetupError("socket (\(what))") }
    if let device {
        let ok = device.withCString { setsockopt(fd, SOL_SOCKET, SO_BINDTODEVICE, $0, socklen_t(strlen($0) + 1)) == 0 }
        if !ok {
            let e = errno
            close(fd)
            throw ProbeSetupError("bind \(what) to device \(device)", errno: e)
        }
    }
    return fd
}

func bindSocket(_ fd: Int32, _ address: IPAddress, port: UInt16) -> Bool {
    SocketAddress(address, port: port).withPointer { bind(fd, $0, $1) == 0 }
}

/// Turns on IP_RECVERR / IPV6_RECVERR so ICMP errors (with their sender) land in the error queue.
func enableRecvErr(_ fd: Int32, _ family: IPFamily) -> Bool {
    family == .v4 ? setIntOption(fd, Int32(IPPROTO_IP), IP_RECVERR, 1)
                  : setIntOption(fd, Int32(IPPROTO_IPV6), IPV6_RECVERR, 1)
}

/// Reads every queued error (MSG_ERRQUEUE) and describes each one, e.g.
/// "destination unreachable, admin prohibited (icmp 3/13) from 192.0.0.8".
func drainErrorQueue(_ fd: Int32) -> [String] {
    var out: [String] = []
    var data = [UInt8](repeating: 0, count: 512)
    var control = [UInt8](repeating: 0, count: 512)
    for _ in 0..<16 {
        var name = sockaddr_storage()
        let (n, controlLength): (Int, Int) = data.withUnsafeMutableBytes { dataRaw in
            control.withUnsafeMutableBytes { controlRaw in
                withUnsafeMutablePointer(to: &name) { namePtr in
                    var iov = iovec(iov_base: dataRaw.baseAddress, iov_len: dataRaw.count)
                    return withUnsafeMutablePointer(to: &iov) { iovPtr in
                        var msg = msghdr()
                        msg.msg_name = UnsafeMutableRawPointer(namePtr)
                        msg.msg_namelen = socklen_t(MemoryLayout<sockaddr_storage>.size)
                        msg.msg_iov = iovPtr
                        msg.msg_iovlen = 1
                        msg.msg_control = controlRaw.baseAddress
                        msg.msg_controllen = controlRaw.count
                        let n = recvmsg(fd, &msg, Int32(MSG_ERRQUEUE) | Int32(MSG_DONTWAIT))
                        return (n, Int(msg.msg_controllen))
                    }
                }
            }
        }
        guard n >= 0 else { break }
        control.withUnsafeBytes { raw in
            var offset = 0
            let headerSize = MemoryLayout<cmsghdr>.size
            while offset + headerSize <= controlLength {
                let header = raw.loadUnaligned(fromByteOffset: offset, as: cmsghdr.self)
                let length = Int(header.cmsg_len)
                guard length >= headerSize, offset + length <= controlLength else { break }
                let isV4 = header.cmsg_level == Int32(IPPROTO_IP) && header.cmsg_type == IP_RECVERR
                let isV6 = header.cmsg_level == Int32(IPPROTO_IPV6) && header.cmsg_type == IPV6_RECVERR
                let eeSize = MemoryLayout<sock_extended_err>.size
                if (isV4 || isV6) && length >= headerSize + eeSize {
                    let ee = raw.loadUnaligned(fromByteOffset: offset + headerSize, as: sock_extended_err.self)
                    var offender: IPAddress?
                    if length >= headerSize + eeSize + MemoryLayout<sa_family_t>.size {
                        let p = raw.baseAddress! + offset + headerSize + eeSize
                        // Copy into aligned storage before reading it as a sockaddr.
                        var st = sockaddr_storage()
                        let avail = min(length - headerSize - eeSize, MemoryLayout<sockaddr_storage>.size)
                        withUnsafeMutableBytes(of: &st) { $0.copyMemory(from: UnsafeRawBufferPointer(start: p, count: avail)) }
                        if let (a, _) = parseSocketAddress(st), a != IPAddress.any(a.family) { offender = a }
                    }
                    out.append(describeExtendedError(ee, offender: offender))
                }
                offset += (length + 7) & ~7
            }
        }
    }
    return out
}

func describeExtendedError(_ ee: sock_extended_err, offender: IPAddress?) -> String {
    let from = offender.map { " from \($0)" } ?? ""
    switch Int32(ee.ee_origin) {
    case 2: return "\(icmpErrorName(type: ee.ee_type, code: ee.ee_code)) (icmp \(ee.ee_type)/\(ee.ee_code))\(from)"
    case 3: return "\(icmp6ErrorName(type: ee.ee_type, code: ee.ee_code)) (icmpv6 \(ee.ee_type)/\(ee.ee_code))\(from)"
    default: return "local error: \(errnoText(Int32(ee.ee_errno)))\(from)"
    }
}

func icmpErrorName(type: UInt8, code: UInt8) -> String {
    switch type {
    case 3:
        let codes: [UInt8: String] = [
            0: "net unreachable", 1: "host unreachable", 2: "protocol unreachable", 3: "port unreachable",
            4: "fragmentation needed", 5: "source route failed", 6: "net unknown", 7: "host unknown",
            9: "net admin prohibited", 10: "host admin prohibited", 11: "net unreachable for TOS",
            12: "host unreachable for TOS", 13: "admin prohibited", 14: "host precedence violation",
            15: "precedence cutoff",
        ]
        return "destination unreachable, " + (codes[code] ?? "code \(code)")
    case 11: return "time exceeded"
    case 12: return "parameter problem"
    case 5: return "redirect"
    default: return "icmp type \(type)"
    }
}

func icmp6ErrorName(type: UInt8, code: UInt8) -> String {
    switch type {
    case 1:
        let codes: [UInt8: String] = [
            0: "no route", 1: "admin prohibited", 2: "beyond scope", 3: "address unreachable",
            4: "port unreachable", 5: "source policy failed", 6: "reject route",
        ]
        return "destination unreachable, " + (codes[code] ?? "code \(code)")
    case 2: return "packet too big"
    case 3: return "time exceeded"
    case 4: return "parameter problem"
    default: return "icmpv6 type \(type)"
    }
}

/// The pending socket error (SO_ERROR), cleared by reading it.
func socketError(_ fd: Int32) -> Int32 {
    var e: Int32 = 0
    var len = socklen_t(MemoryLayout<Int32>.size)
    guard getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) == 0 else { return errno }
    return e
}

/// Whether `needle` occurs in `haystack[from...]`.
func containsBytes(_ haystack: UnsafeRawBufferPointer, from start: Int, _ needle: [UInt8]) -> Bool {
    guard !needle.isEmpty, haystack.count - start >= needle.count, start >= 0 else { return false }
    var i = start
    while i + needle.count <= haystack.count {
        if haystack[i] == needle[0] {
            var j = 1
            while j < needle.count && haystack[i + j] == needle[j] { j += 1 }
            if j == needle.count { return true }
        }
        i += 1
    }
    return false
}

/// A one-shot barrier for N threads.
final class ProbeBarrier {
    private let barrier = UnsafeMutablePointer<pthread_barrier_t>.allocate(capacity: 1)

    init(count: Int) { pthread_barrier_init(barrier, nil, UInt32(max(1, count))) }
    deinit {
        pthread_barrier_destroy(barrier)
        barrier.deallocate()
    }
    func wait() { pthread_barrier_wait(barrier) }
}
