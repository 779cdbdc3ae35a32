import CNetlinkShim
import Glibc
import Netlink

/// `cgnat conformance`: RFC 5780-style probes through the running lab, from its own namespaces,
/// plus the router's settings and live ruleset; the verdicts come from `Conformance.evaluate`.
public enum ConformanceRun {
    public struct Result: Sendable {
        public var report: ConformanceReport
        public var evidence: ConformanceEvidence
        public var wallMilliseconds: Double
        /// The subscribers the probes ran from.
        public var subscribers: [String]
        /// The uplink's receiver addresses (A, B) and ports (p, q).
        public var receivers: [FlowEndpoint]
    }

    /// How long a probe waits for a packet that may never come (negative outcomes).
    static let waitMilliseconds = 300.0
    /// How long the unsolicited SYN waits for an answer before the drop counters are read.
    public static let synWaitMilliseconds = 500
    /// The pause between two readings of a mapping's conntrack timer (RFC 4787 REQ-6).
    static let refreshPauseMilliseconds = 1500

    public static func run(_ running: RunningLab) throws -> Result {
        try LabControl.requireRoot("cgnat conformance")
        let start = monotonicMilliseconds()
        let prober = try ConformanceProber(running)
        defer { prober.cleanup() }
        let evidence = prober.measure()
        guard running.stillUp else { throw running.wentDown }
        return Result(report: Conformance.evaluate(lab: running.lab, evidence: evidence), evidence: evidence,
                      wallMilliseconds: monotonicMilliseconds() - start, subscribers: prober.chosen.map(\.name),
                      receivers: prober.receivers)
    }

    /// The subscribers to probe: two that share an inside IPv4 address in different domains (the
    /// collision case; they also hairpin to each other), and one more if the lab has it.
    public static func chooseSubscribers(_ lab: Lab) -> (chosen: [Host], pair: [Host]?) {
        let inside = lab.router.nat.inside
        let subscribers = lab.hosts.filter { h in
            guard case .domain = h.attachment else { return false }
            return h.addresses.contains { $0.family == .v4 && inside.contains($0.address) }
        }.sorted { $0.name < $1.name }
        func address(_ h: Host) -> IPAddress { h.addresses.first { $0.family == .v4 && inside.contains($0.address) }!.address }
        func domain(_ h: Host) -> String { if case .domain(let d) = h.attachment { return d }; return "" }
        // By address, so a lab of thousands of subscribers is grouped once, not compared pairwise.
        var pair: [Host]?
        var firstByAddress: [IPAddress: [Host]] = [:]
        for h in subscribers {
            let seen = firstByAddress[address(h), default: []]
            if let other = seen.first(where: { domain($0) != domain(h) }) { pair = [other, h]; break }
            firstByAddress[address(h), default: []].append(h)
        }
        var chosen = pair ?? Array(subscribers.prefix(1))
        if let other = subscribers.first(where: { s in !chosen.contains { $0.name == s.name } }) { chosen.append(other) }
        return (chosen, pair)
    }
}

/// One run's probes; every socket, the temporary receiver address and the temporary reject rule
/// on the uplink go in `cleanup`, also when a probe failed.
final class ConformanceProber {
    let running: RunningLab
    let lab: Lab
    let uplink: Host
    let chosen: [Host]
    let pair: [Host]?
    let sockets = ConfSockets()
    var namespaceFDs: [String: Int32] = [:]
    var devices: [String: String] = [:]
    var tokens = TokenMaker()
    var usedPorts = Set<UInt16>()
    var e = ConformanceEvidence()

    let a: IPAddress
    var b: IPAddress
    var p: UInt16 = 0
    var q: UInt16 = 0
    var temporaryAddress: (RouteSocket, Int32, IPPrefix)?
    var temporaryTable = false
    /// `ip route del ...` of the temporary lower-MTU route, run in `cleanup`.
    var temporaryRoute: [String]?
    var udpRx: [FlowEndpoint: Int32] = [:]
    var tcpRx: [FlowEndpoint: Int32] = [:]
    var uplinkCapture: Int32 = -1

    var receivers: [FlowEndpoint] { [FlowEndpoint(a, p), FlowEndpoint(a, q), FlowEndpoint(b, p), FlowEndpoint(b, q)] }
    var wait: Double { ConformanceRun.waitMilliseconds }
    static let temporaryTableName = "cgnat_conformance"

    init(_ running: RunningLab) throws {
        self.running = running
        lab = running.lab
        guard let up = lab.uplinkHost else {
            throw UsageError("lab '\(lab.name)' has no uplink host: conformance probes need one to receive them")
        }
        uplink = up
        let inside = lab.router.nat.inside
        guard let primary = (up.loopbackAddresses + up.addresses).first(where: { $0.family == .v4 && !inside.contains($0.address) })?.address else {
            throw UsageError("uplink host \(up.name) of lab '\(lab.name)' has no IPv4 address outside the inside prefix \(inside): conformance probes need one")
        }
        a = primary
        b = primary
        (chosen, pair) = ConformanceRun.chooseSubscribers(lab)
        guard !chosen.isEmpty else { throw UsageError("lab '\(lab.name)' has no subscriber with an inside IPv4 address: nothing to probe") }
        do {
            try setUp()
        } catch {
            cleanup()
            throw error
        }
    }

    func ns(_ context: String) throws -> Int32 {
        if let fd = namespaceFDs[context] { return fd }
        let (ctx, fd) = try running.open(context: context)
        namespaceFDs[context] = fd
        if let v = ctx.vrf { devices[context] = v }
        return fd
    }

    func port() -> UInt16 {
        // Fresh ports every run: a fixed TCP port fails the next run (TIME_WAIT).
        while true {
            let p = UInt16.random(in: 20000...60000)
            if usedPorts.insert(p).inserted { return p }
        }
    }

