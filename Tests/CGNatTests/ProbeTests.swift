@testable import CGNat
import Glibc
import Netlink
import Testing

// Integration tests of the probe engine. They build their own small lab in namespaces named
// probetest-<random>-* (or $CGNAT_TEST_PREFIX-probe-<random>-*), never touch the host's namespace, and delete everything on every path.
//
//   a1 (10.1.0.1, fd00:1::1) --- ta1 \
//                                      b (router: zones, marks, masquerade on tc) tc --- cb  c
//   a2 (10.1.0.1, fd00:2::1) --- ta2 /                                  198.51.100.254   198.51.100.1/24, .2, .3
//                                                                       fd00:c::ffff     fd00:c::1/64, fd00:c::2
//
// b drops 198.51.100.2 and fd00:c::2, rejects 198.51.100.3 (admin prohibited), and has the
// return path of DESIGN.md section 3 (original-direction zones, marks, per-client tables).

private func spawn(_ args: [String]) -> Int32 {
    var pid = pid_t()
    let argv: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) } + [nil]
    defer { argv.forEach { free($0) } }
    guard posix_spawnp(&pid, args[0], nil, nil, argv, environ) == 0 else { return -1 }
    var status: Int32 = 0
    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
    return (status >> 8) & 0xff
}

private struct CommandFailed: Error, CustomStringConvertible {
    let description: String
}

private func sh(_ args: String...) throws {
    let rc = spawn(args)
    if rc != 0 { throw CommandFailed(description: "\(args.joined(separator: " ")) exited \(rc)") }
}

private func addr(_ s: String) -> IPAddress { IPAddress(s)! }

private let isRoot = getuid() == 0
private let haveTools = access("/usr/sbin/nft", X_OK) == 0 && access("/usr/sbin/ip", X_OK) == 0

/// The lab: namespaces, fds, and teardown.
private final class ProbeLab {
    let prefix: String
    var fds: [String: Int32] = [:]

    init() {
        // CGNAT_TEST_PREFIX keeps runs that share a machine apart.
        let base = getenv("CGNAT_TEST_PREFIX").map { String(cString: $0) + "-probe" } ?? "probetest"
        prefix = "\(base)-\(UInt32.random(in: 0...UInt32.max) % 1_000_000)"
    }

    func name(_ short: String) -> String { "\(prefix)-\(short)" }
    func endpoint(_ short: String) -> ProbeEndpoint { ProbeEndpoint(context: short, namespaceFD: fds[short]!) }

