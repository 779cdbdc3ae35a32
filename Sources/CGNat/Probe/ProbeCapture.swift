import CNetlinkShim
import Glibc
import Netlink

/// A packet seen arriving at the target: its source address and port (echo id for ICMP) there,
/// which sender's token it carried (nil for a TCP SYN, matched by destination port), and when.
struct Sighting {
    var source: IPAddress
    var port: UInt16
    var destination: IPAddress
    var sender: Int?
    var milliseconds: Double
    var interfaceIndex: Int32
}

/// One of our probe packets as parsed from a frame: an ICMP echo request or UDP datagram with
/// its token (the first bytes of the payload), or a TCP SYN by its destination port.
struct CapturedProbe {
    var proto: ProbeProtocol
    var source: IPAddress
    var destination: IPAddress
    /// Source port, or the echo identifier.
    var port: UInt16
    var destinationPort: UInt16
    var token: [UInt8]?
}

/// An AF_PACKET observer at the target: cooked (SOCK_DGRAM) frames of every protocol on one
/// interface (or all), incoming only. Open it on a thread inside the target namespace, before the
/// sender fires.
enum PacketCapture {
    static func open(interface: String?) throws -> Int32 {
        // Protocol 0 receives nothing until bind, so no frames of other interfaces slip in first.
        let fd = socket(AF_PACKET, SockType.dgram | SockType.flags, 0)
        guard fd >= 0 else { throw ProbeSetupError("capture socket (AF_PACKET)") }
        var index: Int32 = 0
        if let interface {
            index = Int32(bitPattern: if_nametoindex(interface))
            guard index > 0 else {
                let e = errno
                close(fd)
                throw ProbeSetupError("capture interface \(interface)", errno: e)
            }
        }
        // Outgoing copies (our own replies) are of no interest; older kernels lack the option and
        // fall back to the pkttype filter in `read`.
        _ = setIntOption(fd, Int32(SOL_PACKET), 23 /* PACKET_IGNORE_OUTGOING */, 1)
        _ = setIntOption(fd, SOL_SOCKET, SO_RCVBUF, 1 << 20)
        var sll = sockaddr_ll()
        sll.sll_family = UInt16(AF_PACKET)
        sll.sll_protocol = UInt16(ETH_P_ALL).bigEndian
        sll.sll_ifindex = index
        let ok = withUnsafePointer(to: &sll) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_ll>.size)) == 0 }
        }
        guard ok else {
            let e = errno
            close(fd)
            throw ProbeSetupError("bind capture to \(interface ?? "all interfaces")", errno: e)
        }
        return fd
    }

    /// Reads every queued frame and hands each probe packet to `handle` with its interface index.
    static func read(_ fd: Int32, tokenLength: Int, _ handle: (CapturedProbe, Int32) -> Void) {
        var buf = [UInt8](repeating: 0, count: 2048)
        while true {
            var sll = sockaddr_ll()
            var len = socklen_t(MemoryLayout<sockaddr_ll>.size)
            let n = buf.withUnsafeMutableBytes { raw in
                withUnsafeMutablePointer(to: &sll) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { recvfrom(fd, raw.baseAddress, raw.count, 0, $0, &len) }
                }
            }
            guard n > 0 else { break }
            if sll.sll_pkttype == UInt8(PACKET_OUTGOING) { continue }
            let proto = UInt16(bigEndian: sll.sll_protocol)
            let packet: CapturedProbe? = buf.withUnsafeBytes { raw in
                parse(UnsafeRawBufferPointer(rebasing: raw[0..<n]), ethertype: proto, tokenLength: tokenLength)
            }
            if let packet { handle(packet, sll.sll_ifindex) }
        }
    }

    /// Parses an IPv4/IPv6 packet and returns it when it may be one of ours: an ICMP echo request
    /// or UDP datagram (with the first `tokenLength` payload bytes), or a TCP SYN without ACK.
    static func parse(_ p: UnsafeRawBufferPointer, ethertype: UInt16, tokenLength: Int) -> CapturedProbe? {
        var l4Proto: UInt8
        var l4: Int
        let source: IPAddress
        let destination: IPAddress
        if ethertype == UInt16(ETH_P_IP) {
            guard p.count >= 20, p[0] >> 4 == 4 else { return nil }
            let ihl = Int(p[0] & 0x0f) * 4
            let fragmentOffset = (UInt16(p[6] & 0x1f) << 8) | UInt16(p[7])
            guard ihl >= 20, p.count >= ihl, fragmentOffset == 0 else { return nil }
            l4Proto = p[9]
            l4 = ihl
            source = IPAddress(family: .v4, bytes: Array(p[12..<16]))
            destination = IPAddress(family: .v4, bytes: Array(p[16..<20]))
        } else if ethertype == UInt16(ETH_P_IPV6) {
            guard p.count >= 40, p[0] >> 4 == 6 else { return nil }
            l4Proto = p[6]
            l4 = 40
            source = IPAddress(family: .v6, bytes: Array(p[8..<24]))
            destination = IPAddress(family: .v6, bytes: Array(p[24..<40]))
            // Skip hop-by-hop, routing and destination options headers; give up on fragments.
            var hops = 0
            while [0, 43, 60].contains(l4Proto) && hops < 8 {
                guard p.count >= l4 + 8 else { return nil }
                l4Proto = p[l4]
                l4 += (Int(p[l4 + 1]) + 1) * 8
                hops += 1
            }
        } else {
            return nil
        }
        func be16(_ at: Int) -> UInt16 { UInt16(p[at]) << 8 | UInt16(p[at + 1]) }
        func token(at start: Int) -> [UInt8]? {
            p.count >= start + tokenLength ? Array(p[start..<(start + tokenLength)]) : nil
        }
        let isEcho = (l4Proto == 1 && source.family == .v4) || (l4Proto == 58 && source.family == .v6)
        if isEcho {
            let requestType: UInt8 = source.family == .v4 ? 8 : 128
            guard p.count >= l4 + 8, p[l4] == requestType, let t = token(at: l4 + 8) else { return nil }
            return CapturedProbe(proto: .icmp, source: source, destination: destination, port: be16(l4 + 4), destinationPort: 0, token: t)
        }
        if l4Proto == 17 {
            guard p.count >= l4 + 8, let t = token(at: l4 + 8) else { return nil }
            return CapturedProbe(proto: .udp, source: source, destination: destination, port: be16(l4), destinationPort: be16(l4 + 2), token: t)
        }
        if l4Proto == 6 {
            guard p.count >= l4 + 14 else { return nil }
            let flags = p[l4 + 13]
            guard flags & 0x02 != 0, flags & 0x10 == 0 else { return nil }  // SYN, not SYN-ACK
            return CapturedProbe(proto: .tcp, source: source, destination: destination, port: be16(l4), destinationPort: be16(l4 + 2), token: nil)
        }
        return nil
    }
}
