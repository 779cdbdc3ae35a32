import Foundation
import Testing
import Netlink
@testable import CGNat

/// NAT behaviour measured by a real RFC 5780 client: coturn's `turnutils_natdiscovery` against
/// `turnserver --stun-only` on two addresses of the uplink (installed by scripts/deps).
@Suite(.serialized, .enabled(if: isRoot && natDiscoveryInstalled))
struct NATBehaviourTests {
    /// Brings up `lab`, adds a second public address on the uplink's loopback (RFC 5780 needs
    /// an alternate address) and runs a STUN server on both; everything goes with the lab.
    func withSTUN<T>(_ lab: Lab, backend: Backend = .netns, _ body: (_ server: IPAddress) throws -> T) throws -> T {
        _ = try LabControl.up(lab, backend: backend)
        defer { _ = try? Teardown.down(lab: lab.name) }   // ends the server too: it runs inside
        return try withSTUNServer(lab, body)
    }

    /// The STUN server of `withSTUN` on a lab that is already up (the caller takes it down).
    func withSTUNServer<T>(_ lab: Lab, _ body: (_ server: IPAddress) throws -> T) throws -> T {
        let uplink = try #require(lab.uplinkHost)
        let primary = try #require(uplink.loopbackAddresses.first { $0.family == .v4 }).address
        let alternate = primary.advanced(by: 8)
        let ns = lab.namespaceName(uplink.name)
        #expect(try runCommand(["ip", "netns", "exec", ns, "ip", "addr", "add", "\(alternate)/32", "dev", "lo"]).status == 0)
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        server.arguments = ["ip", "netns", "exec", ns, "turnserver", "--stun-only", "-L", "\(primary)", "-L", "\(alternate)",
                            "--no-cli", "-n", "--log-file", "stdout", "--simple-log"]
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        // turnserver ignores SIGTERM for seconds: kill it.
        defer { kill(server.processIdentifier, SIGKILL); server.waitUntilExit() }
        usleep(800_000)   // turnserver binds its sockets after start-up
        return try body(primary)
    }

    struct Discovery { var behaviour: String; var reflexive: Set<String>; var text: String }

    /// Mapping discovery from `host`, all from one local address and port.
    func discover(_ lab: Lab, _ host: CGNatCore.Host, server: IPAddress, port: UInt16) throws -> Discovery {
        let inside = try #require(host.addresses.first { $0.family == .v4 }).address
        let r = try runCommand(["ip", "netns", "exec", lab.namespaceName(host.name), "timeout", "20",
                           "turnutils_natdiscovery", "-m", "-L", "\(inside)", "-l", "\(port)", "\(server)"])
        let lines = r.output.split(separator: "\n")
        let behaviour = lines.first { $0.hasPrefix("NAT with") }.map(String.init) ?? "no verdict"
        let reflexive = Set(lines.filter { $0.contains("UDP reflexive addr:") }.compactMap { $0.split(separator: " ").last.map(String.init) })
        return Discovery(behaviour: behaviour, reflexive: reflexive, text: r.output)
    }

    @Test func everySubscriberSeesEndpointIndependentMappingAlsoWhenTheyCollide() throws {
        try endpointIndependentMapping(backend: .netns)
    }

    /// The same on the VRF backend (the VM run of scripts/test has the kernel for it).
    @Test(.enabled(if: kernelHasVRF, "this kernel has no VRF driver (the VM run covers it)"))
    func endpointIndependentMappingOnVRFs() throws {
        try endpointIndependentMapping(backend: .vrf)
    }