    func build() throws {
        for short in ["a1", "a2", "b", "c"] {
            fds[short] = try NetNamespace.create(name(short)) { _ in
                try writeSysctl("net.ipv4.ping_group_range", "0 2147483647")
                try writeSysctl("net.ipv6.conf.all.accept_dad", "0")
                try writeSysctl("net.ipv6.conf.default.accept_dad", "0")
                try writeSysctl("net.ipv4.conf.all.rp_filter", "0")
                try writeSysctl("net.ipv4.conf.default.rp_filter", "0")
                if short == "b" {
                    try writeSysctl("net.ipv4.ip_forward", "1")
                    try writeSysctl("net.ipv6.conf.all.forwarding", "1")
                    try writeSysctl("net.ipv4.fwmark_reflect", "1")
                    try writeSysctl("net.ipv6.fwmark_reflect", "1")
                }
            }
        }
        let a1 = name("a1"), a2 = name("a2"), b = name("b"), c = name("c")
        try sh("ip", "-n", b, "link", "add", "ta1", "type", "veth", "peer", "name", "up0", "netns", a1)
        try sh("ip", "-n", b, "link", "add", "ta2", "type", "veth", "peer", "name", "up0", "netns", a2)
        try sh("ip", "-n", b, "link", "add", "tc", "type", "veth", "peer", "name", "cb", "netns", c)
        for (ns, dev) in [(a1, "up0"), (a2, "up0"), (b, "ta1"), (b, "ta2"), (b, "tc"), (c, "cb"),
                          (a1, "lo"), (a2, "lo"), (b, "lo"), (c, "lo")] {
            try sh("ip", "-n", ns, "link", "set", dev, "up")
        }
        // Clients: the same IPv4 address behind different links.
        try sh("ip", "-n", a1, "addr", "add", "10.1.0.1/24", "dev", "up0")
        try sh("ip", "-n", a1, "addr", "add", "fd00:1::1/64", "dev", "up0")
        try sh("ip", "-n", a1, "route", "add", "default", "via", "10.1.0.254")
        try sh("ip", "-n", a1, "-6", "route", "add", "default", "via", "fd00:1::ffff")
        try sh("ip", "-n", a2, "addr", "add", "10.1.0.1/24", "dev", "up0")
        try sh("ip", "-n", a2, "addr", "add", "fd00:2::1/64", "dev", "up0")
        try sh("ip", "-n", a2, "route", "add", "default", "via", "10.1.0.253")
        try sh("ip", "-n", a2, "-6", "route", "add", "default", "via", "fd00:2::ffff")
        // Router.
        try sh("ip", "-n", b, "addr", "add", "10.1.0.254/24", "dev", "ta1")
        try sh("ip", "-n", b, "addr", "add", "fd00:1::ffff/64", "dev", "ta1")
        try sh("ip", "-n", b, "addr", "add", "10.1.0.253/24", "dev", "ta2")
        try sh("ip", "-n", b, "addr", "add", "fd00:2::ffff/64", "dev", "ta2")
        try sh("ip", "-n", b, "addr", "add", "198.51.100.254/24", "dev", "tc")
        try sh("ip", "-n", b, "addr", "add", "fd00:c::ffff/64", "dev", "tc")
        try sh("ip", "-n", b, "route", "add", "10.1.0.0/24", "dev", "ta1", "table", "101")
        try sh("ip", "-n", b, "route", "add", "10.1.0.0/24", "dev", "ta2", "table", "102")
        try sh("ip", "-n", b, "rule", "add", "pref", "100", "fwmark", "1", "lookup", "101")
        try sh("ip", "-n", b, "rule", "add", "pref", "101", "fwmark", "2", "lookup", "102")
        // Far side: no route back to 10.1.0.0/24 (only the NAT address is reachable).
        try sh("ip", "-n", c, "addr", "add", "198.51.100.1/24", "dev", "cb")
        try sh("ip", "-n", c, "addr", "add", "198.51.100.2/32", "dev", "cb")
        try sh("ip", "-n", c, "addr", "add", "198.51.100.3/32", "dev", "cb")
        try sh("ip", "-n", c, "addr", "add", "fd00:c::1/64", "dev", "cb")
        try sh("ip", "-n", c, "addr", "add", "fd00:c::2/64", "dev", "cb")
        try sh("ip", "-n", c, "-6", "route", "add", "fd00::/16", "via", "fd00:c::ffff")
        try nft(in: "b", """
            table inet probetest {
              chain pre_raw {
                type filter hook prerouting priority raw; policy accept;
                ct original zone set iifname map { "ta1" : 1, "ta2" : 2 }
              }
              chain pre_mangle {
                type filter hook prerouting priority mangle; policy accept;
                ct state new ct mark set iifname map { "ta1" : 1, "ta2" : 2 }
                meta mark set ct mark
              }
              chain forward {
                type filter hook forward priority filter; policy accept;
                ip daddr 198.51.100.2 drop
                ip6 daddr fd00:c::2 drop
                ip daddr 198.51.100.3 reject with icmpx type admin-prohibited
              }
              chain dstnat {
                type nat hook prerouting priority dstnat; policy accept;
              }
              chain srcnat {
                type nat hook postrouting priority srcnat; policy accept;
                oifname "tc" ip saddr 10.1.0.0/24 masquerade
              }
            }
            """)
    }

    func nft(in short: String, _ text: String) throws {
        let path = "/tmp/\(name(short))-\(UInt32.random(in: 0...UInt32.max)).nft"
        let f = fopen(path, "w")!
        fputs(text + "\n", f)
        fclose(f)
        defer { unlink(path) }
        try sh("ip", "netns", "exec", name(short), "nft", "-f", path)
    }

    func teardown() {
        for fd in fds.values { close(fd) }
        fds = [:]
        for short in ["a1", "a2", "b", "c"] { try? NetNamespace.delete(name(short)) }
    }
}

/// Runs `body` with a fresh lab and always removes it.
private func withLab(_ body: (ProbeLab) throws -> Void) throws {
    let lab = ProbeLab()
    defer { lab.teardown() }
    try lab.build()
    try body(lab)
}

private func show(_ title: String, _ results: [ProbeResult]) {
    print("== \(title)")
    for r in results {
        let ms = (r.milliseconds * 10).rounded() / 10
        print("  \(r.passed ? "PASS" : "FAIL")  \(r.from)  \(r.probe.proto) \(r.name)  [\(r.expected)]  \(ms) ms  \(r.detail)")
    }
}