    func insideAddress(_ h: Host) -> IPAddress {
        h.addresses.first { $0.family == .v4 && lab.router.nat.inside.contains($0.address) }!.address
    }

    /// Receivers on two addresses of the uplink and two ports each (UDP and TCP), and a capture
    /// of what arrives there.
    func setUp() throws {
        let upNS = try ns(uplink.name)
        b = try secondAddress(upNS)
        p = port()
        q = port()
        for r in receivers {
            udpRx[r] = try sockets.socket(.udp, ns: upNS, device: nil, bind: r.address, port: r.port, what: "udp receiver \(r)")
            tcpRx[r] = try sockets.socket(.tcp, ns: upNS, device: nil, bind: r.address, port: r.port, listen: true, what: "tcp receiver \(r)")
        }
        uplinkCapture = try sockets.capture(ns: upNS, interface: uplink.interface)
    }

    /// The uplink's second receiver address: its link address when a subscriber can reach it
    /// (outside the inside prefix and every domain's prefixes), else a temporary /32 on its lo,
    /// one that nothing in the lab uses, removed again in `cleanup`.
    func secondAddress(_ upNS: Int32) throws -> IPAddress {
        let inside = lab.router.nat.inside
        let domainPrefixes = lab.router.subscribers.flatMap { $0.addresses + $0.routed }.filter { $0.family == .v4 }
        let reachable = uplink.addresses.filter { prefix in
            prefix.family == .v4 && prefix.address != a && !inside.contains(prefix.address)
                && !domainPrefixes.contains { $0.contains(prefix.address) }
        }
        if let link = reachable.first { return link.address }
        var owned = Set(lab.hosts.flatMap { ($0.addresses + $0.loopbackAddresses).map(\.address) })
        owned.formUnion(lab.router.uplink.addresses.map(\.address))
        for k in UInt64(16)..<UInt64(250) {
            let c = a.advanced(by: k)
            if owned.contains(c) || inside.contains(c) || lab.router.nat.pool.contains(where: { $0.contains(c) })
                || domainPrefixes.contains(where: { $0.contains(c) }) { continue }
            let sock = try NetNamespace.run(in: upNS) { try RouteSocket() }
            let prefix = IPPrefix(c, 32)
            do {
                let lo = try sock.linkIndex("lo")
                try sock.addAddress(index: lo, prefix)
                temporaryAddress = (sock, lo, prefix)
            } catch let err as NetlinkError where err.errno == EEXIST {
                // Someone else's (a concurrent run): use it, leave it.
                sock.close()
                continue
            } catch {
                sock.close()
                throw error
            }
            return c
        }
        throw UsageError("no free address next to \(a) for a second receiver on \(uplink.name)")
    }

    func cleanup() {
        sockets.closeAll()
        if let (sock, index, prefix) = temporaryAddress {
            try? sock.deleteAddress(index: index, prefix)
            sock.close()
            temporaryAddress = nil
        }
        if temporaryTable, let fd = namespaceFDs[uplink.name] {
            _ = try? NetNamespace.run(in: fd) { try Nftables().run("delete table inet \(ConformanceProber.temporaryTableName)") }
            temporaryTable = false
        }
        if let del = temporaryRoute {
            _ = try? Spawn.run(del, captureOutput: true, quiet: true)
            temporaryRoute = nil
        }
        namespaceFDs.values.forEach { close($0) }
        namespaceFDs = [:]
    }

    /// Runs `body`; a failure is written down as the probe's problem, the other probes go on.
    func step(_ name: String, _ body: () throws -> Void) {
        do { try body() } catch { e.problems[name] = "\(error)" }
    }

    func measure() -> ConformanceEvidence {
        var udp: [String: (fd: Int32, inside: FlowEndpoint, mapped: FlowEndpoint?)] = [:]
        var tcp: [String: (inside: FlowEndpoint, mapped: FlowEndpoint?)] = [:]
        step("udp mapping") { udp = try udpMappings() }
        step("udp collision") { try udpCollision() }
        step("low port") { try lowPort() }
        step("udp filtering") { try udpFiltering() }
        step("udp hairpin") { try udpHairpin(udp) }
        step("tcp mapping") { tcp = try tcpMappings() }
        step("tcp collision") { try tcpCollision() }
        step("tcp hairpin") { try tcpHairpin(tcp) }
        step("tcp filtering") { try tcpFiltering(tcp) }
        step("icmp mapping") { try icmpMappings() }
        step("icmp error") { try udpErrorInbound() }
        step("tcp icmp error") { try tcpErrorInbound() }
        step("tcp after icmp error") { try tcpAfterError() }
        step("icmp error outbound") { try udpErrorOutbound() }
        step("fragments") { try fragments() }
        step("ruleset") { try readRouter() }
        step("unsolicited syn") { try unsolicitedSYN() }
        step("refresh") { try refresh() }
        return e
    }

    // MARK: UDP

    /// Sends one token from `fd` to each destination and reads where each arrived.
    func udpFlows(_ fd: Int32, to destinations: [FlowEndpoint]) -> [MappingObservation.Flow] {
        let sent = destinations.map { d -> (FlowEndpoint, [UInt8]) in
            let t = tokens.make()
            _ = sendDatagram(fd, t, to: d)
            return (d, t)
        }
        return sent.map { d, t in
            MappingObservation.Flow(destination: d, mapped: receiveDatagram(udpRx[d]!, within: wait) { data, _ in data.starts(with: t) })
        }
    }

    func udpSocket(_ h: Host, port: UInt16) throws -> Int32 {
        try sockets.socket(.udp, ns: try ns(h.name), device: devices[h.name], bind: insideAddress(h), port: port, what: "udp at \(h.name)")
    }

