import CNetlinkShim
import Glibc
import Netlink

// Socket helpers for the RFC 5780-style conformance probes. Every socket is opened on a thread
// inside its namespace (it stays there) and then driven from the calling thread with poll, one
// step after the other: the probes are few and each waits only when nothing arrives.

/// A datagram or stream socket that was opened in some namespace.
struct ConfSocket {
    let fd: Int32
    let local: FlowEndpoint
}

/// Opens sockets in one namespace and closes every one of them at the end of the run.
final class ConfSockets {
    private(set) var open: [Int32] = []

    deinit { closeAll() }

    func closeAll() {
        for fd in open { close(fd) }
        open = []
    }

    func close(_ fd: Int32) {
        if let i = open.firstIndex(of: fd) { open.remove(at: i); Glibc.close(fd) }
    }

    /// A UDP (or TCP, or ICMP echo) socket bound to ADDR:PORT inside the namespace `ns`.
    func socket(_ kind: ProbeProtocol, ns: Int32, device: String?, bind address: IPAddress, port: UInt16,
                listen: Bool = false, what: String) throws -> Int32 {
        let fd: Int32 = try NetNamespace.run(in: ns) {
            let type = kind == .tcp ? SockType.stream : SockType.dgram
            let proto = kind == .icmp ? Int32(IPPROTO_ICMP) : 0
            let fd: Int32
            do {
                fd = try openSocket(AF_INET, type, proto, device: device, what: what)
            } catch let e as ProbeSetupError where e.code == EACCES && kind == .icmp {
                throw ProbeSetupError(message: "\(e) (net.ipv4.ping_group_range must include gid \(getgid()))")
            }
            _ = enableRecvErr(fd, .v4)
            if kind != .icmp { _ = setIntOption(fd, SOL_SOCKET, SO_REUSEADDR, 1) }
            guard bindSocket(fd, address, port: port) else {
                let e = errno
                Glibc.close(fd)
                throw ProbeSetupError("bind \(what) to \(address):\(port)", errno: e)
            }
            if listen && Glibc.listen(fd, 16) != 0 {
                let e = errno
                Glibc.close(fd)
                throw ProbeSetupError("listen (\(what))", errno: e)
            }
            return fd
        }
        open.append(fd)
        return fd
    }

    /// An AF_PACKET capture of incoming frames on `interface` inside `ns`.
    func capture(ns: Int32, interface: String) throws -> Int32 {
        let fd = try NetNamespace.run(in: ns) { try PacketCapture.open(interface: interface) }
        open.append(fd)
        return fd
    }
}

func sendDatagram(_ fd: Int32, _ bytes: [UInt8], to: FlowEndpoint) -> Bool {
    SocketAddress(to.address, port: to.port).withPointer { sendto(fd, bytes, bytes.count, 0, $0, $1) } == bytes.count
}

/// Waits up to `ms` for a datagram on `fd` that `match` accepts; returns it and its sender.
func receiveDatagram(_ fd: Int32, within ms: Double, _ match: ([UInt8], FlowEndpoint) -> Bool) -> FlowEndpoint? {
    let deadline = probeNow() + ms
    var buf = [UInt8](repeating: 0, count: 65536)   // whole reassembled datagrams
    while true {
        while true {
            var from = sockaddr_storage()
            var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
            let n = buf.withUnsafeMutableBytes { raw in
                withUnsafeMutablePointer(to: &from) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, raw.baseAddress, raw.count, 0, $0, &len) }
                }
            }
            if n < 0 { break }
            if let (a, p) = parseSocketAddress(from), match(Array(buf[0..<n]), FlowEndpoint(a, p)) { return FlowEndpoint(a, p) }
        }
        let left = deadline - probeNow()
        if left <= 0 { return nil }
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        _ = poll(&pfd, 1, Int32(max(1, left.rounded(.up))))
    }
}

/// Waits up to `ms` for an ICMP error in the error queue of `fd`.
func receiveError(_ fd: Int32, within ms: Double) -> ICMPErrorDetail? {
    let deadline = probeNow() + ms
    while true {
        if let d = drainErrorQueue(fd).compactMap(ICMPErrorDetail.init).first { return d }
        let left = deadline - probeNow()
        if left <= 0 { return nil }
        var pfd = pollfd(fd: fd, events: Int16(POLLERR), revents: 0)
        _ = poll(&pfd, 1, Int32(max(1, left.rounded(.up))))
    }
}

/// The text `drainErrorQueue` gives an ICMP error, and its type, code and sender read back from it.
struct ICMPErrorDetail {
    var text: String
    var type: UInt8?
    var code: UInt8?
    var from: IPAddress?

    init?(_ text: String) {
        self.text = text
        // "... (icmp 3/3) from 192.0.2.1"
        if let r = text.firstRange(of: "(icmp ") {
            let rest = text[r.upperBound...]
            let numbers = rest.prefix { $0 != ")" }.split(separator: "/")
            if numbers.count == 2 { type = UInt8(numbers[0]); code = UInt8(numbers[1]) }
        }
        if let r = text.firstRange(of: " from ") { from = IPAddress(String(text[r.upperBound...])) }
    }
}

/// Frames captured so far on `fd` that are our probes (by token), with where they were seen.
func readCapture(_ fd: Int32, tokenLength: Int, into seen: inout [CapturedProbe]) {
    PacketCapture.read(fd, tokenLength: tokenLength) { p, _ in seen.append(p) }
}

/// Waits up to `ms` until `match` finds a captured frame.
func waitCapture(_ fd: Int32, tokenLength: Int, within ms: Double, _ match: (CapturedProbe) -> Bool) -> CapturedProbe? {
    let deadline = probeNow() + ms
    while true {
        var found: CapturedProbe?
        PacketCapture.read(fd, tokenLength: tokenLength) { p, _ in if found == nil && match(p) { found = p } }
        if let found { return found }
        let left = deadline - probeNow()
        if left <= 0 { return nil }
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        _ = poll(&pfd, 1, Int32(max(1, left.rounded(.up))))
    }
}

/// Random tokens of one length, so a capture parses them all.
struct TokenMaker {
    static let length = 16
    var used = Set<[UInt8]>()
    mutating func make() -> [UInt8] {
        let hex = Array("0123456789abcdef".utf8)
        while true {
            let t = Array("cgconf-".utf8) + (0..<(Self.length - 7)).map { _ in hex[Int.random(in: 0..<16)] }
            if used.insert(t).inserted { return t }
        }
    }
}