    func endpointIndependentMapping(backend: Backend) throws {
        let lab = Lab.seed(name: testLabName(backend == .vrf ? "eimv" : "eim"))
        try withSTUN(lab, backend: backend) { server in
            let subscribers = lab.hosts.filter { if case .domain = $0.attachment { return true }; return false }
            for h in subscribers {
                let d = try discover(lab, h, server: server, port: 41000)
                #expect(d.behaviour == "NAT with Endpoint Independent Mapping!", "\(h.name): \(d.text)")
                #expect(d.reflexive.count == 1, "\(h.name) got \(d.reflexive)")
            }
            // The collision: two subscribers with the same inside address and port, at once.
            let pair = try #require(sharedAddressPair(lab))
            var results: [Discovery?] = [nil, nil]
            let group = DispatchGroup()
            for i in 0..<2 {
                group.enter()
                DispatchQueue.global().async {
                    results[i] = try? discover(lab, pair[i], server: server, port: 41500)
                    group.leave()
                }
            }
            group.wait()
            let a = try #require(results[0]), b = try #require(results[1])
            #expect(a.behaviour == "NAT with Endpoint Independent Mapping!", "\(pair[0].name): \(a.text)")
            #expect(b.behaviour == "NAT with Endpoint Independent Mapping!", "\(pair[1].name): \(b.text)")
            #expect(a.reflexive.count == 1 && b.reflexive.count == 1 && a.reflexive != b.reflexive)
            // Each mapping lies in its own subscriber's block.
            for (h, d) in [(pair[0], a), (pair[1], b)] {
                let block = try #require(lab.portBlock(of: h))
                let port = try #require(d.reflexive.first.flatMap { UInt16($0.split(separator: ":").last!) })
                #expect(block.ports.contains(port), "\(h.name): \(port) outside \(block)")
            }
        }
    }

    /// What the test above would see if `fully-random` came back: it can fail.
    @Test func randomMappingIsAddressAndPortDependent() throws {
        var lab = Lab.seed(name: testLabName("apdm"))
        lab.router.nat.mapping = .random
        try withSTUN(lab) { server in
            let h = try #require(lab.hosts.first { if case .domain = $0.attachment { return true }; return false })
            let d = try discover(lab, h, server: server, port: 41000)
            #expect(d.behaviour == "NAT with Address and Port Dependent Mapping!", "\(d.text)")
        }
    }
}

/// Port exhaustion: a subscriber whose flows to one destination outnumber its block gets exactly
/// its block (the extra flows are dropped when conntrack confirms them), and a subscriber that
/// shares its inside address, in another domain, keeps working in its own block.
@Suite(.serialized, .enabled(if: isRoot))
struct PortExhaustionTests {
    static let sender = """
        import socket,sys,time
        tag,n,base,dst=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),sys.argv[4]
        socks=[]
        for i in range(n):
            s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("0.0.0.0",base+i)); socks.append(s)
            s.sendto(("%s:%d"%(tag,i)).encode(),(dst,7777))
        time.sleep(0.3)
        """
    static let receiver = """
        import socket,select,time,sys
        s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind((sys.argv[1],7777))
        seen={}; end=time.time()+float(sys.argv[2])
        while time.time()<end:
            r,_,_=select.select([s],[],[],0.1)
            if r:
                d,src=s.recvfrom(100); seen.setdefault(d.decode().split(':')[0],set()).add(src[1])
        for k,v in seen.items(): print(k, len(v), min(v), max(v))
        """

    @Test func aSubscriberAtItsLimitTakesNothingFromAnother() throws {
        var lab = Lab.seed(name: testLabName("exh"))
        lab.router.nat.mapping = .portBlocks(.init(insideRange: IPPrefix("100.64.0.0/27")!, blockSize: 64))
        let uplink = try #require(lab.uplinkHost)
        let server = try #require(uplink.loopbackAddresses.first { $0.family == .v4 }).address
        let pair = try #require(sharedAddressPair(lab))
        try withLab(lab) { lab in
            // 80 flows against a 64-port block, then 20 from the other subscriber of the same address.
            let lines = try withReceiver(lab, Self.receiver, ["\(server)", "3"]) {
                let hog = try runCommand(["ip", "netns", "exec", lab.namespaceName(pair[0].name), "python3", "-c", Self.sender, "hog", "80", "30000", "\(server)"])
                let other = try runCommand(["ip", "netns", "exec", lab.namespaceName(pair[1].name), "python3", "-c", Self.sender, "other", "20", "30000", "\(server)"])
                #expect(hog.status == 0 && other.status == 0, "\(hog.output) \(other.output)")
            }
            func seen(_ tag: String) -> (count: Int, low: Int, high: Int)? {
                guard let l = lines.first(where: { $0.hasPrefix(tag + " ") }) else { return nil }
                let f = l.split(separator: " ").compactMap { Int($0) }
                return f.count == 3 ? (f[0], f[1], f[2]) : nil
            }
            let a = try #require(lab.portBlock(of: pair[0])), b = try #require(lab.portBlock(of: pair[1]))
            let hogSeen = try #require(seen("hog"), "\(lines)")
            let otherSeen = try #require(seen("other"), "\(lines)")
            #expect(hogSeen.count == 64 && a.ports.contains(UInt16(hogSeen.low)) && a.ports.contains(UInt16(hogSeen.high)), "\(hogSeen) in \(a)")
            #expect(otherSeen.count == 20 && b.ports.contains(UInt16(otherSeen.low)) && b.ports.contains(UInt16(otherSeen.high)), "\(otherSeen) in \(b)")
        }
    }
}

