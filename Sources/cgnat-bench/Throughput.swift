import CGNat
import Glibc
import Netlink

// `--tput`: TCP bulk throughput and new connections per second through the NAT against the
// routed path of the same lab. The routed subscriber's routed address crosses the same router
// (same links, same bridge, same conntrack) without translation, so the ratio NAT/routed is the
// NAT's own cost. Rounds alternate the two paths (and which one goes first), so the noise of a
// machine shared with other work hits both alike.

/// The two paths the bench compares, taken from the lab model.
struct ThroughputPaths {
    struct Path {
        let label: String
        let host: Host
        let source: IPAddress
    }
    let nat: Path
    let routed: Path
    let uplink: Host
    let target: IPAddress

    init(_ lab: Lab) throws {
        let subscribers = lab.hosts.filter { if case .domain = $0.attachment { return true } else { return false } }
        let inside = lab.router.nat.inside
        func domain(of h: Host) -> SubscriberDomain? {
            guard case .domain(let d) = h.attachment else { return nil }
            return lab.domain(named: d)
        }
        // The subscriber that owns a routed IPv4 address (one of its domain's `routed` prefixes).
        var found: (Host, IPAddress, SubscriberDomain)?
        for h in subscribers {
            guard let d = domain(of: h) else { continue }
            let routedV4 = d.routed.filter { $0.family == .v4 }
            if let a = (h.addresses + h.loopbackAddresses).map(\.address)
                .first(where: { a in a.family == .v4 && !inside.contains(a) && routedV4.contains { $0.contains(a) } }) {
                found = (h, a, d); break
            }
        }
        guard let (routedHost, routedAddress, d) = found else {
            throw UsageError("cgnat-bench --tput: no subscriber of lab \(lab.name) owns a routed IPv4 address (a domain's `routed` prefix): nothing to compare the NAT with")
        }
        // A NATed subscriber of the same domain (same bridge, same transfer link), else the same host's inside address.
        func insideAddress(_ h: Host) -> IPAddress? {
            h.addresses.map(\.address).first { $0.family == .v4 && inside.contains($0) }
        }
        let natHost = lab.hosts(in: d.name).first { $0.name != routedHost.name && insideAddress($0) != nil } ?? routedHost
        guard let natAddress = insideAddress(natHost) else {
            throw UsageError("cgnat-bench --tput: no subscriber of domain \(d.name) has an inside IPv4 address (\(inside))")
        }
        guard let uplink = lab.uplinkHost else { throw UsageError("cgnat-bench --tput: lab \(lab.name) has no uplink host") }
        // The uplink's IPv4 address a subscriber reaches through the router: not one that the
        // domain has on its own bridge (the seed's uplink link address is also the gateway's).
        let candidates = (uplink.loopbackAddresses + uplink.addresses).map(\.address).filter { $0.family == .v4 }
        guard let target = candidates.first(where: { a in !d.addresses.contains { $0.network.contains(a) } }) else {
            throw UsageError("cgnat-bench --tput: every IPv4 address of \(uplink.name) is also on domain \(d.name)'s bridge: no server address to reach through the router")
        }
        nat = Path(label: "NAT", host: natHost, source: natAddress)
        routed = Path(label: "routed", host: routedHost, source: routedAddress)
        self.uplink = uplink
        self.target = target
    }
}

// MARK: sockets

func socketAddress(_ a: IPAddress, _ port: UInt16) -> sockaddr_in {
    var sin = sockaddr_in()
    sin.sin_family = sa_family_t(AF_INET)
    sin.sin_port = port.bigEndian
    withUnsafeMutableBytes(of: &sin.sin_addr) { $0.copyBytes(from: a.bytes) }
    return sin
}

func withSockaddr<T>(_ sin: sockaddr_in, _ body: (UnsafePointer<sockaddr>, socklen_t) -> T) -> T {
    var s = sin
    return withUnsafePointer(to: &s) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
}

struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ what: String) { description = "\(what): \(String(cString: strerror(errno)))" }
}

func tcpSocket() throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { throw BenchFailure("socket") }
    return fd
}

func listenOn(_ port: UInt16) throws -> Int32 {
    let fd = try tcpSocket()
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    let ok = withSockaddr(socketAddress(.any(.v4), port)) { bind(fd, $0, $1) } == 0 && listen(fd, 4096) == 0
    guard ok else { let e = BenchFailure("listen on port \(port)"); close(fd); throw e }
    return fd
}