    func udpMappings() throws -> [String: (fd: Int32, inside: FlowEndpoint, mapped: FlowEndpoint?)] {
        var out: [String: (fd: Int32, inside: FlowEndpoint, mapped: FlowEndpoint?)] = [:]
        for h in chosen {
            let x = port()
            let fd = try udpSocket(h, port: x)
            let inside = FlowEndpoint(insideAddress(h), x)
            let flows = udpFlows(fd, to: receivers)
            e.udpMappings.append(MappingObservation(subscriber: h.name, proto: "udp", inside: inside, flows: flows))
            out[h.name] = (fd, inside, flows.first?.mapped)
        }
        return out
    }

    /// The two subscribers of one inside address, the same port, each destination at once.
    func udpCollision() throws {
        guard let pair else { return }
        let z = port()
        let fds = try pair.map { try udpSocket($0, port: z) }
        var sent: [[(FlowEndpoint, [UInt8])]] = [[], []]
        for d in receivers {
            for i in 0..<2 {
                let t = tokens.make()
                _ = sendDatagram(fds[i], t, to: d)
                sent[i].append((d, t))
            }
        }
        for i in 0..<2 {
            let flows = sent[i].map { d, t in
                MappingObservation.Flow(destination: d, mapped: receiveDatagram(udpRx[d]!, within: wait) { data, _ in data.starts(with: t) })
            }
            e.udpCollision.append(MappingObservation(subscriber: pair[i].name, proto: "udp", inside: FlowEndpoint(insideAddress(pair[i]), z), flows: flows))
        }
    }

    func lowPort() throws {
        let h = chosen[0]
        var fd: Int32 = -1
        var low: UInt16 = 0
        for _ in 0..<8 {
            low = UInt16.random(in: 600...1000)
            if let f = try? udpSocket(h, port: low) { fd = f; break }
        }
        guard fd >= 0 else { throw ProbeSetupError(message: "no free well-known port at \(h.name)") }
        e.lowPortMapping = MappingObservation(subscriber: h.name, proto: "udp", inside: FlowEndpoint(insideAddress(h), low),
                                              flows: udpFlows(fd, to: [FlowEndpoint(a, p)]))
    }

    /// One outbound packet to A:p, then packets to its mapping from A:p, A:q and B:p.
    func udpFiltering() throws {
        let h = chosen[0]
        let fd = try udpSocket(h, port: port())
        let ap = FlowEndpoint(a, p)
        guard let m = udpFlows(fd, to: [ap])[0].mapped else {
            throw ProbeSetupError(message: "\(h.name)'s datagram to \(ap) did not arrive")
        }
        let same = tokens.make(), otherPort = tokens.make(), otherAddress = tokens.make()
        _ = sendDatagram(udpRx[FlowEndpoint(a, q)]!, otherPort, to: m)
        _ = sendDatagram(udpRx[FlowEndpoint(b, p)]!, otherAddress, to: m)
        _ = sendDatagram(udpRx[ap]!, same, to: m)
        var got = Set<[UInt8]>()
        let deadline = probeNow() + wait
        while got.count < 3 {
            let left = deadline - probeNow()
            if left <= 0 { break }
            _ = receiveDatagram(fd, within: left) { data, _ in
                for t in [same, otherPort, otherAddress] where data.starts(with: t) { got.insert(t); return true }
                return false
            }
        }
        e.udpFiltering = FilteringObservation(subscriber: h.name, mapping: m, fromSameEndpoint: got.contains(same),
                                              fromOtherPort: got.contains(otherPort), fromOtherAddress: got.contains(otherAddress))
    }

    /// The first chosen subscriber sends to the second one's public mapping (learned by the
    /// uplink receiver in the mapping probe).
    func udpHairpin(_ udp: [String: (fd: Int32, inside: FlowEndpoint, mapped: FlowEndpoint?)]) throws {
        guard chosen.count >= 2 else { return }
        let x = chosen[0].name, y = chosen[1].name
        guard let sx = udp[x], let sy = udp[y], let target = sy.mapped else {
            throw ProbeSetupError(message: "the mapping probe gave no public mapping of \(y)")
        }
        // Hairpinned packets are filtered like external ones (RFC 4787 section 6): under
        // address-and-port-dependent filtering the receiver punches first, towards the sender's
        // mapping, as a P2P application does; under endpoint-independent filtering it is not needed.
        if let back = sx.mapped { _ = sendDatagram(sy.fd, tokens.make(), to: back) }
        usleep(20_000)
        let t = tokens.make()
        _ = sendDatagram(sx.fd, t, to: target)
        let seen = receiveDatagram(sy.fd, within: wait) { data, _ in data.starts(with: t) }
        e.udpHairpin = HairpinObservation(proto: "udp", sender: x, receiver: y, target: target, senderMapping: sx.mapped,
                                          seenSource: seen, waitedMilliseconds: Int(wait))
    }

    // MARK: TCP

    func tcpSockets(_ h: Host, port: UInt16, count: Int) throws -> [Int32] {
        try (0..<count).map { _ in
            try sockets.socket(.tcp, ns: try ns(h.name), device: devices[h.name], bind: insideAddress(h), port: port, what: "tcp at \(h.name)")
        }
    }

    func tcpMappings() throws -> [String: (inside: FlowEndpoint, mapped: FlowEndpoint?)] {
        var out: [String: (inside: FlowEndpoint, mapped: FlowEndpoint?)] = [:]
        for h in chosen {
            let x = port()
            let fds = try tcpSockets(h, port: x, count: receivers.count)
            let clients = zip(fds, receivers).map { TCPConnectProbe.Client(token: tokens.make(), fd: $0, destination: $1) }
            let found = TCPConnectProbe.run(clients, listeners: tcpRx, within: wait * 2)
            let flows = clients.map { MappingObservation.Flow(destination: $0.destination, mapped: found[$0.token]) }
            let inside = FlowEndpoint(insideAddress(h), x)
            e.tcpMappings.append(MappingObservation(subscriber: h.name, proto: "tcp", inside: inside, flows: flows))
            out[h.name] = (inside, flows.first?.mapped)
        }
        return out
    }

