// Benchmark (not a test): how many new NAT mappings per second the event log keeps up with.
// A sender in the lab's first subscriber starts UDP flows (one datagram each, a fresh source/
// destination port pair per flow, to sinks on the uplink host's public address; both taken from
// the lab model) for a fixed time while a logger runs in the
// router's namespace: `cgnat events --json`, then `conntrack -E -o timestamp` on the same load.
// Ground truth for flows created: the packet counter of the router's SNAT rule (a nat chain sees
// only the first packet of each connection). Both loggers write into a pipe the bench counts NEW
// lines from. Traffic stays between the lab's own namespaces. Then the same load with each NAT-log
// output of `cgnat events` (--ipfix, --syslog) to a collector of the bench's own on the host's
// loopback, which counts the session-create records it receives.
import CGNat
import Glibc
import Netlink

func usage() -> Never {
    fputs("usage: cgnat-events-bench [--duration SECONDS] [--rate FLOWS_PER_S] [--runs N] [--cgnat PATH] [--conntrack-buffer BYTES] [--lab NAME]\n", stderr)
    exit(2)
}

var duration = 3.0
var rate = 0           // 0 = as fast as one sender thread goes
var runs = 1
var cgnat: String?
var conntrackBuffer: Int?
var labName = "cgevbench"
var args = Array(CommandLine.arguments.dropFirst())
while !args.isEmpty {
    let a = args.removeFirst()
    guard let v = args.first else { usage() }
    args.removeFirst()
    switch a {
    case "--duration": guard let d = Double(v), d > 0, d <= 30 else { usage() }; duration = d
    case "--rate": guard let r = Int(v), r >= 0 else { usage() }; rate = r
    case "--runs": guard let n = Int(v), n > 0 else { usage() }; runs = n
    case "--cgnat": cgnat = v
    case "--conntrack-buffer": guard let b = Int(v), b > 0 else { usage() }; conntrackBuffer = b
    case "--lab": guard (try? LabName.validate(v)) != nil else { usage() }; labName = v
    default: usage()
    }
}
guard geteuid() == 0 else { fputs("cgnat-events-bench: needs root (it builds a lab)\n", stderr); exit(1) }
let selfPath = CommandLine.arguments[0]
let binary = cgnat ?? (selfPath.contains("/") ? String(selfPath[..<selfPath.lastIndex(of: "/")!]) + "/cgnat" : "cgnat")
guard access(binary, X_OK) == 0 else { fputs("cgnat-events-bench: \(binary) not found; pass --cgnat PATH\n", stderr); exit(1) }

let lab = Lab.seed(name: labName)
let mainNS = lab.namespaceName(lab.router.name)
/// The sender: the first subscriber, from its first IPv4 address (NATed on the way out).
guard let senderHost = lab.hosts.first(where: { $0.attachment != .uplink }),
      let senderAddress = senderHost.addresses.first(where: { $0.family == .v4 })?.address,
      let uplinkHost = lab.uplinkHost,
      // The sinks: the uplink host's public address (on its loopback), else its own.
      let sinkAddress = (uplinkHost.loopbackAddresses + uplinkHost.addresses).first(where: { $0.family == .v4 })?.address
else { fputs("cgnat-events-bench: the lab has no IPv4 subscriber or uplink address\n", stderr); exit(1) }
let sinkPorts = 8
let firstSourcePort = 1024
/// Distinct flows available: every source port with every sink port (the table holds 262144).
let maxFlows = min(200_000, (65536 - firstSourcePort) * sinkPorts)

func die(_ s: String) -> Never {
    fputs("cgnat-events-bench: \(s)\n", stderr)
    _ = try? Teardown.down(lab: labName)
    exit(1)
}

// MARK: child processes

struct Child { var pid: pid_t; var stdout: Int32 }

