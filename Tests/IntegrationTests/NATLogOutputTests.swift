import Foundation
import Testing
import Netlink
@testable import CGNat

/// A UDP socket of the test on the host's loopback (collectors run in the host's namespace):
/// keeps every datagram it receives, from a thread of its own, until stopped.
private final class DatagramCollector: @unchecked Sendable {
    let fd: Int32
    let port: UInt16
    private let lock = NSLock()
    private var got: [[UInt8]] = []
    private var stop = false
    private var thread: OSThread?

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket") }
        self.fd = fd
        var size: Int32 = 16 << 20
        setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, 4)
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_addr.s_addr = inet_addr("127.0.0.1")
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let rc = withUnsafeMutablePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { p -> Int32 in
            guard bind(fd, p, len) == 0 else { return -1 }
            return getsockname(fd, p, &len)
        } }
        guard rc == 0 else { close(fd); throw SystemError("bind 127.0.0.1:0") }
        port = UInt16(bigEndian: sa.sin_port)
        thread = OSThread { [unowned self] in
            var buf = [UInt8](repeating: 0, count: 65536)
            while true {
                if self.lock.withLock({ self.stop }) { return }
                var p = pollfd(fd: self.fd, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, 50) > 0 else { continue }
                let n = recv(self.fd, &buf, buf.count, Int32(MSG_DONTWAIT))
                if n > 0 { self.lock.withLock { self.got.append(Array(buf[0..<n])) } }
            }
        }
    }

    /// Stops reading and returns what came.
    func finish() -> [[UInt8]] {
        lock.withLock { stop = true }
        thread?.join()
        thread = nil
        close(fd)
        return lock.withLock { got }
    }

    deinit { if thread != nil { _ = finish() } }
}

/// A free UDP port on the loopback for a collector the test starts (bound, read, released).
private func freeUDPPort() throws -> UInt16 {
    let c = try DatagramCollector()
    _ = c.finish()
    return c.port
}

/// A program the test started, its stdout and stderr in files. Started as a shell would start
/// it, with no signal blocked (the test runner blocks some, and a child inherits the mask: a
/// blocked SIGTERM would keep nfcapd from ever ending). The caller ends it in a defer.
private final class Child {
    let pid: pid_t
    let out: String, err: String
    private var status: Int32?

    init(_ path: String, _ args: [String]) throws {
        let base = "/tmp/\(testLabPrefix)-child-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        out = base + ".out"; err = base + ".err"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        posix_spawn_file_actions_addopen(&actions, 2, err, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t()
        sigemptyset(&empty)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setflags(&attr, Int16(POSIX_SPAWN_SETSIGMASK))
        let argv = ([path] + args).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, path, &actions, &attr, argv, environ)
        guard rc == 0 else { throw SystemError("spawn \(path)") }
        self.pid = pid
    }

    /// Waits for it to end by itself; its exit code.
    @discardableResult
    func wait() -> Int32 {
        if let status { return status }
        var st: Int32 = 0
        while waitpid(pid, &st, 0) < 0 && errno == EINTR {}
        let code = (st & 0x7f) == 0 ? (st >> 8) & 0xff : 128 + (st & 0x7f)
        status = code
        return code
    }

    func stop() {
        guard status == nil else { return }
        kill(pid, SIGTERM)
        wait()
    }

    var stdout: String { (try? String(contentsOfFile: out, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOfFile: err, encoding: .utf8)) ?? "" }

    deinit { stop(); unlink(out); unlink(err) }
}

private func run(_ path: String, _ args: [String]) throws -> String {
    let c = try Child(path, args)
    c.wait()
    return c.stdout
}