/// A TCP socket bound to `source` (the port is left to connect), in the calling thread's namespace.
func boundSocket(_ source: IPAddress) throws -> Int32 {
    let fd = try tcpSocket()
    // The port is chosen at connect time by the whole 4-tuple, not at bind: thousands of
    // connections in TIME_WAIT would otherwise use up the ephemeral range of the address.
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_IP), 24 /* IP_BIND_ADDRESS_NO_PORT */, &one, socklen_t(MemoryLayout<Int32>.size))
    guard withSockaddr(socketAddress(source, 0), { bind(fd, $0, $1) }) == 0 else {
        let e = BenchFailure("bind \(source)"); close(fd); throw e
    }
    return fd
}

func connectSocket(_ fd: Int32, from source: IPAddress, to target: IPAddress, port: UInt16) throws {
    guard withSockaddr(socketAddress(target, port), { connect(fd, $0, $1) }) == 0 else {
        throw BenchFailure("connect \(source) -> \(target):\(port)")
    }
}

/// A connected socket from `source` (any free port) to `target:port`.
func connectFrom(_ source: IPAddress, to target: IPAddress, port: UInt16) throws -> Int32 {
    let fd = try boundSocket(source)
    do { try connectSocket(fd, from: source, to: target, port: port) } catch { close(fd); throw error }
    return fd
}

func readFully(_ fd: Int32, _ count: Int) -> [UInt8]? {
    var out = [UInt8](repeating: 0, count: count)
    var got = 0
    while got < count {
        let n = out.withUnsafeMutableBytes { read(fd, $0.baseAddress! + got, count - got) }
        if n < 0 && errno == EINTR { continue }
        guard n > 0 else { return nil }
        got += n
    }
    return out
}

// MARK: the server (in the uplink's namespace)

/// The server on the uplink host, on every address it has (link and loopback): a bulk receiver
/// on one port that counts what it reads until EOF and answers with the count and the peer it
/// saw (so the bench shows what the NAT did), and `connPorts` ports that accept and close at once.
/// A port range rather than one port: every connection leaves a TIME_WAIT entry in the router's
/// conntrack for two minutes, and through the NAT each destination port gives a subscriber only
/// its port block's worth of distinct tuples.
final class ThroughputServer {
    static let bulkPort: UInt16 = 45001
    static let connBase: UInt16 = 46000
    static let connPorts = 512

    private var stop: [Int32] = [-1, -1]
    private var threads: [OSThread] = []

    init(namespace: String) throws {
        guard pipe(&stop) == 0 else { throw BenchFailure("pipe") }
        let nsfd = try NetNamespace.open(namespace)
        defer { close(nsfd) }
        // Listening sockets are made on a thread inside the namespace; they stay there.
        let (bulk, conns) = try NetNamespace.run(in: nsfd) { () -> (Int32, [Int32]) in
            let b = try listenOn(ThroughputServer.bulkPort)
            var c: [Int32] = []
            for i in 0..<ThroughputServer.connPorts { c.append(try listenOn(ThroughputServer.connBase + UInt16(i))) }
            return (b, c)
        }
        let stopRead = stop[0]
        threads.append(OSThread { ThroughputServer.serveBulk(bulk, stop: stopRead) })
        threads.append(OSThread { ThroughputServer.serveConnections(conns, stop: stopRead) })
    }

    func shutdown() {
        var b: UInt8 = 1
        _ = write(stop[1], &b, 1)
        threads.forEach { $0.join() }
        close(stop[0]); close(stop[1])
    }