/// Starts argv with stdout into a pipe we read and stderr into `errPath`.
func start(_ argv: [String], errPath: String) -> Child {
    var fds: [Int32] = [0, 0]
    guard pipe(&fds) == 0 else { die("pipe") }
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    posix_spawn_file_actions_adddup2(&actions, fds[1], 1)
    posix_spawn_file_actions_addclose(&actions, fds[0])
    posix_spawn_file_actions_addclose(&actions, fds[1])
    posix_spawn_file_actions_addopen(&actions, 2, errPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
    let cargs = argv.map { strdup($0) } + [nil]
    defer { cargs.forEach { free($0) }; posix_spawn_file_actions_destroy(&actions) }
    var pid: pid_t = 0
    guard posix_spawnp(&pid, argv[0], &actions, nil, cargs, environ) == 0 else { die("cannot start \(argv[0])") }
    close(fds[1])
    return Child(pid: pid, stdout: fds[0])
}

/// Runs argv to completion and returns its stdout.
func capture(_ argv: [String]) -> String {
    let c = start(argv, errPath: "/dev/null")
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = read(c.stdout, &buf, buf.count)
        if n <= 0 { break }
        out += buf[0..<n]
    }
    close(c.stdout)
    var status: Int32 = 0
    waitpid(c.pid, &status, 0)
    return String(decoding: out, as: UTF8.self)
}

func readFile(_ path: String) -> String {
    let fd = open(path, O_RDONLY)
    guard fd >= 0 else { return "" }
    defer { close(fd) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 65536)
    while true { let n = read(fd, &buf, buf.count); if n <= 0 { break }; out += buf[0..<n] }
    return String(decoding: out, as: UTF8.self)
}

/// Packets of the router's SNAT rule: one per connection NAT saw.
func snatCounter() -> Int {
    let text = capture(["ip", "netns", "exec", mainNS, "nft", "list", "chain", "inet", "cgnat", "srcnat"])
    for line in text.split(separator: "\n") where line.contains("snat ip to") {
        let words = line.split(separator: " ")
        if let i = words.firstIndex(of: "packets"), i + 1 < words.count, let n = Int(words[i + 1]) { return n }
    }
    die("no SNAT counter in the router's ruleset")
}

func flushConntrack() { _ = capture(["ip", "netns", "exec", mainNS, "conntrack", "-F"]) }

// MARK: counting a logger's output

/// Counts lines of a logger's stdout as they arrive, on a thread of its own.
final class LineCounter {
    var new = 0, resyncNew = 0, overrunLines = 0, lines = 0
    var lastNew = 0.0
    let fd: Int32
    let newMarker: [UInt8], resyncMarker: [UInt8]?, overrunMarker: [UInt8]?
    var thread: OSThread?

    init(fd: Int32, new: String, resync: String?, overrun: String?) {
        self.fd = fd
        newMarker = Array(new.utf8)
        resyncMarker = resync.map { Array($0.utf8) }
        overrunMarker = overrun.map { Array($0.utf8) }
    }

    static func contains(_ line: ArraySlice<UInt8>, _ needle: [UInt8]) -> Bool {
        guard line.count >= needle.count, let first = needle.first else { return false }
        var i = line.startIndex
        let end = line.endIndex - needle.count
        while i <= end {
            if line[i] == first && line[i..<(i + needle.count)].elementsEqual(needle) { return true }
            i += 1
        }
        return false
    }

    func begin() {
        thread = OSThread { [self] in
            var buf = [UInt8](repeating: 0, count: 1 << 16)
            var carry: [UInt8] = []
            while true {
                let n = read(fd, &buf, buf.count)
                if n <= 0 { break }
                var chunk = carry
                chunk += buf[0..<n]
                var start = 0
                var sawNew = false
                while let nl = chunk[start...].firstIndex(of: 10) {
                    let line = chunk[start..<nl]
                    lines += 1
                    if LineCounter.contains(line, newMarker) {
                        if let r = resyncMarker, LineCounter.contains(line, r) { resyncNew += 1 } else { new += 1; sawNew = true }
                    } else if let o = overrunMarker, LineCounter.contains(line, o) {
                        overrunLines += 1
                    }
                    start = nl + 1
                }
                carry = Array(chunk[start...])
                if sawNew { lastNew = monotonicMilliseconds() }
            }
        }
    }