/// Sends one UDP datagram from each port of `ports` in the context's namespace to `to`:9.
/// One UDP datagram from each of `ports` of the context to `to`:9.
func sendUDP(lab: Lab, from context: String, ports: [UInt16], to: IPAddress) throws {
    let (_, fd) = try LabControl.open(context: context, lab: lab)
    defer { close(fd) }
    try NetNamespace.run(in: fd) {
        var dst = sockaddr_in()
        dst.sin_family = sa_family_t(AF_INET)
        dst.sin_port = UInt16(9).bigEndian
        inet_pton(AF_INET, to.description, &dst.sin_addr)
        for port in ports {
            let s = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            guard s >= 0 else { throw SystemError("socket") }
            defer { close(s) }
            var src = sockaddr_in()
            src.sin_family = sa_family_t(AF_INET)
            src.sin_port = port.bigEndian
            let b = withUnsafePointer(to: &src) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard b == 0 else { throw SystemError("bind port \(port)") }
            let n = withUnsafePointer(to: &dst) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(s, "x", 1, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            guard n == 1 else { throw SystemError("sendto") }
        }
    }
}

/// A TCP connection attempt from the context to `to`:9 (nothing listens there: refused, but
/// conntrack has seen the SYN, so a session is created).
private func tryTCP(lab: Lab, from context: String, to: IPAddress) throws {
    let (_, fd) = try LabControl.open(context: context, lab: lab)
    defer { close(fd) }
    try NetNamespace.run(in: fd) {
        let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard s >= 0 else { throw SystemError("socket") }
        defer { close(s) }
        var dst = sockaddr_in()
        dst.sin_family = sa_family_t(AF_INET)
        dst.sin_port = UInt16(9).bigEndian
        inet_pton(AF_INET, to.description, &dst.sin_addr)
        _ = withUnsafePointer(to: &dst) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
    }
}

/// What a decoder showed of one record, by field name.
private typealias Fields = [String: String]

/// `nfdump -o raw`: records start with "Flow Record:", then `  name = value` lines.
private func nfdumpRecords(_ text: String) -> [Fields] {
    text.components(separatedBy: "Flow Record:").dropFirst().map { block in
        var f: Fields = [:]
        for line in block.split(separator: "\n") {
            let parts = line.split(separator: "=", maxSplits: 1)
            guard parts.count == 2 else { continue }
            f[parts[0].trimmingCharacters(in: .whitespaces)] = parts[1].trimmingCharacters(in: .whitespaces)
        }
        return f
    }
}

/// `ipfixDump`: data records are "--- data record N ---" blocks of `(id) name : value` lines.
private func ipfixDumpRecords(_ text: String) -> [Fields] {
    text.components(separatedBy: "--- data record").dropFirst().map { block in
        var f: Fields = [:]
        for line in block.split(separator: "\n") {
            guard line.hasPrefix("\t("), let close = line.firstIndex(of: ")") else { continue }
            let rest = line[line.index(after: close)...]
            guard let colon = rest.range(of: " : ") else { continue }
            f[rest[..<colon.lowerBound].trimmingCharacters(in: .whitespaces)] = String(rest[colon.upperBound...])
        }
        return f
    }
}

private func firstNumber(_ s: String?) -> UInt64? {
    s.flatMap { UInt64($0.prefix { $0.isNumber }) }
}

/// Two subscribers in different domains with the same inside IPv4 address, and the uplink
/// host's own address: taken from the lab model.
private func sharedAddressPair(_ lab: Lab) throws -> (CGNatCore.Host, CGNatCore.Host, IPAddress, IPAddress) {
    func v4(_ h: CGNatCore.Host) -> IPAddress? { h.addresses.first { $0.family == .v4 }?.address }
    let subs = lab.hosts.filter { if case .domain = $0.attachment { return true } else { return false } }
    for a in subs {
        for b in subs where b.attachment != a.attachment && v4(a) != nil && v4(a) == v4(b) {
            let uplink = try #require(lab.hosts.first { $0.attachment == .uplink })
            let target = try #require((uplink.loopbackAddresses + uplink.addresses).first { $0.family == .v4 }?.address)
            return (a, b, v4(a)!, target)
        }
    }
    throw SystemError("the lab has no two subscribers sharing an inside address")
}

private func domainID(_ lab: Lab, _ h: CGNatCore.Host) -> UInt32 {
    guard case .domain(let d) = h.attachment else { return 0 }
    return lab.domain(named: d)?.id ?? 0
}

/// Root-only: real labs, real collectors (nfdump's nfcapd, libfixbuf's ipfixDump) on the host's
/// loopback. scripts/deps installs them.
@Suite(.serialized, .enabled(if: isRoot, "needs root: builds network namespaces"))
struct NATLogOutputTests {
    @Test func collectorsDecodeSessionAndBlockEventsOfRealFlows() throws {
        guard access(cgnatBinary, X_OK) == 0 else { Issue.record("no cgnat binary at \(cgnatBinary): set CGNAT_BIN"); return }
        for tool in ["/usr/bin/nfcapd", "/usr/bin/nfdump", "/usr/bin/ipfixDump"] where access(tool, X_OK) != 0 {
            Issue.record("\(tool) missing: run scripts/deps")
            return
        }
        try withLab(testLabName("ipfix")) { lab in
            let (a, b, inside, target) = try sharedAddressPair(lab)
            let policy = try #require(lab.portBlockPolicy)
            let blockA = try #require(lab.portBlock(of: a)), blockB = try #require(lab.portBlock(of: b))
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("\(lab.name)-nfcapd")
            try? FileManager.default.removeItem(at: dir)
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: dir) }
            let nfPort = try freeUDPPort()
            let nfcapd = try Child("/usr/bin/nfcapd", ["-b", "127.0.0.1", "-p", String(nfPort), "-w", dir.path, "-t", "3600"])
            defer { nfcapd.stop() }
            let capture = try DatagramCollector()     // the datagrams as sent, for ipfixDump
            let syslog = try DatagramCollector()
            defer { _ = capture.finish(); _ = syslog.finish() }
            usleep(300_000)   // nfcapd binds its socket

            let t0 = EventFormatter.realtimeNow() / 1_000_000
            let events = try Child(cgnatBinary, [
                "events", "--lab", lab.name, "--json", "--duration", "4", "--summary",
                "--ipfix", "127.0.0.1:\(nfPort)", "--ipfix", "127.0.0.1:\(capture.port)", "--syslog", "127.0.0.1:\(syslog.port)",
            ])
            defer { events.stop() }
            usleep(600_000)   // the subscription is open well before this
            let port = UInt16(20000 + Int(getpid() % 5000) * 4 + Int.random(in: 0..<4))
            try sendUDP(lab: lab, from: a.name, ports: [port], to: target)
            try sendUDP(lab: lab, from: b.name, ports: [port], to: target)
            try tryTCP(lab: lab, from: a.name, to: target)
            let ping = try cgnat(["exec", "--lab", lab.name, b.name, "--", "ping", "-c1", "-W1", target.description])
            #expect(ping.status == 0, "\(ping.stderr)")
            // Delete the UDP mappings in the router: conntrack sends their DESTROY.
            let del = try cgnat(["exec", "--lab", lab.name, lab.router.name, "--", "conntrack", "-D", "-p", "udp", "--orig-port-src", String(port)])
            #expect(del.status == 0, "\(del.stderr)")
            let status = events.wait()
            let t1 = EventFormatter.realtimeNow() / 1_000_000
            let stdout = events.stdout, stderr = events.stderr
            #expect(status == 0, "\(stderr)")
            usleep(300_000)
            nfcapd.stop()

            // What stdout logged is the reference: the mapped ports the kernel chose.
            let json = stdout.split(separator: "\n")
                .compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
            func mapped(_ h: CGNatCore.Host, proto: String) -> Int? {
                json.first { $0["event"] as? String == "new" && $0["domain_id"] as? Int == Int(domainID(lab, h)) && $0["protocol"] as? String == proto }?["outside_port"] as? Int
            }
            let portA = try #require(mapped(a, proto: "udp")), portB = try #require(mapped(b, proto: "udp"))
            #expect(blockA.ports.contains(UInt16(portA)) && blockB.ports.contains(UInt16(portB)))
            let blocks = lab.router.subscribers.count * policy.insideCount
            let sessions = json.filter { ["new", "destroy"].contains($0["event"] as? String) && $0["domain_id"] as? Int != 0 }.count
            // Every output delivered every event: the blocks and each session create and delete.
            for name in ["ipfix 127.0.0.1:\(nfPort)", "ipfix 127.0.0.1:\(capture.port)", "syslog 127.0.0.1:\(syslog.port)"] {
                #expect(stderr.contains("\(name): delivered \(blocks + sessions) events, dropped 0"), "\(stderr)")
            }

            // Checks one decoder's records, field names given per decoder.
            struct Names { var event, proto, src, sport, xsrc, xsport, dst, dport, vrf, time: String }
            func check(_ recs: [Fields], _ n: Names, decoder: String) {
                func find(_ event: UInt64, _ h: CGNatCore.Host, proto: UInt64) -> Fields? {
                    recs.first { firstNumber($0[n.event]) == event && firstNumber($0[n.vrf]) == UInt64(domainID(lab, h)) && firstNumber($0[n.proto]) == proto }
                }
                for (h, block, mappedPort) in [(a, blockA, portA), (b, blockB, portB)] {
                    for event: UInt64 in [4, 5] {   // NAT44 session create, delete
                        guard let r = find(event, h, proto: 17) else {
                            Issue.record("\(decoder): no UDP natEvent \(event) of \(h.name) in \(recs.count) records"); continue
                        }
                        #expect(r[n.src] == inside.description && firstNumber(r[n.sport]) == UInt64(port), "\(decoder) \(r)")
                        #expect(r[n.xsrc] == block.publicAddress.description && firstNumber(r[n.xsport]) == UInt64(mappedPort), "\(decoder) \(r)")
                        #expect(r[n.dst] == target.description && firstNumber(r[n.dport]) == 9, "\(decoder) \(r)")
                        let t = firstNumber(r[n.time]) ?? 0
                        #expect(t >= t0 && t <= t1, "\(decoder): time \(t) outside \(t0)...\(t1)")
                    }
                }
                let tcp = find(4, a, proto: 6)
                #expect(tcp?[n.src] == inside.description && tcp?[n.xsrc] == blockA.publicAddress.description, "\(decoder): TCP \(String(describing: tcp))")
                #expect(tcp.flatMap { firstNumber($0[n.xsport]) }.map { blockA.ports.contains(UInt16($0)) } == true)
                let icmp = find(4, b, proto: 1)
                #expect(icmp?[n.xsrc] == blockB.publicAddress.description, "\(decoder): ICMP \(String(describing: icmp))")
                #expect(icmp.flatMap { firstNumber($0[n.xsport]) }.map { blockB.ports.contains(UInt16($0)) } == true)
                #expect(recs.filter { firstNumber($0[n.event]) == 16 }.count == blocks, "\(decoder): port block allocations")
            }

            let files = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix("nfcapd.") }
            let file = try #require(files.first, "nfcapd wrote no file")
            let nf = nfdumpRecords(try run("/usr/bin/nfdump", ["-r", dir.appendingPathComponent(file).path, "-o", "raw"]))
            check(nf, Names(event: "nat event", proto: "proto", src: "src addr", sport: "src port", xsrc: "src xlt ip",
                            xsport: "src xlt port", dst: "dst addr", dport: "dst port", vrf: "ingress VRF", time: "Event time"),
                  decoder: "nfdump")

            let datagrams = capture.finish()
            let capFile = dir.appendingPathComponent("capture.ipfix")
            try Data(datagrams.flatMap { $0 }).write(to: capFile)
            let dump = try run("/usr/bin/ipfixDump", ["-i", capFile.path])
            // ipfixDump shows times as dates: turn them back into milliseconds for the window check.
            var fx = ipfixDumpRecords(dump)
            let fmt = DateFormatter()
            fmt.dateFormat = "yyyy-MM-dd HH:mm:ss.SSS"
            fmt.timeZone = TimeZone(identifier: "UTC")
            for i in fx.indices {
                if let d = fx[i]["observationTimeMilliseconds"].flatMap(fmt.date(from:)) {
                    fx[i]["observationTimeMilliseconds"] = String(UInt64((d.timeIntervalSince1970 * 1000).rounded()))
                }
            }
            check(fx, Names(event: "natEvent", proto: "protocolIdentifier", src: "sourceIPv4Address", sport: "sourceTransportPort",
                            xsrc: "postNATSourceIPv4Address", xsport: "postNAPTSourceTransportPort", dst: "destinationIPv4Address",
                            dport: "destinationTransportPort", vrf: "ingressVRFID", time: "observationTimeMilliseconds"),
                  decoder: "ipfixDump")
            // The sequence number of each message counts the data records sent before it.
            var records: UInt64 = 0
            for m in datagrams {
                let seq = UInt64(m[8]) << 24 | UInt64(m[9]) << 16 | UInt64(m[10]) << 8 | UInt64(m[11])
                #expect(seq == records)
                var i = 16
                while i + 4 <= m.count {
                    let set = Int(m[i]) << 8 | Int(m[i + 1]), len = Int(m[i + 2]) << 8 | Int(m[i + 3])
                    if set >= 256, let t = IPFIX.Template.all.first(where: { $0.id == set }) {
                        records += UInt64((len - 4) / t.recordLength)
                    }
                    i += max(len, 4)
                }
                #expect(m.count <= 1400)
            }
            #expect(records == UInt64(blocks + sessions))

            // Syslog: well-formed RFC 5424 lines, the same sessions.
            let lines = syslog.finish().map { String(decoding: $0, as: UTF8.self) }
            #expect(lines.count == blocks + sessions)
            let re = try NSRegularExpression(pattern:
                #"^<134>1 \d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z [!-~]{1,255} cgnat \d+ (SESSION_CREATE|SESSION_DELETE|BLOCK_ALLOC) \[nat@32473( [^= \]"]{1,32}="([^"\\\]]|\\["\\\]])*")+\] [ -~]+$"#)
            for l in lines {
                #expect(re.firstMatch(in: l, range: NSRange(l.startIndex..., in: l)) != nil, "not RFC 5424: \(l)")
            }
            for (h, block, mappedPort) in [(a, blockA, portA), (b, blockB, portB)] {
                for msgid in ["SESSION_CREATE", "SESSION_DELETE"] {
                    #expect(lines.contains { $0.contains(" \(msgid) [") && $0.contains("vrf=\"\(domainID(lab, h))\"") && $0.contains("proto=\"17\"")
                        && $0.contains("inside=\"\(inside)\" insidePort=\"\(port)\" outside=\"\(block.publicAddress)\" outsidePort=\"\(mappedPort)\"") },
                            "syslog: no \(msgid) of \(h.name)")
                }
            }
        }
    }

    /// The lab going down while events runs: every block of the policy is released on the outputs
    /// (they were allocated at start), before `down`'s grace period ends the process.
    @Test func blocksAreReleasedWhenTheLabGoesDown() throws {
        guard access(cgnatBinary, X_OK) == 0 else { Issue.record("no cgnat binary at \(cgnatBinary): set CGNAT_BIN"); return }
        let lab = Lab.seed(name: testLabName("ipfixr"))
        _ = try LabControl.up(lab, backend: .netns)
        defer { _ = try? Teardown.down(lab: lab.name) }
        let policy = try #require(lab.portBlockPolicy)
        let blocks = lab.router.subscribers.count * policy.insideCount
        let syslog = try DatagramCollector()
        defer { _ = syslog.finish() }
        let events = try Child(cgnatBinary, ["events", "--lab", lab.name, "--syslog", "127.0.0.1:\(syslog.port)"])
        defer { events.stop() }
        usleep(800_000)
        _ = try Teardown.down(lab: lab.name)
        #expect(events.wait() == 1, "events says the lab went down")
        usleep(200_000)
        let lines = syslog.finish().map { String(decoding: $0, as: UTF8.self) }
        let alloc = lines.filter { $0.contains(" BLOCK_ALLOC [") }, release = lines.filter { $0.contains(" BLOCK_RELEASE [") }
        #expect(alloc.count == blocks && release.count == blocks, "\(alloc.count) allocated, \(release.count) released of \(blocks)")
        for h in lab.hosts {
            guard let b = lab.portBlock(of: h) else { continue }
            #expect(release.contains { $0.contains("event=\"17\"") && $0.contains("outside=\"\(b.publicAddress)\" portStart=\"\(b.ports.lowerBound)\" portEnd=\"\(b.ports.upperBound)\"") },
                    "no release of \(h.name)'s block")
        }
        #expect(events.stderr.contains("delivered \(2 * blocks) events, dropped 0"), "\(events.stderr)")
    }

    /// A subscriber over its session limit: the NAT's refusal reaches the log as a quota-exceeded
    /// event (stdout JSON and syslog, RFC 8158 natEvent 13) with the number of refused flows;
    /// the kernel's counter cannot say who, so the event names no subscriber.
    @Test func refusalsOverTheSessionLimitAreLoggedAsQuotaExceeded() throws {
        guard access(cgnatBinary, X_OK) == 0 else { Issue.record("no cgnat binary at \(cgnatBinary): set CGNAT_BIN"); return }
        var lab = Lab.seed(name: testLabName("ipfixq"))
        lab.router.nat.sessionLimit = 3
        _ = try LabControl.up(lab, backend: .netns)
        defer { _ = try? Teardown.down(lab: lab.name) }
        let server = try #require(lab.uplinkHost?.loopbackAddresses.first { $0.family == .v4 }).address
        let host = try #require(lab.hosts.first { lab.portBlock(of: $0) != nil })
        let syslog = try DatagramCollector()
        defer { _ = syslog.finish() }
        let events = try Child(cgnatBinary, ["events", "--lab", lab.name, "--json", "--no-existing", "--duration", "3.5",
                                             "--syslog", "127.0.0.1:\(syslog.port)"])
        defer { events.stop() }
        usleep(800_000)
        try sendUDP(lab: lab, from: host.name, ports: Array(41000..<41008), to: server)   // 8 flows, 3 allowed
        #expect(events.wait() == 0, "\(events.stderr)")
        let quota = events.stdout.split(separator: "\n").filter { $0.contains("\"event\":\"quota_exceeded\"") }
        let refused = quota.compactMap { l -> Int? in
            guard let r = l.range(of: "\"refused\":") else { return nil }
            return Int(l[r.upperBound...].prefix { $0.isNumber })
        }.reduce(0, +)
        #expect(refused == 5 && quota.allSatisfy { $0.contains("\"limit\":3") }, "\(quota)")
        usleep(200_000)
        let lines = syslog.finish().map { String(decoding: $0, as: UTF8.self) }
        #expect(lines.contains { $0.contains(" QUOTA_EXCEEDED [") && $0.contains("event=\"13\"") }, "\(lines.filter { !$0.contains("BLOCK_ALLOC") }.prefix(5))")
    }

    /// A receiver that does not read (a unix datagram socket nobody reads: it pushes back) and a
    /// collector port nobody listens on (refused): both outputs drop and count, stdout keeps every event.
    @Test func outputsThatCannotDeliverDropAndCountWhileStdoutKeepsEveryEvent() throws {
        guard access(cgnatBinary, X_OK) == 0 else { Issue.record("no cgnat binary at \(cgnatBinary): set CGNAT_BIN"); return }
        try withLab(testLabName("ipfixd")) { lab in
            let (a, _, _, target) = try sharedAddressPair(lab)
            let policy = try #require(lab.portBlockPolicy)
            let path = "/tmp/\(lab.name)-syslog.sock"
            unlink(path)
            let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue), 0)
            var sa = sockaddr_un()
            sa.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &sa.sun_path) { raw in for (i, c) in path.utf8.enumerated() { raw[i] = c } }
            let rc = withUnsafePointer(to: &sa) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) } }
            defer { close(fd); unlink(path) }
            try #require(rc == 0)
            let refused = try freeUDPPort()

            let events = try Child(cgnatBinary, ["events", "--lab", lab.name, "--json", "--duration", "3",
                                                 "--syslog", path, "--ipfix", "127.0.0.1:\(refused)"])
            defer { events.stop() }
            usleep(600_000)
            let base = UInt16(30000 + Int(getpid() % 1000) * 16)
            let flows = 200
            try sendUDP(lab: lab, from: a.name, ports: (0..<flows).map { base + UInt16($0) }, to: target)
            let status = events.wait()
            let stdout = events.stdout, stderr = events.stderr
            #expect(status == 0, "\(stderr)")
            let logged = Set(stdout.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
                .filter { $0["event"] as? String == "new" && $0["protocol"] as? String == "udp" }.compactMap { $0["inside_port"] as? Int })
            #expect(Set((0..<flows).map { Int(base) + $0 }).isSubset(of: logged), "stdout lost events")
            let total = lab.router.subscribers.count * policy.insideCount + logged.count
            for name in ["syslog \(path)", "ipfix 127.0.0.1:\(refused)"] {
                let line = try #require(stderr.split(separator: "\n").first { $0.contains("\(name):") }, "\(stderr)")
                let nums = line.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .punctuationCharacters)) }
                let delivered = nums.dropLast().last ?? -1, dropped = nums.last ?? -1
                #expect(dropped > 0, "\(line)")
                #expect(delivered + dropped == total, "\(line): \(total) events")
            }
        }
    }
}