/// Session limits (RFC 6888 REQ-4): a subscriber over its limit gets no new session; the other
/// subscriber of the same inside address is not affected; the rule that drops counts them.
@Suite(.serialized, .enabled(if: isRoot))
struct SessionLimitTests {
    /// Flows to `n` different destination ports of the server, from one source port each.
    static let sender = """
        import socket,sys,time
        tag,n,base,dst=sys.argv[1],int(sys.argv[2]),int(sys.argv[3]),sys.argv[4]
        socks=[]
        for i in range(n):
            s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind(("0.0.0.0",base+i)); socks.append(s)
            s.sendto(tag.encode(),(dst,7000+i))
        time.sleep(0.3)
        """
    static let receiver = """
        import socket,select,time,sys
        socks=[]
        for i in range(int(sys.argv[2])):
            s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); s.bind((sys.argv[1],7000+i)); socks.append(s)
        seen={}; end=time.time()+float(sys.argv[3])
        while time.time()<end:
            r,_,_=select.select(socks,[],[],0.1)
            for s in r:
                d,src=s.recvfrom(100); seen[d.decode()]=seen.get(d.decode(),0)+1
        for k,v in seen.items(): print(k, v)
        """

    @Test func aSubscriberOverItsLimitOpensNothingMoreAndTheOtherIsUnaffected() throws {
        var lab = Lab.seed(name: testLabName("ses"))
        lab.router.nat.sessionLimit = 10
        let uplink = try #require(lab.uplinkHost)
        let server = try #require(uplink.loopbackAddresses.first { $0.family == .v4 }).address
        let pair = try #require(sharedAddressPair(lab))
        try withLab(lab) { lab in
            let lines = try withReceiver(lab, Self.receiver, ["\(server)", "15", "3"]) {
                let hog = try runCommand(["ip", "netns", "exec", lab.namespaceName(pair[0].name), "python3", "-c", Self.sender, "hog", "15", "31000", "\(server)"])
                let other = try runCommand(["ip", "netns", "exec", lab.namespaceName(pair[1].name), "python3", "-c", Self.sender, "other", "5", "31000", "\(server)"])
                #expect(hog.status == 0 && other.status == 0)
            }
            let seen = Dictionary(uniqueKeysWithValues: lines.compactMap { l -> (String, Int)? in
                let f = l.split(separator: " "); return f.count == 2 ? (String(f[0]), Int(f[1]) ?? 0) : nil
            })
            #expect(seen["hog"] == 10 && seen["other"] == 5, "\(seen)")
            let rules = try runCommand(["ip", "netns", "exec", lab.namespaceName(lab.router.name), "nft", "list", "chain", "inet", Ruleset.tableName, "forward"])
            let line = rules.output.split(separator: "\n").first { $0.contains(Ruleset.Comment.sessionLimit) }.map(String.init) ?? ""
            #expect(line.contains("counter packets 5 "), "\(line)")
        }
    }
}