private func probe(_ lab: ProbeLab, _ name: String, from: String, _ dst: String, _ proto: ProbeProtocol,
                   sourcePort: UInt16? = nil, target: String = "c", iface: String? = "cb",
                   expect: ProbeExpectation) -> Probe {
    Probe(name: name, from: lab.endpoint(from), sourcePort: sourcePort, destination: addr(dst), proto: proto,
          target: lab.endpoint(target), targetInterface: iface, expect: expect)
}

@Suite(.serialized)
struct ProbeTests {
    @Test(.enabled(if: isRoot && haveTools, "needs root, ip and nft"))
    func reachBlockedAndPairs() throws {
        try withLab { lab in
            let nat = addr("198.51.100.254")
            var probes: [Probe] = []
            for client in ["a1", "a2"] {
                let own6 = client == "a1" ? "fd00:1::1" : "fd00:2::1"
                for proto in [ProbeProtocol.icmp, .udp, .tcp] {
                    probes.append(probe(lab, "\(proto) 198.51.100.1", from: client, "198.51.100.1", proto, expect: .reach(source: nat)))
                    probes.append(probe(lab, "\(proto) fd00:c::1", from: client, "fd00:c::1", proto, expect: .reach(source: addr(own6))))
                }
            }
            let blocked = [
                probe(lab, "icmp 198.51.100.2 (dropped)", from: "a1", "198.51.100.2", .icmp, expect: .blocked),
                probe(lab, "udp 198.51.100.2 (dropped)", from: "a1", "198.51.100.2", .udp, expect: .blocked),
                probe(lab, "tcp 198.51.100.2 (dropped)", from: "a1", "198.51.100.2", .tcp, expect: .blocked),
                probe(lab, "icmp 198.51.100.3 (rejected)", from: "a1", "198.51.100.3", .icmp, expect: .blocked),
                probe(lab, "udp 198.51.100.3 (rejected)", from: "a1", "198.51.100.3", .udp, expect: .blocked),
                probe(lab, "tcp 198.51.100.3 (rejected)", from: "a1", "198.51.100.3", .tcp, expect: .blocked),
                probe(lab, "icmp fd00:c::2 (dropped)", from: "a2", "fd00:c::2", .icmp, expect: .blocked),
                probe(lab, "tcp fd00:c::2 (dropped)", from: "a2", "fd00:c::2", .tcp, expect: .blocked),
            ]
            // No route from the far side back inside: fails at the sender, nothing at the target.
            let noRoute = probe(lab, "icmp 10.1.0.1 (no route)", from: "c", "10.1.0.1", .icmp, target: "a1", iface: "up0", expect: .blocked)
            var pairs: [ProbePair] = []
            for proto in [ProbeProtocol.icmp, .udp, .tcp] {
                let port = UInt16.random(in: 20000...60000)
                pairs.append(ProbePair(name: "\(proto) 198.51.100.1 same port",
                                       first: probe(lab, "\(proto) 198.51.100.1", from: "a1", "198.51.100.1", proto, sourcePort: port, expect: .reach(source: nat)),
                                       second: probe(lab, "\(proto) 198.51.100.1", from: "a2", "198.51.100.1", proto, sourcePort: port, expect: .reach(source: nat))))
            }

            let all = probes + blocked + [noRoute]
            let start = probeClock()
            let results = runChecks(probes: all, pairs: pairs)
            let elapsed = probeClock() - start
            show("matrix of \(all.count) probes and \(pairs.count) pairs in \(Int(elapsed)) ms", results)
            #expect(results.count == all.count + pairs.count)
            for r in results { #expect(r.passed, "\(r.from) \(r.name): \(r.detail)") }
            for r in results.prefix(probes.count) where r.probe.destination.family == .v4 {
                #expect(r.observedSource == nat)
            }
            for r in results.suffix(pairs.count) {
                #expect(r.observedPorts.count == 2)
                #expect(r.observedPorts[0] != nil && r.observedPorts[0] != r.observedPorts[1], "\(r.detail)")
            }
            #expect(results[probes.count + 3].detail.contains("admin prohibited"), "\(results[probes.count + 3].detail)")

            // The negatives must be able to fail: allow everything and run them again.
            try sh("ip", "netns", "exec", lab.name("b"), "nft", "flush", "chain", "inet", "probetest", "forward")
            let leaked = runProbes(blocked)
            show("the same negatives with the block lifted", leaked)
            for r in leaked {
                #expect(!r.passed, "\(r.name) should fail once the traffic is allowed: \(r.detail)")
                #expect(r.detail.hasPrefix("LEAK"), "\(r.detail)")
            }
        }
    }

    @Test(.enabled(if: isRoot && haveTools, "needs root, ip and nft"))
    func replyButWrongSourceOrPlaceFails() throws {
        try withLab { lab in
            let results = runProbes([
                // NAT happens, so expecting the client's own address must fail.
                probe(lab, "icmp 198.51.100.1 expecting no NAT", from: "a1", "198.51.100.1", .icmp, expect: .reach(source: addr("10.1.0.1"))),
                // Answered, but watched on the wrong interface: not seen at the target.
                probe(lab, "udp 198.51.100.1 watched on lo", from: "a1", "198.51.100.1", .udp, iface: "lo", expect: .reach(source: nil)),
                // A missing capture interface is a setup failure, not a pass.
                probe(lab, "icmp 198.51.100.1 bad interface", from: "a1", "198.51.100.1", .icmp, iface: "nosuch0", expect: .blocked),
                // Blocked but nothing listens on the far side for ICMP: still, the target sees it.
                probe(lab, "icmp 198.51.100.1 expected blocked", from: "a2", "198.51.100.1", .icmp, expect: .blocked),
            ], timeoutMilliseconds: 300)
            show("failing rows", results)
            for r in results { #expect(!r.passed, "\(r.name): \(r.detail)") }
            #expect(results[0].observedSource == addr("198.51.100.254"))
            #expect(results[1].detail.contains("not seen"))
            #expect(results[2].detail.contains("nosuch0"))
            #expect(results[3].detail.hasPrefix("LEAK"))
        }
    }

    @Test(.enabled(if: isRoot && haveTools, "needs root, ip and nft"))
    func bindAddressAndEchoIdentifier() throws {
        try withLab { lab in
            // IPv6 is routed: the far side sees the client's own address and the echo id it chose.
            var p = probe(lab, "ping -I fd00:1::1 fd00:c::1", from: "a1", "fd00:c::1", .icmp, sourcePort: 4242,
                          expect: .reach(source: addr("fd00:1::1")))
            p.bindAddress = addr("fd00:1::1")
            let r = runProbes([p])[0]
            show("bind address", [r])
            #expect(r.passed, "\(r.detail)")
            #expect(r.observedPort == 4242)
            // Binding an address the sender does not have is a setup failure.
            p.bindAddress = addr("fd00:9::9")
            let bad = runProbes([p])[0]
            #expect(!bad.passed)
            #expect(bad.detail.contains("setup"), "\(bad.detail)")
            // Without gid 0 in ping_group_range, ICMP echo sockets are refused: a setup failure that says why.
            try NetNamespace.run(in: lab.fds["a2"]!) { try writeSysctl("net.ipv4.ping_group_range", "1 0") }
            let refused = runProbes([probe(lab, "ping 198.51.100.1", from: "a2", "198.51.100.1", .icmp, expect: .blocked)])[0]
            show("ping_group_range", [refused])
            #expect(!refused.passed)
            #expect(refused.detail.contains("ping_group_range"), "\(refused.detail)")
        }
    }

    @Test(.enabled(if: isRoot && haveTools, "needs root, ip and nft"))
    func socketsLiveInTheirNamespaces() throws {
        try withLab { lab in
            func cookie(_ short: String) throws -> UInt64? {
                try NetNamespace.run(in: lab.fds[short]!) { () -> UInt64? in
                    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
                    defer { close(fd) }
                    return NetNamespace.cookie(ofSocket: fd)
                }
            }
            let check = ProbeCheck(probes: [probe(lab, "udp 198.51.100.1", from: "a1", "198.51.100.1", .udp, expect: .reach(source: nil))], pair: nil)
            let worker = ProbeWorker(checks: [check], timeout: 100, inFlight: 1, evidence: nil)
            // setUp enters namespaces on the calling thread: only ever on a private thread.
            try OSThread.run { worker.setUp(check) }
            let captureFD = worker.captureFDs.first ?? -1
            defer { check.closeAll(); worker.closeForTests() }
            #expect(check.farError == nil && check.senders[0].setupError == nil)
            let a1 = try cookie("a1"), c = try cookie("c")
            #expect(a1 != nil && a1 != c)
            #expect(NetNamespace.cookie(ofSocket: check.senders[0].fd) == a1)
            #expect(NetNamespace.cookie(ofSocket: check.listenerFD) == c)
            #expect(NetNamespace.cookie(ofSocket: captureFD) == c)
        }
    }

    @Test(.enabled(if: isRoot && haveTools, "needs root, ip and nft"))
    func leavesNoSocketsOrThreadsBehind() throws {
        try withLab { lab in
            let before = openFDCount()
            let start = probeClock()
            let results = runProbes((0..<20).map { i in
                let proto: ProbeProtocol = [.icmp, .udp, .tcp][i % 3]
                let dst = i % 4 < 2 ? "198.51.100.1" : "fd00:c::1"
                return probe(lab, "\(proto) \(dst) #\(i)", from: i % 2 == 0 ? "a1" : "a2", dst, proto, expect: .reach(source: nil))
            }, timeoutMilliseconds: 200)
            let elapsed = probeClock() - start
            let slowest = results.map(\.milliseconds).max() ?? 0
            print("== 20 concurrent reach probes (decided on their answers) in \(Int(elapsed)) ms, slowest row \((slowest * 10).rounded() / 10) ms after firing")
            let allPassed = results.allSatisfy { $0.passed }
            #expect(allPassed, "\(results.filter { !$0.passed }.map(\.detail))")
            #expect(openFDCount() == before)
        }
    }
}

private func probeClock() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) * 1000 + Double(ts.tv_nsec) / 1_000_000
}