    func end() { thread?.join(); close(fd) }
}

// MARK: collectors of the NAT-log outputs

/// A UDP collector on the host's loopback (where collectors run: cgnat opens its output sockets
/// in the namespace it was started in) that counts the session-create records it receives.
final class CollectorCounter {
    let fd: Int32
    let port: UInt16
    let creates: ([UInt8]) -> Int
    var received = 0, datagrams = 0
    var lastArrival = 0.0
    private var stop: sig_atomic_t = 0
    private var thread: OSThread?

    init(creates: @escaping ([UInt8]) -> Int) {
        self.creates = creates
        let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        self.fd = fd
        var size: Int32 = 64 << 20
        setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &size, 4)
        var sa = sockaddr_in()
        sa.sin_family = sa_family_t(AF_INET)
        sa.sin_addr.s_addr = inAddr(IPAddress("127.0.0.1")!)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &sa) { p in
            p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) == 0 && getsockname(fd, $0, &len) == 0 }
        }
        guard ok else { die("collector socket on 127.0.0.1") }
        port = UInt16(bigEndian: sa.sin_port)
    }

    func begin() {
        thread = OSThread { [self] in
            var buf = [UInt8](repeating: 0, count: 65536)
            while stop == 0 {
                var p = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&p, 1, 100) > 0 else { continue }
                while true {
                    let n = recv(fd, &buf, buf.count, Int32(MSG_DONTWAIT))
                    if n <= 0 { break }
                    datagrams += 1
                    received += creates(Array(buf[0..<n]))
                    lastArrival = monotonicMilliseconds()
                }
            }
        }
    }

    func end() { stop = 1; thread?.join(); close(fd) }

    /// NAT44 session creates in an IPFIX message: natEvent 4 in the data sets of the session templates.
    static func ipfixCreates(_ m: [UInt8]) -> Int {
        var i = 16, n = 0
        while i + 4 <= m.count {
            let set = Int(m[i]) << 8 | Int(m[i + 1]), len = Int(m[i + 2]) << 8 | Int(m[i + 3])
            guard len >= 4, i + len <= m.count else { break }
            if let t = IPFIX.Template.all.first(where: { $0.id == set }), t == .sessionWithDestination || t == .session {
                var r = i + 4
                while r + t.recordLength <= i + len {
                    if m[r + t.recordLength - 1] == IPFIX.NATEvent.nat44SessionCreate { n += 1 }
                    r += t.recordLength
                }
            }
            i += len
        }
        return n
    }

    static func syslogCreates(_ d: [UInt8]) -> Int {
        LineCounter.contains(d[...], Array(" SESSION_CREATE [".utf8)) ? 1 : 0
    }
}

// MARK: load

/// Sinks on the uplink (never read: the flows only have to pass the router).
func openSinks() -> [Int32] {
    guard let (_, fd) = try? LabControl.open(context: uplinkHost.name, lab: lab) else { die("open \(uplinkHost.name) namespace") }
    defer { close(fd) }
    let socks: [Int32]? = try? NetNamespace.run(in: fd) {
        (0..<sinkPorts).map { k -> Int32 in
            let s = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_port = UInt16(9000 + k).bigEndian
            addr.sin_addr.s_addr = inAddr(sinkAddress)
            _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
            return s
        }
    }
    guard let socks else { die("open sinks") }
    return socks
}

/// An IPv4 address as `in_addr.s_addr` (network byte order in memory).
func inAddr(_ a: IPAddress) -> in_addr_t {
    var v: in_addr_t = 0
    withUnsafeMutableBytes(of: &v) { for i in 0..<4 { $0[i] = a.bytes[i] } }
    return v
}

/// A raw IPv4 socket in the sender's namespace that writes its own headers: one socket, any source port.
func openSender() -> Int32 {
    guard let (_, fd) = try? LabControl.open(context: senderHost.name, lab: lab) else { die("open \(senderHost.name) namespace") }
    defer { close(fd) }
    guard let s = try? NetNamespace.run(in: fd, { socket(AF_INET, Int32(SOCK_RAW.rawValue), Int32(IPPROTO_RAW)) }), s >= 0 else {
        die("raw socket in \(senderHost.name)")
    }
    return s
}

