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
    func withSTUN<T>(_ lab: Lab, _ body: (_ server: IPAddress) throws -> T) throws -> T {
        _ = try LabControl.up(lab, backend: .netns)
        defer { _ = try? Teardown.down(lab: lab.name) }   // ends the server too: it runs inside
        let uplink = try #require(lab.uplinkHost)
        let primary = try #require(uplink.loopbackAddresses.first { $0.family == .v4 }).address
        let alternate = PortBlockPolicy.v4(PortBlockPolicy.u32(primary) + 8)
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
        let lab = Lab.seed(name: testLabName("eim"))
        try withSTUN(lab) { server in
            let subscribers = lab.hosts.filter { if case .domain = $0.attachment { return true }; return false }
            for h in subscribers {
                let d = try discover(lab, h, server: server, port: 41000)
                #expect(d.behaviour == "NAT with Endpoint Independent Mapping!", "\(h.name): \(d.text)")
                #expect(d.reflexive.count == 1, "\(h.name) got \(d.reflexive)")
            }
            // The collision: two subscribers with the same inside address and port, at once.
            let byAddress = Dictionary(grouping: subscribers) { $0.addresses.first { $0.family == .v4 }!.address }
            let pair = try #require(byAddress.values.first { $0.count >= 2 })
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
            let policy = try #require(lab.portBlockPolicy)
            for (h, d) in [(pair[0], a), (pair[1], b)] {
                let domain = try #require(lab.domain(named: { if case .domain(let n) = h.attachment { return n }; return "" }()))
                let block = try #require(policy.allocation(domainID: domain.id, inside: h.addresses[0].address))
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