    func tcpCollision() throws {
        guard let pair else { return }
        let z = port()
        var clients: [[TCPConnectProbe.Client]] = []
        for h in pair {
            let fds = try tcpSockets(h, port: z, count: receivers.count)
            clients.append(zip(fds, receivers).map { TCPConnectProbe.Client(token: tokens.make(), fd: $0, destination: $1) })
        }
        let found = TCPConnectProbe.run(clients[0] + clients[1], listeners: tcpRx, within: wait * 2)
        for i in 0..<2 {
            e.tcpCollision.append(MappingObservation(subscriber: pair[i].name, proto: "tcp", inside: FlowEndpoint(insideAddress(pair[i]), z),
                                                     flows: clients[i].map { .init(destination: $0.destination, mapped: found[$0.token]) }))
        }
    }

    /// A SYN from the first subscriber to the second one's TCP mapping, looked for at the second
    /// one's own interface (it has no listener there; the SYN arriving is what counts).
    func tcpHairpin(_ tcp: [String: (inside: FlowEndpoint, mapped: FlowEndpoint?)]) throws {
        guard chosen.count >= 2 else { return }
        let x = chosen[0], y = chosen[1]
        guard let ty = tcp[y.name], let target = ty.mapped else {
            throw ProbeSetupError(message: "the TCP mapping probe gave no public mapping of \(y.name)")
        }
        let capture = try sockets.capture(ns: try ns(y.name), interface: y.interface)
        // As for UDP: the receiver punches first (a SYN from its mapped port towards the sender's
        // mapping, dropped under address-and-port-dependent filtering), then the sender connects
        // from the inside port whose mapping that is.
        var punch: Int32?
        let fromPort: UInt16
        if let tx = tcp[x.name], let back = tx.mapped {
            let p = try tcpSockets(y, port: ty.inside.port, count: 1)[0]
            _ = SocketAddress(back.address, port: back.port).withPointer { connect(p, $0, $1) }
            punch = p
            fromPort = tx.inside.port
            usleep(20_000)
        } else {
            fromPort = port()
        }
        let fd = try tcpSockets(x, port: fromPort, count: 1)[0]
        _ = SocketAddress(target.address, port: target.port).withPointer { connect(fd, $0, $1) }
        let seen = waitCapture(capture, tokenLength: TokenMaker.length, within: wait) {
            $0.proto == .tcp && $0.destinationPort == ty.inside.port && $0.destination == ty.inside.address
        }
        e.tcpHairpin = HairpinObservation(proto: "tcp", sender: x.name, receiver: y.name, target: target,
                                          senderMapping: tcp[x.name]?.mapped, seenSource: seen.map { FlowEndpoint($0.source, $0.port) },
                                          waitedMilliseconds: Int(wait))
        sockets.close(fd)
        if let punch { sockets.close(punch) }
        sockets.close(capture)
    }


    /// SYNs from A (another port) and from B to the TCP mapping of the first subscriber's
    /// connection to A:p, looked for at the subscriber's interface.
    func tcpFiltering(_ tcp: [String: (inside: FlowEndpoint, mapped: FlowEndpoint?)]) throws {
        let h = chosen[0]
        guard let t = tcp[h.name], let m = t.mapped else {
            throw ProbeSetupError(message: "the TCP mapping probe gave no public mapping of \(h.name)")
        }
        let capture = try sockets.capture(ns: try ns(h.name), interface: h.interface)
        defer { sockets.close(capture) }
        let upNS = try ns(uplink.name)
        let fromA = try sockets.socket(.tcp, ns: upNS, device: nil, bind: a, port: port(), what: "tcp at \(uplink.name)")
        let fromB = try sockets.socket(.tcp, ns: upNS, device: nil, bind: b, port: port(), what: "tcp at \(uplink.name)")
        defer { sockets.close(fromA); sockets.close(fromB) }
        for fd in [fromA, fromB] { _ = SocketAddress(m.address, port: m.port).withPointer { connect(fd, $0, $1) } }
        var otherPort = false, otherAddress = false
        _ = waitCapture(capture, tokenLength: TokenMaker.length, within: wait) { c in
            if c.proto == .tcp && c.destinationPort == t.inside.port {
                if c.source == a { otherPort = true }
                if c.source == b { otherAddress = true }
            }
            return otherPort && otherAddress
        }
        e.tcpFiltering = FilteringObservation(subscriber: h.name, mapping: m, fromSameEndpoint: true,
                                              fromOtherPort: otherPort, fromOtherAddress: otherAddress)
    }