    private static func serveBulk(_ listener: Int32, stop: Int32) {
        defer { close(listener) }
        var buf = [UInt8](repeating: 0, count: 1 << 20)
        while true {
            var fds = [pollfd(fd: listener, events: Int16(POLLIN), revents: 0), pollfd(fd: stop, events: Int16(POLLIN), revents: 0)]
            guard poll(&fds, 2, -1) >= 0 || errno == EINTR else { return }
            if fds[1].revents != 0 { return }
            guard fds[0].revents != 0 else { continue }
            var peer = sockaddr_in()
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let c = withUnsafeMutablePointer(to: &peer) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { accept(listener, $0, &len) } }
            guard c >= 0 else { continue }
            var total: UInt64 = 0
            while true {
                let n = buf.withUnsafeMutableBytes { read(c, $0.baseAddress!, $0.count) }
                if n < 0 && errno == EINTR { continue }
                if n <= 0 { break }
                total += UInt64(n)
            }
            // count (8 bytes, big-endian), then the peer's address (4) and port (2) as seen here.
            var reply = withUnsafeBytes(of: total.bigEndian) { Array($0) }
            reply += withUnsafeBytes(of: peer.sin_addr) { Array($0) }
            reply += withUnsafeBytes(of: peer.sin_port) { Array($0) }
            _ = send(c, reply, reply.count, Int32(MSG_NOSIGNAL))
            close(c)
        }
    }

    private static func serveConnections(_ listeners: [Int32], stop: Int32) {
        defer { listeners.forEach { close($0) } }
        for fd in listeners { _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) }
        // poll over a few hundred sockets: Glibc's Swift module has no epoll, and the client
        // connects one at a time, so the scan is not what limits the rate (it is the same for both paths).
        var fds = (listeners + [stop]).map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
        while true {
            let n = poll(&fds, nfds_t(fds.count), -1)
            if n < 0 { if errno == EINTR { continue } else { return } }
            if fds[fds.count - 1].revents != 0 { return }
            for i in 0..<(fds.count - 1) where fds[i].revents != 0 {
                fds[i].revents = 0
                while true {
                    let c = accept(fds[i].fd, nil, nil)
                    if c < 0 { break }
                    close(c)
                }
            }
        }
    }
}

// MARK: the client (in the subscribers' namespaces)

struct BulkResult {
    let bitsPerSecond: Double
    let seenAs: String
}

/// One bulk transfer of `seconds` from `source`: big writes, then a half-close; done when the
/// server's count arrives, so what is still buffered counts against the path, not for it.
func bulkRound(_ path: ThroughputPaths.Path, nsfd: Int32, target: IPAddress, seconds: Double) throws -> BulkResult {
    try NetNamespace.run(in: nsfd) {
        let buf = [UInt8](repeating: 0x5a, count: 256 << 10)
        let fd = try connectFrom(path.source, to: target, port: ThroughputServer.bulkPort)
        defer { close(fd) }
        let t0 = monotonicMilliseconds()
        var sent: UInt64 = 0
        while monotonicMilliseconds() - t0 < seconds * 1000 {
            let n = buf.withUnsafeBytes { send(fd, $0.baseAddress!, $0.count, Int32(MSG_NOSIGNAL)) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw BenchFailure("\(path.label) bulk send") }
            sent += UInt64(n)
        }
        Glibc.shutdown(fd, Int32(SHUT_WR))
        guard let reply = readFully(fd, 14) else { throw BenchFailure("\(path.label) bulk: no count from the server") }
        let t1 = monotonicMilliseconds()
        let count = reply[0..<8].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        guard count == sent else { throw BenchFailure("\(path.label) bulk: the server counted \(count) bytes of \(sent)") }
        let seen = IPAddress(family: .v4, bytes: Array(reply[8..<12]))
        let port = UInt16(reply[12]) << 8 | UInt16(reply[13])
        return BulkResult(bitsPerSecond: Double(count) * 8 / ((t1 - t0) / 1000), seenAs: "\(seen):\(port)")
    }
}

/// `count` connect+close in a row from `source`, each to the next port of the server's range
/// (the warm-up).
func connectionChunk(_ path: ThroughputPaths.Path, nsfd: Int32, target: IPAddress, count: Int, next: inout Int) throws {
    let start = next
    next += count
    try NetNamespace.run(in: nsfd) {
        for i in 0..<count {
            close(try connectFrom(path.source, to: target, port: ThroughputServer.connBase + UInt16((start + i) % ThroughputServer.connPorts)))
        }
    }
}

