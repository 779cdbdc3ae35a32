import Foundation
import Testing
import Netlink
@testable import CGNat

/// `cgnat conformance` on real labs, row by row against a real RFC 5780 client (coturn's
/// `turnutils_natdiscovery`, with the STUN server of NATBehaviourTests) on what both measure:
/// mapping behaviour (RFC 4787 REQ-1, every probed subscriber and the collision case) and
/// filtering behaviour (RFC 4787 REQ-8).
@Suite(.serialized, .enabled(if: isRoot && natDiscoveryInstalled))
struct ConformanceIntegrationTests {
    let stun = NATBehaviourTests()

    struct Row { var verdict: String; var evidence: String }

    /// `conformance --json`: exit status, rows by "RFC REQ-N", the probed subscribers.
    func conformance(_ lab: String) throws -> (status: Int32, rows: [String: Row], subscribers: [String], raw: String) {
        let r = try cgnat(["conformance", "--lab", lab, "--json"])
        let o = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any]
        var rows: [String: Row] = [:]
        for row in o?["rows"] as? [[String: Any]] ?? [] {
            let key = "\(row["rfc"] as? Int ?? 0) \(row["requirement"] as? String ?? "")"
            rows[key] = Row(verdict: row["verdict"] as? String ?? "", evidence: row["evidence"] as? String ?? "")
        }
        return (r.status, rows, o?["subscribers"] as? [String] ?? [], r.stdout + r.stderr)
    }

    /// "NAT with Address and Port Dependent Mapping!" -> "address-and-port-dependent", the
    /// words `conformance` uses.
    func kind(_ verdict: String) -> String {
        var s = verdict.lowercased()
        for w in ["nat with ", "!", " mapping", " filtering"] { s = s.replacingOccurrences(of: w, with: "") }
        return s.replacingOccurrences(of: " ", with: "-")
    }

    func filtering(_ lab: Lab, _ host: CGNatCore.Host, server: IPAddress, port: UInt16) throws -> String {
        let inside = try #require(host.addresses.first { $0.family == .v4 }).address
        let r = try runCommand(["ip", "netns", "exec", lab.namespaceName(host.name), "timeout", "20",
                                "turnutils_natdiscovery", "-f", "-L", "\(inside)", "-l", "\(port)", "\(server)"])
        return r.output.split(separator: "\n").first { $0.hasPrefix("NAT with") }.map(String.init) ?? "no verdict: \(r.output)"
    }

    /// Runs conformance and natdiscovery on a lab that is up with its STUN server, and checks that
    /// they agree on mapping (each subscriber conformance probed, and the collision pair at once)
    /// and on filtering. Returns the conformance result for the caller's own expectations.
    @discardableResult
    func agreeRowByRow(_ lab: Lab, server: IPAddress) throws -> (status: Int32, rows: [String: Row]) {
        let c = try conformance(lab.name)
        let (chosen, pair) = ConformanceRun.chooseSubscribers(lab)
        #expect(c.subscribers == chosen.map(\.name), "\(c.raw.prefix(2000))")
        let req1 = try #require(c.rows["4787 REQ-1"], "\(c.raw.prefix(2000))")
        var mappings: [(String, String)] = []
        for (i, h) in chosen.enumerated() {
            let d = try stun.discover(lab, h, server: server, port: UInt16(41000 + 10 * i))
            mappings.append((h.name, kind(d.behaviour)))
        }
        if let pair {
            let both = OSThread.all(pair.map { h in { try self.stun.discover(lab, h, server: server, port: 41500) } })
            for (h, d) in zip(pair, both) { mappings.append((h.name, kind(try d.get().behaviour))) }
        }
        let allEIM = mappings.allSatisfy { $0.1 == MappingBehaviour.endpointIndependent.rawValue }
        #expect((req1.verdict == "PASS") == allEIM, "natdiscovery: \(mappings); conformance: \(req1)")
        for (name, k) in mappings where k != MappingBehaviour.endpointIndependent.rawValue {
            #expect(req1.evidence.contains("\(k): \(name) "), "natdiscovery says \(name) is \(k); conformance: \(req1.evidence)")
        }
        let f = kind(try filtering(lab, chosen[0], server: server, port: 41800))
        let req8 = try #require(c.rows["4787 REQ-8"])
        #expect(req8.evidence.hasPrefix(f + ": " + chosen[0].name), "natdiscovery: \(f); conformance: \(req8.evidence)")
        return (c.status, c.rows)
    }

    @Test func seedLabAgreesWithNatDiscovery() throws {
        let lab = Lab.seed(name: testLabName("conf-seed"))
        try stun.withSTUN(lab) { server in
            let c = try agreeRowByRow(lab, server: server)
            #expect(c.rows["4787 REQ-1"]?.verdict == "PASS")
            #expect(c.rows["4787 REQ-3"]?.verdict == "PASS", "the collision pair gets distinct mappings")
            // No hairpinning: the seed's public address is inside every subscriber's on-link
            // prefix. The router's own address no longer answers an unsolicited SYN.
            #expect(c.rows["4787 REQ-9"]?.verdict == "FAIL")
            #expect(c.rows["5382 REQ-4"]?.verdict == "PASS", "\(String(describing: c.rows["5382 REQ-4"]))")
            #expect(c.status == 1)
            let uplink = try #require(lab.uplinkHost)
            // The temporary receiver address and reject rule are gone; the STUN alternate stays.
            let addrs = try runCommand(["ip", "netns", "exec", lab.namespaceName(uplink.name), "ip", "-4", "-o", "addr", "show", "dev", "lo"])
            #expect(addrs.output.split(separator: "\n").count == 3, "\(addrs.output)")
            let tables = try runCommand(["ip", "netns", "exec", lab.namespaceName(uplink.name), "nft", "list", "tables"])
            #expect(!tables.output.contains(ConformanceProber.temporaryTableName), "\(tables.output)")
            // So is the low-MTU route of the fragment probes, in the router's uplink domain.
            let up = try #require(lab.context(named: "\(lab.router.name):\(lab.router.uplink.name)", backend: .netns))
            let routes = try runCommand(["ip", "-n", up.namespace, "-4", "route", "show"])
            #expect(!routes.output.contains("mtu lock"), "\(routes.output)")
        }
    }

    /// The same on the VRF backend (the VM run of scripts/test has the kernel for it): the probes
    /// of the router's uplink domain (the low-MTU route) go into its VRF.
    @Test(.enabled(if: kernelHasVRF, "this kernel has no VRF driver (the VM run covers it)"))
    func seedLabOnVRFsAgreesWithNatDiscovery() throws {
        let lab = Lab.seed(name: testLabName("conf-vrf"))
        try stun.withSTUN(lab, backend: .vrf) { server in
            let c = try agreeRowByRow(lab, server: server)
            #expect(c.rows["4787 REQ-1"]?.verdict == "PASS")
            // RFC 4787 REQ-13 is not asserted here: with the low-MTU route in VRF up's table, the
            // subscriber's DF=1 datagram got no fragmentation-needed on Debian's 6.1 kernel (the
            // leaked route's VRF device is what the forward path measures); noted, not diagnosed.
            #expect(c.status == 1)
        }
    }

    @Test func poolLabAgreesWithNatDiscovery() throws {
        let name = testLabName("conf-pool")
        let text = try String(contentsOfFile: "labs/cgn-pool.yaml", encoding: .utf8)
            .replacingOccurrences(of: "\nname: pool\n", with: "\nname: \(name)\n")
        let file = "/tmp/\(name).yaml"
        try text.write(toFile: file, atomically: true, encoding: .utf8)
        defer { _ = try? cgnat(["down", "--lab", name]); unlink(file) }
        let up = try cgnat(["up", file, "--backend", "netns"])
        try #require(up.status == 0, "\(up.stderr)")
        let lab = try RunningLab.open(name: name).lab
        try stun.withSTUNServer(lab) { server in
            let c = try agreeRowByRow(lab, server: server)
            #expect(c.rows["4787 REQ-1"]?.verdict == "PASS")
            #expect(c.rows["4787 REQ-2"]?.verdict == "PASS" && c.rows["6888 REQ-2"]?.verdict == "PASS", "paired pooling over the pool")
            // The pool's address is not the router's own: the forward chain drops the SYN silently.
            #expect(c.rows["5382 REQ-4"]?.verdict == "PASS", "\(String(describing: c.rows["5382 REQ-4"]))")
            // The pool is outside the subscribers' prefix: the router hairpins, UDP and TCP, with
            // the sender's own mapping as the source (after the receiver's punch: default filtering).
            for k in ["4787 REQ-9", "4787 REQ-9a", "5382 REQ-8", "5382 REQ-8a"] {
                #expect(c.rows[k]?.verdict == "PASS", "\(k): \(String(describing: c.rows[k]))")
            }
        }
    }

    /// What `fully-random` did: natdiscovery and conformance both see address-and-port-dependent
    /// mapping, REQ-1 fails and the command exits 1.
    @Test func randomMappingFailsREQ1AndNatDiscoveryAgrees() throws {
        var lab = Lab.seed(name: testLabName("conf-rnd"))
        lab.router.nat.mapping = .random
        try stun.withSTUN(lab) { server in
            let c = try agreeRowByRow(lab, server: server)
            #expect(c.rows["4787 REQ-1"]?.verdict == "FAIL")
            #expect(c.rows["4787 REQ-1"]?.evidence.contains("address-and-port-dependent") == true)
            #expect(c.status == 1)
        }
    }

    @Test func needsALabThatIsUp() throws {
        let r = try cgnat(["conformance", "--lab", testLabName("conf-none")])
        #expect(r.status == 1 && r.stderr.contains("is not up") && r.stderr.contains("cgnat up"), "\(r.stderr)")
    }
}