    /// An established connection to A:p; the uplink sends an ICMP port unreachable quoting the
    /// connection's packet (as it arrived there: from the mapping to A:p) to the mapping; it must
    /// reach the inside host, and the connection must still carry data both ways.
    func tcpAfterError() throws {
        let h = chosen[0]
        let ap = FlowEndpoint(a, p)
        let fd = try tcpSockets(h, port: port(), count: 1)[0]
        let token = tokens.make()
        let kept = TCPConnectProbe.runKeeping([.init(token: token, fd: fd, destination: ap)], listeners: tcpRx, within: wait * 2)
        guard let (m, server) = kept[token] else { throw ProbeSetupError(message: "\(h.name)'s connection to \(ap) did not complete") }
        defer { close(server) }
        let capture = try sockets.capture(ns: try ns(h.name), interface: h.interface)
        defer { sockets.close(capture) }
        let raw: Int32 = try NetNamespace.run(in: try ns(uplink.name)) {
            let fd = socket(AF_INET, Int32(SOCK_RAW.rawValue) | SockType.flags, Int32(IPPROTO_ICMP))
            guard fd >= 0 else { throw ProbeSetupError("raw icmp socket at the uplink") }
            // From A: the uplink's link address may also be a domain's gateway address, which
            // that domain drops as a martian source.
            guard bindSocket(fd, self.a, port: 0) else {
                let e = errno
                close(fd)
                throw ProbeSetupError("bind raw icmp socket to \(self.a)", errno: e)
            }
            return fd
        }
        defer { close(raw) }
        let icmp = portUnreachable(quoting: m, to: ap)
        _ = SocketAddress(m.address, port: 0).withPointer { sendto(raw, icmp, icmp.count, 0, $0, $1) }
        let arrived = waitRawICMP(capture, within: wait, quotedDestinationPort: p)
        _ = drainErrorQueue(fd)
        _ = socketError(fd)
        let out = tokens.make(), back = tokens.make()
        _ = send(fd, out, out.count, Int32(MSG_NOSIGNAL))
        let outbound = receiveStream(server, out)
        _ = send(server, back, back.count, Int32(MSG_NOSIGNAL))
        let inbound = receiveStream(fd, back)
        e.tcpAfterError = TCPAfterErrorObservation(flow: "tcp \(h.name) -> \(ap) (mapping \(m))", errorArrived: arrived,
                                                   dataOutbound: outbound, dataInbound: inbound)
        sockets.close(fd)
    }

    func receiveStream(_ fd: Int32, _ token: [UInt8]) -> Bool {
        var got: [UInt8] = []
        let deadline = probeNow() + wait
        while probeNow() < deadline {
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            _ = poll(&pfd, 1, Int32(max(1, (deadline - probeNow()).rounded(.up))))
            var buf = [UInt8](repeating: 0, count: 256)
            let n = recv(fd, &buf, buf.count, 0)
            if n > 0 { got += buf[0..<n] } else if n == 0 { return false }
            if got.starts(with: token) { return true }
        }
        return false
    }

    /// ICMP destination unreachable, port unreachable, about a TCP segment from `from` to `to`.
    func portUnreachable(quoting from: FlowEndpoint, to: FlowEndpoint) -> [UInt8] {
        var ip: [UInt8] = [0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0] + from.address.bytes + to.address.bytes
        let c = internetChecksum(ip)
        ip[10] = UInt8(c >> 8); ip[11] = UInt8(c & 0xff)
        let tcp: [UInt8] = [UInt8(from.port >> 8), UInt8(from.port & 0xff), UInt8(to.port >> 8), UInt8(to.port & 0xff), 0, 0, 0, 1]
        var icmp: [UInt8] = [3, 3, 0, 0, 0, 0, 0, 0] + ip + tcp
        let ic = internetChecksum(icmp)
        icmp[2] = UInt8(ic >> 8); icmp[3] = UInt8(ic & 0xff)
        return icmp
    }

    // MARK: fragments

    static let lowMTU = 1280

    /// A temporary route to B with a lower MTU in the router's uplink domain: a DF=1 datagram too
    /// big for it must get ICMP fragmentation-needed, a DF=0 one must arrive whole. Then datagrams
    /// the sender fragments itself, in order (its kernel) and in reverse order (a raw socket).
    func fragments() throws {
        let h = chosen[0]
        let upContext = try running.context(named: "\(lab.router.name):\(lab.router.uplink.name)")
        guard let gateway = lab.router.uplink.gateways.first(where: { $0.family == .v4 }) else {
            throw ProbeSetupError(message: "the router's uplink has no IPv4 gateway to route the low-MTU probe through")
        }
        var route = ["\(b)/32", "via", "\(gateway)", "dev", lab.router.uplink.interface]
        if let v = upContext.vrf { route += ["vrf", v] }
        let add = try Spawn.run(["ip", "-n", upContext.namespace, "-4", "route", "add"] + route + ["mtu", "lock", "\(Self.lowMTU)"], captureOutput: true, quiet: true)
        guard add.status == 0 else { throw ProbeSetupError(message: "temporary route to \(b) with mtu \(Self.lowMTU): \(add.output)") }
        temporaryRoute = ["ip", "-n", upContext.namespace, "-4", "route", "del"] + route
        let subscriberNS = try ns(h.name)
        defer {
            if let del = temporaryRoute { _ = try? Spawn.run(del, captureOutput: true, quiet: true); temporaryRoute = nil }
            // The path MTU the sender learned for B goes with the route (a flush invalidates it).
            _ = try? NetNamespace.run(in: subscriberNS) { writeSmallFile("/proc/sys/net/ipv4/route/flush", "1") }
        }
        let bp = FlowEndpoint(b, p)
        let size = 1400
        // DF=1
        let df = try udpSocket(h, port: port())
        // DF set, the path MTU the sender may have cached ignored: the router must answer.
        _ = setIntOption(df, Int32(IPPROTO_IP), IP_MTU_DISCOVER, 3 /* IP_PMTUDISC_PROBE */)
        let big = tokens.make() + [UInt8](repeating: 0x2e, count: size - TokenMaker.length)
        _ = sendDatagram(df, big, to: bp)
        let err = receiveError(df, within: wait)
        e.fragmentationNeeded = ICMPErrorObservation(flow: "udp DF=1 \(size) bytes \(h.name) -> \(bp) over a \(Self.lowMTU)-byte route",
                                                     received: err?.text, type: err?.type, code: err?.code, from: err?.from)
        sockets.close(df)
        // DF=0: the router fragments it.
        let nodf = try udpSocket(h, port: port())
        _ = setIntOption(nodf, Int32(IPPROTO_IP), IP_MTU_DISCOVER, 0 /* IP_PMTUDISC_DONT */)
        e.fragmentedOnTheWay = FragmentObservation(flow: "udp DF=0 \(h.name) -> \(bp) over a \(Self.lowMTU)-byte route", bytes: size,
                                                   arrivedWhole: sendWhole(nodf, size: size, to: bp))
        sockets.close(nodf)
        // Fragments from the sender, in order: bigger than its own link.
        let ap = FlowEndpoint(a, p)
        let inOrder = try udpSocket(h, port: port())
        _ = setIntOption(inOrder, Int32(IPPROTO_IP), IP_MTU_DISCOVER, 0)
        e.fragmentsInOrder = FragmentObservation(flow: "udp \(h.name) -> \(ap) sent as fragments in order", bytes: 3000,
                                                 arrivedWhole: sendWhole(inOrder, size: 3000, to: ap))
        sockets.close(inOrder)
        // And in reverse order, built by hand.
        let raw: Int32 = try NetNamespace.run(in: try ns(h.name)) {
            let fd = socket(AF_INET, Int32(SOCK_RAW.rawValue) | SockType.flags, Int32(IPPROTO_RAW))
            guard fd >= 0 else { throw ProbeSetupError("raw socket at \(h.name)") }
            return fd
        }
        defer { close(raw) }
        let t = tokens.make()
        let payload = t + [UInt8](repeating: 0x2f, count: 2400 - TokenMaker.length)
        for f in reversedFragments(source: FlowEndpoint(insideAddress(h), port()), destination: ap, payload: payload) {
            _ = SocketAddress(ap.address, port: 0).withPointer { sendto(raw, f, f.count, 0, $0, $1) }
        }
        let got = receiveDatagram(udpRx[ap]!, within: wait) { data, _ in data.count == payload.count && data.starts(with: t) }
        e.fragmentsOutOfOrder = FragmentObservation(flow: "udp \(h.name) -> \(ap) sent as fragments in reverse order", bytes: payload.count,
                                                    arrivedWhole: got != nil)
    }

