import CNetlinkShim
import Glibc
import Netlink

/// Outbound TCP connections whose public source the uplink's listeners report: each client
/// connects, sends its token once connected, and the listener that accepts reads the token, so
/// connections that arrive at once (the collision case) are told apart.
struct TCPConnectProbe {
    struct Client {
        var token: [UInt8]
        var fd: Int32
        var destination: FlowEndpoint
    }

    /// Connects every client and returns, by token, the peer address each listener accepted.
    /// `listeners`: listening fds by the endpoint they listen on.
    static func run(_ clients: [Client], listeners: [FlowEndpoint: Int32], within ms: Double) -> [[UInt8]: FlowEndpoint] {
        run(clients, listeners: listeners, within: ms, keep: false).mapValues(\.0)
    }

    /// The same, keeping each accepted connection open: the caller closes the fds it gets.
    static func runKeeping(_ clients: [Client], listeners: [FlowEndpoint: Int32], within ms: Double) -> [[UInt8]: (FlowEndpoint, Int32)] {
        run(clients, listeners: listeners, within: ms, keep: true)
    }

    private static func run(_ clients: [Client], listeners: [FlowEndpoint: Int32], within ms: Double, keep: Bool) -> [[UInt8]: (FlowEndpoint, Int32)] {
        var sent = Set<Int32>()
        var failed = Set<Int32>()
        for c in clients {
            let rc = SocketAddress(c.destination.address, port: c.destination.port).withPointer { connect(c.fd, $0, $1) }
            if rc != 0 && errno != EINPROGRESS { failed.insert(c.fd) }
        }
        var accepted: [(fd: Int32, peer: FlowEndpoint)] = []
        var found: [[UInt8]: (FlowEndpoint, Int32)] = [:]
        defer { accepted.forEach { close($0.fd) } }
        let deadline = probeNow() + ms
        while found.count < clients.count - failed.count {
            var fds: [pollfd] = []
            for c in clients where !sent.contains(c.fd) && !failed.contains(c.fd) { fds.append(pollfd(fd: c.fd, events: Int16(POLLOUT), revents: 0)) }
            for l in listeners.values { fds.append(pollfd(fd: l, events: Int16(POLLIN), revents: 0)) }
            for a in accepted { fds.append(pollfd(fd: a.fd, events: Int16(POLLIN), revents: 0)) }
            let left = deadline - probeNow()
            if left <= 0 { break }
            _ = poll(&fds, nfds_t(fds.count), Int32(max(1, left.rounded(.up))))
            for p in fds where p.revents != 0 {
                if let c = clients.first(where: { $0.fd == p.fd }) {
                    if socketError(c.fd) != 0 { failed.insert(c.fd); continue }
                    if send(c.fd, c.token, c.token.count, Int32(MSG_NOSIGNAL)) == c.token.count { sent.insert(c.fd) }
                } else if listeners.values.contains(p.fd) {
                    while true {
                        var from = sockaddr_storage()
                        var len = socklen_t(MemoryLayout<sockaddr_storage>.size)
                        let conn = withUnsafeMutablePointer(to: &from) {
                            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(p.fd, $0, &len) }
                        }
                        guard conn >= 0 else { break }
                        _ = fcntl(conn, F_SETFL, fcntl(conn, F_GETFL) | O_NONBLOCK)
                        if let (a, port) = parseSocketAddress(from) { accepted.append((conn, FlowEndpoint(a, port))) } else { close(conn) }
                    }
                } else if let i = accepted.firstIndex(where: { $0.fd == p.fd }) {
                    var buf = [UInt8](repeating: 0, count: 256)
                    let n = recv(p.fd, &buf, buf.count, 0)
                    var kept = false
                    if n > 0, let c = clients.first(where: { t in buf[0..<n].starts(with: t.token) }) {
                        found[c.token] = (accepted[i].peer, keep ? accepted[i].fd : -1)
                        kept = keep
                    }
                    if !(n < 0 && errno == EAGAIN) {
                        if !kept { close(accepted[i].fd) }
                        accepted.remove(at: i)
                    }
                }
            }
        }
        return found
    }
}