/// BCP 38: a subscriber sending from an address its domain does not own is dropped at the
/// router's ingress, counted by its domain's rule, and nothing reaches the uplink.
@Suite(.serialized, .enabled(if: isRoot))
struct AntiSpoofTests {
    @Test func spoofedSourcesAreDroppedAtIngress() throws {
        try withLab(testLabName("spoof")) { lab in
            let uplink = try #require(lab.uplinkHost)
            let server4 = try #require(uplink.loopbackAddresses.first { $0.family == .v4 }).address
            let server6 = try #require(uplink.addresses.first { $0.family == .v6 }).address
            let h = try #require(lab.hosts.first { if case .domain = $0.attachment { return true }; return false })
            guard case .domain(let dn) = h.attachment else { return }
            let ns = lab.namespaceName(h.name)
            // Addresses nobody in the lab owns: TEST-NET-2 and an IPv6 documentation prefix.
            for a in ["198.18.0.1/32", "2001:db8:dead::1/128"] {
                #expect(try runCommand(["ip", "netns", "exec", ns, "ip", "addr", "add", a, "dev", h.interface, "nodad"]).status == 0)
            }
            // The bridge's source binding would drop these first (SourceBindingTests): bind them to
            // the host's port there, so only the router's rules are left in their way.
            let d = try #require(lab.domain(named: dn))
            let bridgeNS = BridgeBinding.bridgeNamespace(lab, domain: d, backend: .netns)
            for (set, a) in [(BridgeBinding.v4Set, "198.18.0.1"), (BridgeBinding.v6Set, "2001:db8:dead::1")] {
                let add = try runCommand(["ip", "netns", "exec", bridgeNS, "nft", "add", "element", "bridge", BridgeBinding.tableName, set,
                                          "{ \"\(h.name)\" . \(a) }"])
                #expect(add.status == 0, "\(add.output)")
            }
            let p4 = try runCommand(["ip", "netns", "exec", ns, "ping", "-c2", "-i0.2", "-W1", "-I", "198.18.0.1", "\(server4)"])
            let p6 = try runCommand(["ip", "netns", "exec", ns, "ping", "-6", "-c2", "-i0.2", "-W1", "-I", "2001:db8:dead::1", "\(server6)"])
            #expect(p4.status != 0 && p6.status != 0, "a spoofed ping got an answer: \(p4.output) \(p6.output)")
            let rules = try runCommand(["ip", "netns", "exec", lab.namespaceName(lab.router.name), "nft", "list", "chain", "inet", Ruleset.tableName, "pre_raw"])
            for f in [IPFamily.v4, .v6] {
                let line = rules.output.split(separator: "\n").first { $0.contains(Ruleset.Comment.spoofed(f, from: dn)) }.map(String.init) ?? ""
                #expect(line.contains("counter packets 2 ") || line.contains("counter packets 3 "), "\(f): \(line)")
            }
            // The subscriber's own addresses still work.
            #expect(try runCommand(["ip", "netns", "exec", ns, "ping", "-c1", "-W2", "\(server4)"]).status == 0)
        }
    }
}

/// The first two subscribers that share an inside IPv4 address (in different domains).
func sharedAddressPair(_ lab: Lab) -> [CGNatCore.Host]? {
    let subscribers = lab.hosts.filter { if case .domain = $0.attachment { return true }; return false }
    return Dictionary(grouping: subscribers) { $0.addresses.first { $0.family == .v4 }!.address }.values
        .sorted { $0[0].name < $1[0].name }.first { $0.count >= 2 }
}

/// Runs a python receiver `script` in the uplink host's namespace while `body` sends, then its
/// output lines (it must end by itself).
func withReceiver(_ lab: Lab, _ script: String, _ args: [String], _ body: () throws -> Void) throws -> [Substring] {
    let uplink = try #require(lab.uplinkHost)
    let rx = Process()
    rx.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    rx.arguments = ["ip", "netns", "exec", lab.namespaceName(uplink.name), "python3", "-c", script] + args
    let out = Pipe()
    rx.standardOutput = out
    try rx.run()
    usleep(300_000)   // the receiver binds before anything is sent
    try body()
    rx.waitUntilExit()
    return String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self).split(separator: "\n")
}

let natDiscoveryInstalled = FileManager.default.isExecutableFile(atPath: "/usr/bin/turnutils_natdiscovery")

struct ShellResult { var status: Int32; var output: String }

/// Runs a command and returns its exit status and combined output.
func runCommand(_ argv: [String]) throws -> ShellResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = argv
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = pipe
    p.standardInput = FileHandle.nullDevice
    try p.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return ShellResult(status: p.terminationStatus, output: String(decoding: data, as: UTF8.self))
}