    /// Sends `size` bytes (a token first) and waits for the receiver at `to` to get them whole.
    func sendWhole(_ fd: Int32, size: Int, to: FlowEndpoint) -> Bool {
        let t = tokens.make()
        let data = t + [UInt8](repeating: 0x2e, count: size - TokenMaker.length)
        _ = sendDatagram(fd, data, to: to)
        return receiveDatagram(udpRx[to]!, within: wait) { d, _ in d.count == size && d.starts(with: t) } != nil
    }

    /// An IPv4 UDP datagram as two fragments, the last one first (UDP checksum 0: none, which
    /// IPv4 allows; the kernel fills in the IP header checksum of a raw packet).
    func reversedFragments(source: FlowEndpoint, destination: FlowEndpoint, payload: [UInt8]) -> [[UInt8]] {
        let udpLength = 8 + payload.count
        let udp: [UInt8] = [UInt8(source.port >> 8), UInt8(source.port & 0xff), UInt8(destination.port >> 8), UInt8(destination.port & 0xff),
                            UInt8(udpLength >> 8), UInt8(udpLength & 0xff), 0, 0] + payload
        let id = UInt16.random(in: 1...UInt16.max)
        let firstLength = 1480   // a multiple of 8
        func header(_ length: Int, offset: Int, more: Bool) -> [UInt8] {
            let total = 20 + length
            let frag = UInt16(offset / 8) | (more ? 0x2000 : 0)
            return [0x45, 0, UInt8(total >> 8), UInt8(total & 0xff), UInt8(id >> 8), UInt8(id & 0xff), UInt8(frag >> 8), UInt8(frag & 0xff),
                    64, 17, 0, 0] + source.address.bytes + destination.address.bytes
        }
        let first = header(firstLength, offset: 0, more: true) + udp[0..<firstLength]
        let second = header(udp.count - firstLength, offset: firstLength, more: false) + udp[firstLength...]
        return [second, first]
    }

    // MARK: ICMP

    /// Echo requests from one identifier to both receiver addresses: the identifier each
    /// arrived with at the uplink, when it was also answered.
    func icmpMappings() throws {
        for h in chosen {
            let id = port()
            let fd = try sockets.socket(.icmp, ns: try ns(h.name), device: devices[h.name], bind: insideAddress(h), port: id, what: "icmp echo at \(h.name)")
            var flows: [MappingObservation.Flow] = []
            for d in [a, b] {
                let t = tokens.make()
                let packet: [UInt8] = [8, 0, 0, 0, 0, 0, 0, 1] + t
                _ = sendDatagram(fd, packet, to: FlowEndpoint(d, 0))
                let seen = waitCapture(uplinkCapture, tokenLength: TokenMaker.length, within: wait) { $0.proto == .icmp && $0.token == t }
                let answered = receiveDatagram(fd, within: wait) { data, _ in
                    data.count >= 8 && data[0] == 0 && data.withUnsafeBytes { containsBytes($0, from: 8, t) }
                } != nil
                flows.append(.init(destination: FlowEndpoint(d, 0), mapped: answered ? seen.map { FlowEndpoint($0.source, $0.port) } : nil))
            }
            e.icmpMappings.append(MappingObservation(subscriber: h.name, proto: "icmp", inside: FlowEndpoint(insideAddress(h), id), flows: flows))
        }
    }