/// Starts `flows` new flows (flow i: source port 1024 + i / 8, sink port 9000 + i % 8, offset by
/// `base` so consecutive runs never reuse a tuple), paced to `rate` when not 0, for at most
/// `seconds`. Returns (flows sent, seconds taken).
func generate(sender: Int32, base: Int, seconds: Double) -> (Int, Double) {
    var pkt = [UInt8](repeating: 0, count: 29)
    pkt[0] = 0x45; pkt[2] = 0; pkt[3] = 29; pkt[8] = 64; pkt[9] = 17
    for k in 0..<4 { pkt[12 + k] = senderAddress.bytes[k]; pkt[16 + k] = sinkAddress.bytes[k] }
    pkt[24] = 0; pkt[25] = 9                                        // UDP length 9, checksum 0 (none)
    pkt[28] = 0x78
    var dst = sockaddr_in()
    dst.sin_family = sa_family_t(AF_INET)
    dst.sin_addr.s_addr = inAddr(sinkAddress)
    let t0 = monotonicMilliseconds()
    let end = t0 + seconds * 1000
    var sent = 0
    var i = base
    while true {
        let now = monotonicMilliseconds()
        if now >= end || i >= maxFlows { break }
        if rate > 0 {
            let due = Int((now - t0) / 1000 * Double(rate))
            if sent >= due { usleep(200); continue }
        }
        for _ in 0..<64 where i < maxFlows {
            let sport = UInt16(firstSourcePort + i / sinkPorts), dport = UInt16(9000 + i % sinkPorts)
            pkt[20] = UInt8(sport >> 8); pkt[21] = UInt8(sport & 0xff)
            pkt[22] = UInt8(dport >> 8); pkt[23] = UInt8(dport & 0xff)
            let n = withUnsafePointer(to: &dst) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { sendto(sender, pkt, pkt.count, 0, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            if n < 0 {
                if errno == ENOBUFS || errno == EAGAIN { usleep(50); continue }
                die("send: \(String(cString: strerror(errno)))")
            }
            sent += 1
            i += 1
        }
    }
    return (sent, (monotonicMilliseconds() - t0) / 1000)
}

// MARK: one measurement

struct Measurement {
    var tool: String
    var sent = 0, flows = 0, new = 0, resyncNew = 0, overruns = 0
    var seconds = 0.0, logSeconds = 0.0
    var flowRate: Double { Double(flows) / seconds }
    var eventRate: Double { logSeconds > 0 ? Double(new + resyncNew) / logSeconds : 0 }
    var lost: Int { max(0, flows - new) }
    /// With a NAT-log output: creates its collector received, and what cgnat said it delivered and dropped.
    var output: String?
    var received = 0, delivered = 0, dropped = 0, receiveSeconds = 0.0
    var unlogged: Int { max(0, flows - new - resyncNew) }
}

func measure(tool: String, argv: [String], newMarker: String, resync: String?, overrun: String?, overrunInStderr: String?,
             sender: Int32, base: Int, collector: CollectorCounter? = nil) -> Measurement {
    flushConntrack()
    collector?.begin()
    let errPath = "/tmp/cgnat-events-bench.\(getpid()).err"
    defer { unlink(errPath) }
    let child = start(argv, errPath: errPath)
    let counter = LineCounter(fd: child.stdout, new: newMarker, resync: resync, overrun: overrun)
    counter.begin()
    usleep(500_000)   // subscribed long before this
    let before = snatCounter()
    let t0 = monotonicMilliseconds()
    let (sent, seconds) = generate(sender: sender, base: base, seconds: duration)
    // Let the logger catch up: until no NEW line arrived for a second (10 s at most).
    let waitEnd = monotonicMilliseconds() + 10_000
    while monotonicMilliseconds() < waitEnd {
        usleep(100_000)
        let last = max(counter.lastNew, collector?.lastArrival ?? 0, t0 + seconds * 1000)
        if monotonicMilliseconds() - last > 1000 { break }
    }
    let flows = snatCounter() - before
    kill(child.pid, SIGINT)
    var status: Int32 = 0
    waitpid(child.pid, &status, 0)
    counter.end()
    var m = Measurement(tool: tool)
    m.sent = sent
    m.flows = flows
    m.seconds = seconds
    m.new = counter.new
    m.resyncNew = counter.resyncNew
    m.logSeconds = max(seconds, (counter.lastNew - t0) / 1000)
    m.overruns = counter.overrunLines
    if let marker = overrunInStderr {
        m.overruns = readFile(errPath).components(marker)
    }
    if let collector {
        usleep(200_000)
        collector.end()
        m.output = tool
        m.received = collector.received
        m.receiveSeconds = max(seconds, (collector.lastArrival - t0) / 1000)
        // "cgnat events: ipfix 127.0.0.1:PORT: delivered N events, dropped M"
        for line in readFile(errPath).split(separator: "\n") where line.contains(": delivered ") {
            let words = line.split(separator: " ").map(String.init)
            func after(_ w: String) -> Int? { words.firstIndex(of: w).flatMap { $0 + 1 < words.count ? Int(words[$0 + 1]) : nil } }
            m.delivered = after("delivered") ?? -1
            m.dropped = after("dropped") ?? -1
        }
    }
    flushConntrack()
    return m
}

extension String {
    func components(_ needle: String) -> Int {
        split(separator: "\n").filter { LineCounter.contains(Array($0.utf8)[...], Array(needle.utf8)) }.count
    }
}

func fmt(_ v: Double, _ digits: Int = 0) -> String {
    if digits == 0 { return String(Int(v.rounded())) }
    var p = 1.0
    for _ in 0..<digits { p *= 10 }
    let r = (v * p).rounded() / p
    let frac = String(Int(((r - Double(Int(r))) * p).rounded()))
    return "\(Int(r))." + String(repeating: "0", count: max(0, digits - frac.count)) + frac
}

func report(_ m: Measurement) {
    let lostPct = m.flows > 0 ? Double(m.lost) / Double(m.flows) * 100 : 0
    print("  \(m.tool)")
    print("    flows created (SNAT counter): \(m.flows) of \(m.sent) sent in \(fmt(m.seconds, 2)) s = \(fmt(m.flowRate)) flows/s")
    print("    NEW events logged:            \(m.new) = \(fmt(Double(m.new) / m.logSeconds)) events/s (over \(fmt(m.logSeconds, 2)) s)")
    print("    events lost:                  \(m.lost) (\(fmt(lostPct, 1)) %), overruns reported: \(m.overruns)")
    if m.resyncNew > 0 || m.tool.hasPrefix("cgnat") {
        print("    recovered by resync:          \(m.resyncNew); mappings never logged: \(m.unlogged)")
    }
    if m.output != nil {
        // Lost by the output: creates the reader logged on stdout that never reached the collector.
        let lost = max(0, m.new + m.resyncNew - m.received)
        print("    session creates at collector: \(m.received) = \(fmt(Double(m.received) / m.receiveSeconds)) events/s (over \(fmt(m.receiveSeconds, 2)) s); "
              + "lost on the way from stdout's \(m.new + m.resyncNew): \(lost); cgnat says delivered \(m.delivered), dropped \(m.dropped)")
    }
}

// MARK: main

if NetNamespace.exists(mainNS) { _ = try? Teardown.down(lab: labName) }
do { _ = try LabControl.up(lab, backend: .netns) } catch { die("up: \(error)") }
for sig in [SIGINT, SIGTERM, SIGHUP] { signal(sig) { _ in _ = try? Teardown.down(lab: labName); _exit(130) } }
let sinks = openSinks()
let sender = openSender()

var ctArgs = ["ip", "netns", "exec", mainNS, "conntrack", "-E", "-o", "timestamp"]
if let b = conntrackBuffer { ctArgs += ["--buffer-size", String(b)] }
print("cgnat-events-bench: UDP flows from \(senderHost.name) (\(senderAddress)) to \(uplinkHost.name) (\(sinkAddress)) through the NAT for \(fmt(duration, 1)) s per run, "
      + (rate > 0 ? "paced to \(rate) flows/s" : "unpaced (one sender thread)") + "; \(runs) run(s) per logger")
var results: [String: [Measurement]] = [:]
var base = 0
for run in 0..<runs {
    for (tool, argv, newM, resync, overrun, overrunErr) in [
        ("cgnat events --json", [binary, "events", "--lab", labName, "--json"], "\"event\":\"new\"", Optional("\"resync\":true"), Optional("\"event\":\"overrun\""), String?.none),
        ("conntrack -E -o timestamp" + (conntrackBuffer.map { " --buffer-size \($0)" } ?? ""), ctArgs, "[NEW]", nil, nil, Optional("ENOBUFS")),
    ] {
        if base + Int(duration * 400_000) > maxFlows { base = 0 }
        let m = measure(tool: tool, argv: argv, newMarker: newM, resync: resync, overrun: overrun, overrunInStderr: overrunErr,
                        sender: sender, base: base)
        base += m.sent
        results[tool, default: []].append(m)
        if runs > 1 { print("  run \(run + 1): \(tool): \(m.flows) flows, \(m.new) NEW, \(m.resyncNew) resync, \(m.overruns) overruns") }
    }
    // The same load with each NAT-log output on (stdout too: what the outputs add to the reader).
    for (flag, counts) in [("--ipfix", CollectorCounter.ipfixCreates), ("--syslog", CollectorCounter.syslogCreates)] {
        if base + Int(duration * 400_000) > maxFlows { base = 0 }
        let c = CollectorCounter(creates: counts)
        let tool = "cgnat events --json \(flag) 127.0.0.1:\(c.port)"
        let m = measure(tool: tool, argv: [binary, "events", "--lab", labName, "--json", "--no-existing", flag, "127.0.0.1:\(c.port)"],
                        newMarker: "\"event\":\"new\"", resync: "\"resync\":true", overrun: "\"event\":\"overrun\"", overrunInStderr: nil,
                        sender: sender, base: base, collector: c)
        base += m.sent
        results[flag, default: []].append(m)
        if runs > 1 { print("  run \(run + 1): \(tool): \(m.flows) flows, \(m.received) creates received, dropped \(m.dropped)") }
    }
}
sinks.forEach { close($0) }
close(sender)
_ = try? Teardown.down(lab: labName)

print("results (last run of each):")
let ours = results.first { $0.key.hasPrefix("cgnat") }!.value.last!
let outputs = ["--ipfix", "--syslog"].compactMap { results[$0]?.last }
let theirs = results.first { $0.key.hasPrefix("conntrack") }!.value.last!
report(ours)
report(theirs)
outputs.forEach(report)
let oursRate = Double(ours.new + ours.resyncNew) / ours.logSeconds, theirsRate = Double(theirs.new) / theirs.logSeconds
print("  ratios cgnat / conntrack: events/s \(fmt(oursRate / max(theirsRate, 1), 2))x, "
      + "flows/s under the logger \(fmt(ours.flowRate / max(theirs.flowRate, 1), 2))x, "
      + "share of mappings logged \(fmt(Double(ours.new + ours.resyncNew) / Double(max(ours.flows, 1)) * 100, 1)) % vs \(fmt(Double(theirs.new) / Double(max(theirs.flows, 1)) * 100, 1)) %")

for o in outputs {
    let rate = Double(o.received) / o.receiveSeconds
    print("  \(o.tool.split(separator: " ")[3]) output / conntrack -E: events/s \(fmt(rate / max(theirsRate, 1), 2))x; "
          + "logged on stdout \(o.new + o.resyncNew), received by the collector \(o.received), lost \(max(0, o.new + o.resyncNew - o.received)), "
          + "flows the NAT created \(o.flows)")
}