/// Connections per second of each path over one round of `count` each, alternating connection
/// by connection, so that whatever else the machine does lands on both alike. Sockets are made
/// in their namespaces in batches beforehand (a socket stays in the namespace it was made in
/// and may be used from any thread); each connect+close is timed on its own, and only that counts.
func connectionRound(_ both: [(ThroughputPaths.Path, Int32)], target: IPAddress, count: Int, batch: Int,
                     firstIs first: Int, next: inout [Int], slow: inout [Int], latencies: inout [[Double]]) throws -> [Double] {
    var seconds = [0.0, 0.0], done = 0
    while done < count {
        let n = min(batch, count - done)
        var sockets = try both.map { p in try NetNamespace.run(in: p.1) { try (0..<n).map { _ in try boundSocket(p.0.source) } } }
        defer { sockets.joined().filter { $0 >= 0 }.forEach { close($0) } }   // those a failure left open
        for i in 0..<n {
            for k in [first, 1 - first] {
                let port = ThroughputServer.connBase + UInt16(next[k] % ThroughputServer.connPorts)
                next[k] += 1
                let t0 = monotonicMilliseconds()
                try connectSocket(sockets[k][i], from: both[k].0.source, to: target, port: port)
                close(sockets[k][i])
                let ms = monotonicMilliseconds() - t0
                seconds[k] += ms / 1000
                latencies[k].append(ms)
                // A SYN retransmitted (1 s) says a packet was lost: worth counting apart.
                if ms > 200 { slow[k] += 1 }
                sockets[k][i] = -1
            }
        }
        done += n
    }
    return [Double(count) / seconds[0], Double(count) / seconds[1]]
}

// MARK: the mode

func runThroughput(lab name: String, backend: Backend, rounds: Int, seconds: Double, connections: Int) {
    let lab = Lab.seed(name: name)
    let paths: ThroughputPaths
    do { paths = try ThroughputPaths(lab) } catch { fputs("\(error)\n", stderr); exit(1) }
    _ = must(spawn([binary, "up", "--lab", name, "--backend", backend.rawValue]), "cgnat up")
    var server: ThroughputServer?
    var fds: [Int32] = []
    func cleanup() {
        server?.shutdown()
        fds.forEach { close($0) }
        _ = spawn([binary, "down", "--lab", name])
    }
    do {
        server = try ThroughputServer(namespace: lab.namespaceName(paths.uplink.name))
        let natFD = try NetNamespace.open(lab.namespaceName(paths.nat.host.name))
        fds.append(natFD)
        let routedFD = try NetNamespace.open(lab.namespaceName(paths.routed.host.name))
        fds.append(routedFD)
        let both = [(paths.nat, natFD), (paths.routed, routedFD)]

        print("cgnat-bench --tput: seed lab \(name), \(backend.rawValue) backend, NAT mapping \(mappingName(lab)); TCP to \(paths.uplink.name) \(paths.target)")
        print("  NAT path:    \(paths.nat.host.name) from \(paths.nat.source);  routed path: \(paths.routed.host.name) from \(paths.routed.source)")
        print("  \(rounds) rounds, each: bulk \(fmt(seconds * 1000)) ms per path, \(connections) connect+close per path (alternating connection by connection, each timed); paths alternate, and which goes first")
        print("  load average at the start: \(loadAverage())")
        // A warm-up round of each (neighbour entries, conntrack, TCP metrics), not counted.
        var next = [0, 0]
        var seen: [String] = ["", ""]
        for (k, (p, fd)) in both.enumerated() {
            seen[k] = try bulkRound(p, nsfd: fd, target: paths.target, seconds: seconds / 2).seenAs
            _ = try connectionChunk(p, nsfd: fd, target: paths.target, count: connections / 4, next: &next[k])
        }
        print("  the server saw: NAT path as \(seen[0]), routed path as \(seen[1])")
        var bulk: [[Double]] = [[], []], conn: [[Double]] = [[], []]
        var slow = [0, 0]
        var latencies: [[Double]] = [[], []]
        let routerFD = try NetNamespace.open(lab.namespaceName(lab.router.name))
        fds.append(routerFD)
        func routerStats() -> ConntrackStats? {
            // /proc/thread-self/net: this thread's namespace (/proc/self/net is the main thread's).
            (try? NetNamespace.run(in: routerFD) { () -> String? in
                guard let f = fopen("/proc/thread-self/net/stat/nf_conntrack", "r") else { return nil }
                defer { fclose(f) }
                var text = "", line = [CChar](repeating: 0, count: 4096)
                while fgets(&line, 4096, f) != nil { text += String(cString: line) }
                return text
            }).flatMap { $0 }.flatMap(ConntrackStats.parse)
        }
        let statsBefore = routerStats()
        for r in 0..<rounds {
            let order = r % 2 == 0 ? [0, 1] : [1, 0]
            for k in order { bulk[k].append(try bulkRound(both[k].0, nsfd: both[k].1, target: paths.target, seconds: seconds).bitsPerSecond) }
            let rates = try connectionRound(both, target: paths.target, count: connections, batch: connectionBatch, firstIs: order[1], next: &next, slow: &slow, latencies: &latencies)
            conn[0].append(rates[0]); conn[1].append(rates[1])
            print("  round \(pad(String(r + 1), 2)): bulk NAT \(gbit(bulk[0][r])) routed \(gbit(bulk[1][r])) Gbit/s  ratio \(ratio(bulk[0][r] / bulk[1][r]))"
                  + "   conn/s NAT \(pad(String(Int(conn[0][r])), 6)) routed \(pad(String(Int(conn[1][r])), 6))  ratio \(ratio(conn[0][r] / conn[1][r]))")
        }
        let bn = median(bulk[0]), br = median(bulk[1]), cn = median(conn[0]), cr = median(conn[1])
        let bulkRatios = median(zip(bulk[0], bulk[1]).map { $0 / $1 }), connRatios = median(zip(conn[0], conn[1]).map { $0 / $1 })
        print("  load average at the end:   \(loadAverage())")
        print("  connections slower than 200 ms (a lost SYN is retransmitted after 1 s): NAT \(slow[0]), routed \(slow[1])")
        if let a = statsBefore, let b = routerStats() {
            print("  router conntrack during the rounds: " + ConntrackStats.watched.map { n in "\(n) +\((b[n] ?? 0) &- (a[n] ?? 0))" }.joined(separator: ", "))
        }
        print("  median bulk:    NAT \(gbit(bn)) Gbit/s, routed \(gbit(br)) Gbit/s; NAT/routed \(format3(bn / br)) (median of per-round ratios \(format3(bulkRatios)))  target >= 0.95: \(bn / br >= 0.95 ? "met" : "NOT met")")
        // Robust to the preemptions of a shared machine, which lengthen single connections.
        let ln = median(latencies[0]), lr = median(latencies[1])
        print("  median connect+close: NAT \(Int((ln * 1000).rounded())) us, routed \(Int((lr * 1000).rounded())) us; as a rate NAT/routed \(format3(lr / ln))")
        print("  median conn/s:  NAT \(Int(cn)), routed \(Int(cr)); NAT/routed \(format3(cn / cr)) (median of per-round ratios \(format3(connRatios)))  target >= 0.95: \(cn / cr >= 0.95 ? "met" : "NOT met")")
    } catch {
        fputs("cgnat-bench --tput: \(error); cleaning up\n", stderr)
        cleanup()
        exit(1)
    }
    cleanup()
}