    /// A datagram to a port of the uplink where nothing listens: its port unreachable must reach
    /// the sender's socket (only a translated error, whose quoted packet is the one sent, does),
    /// and the next datagram of the same flow must leave with the same mapping.
    func udpErrorInbound() throws {
        let h = chosen[0]
        let w = port()
        let fd = try udpSocket(h, port: w)
        let closed = FlowEndpoint(a, port())
        let flow = "udp \(h.name) \(insideAddress(h)):\(w) -> \(closed)"
        let t1 = tokens.make()
        _ = sendDatagram(fd, t1, to: closed)
        let before = waitCapture(uplinkCapture, tokenLength: TokenMaker.length, within: wait) { $0.proto == .udp && $0.token == t1 }
        let err = receiveError(fd, within: wait)
        _ = socketError(fd)
        e.udpErrorInbound = ICMPErrorObservation(flow: flow, received: err?.text, type: err?.type, code: err?.code, from: err?.from)
        let t2 = tokens.make()
        _ = sendDatagram(fd, t2, to: closed)
        let after = waitCapture(uplinkCapture, tokenLength: TokenMaker.length, within: wait) { $0.proto == .udp && $0.token == t2 }
        e.mappingAfterError = MappingAfterError(flow: flow, before: before.map { FlowEndpoint($0.source, $0.port) },
                                                after: after.map { FlowEndpoint($0.source, $0.port) })
    }

    /// A SYN to a port the uplink refuses with ICMP port unreachable (a temporary rule there).
    func tcpErrorInbound() throws {
        let h = chosen[0]
        let refused = FlowEndpoint(a, port())
        let upNS = try ns(uplink.name)
        let table = ConformanceProber.temporaryTableName
        try NetNamespace.run(in: upNS) {
            try Nftables().run("""
                add table inet \(table)
                flush table inet \(table)
                add chain inet \(table) input { type filter hook input priority -10; policy accept; }
                add rule inet \(table) input ip daddr \(refused.address) tcp dport \(refused.port) reject with icmpx type port-unreachable
                """)
        }
        temporaryTable = true
        let fd = try tcpSockets(h, port: port(), count: 1)[0]
        _ = SocketAddress(refused.address, port: refused.port).withPointer { connect(fd, $0, $1) }
        let err = receiveError(fd, within: wait)
        let flow = "tcp \(h.name) -> \(refused) (refused there with ICMP port unreachable)"
        if let err {
            e.tcpErrorInbound = ICMPErrorObservation(flow: flow, received: err.text, type: err.type, code: err.code, from: err.from)
        } else {
            let se = socketError(fd)
            e.tcpErrorInbound = ICMPErrorObservation(flow: flow, received: se == 0 ? nil : "\(errnoText(se)) without an ICMP error in the queue")
        }
        sockets.close(fd)
    }

    /// The subscriber's flow to A:p ends (its socket closes); A:p then sends to the mapping, the
    /// subscriber answers port unreachable, and that error must reach A:p from the public address.
    func udpErrorOutbound() throws {
        let h = chosen[0]
        let fd = try udpSocket(h, port: port())
        let ap = FlowEndpoint(a, p)
        let rx = udpRx[ap]!
        guard let m = udpFlows(fd, to: [ap])[0].mapped else { throw ProbeSetupError(message: "\(h.name)'s datagram to \(ap) did not arrive") }
        sockets.close(fd)
        _ = drainErrorQueue(rx)
        _ = socketError(rx)
        _ = sendDatagram(rx, tokens.make(), to: m)
        let err = receiveError(rx, within: wait)
        _ = socketError(rx)
        e.udpErrorOutbound = ICMPErrorObservation(flow: "udp \(ap) -> \(h.name)'s mapping \(m) after its socket closed",
                                                  received: err?.text, type: err?.type, code: err?.code, from: err?.from)
        e.udpErrorOutboundMapping = m
    }

    // MARK: router

    func routerRuleset() throws -> String {
        try NetNamespace.run(in: try ns(lab.router.name)) { try Nftables().run("list ruleset") }
    }

    func readRouter() throws {
        let names = ConformanceSettings.all
        let values: [String: Int] = try NetNamespace.run(in: try ns(lab.router.name)) {
            var out: [String: Int] = [:]
            for n in names {
                if let text = readSmallFile("/proc/sys/net/netfilter/\(n)"), let v = Int(text.filter { !$0.isWhitespace }) { out[n] = v }
            }
            return out
        }
        e.settings = values
        let lines = try routerRuleset().split(separator: "\n").map { $0.trimmingSpaces() }
        e.helperRules = lines.filter { $0.contains("ct helper") }
        // Rules, not the elements of the set they fill.
        e.quotaRules = lines.filter { $0.contains("ct count over") && ($0.contains(" drop") || $0.contains(" reject")) }
        e.relatedRules = lines.filter { $0.contains("ct state") && $0.contains("related") && $0.contains("accept") }
    }

    /// Drop rules' packet counters by rule text (the counter left out), summed over equal rules.
    func dropCounters() throws -> [String: Int] {
        var out: [String: Int] = [:]
        for raw in try routerRuleset().split(separator: "\n") {
            let line = raw.trimmingSpaces()
            guard line.contains(" drop") || line.hasSuffix("drop"), let r = line.firstRange(of: "counter packets ") else { continue }
            let rest = line[r.upperBound...]
            let n = Int(rest.prefix { $0.isNumber }) ?? 0
            // "counter packets N bytes M" out of the key, so the key is stable across readings.
            var key = String(line[..<r.lowerBound])
            if let bytes = rest.firstRange(of: "bytes ") {
                key += rest[bytes.upperBound...].drop { $0.isNumber }
            }
            while let r = key.firstRange(of: "  ") { key.replaceSubrange(r, with: " ") }
            out[key, default: 0] += n
        }
        return out
    }