private func openFDCount() -> Int {
    guard let dir = opendir("/proc/self/fd") else { return -1 }
    defer { closedir(dir) }
    var n = 0
    while readdir(dir) != nil { n += 1 }
    return n
}

// Unit tests (no root): the capture's packet parser and the listener's report.
struct ProbeParserTests {
    let token = Array("cgnat-0123456789abcdef".utf8)

    func ipv4(_ proto: UInt8, src: [UInt8], dst: [UInt8], _ l4: [UInt8]) -> [UInt8] {
        let total = 20 + l4.count
        return [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), 0, 0, 0x40, 0, 64, proto, 0, 0] + src + dst + l4
    }

    @Test func icmpEchoRequestMatchesByToken() {
        let echo: [UInt8] = [8, 0, 0, 0, 0x0b, 0xc4, 0, 1] + token
        let pkt = ipv4(1, src: [100, 64, 0, 1], dst: [192, 0, 2, 1], echo)
        let s = pkt.withUnsafeBytes { PacketCapture.parse($0, ethertype: 0x0800, tokenLength: token.count) }
        #expect(s?.source == IPAddress("100.64.0.1"))
        #expect(s?.port == 3012)
        #expect(s?.proto == .icmp && s?.token == token)
        // An echo reply carrying the same token is not a sighting.
        var reply = pkt
        reply[20] = 0
        #expect(reply.withUnsafeBytes { PacketCapture.parse($0, ethertype: 0x0800, tokenLength: token.count) } == nil)
    }

    @Test func udpCarriesPortsAndToken() {
        let udp: [UInt8] = [0x9c, 0x40, 0x4e, 0x20, 0, 30, 0, 0] + token
        let pkt = ipv4(17, src: [10, 0, 0, 1], dst: [10, 0, 0, 2], udp)
        let hit = pkt.withUnsafeBytes { PacketCapture.parse($0, ethertype: 0x0800, tokenLength: token.count) }
        #expect(hit?.port == 40000 && hit?.destinationPort == 20000 && hit?.token == token)
        // Too short to carry a token: not ours.
        let short = Array(pkt.prefix(pkt.count - 4))
        #expect(short.withUnsafeBytes { PacketCapture.parse($0, ethertype: 0x0800, tokenLength: token.count) } == nil)
    }

    @Test func tcpSynOverIPv6WithHopByHop() {
        var src = [UInt8](repeating: 0, count: 16); src[0] = 0x20; src[1] = 0x01; src[15] = 1
        let dst = [UInt8](repeating: 0, count: 15) + [2]
        let hopByHop: [UInt8] = [6, 0, 1, 4, 0, 0, 0, 0]   // next header TCP, 8 bytes
        func tcp(_ flags: UInt8) -> [UInt8] { [0x75, 0x30, 0x4e, 0x20, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0] }
        func pkt(_ flags: UInt8) -> [UInt8] {
            let l = hopByHop + tcp(flags)
            return [0x60, 0, 0, 0, 0, UInt8(l.count), 0, 64] + src + dst + l
        }
        let syn = pkt(0x02).withUnsafeBytes { PacketCapture.parse($0, ethertype: 0x86dd, tokenLength: 22) }
        #expect(syn?.source == IPAddress("2001::1"))
        #expect(syn?.port == 30000 && syn?.destinationPort == 20000 && syn?.proto == .tcp)
        #expect(pkt(0x12).withUnsafeBytes { PacketCapture.parse($0, ethertype: 0x86dd, tokenLength: 22) } == nil)
    }

    @Test func expectationText() {
        #expect(ProbeExpectation.reach(source: IPAddress("100.64.0.1")).description == "reach from 100.64.0.1")
        #expect(ProbeExpectation.blocked.description == "blocked")
    }
}