/// Sockets made ahead per path (their creation is not timed).
let connectionBatch = 200

/// /proc/loadavg's first three fields: the bench shares the machine, and says how busy it was.
private func loadAverage() -> String {
    guard let f = fopen("/proc/loadavg", "r") else { return "unknown" }
    defer { fclose(f) }
    var line = [CChar](repeating: 0, count: 128)
    guard fgets(&line, 128, f) != nil else { return "unknown" }
    return String(cString: line).split(separator: " ").prefix(3).joined(separator: " ")
}

private func mappingName(_ lab: Lab) -> String {
    switch lab.router.nat.mapping {
    case .portBlocks: return "port blocks"
    case .random: return "random"
    }
}

private func pad(_ s: String, _ w: Int) -> String { String(repeating: " ", count: max(0, w - s.count)) + s }
private func gbit(_ bps: Double) -> String { pad(String(format2(bps / 1e9)), 6) }
private func ratio(_ v: Double) -> String { format2(v) }
/// Two decimals without Foundation.
private func format2(_ v: Double) -> String {
    guard v.isFinite else { return "-" }
    let c = Int((v * 100).rounded())
    let frac = c % 100
    return "\(c / 100).\(frac < 10 ? "0" : "")\(frac)"
}
/// Three decimals: the verdict against 0.95 must not hide behind rounding.
private func format3(_ v: Double) -> String {
    guard v.isFinite else { return "-" }
    let c = Int((v * 1000).rounded())
    let frac = c % 1000
    return "\(c / 1000)." + String(repeating: "0", count: 3 - String(frac).count) + "\(frac)"
}