    /// A SYN from the uplink to the public address on a port nothing maps. An answer (a reset or
    /// an ICMP error) within the wait fails REQ-4; silence is evidence only together with a drop
    /// rule whose counter covered the SYN, since a dropped packet is never answered later.
    func unsolicitedSYN() throws {
        let target = FlowEndpoint(lab.router.nat.publicAddress, port())
        let before = try dropCounters()
        let fd = try sockets.socket(.tcp, ns: try ns(uplink.name), device: nil, bind: a, port: port(), what: "tcp at \(uplink.name)")
        let sentAt = probeNow()
        _ = SocketAddress(target.address, port: target.port).withPointer { connect(fd, $0, $1) }
        let waitMs = Double(ConformanceRun.synWaitMilliseconds)
        var answer: String?
        var answerAt: Double?
        if let err = receiveError(fd, within: 0) { answer = err.text; answerAt = probeNow() }
        while answer == nil && probeNow() - sentAt < waitMs {
            var pfd = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
            _ = poll(&pfd, 1, Int32(max(1, (waitMs - (probeNow() - sentAt)).rounded(.up))))
            if pfd.revents == 0 { continue }
            if let err = receiveError(fd, within: 0) { answer = err.text; answerAt = probeNow(); break }
            let se = socketError(fd)
            answerAt = probeNow()
            answer = se == ECONNREFUSED ? "TCP reset" : se == 0 ? "connection accepted" : errnoText(se)
        }
        sockets.close(fd)   // no retransmitted SYN after the wait
        let after = try dropCounters()
        let rose = after.compactMap { key, n -> String? in
            let d = n - (before[key] ?? 0)
            return d > 0 ? "'\(key.trimmingSpaces())' (+\(d))" : nil
        }.sorted()
        e.unsolicitedSYN = UnsolicitedSYNObservation(target: target, answer: answer, answerMilliseconds: answerAt.map { $0 - sentAt },
                                                     waitedMilliseconds: ConformanceRun.synWaitMilliseconds,
                                                     droppedBy: rose.isEmpty ? nil : rose.joined(separator: ", "))
    }

    /// The mapping's conntrack timer around an outbound and then an inbound packet, each after
    /// a pause in which it only falls.
    func refresh() throws {
        let h = chosen[0]
        let r = port()
        let fd = try udpSocket(h, port: r)
        let bq = FlowEndpoint(b, q)
        guard let m = udpFlows(fd, to: [bq])[0].mapped else { throw ProbeSetupError(message: "\(h.name)'s datagram to \(bq) did not arrive") }
        let inside = insideAddress(h)
        let ct = try NetNamespace.run(in: try ns(lab.router.name)) { try ConntrackSocket() }
        defer { ct.close() }
        func timer() throws -> UInt32? {
            try ct.dump(family: .v4).first {
                $0.original.protocolNumber == 17 && $0.original.source == inside && $0.original.sourcePort == r
                    && $0.original.destination == bq.address && $0.original.destinationPort == bq.port
            }?.timeout
        }
        let pause = ConformanceRun.refreshPauseMilliseconds
        usleep(useconds_t(pause * 1000))
        let t1 = try timer()
        _ = udpFlows(fd, to: [bq])
        let t2 = try timer()
        e.outboundRefresh = RefreshObservation(direction: "outbound", beforeSeconds: t1, afterSeconds: t2, pausedMilliseconds: pause)
        usleep(useconds_t(pause * 1000))
        let t3 = try timer()
        let t = tokens.make()
        _ = sendDatagram(udpRx[bq]!, t, to: m)
        _ = receiveDatagram(fd, within: wait) { data, _ in data.starts(with: t) }
        let t4 = try timer()
        e.inboundRefresh = RefreshObservation(direction: "inbound", beforeSeconds: t3, afterSeconds: t4, pausedMilliseconds: pause)
    }
}

/// The Internet checksum (RFC 1071) of `bytes`.
func internetChecksum(_ bytes: [UInt8]) -> UInt16 {
    var sum: UInt32 = 0
    var i = 0
    while i + 1 < bytes.count { sum += UInt32(bytes[i]) << 8 | UInt32(bytes[i + 1]); i += 2 }
    if i < bytes.count { sum += UInt32(bytes[i]) << 8 }
    while sum >> 16 != 0 { sum = (sum & 0xffff) + (sum >> 16) }
    return ~UInt16(sum)
}

/// Waits for an ICMP destination unreachable whose quoted TCP/UDP packet goes to `port`, in
/// the cooked frames of an AF_PACKET capture.
func waitRawICMP(_ fd: Int32, within ms: Double, quotedDestinationPort port: UInt16) -> Bool {
    let deadline = probeNow() + ms
    var buf = [UInt8](repeating: 0, count: 2048)
    while true {
        while true {
            let n = recv(fd, &buf, buf.count, 0)
            if n <= 0 { break }
            guard n >= 20 + 8 + 20 + 4, buf[0] >> 4 == 4, buf[9] == 1 else { continue }
            let ihl = Int(buf[0] & 0x0f) * 4
            guard n >= ihl + 8 + 20 + 4, buf[ihl] == 3 else { continue }
            let inner = ihl + 8
            let innerIHL = Int(buf[inner] & 0x0f) * 4
            guard n >= inner + innerIHL + 4 else { continue }
            let dport = UInt16(buf[inner + innerIHL + 2]) << 8 | UInt16(buf[inner + innerIHL + 3])
            if dport == port { return true }
        }
        let left = deadline - probeNow()
        if left <= 0 { return false }
        var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        _ = poll(&pfd, 1, Int32(max(1, left.rounded(.up))))
    }
}

@discardableResult
func writeSmallFile(_ path: String, _ text: String) -> Bool {
    let fd = open(path, O_WRONLY | O_CLOEXEC)
    guard fd >= 0 else { return false }
    defer { close(fd) }
    return write(fd, text, text.utf8.count) == text.utf8.count
}

extension StringProtocol {
    func trimmingSpaces() -> String {
        String(drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }
}
