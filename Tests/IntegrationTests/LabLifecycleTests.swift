import Foundation
import Testing
import Netlink
@testable import CGNat

/// Root-only: builds real labs on this kernel (netns backend). Serialized: the check's timeouts
/// should not compete with other labs for two cores.
@Suite(.serialized, .enabled(if: isRoot, "needs root: builds network namespaces"))
struct LabLifecycleTests {
    @Test func upCheckExecStatusDownLeavesNothing() throws {
        let name = testLabName("life")
        let up = try cgnat(["up", "--lab", name])
        #expect(up.status == 0, "\(up.stderr)")
        #expect(up.stdout.contains("main:blue") && up.stdout.contains("\(name)-main-blue"))
        do {
            #expect(namespaces(withPrefix: name).count == 7)

            let report = try CheckRun.run(lab: Lab.seed(name: name))
            #expect(report.passed, "failing rows:\n\(failures(report))")
            #expect(report.results.count >= 30)
            // The same-port rows: both flows seen upstream from 100.64.0.1 on distinct ports.
            let pairs = report.results.filter { $0.pair != nil }
            #expect(pairs.count == 3)
            for p in pairs {
                #expect(p.observedSource == IPAddress("100.64.0.1"))
                #expect(p.observedPorts.count == 2 && p.observedPorts[0] != nil && p.observedPorts[0] != p.observedPorts[1])
            }

            // exec runs in the context and passes the exit status through.
            let addr = try cgnat(["exec", "--lab", name, "red_c1", "--", "ip", "-4", "-o", "addr", "show", "dev", "cuplink"])
            #expect(addr.status == 0)
            #expect(addr.stdout.contains("100.64.0.1/10"))
            let status7 = try cgnat(["exec", "--lab", name, "main:blue", "--", "sh", "-c", "ip -o link show br-blue >/dev/null && exit 7"])
            #expect(status7.status == 7)
            let missing = try cgnat(["exec", "--lab", name, "uplink", "--", "no-such-command-cgnat"])
            #expect(missing.status == 127)
            let unknown = try cgnat(["exec", "--lab", name, "green_c1", "--", "true"])
            #expect(unknown.status != 0)
            #expect(unknown.stderr.contains("unknown context 'green_c1'") && unknown.stderr.contains("main:blue"))

            // status reads the kernel back: NAT entries appear after the check's traffic.
            let st = try cgnat(["status", "--lab", name, "--json"])
            #expect(st.status == 0, "\(st.stderr)")
            let obj = try JSONSerialization.jsonObject(with: Data(st.stdout.utf8)) as? [String: Any]
            let ctxs = obj?["contexts"] as? [[String: Any]] ?? []
            #expect(ctxs.map { $0["name"] as? String } == ["uplink", "blue_c1", "blue_c2", "red_c1", "main", "main:up", "main:blue", "main:red"])
            let main = ctxs.first { $0["name"] as? String == "main" }
            let ct = main?["conntrack"] as? [[String: Any]] ?? []
            #expect(ct.contains { ($0["zone"] as? Int) == 2 && ($0["original_source"] as? String) == "100.64.0.1" })

            // A second up of the same lab is refused and changes nothing.
            let again = try cgnat(["up", "--lab", name])
            #expect(again.status != 0)
            #expect(again.stderr.contains("already up"))
            #expect(namespaces(withPrefix: name).count == 7)
        }
        let down = try cgnat(["down", "--lab", name])
        #expect(down.status == 0, "\(down.stderr)")
        #expect(namespaces(withPrefix: name).isEmpty)
        #expect(LabRecord.load(lab: name) == nil)
        #expect(access("/run/netns/\(name)-main", F_OK) != 0)
        let mounts = (try? String(contentsOfFile: "/proc/self/mountinfo", encoding: .utf8)) ?? ""
        #expect(!mounts.contains("/run/netns/\(name)-"))
    }

    @Test(.enabled(if: !kernelHasVRF, "this kernel has VRFs"))
    func vrfOnAKernelWithoutVRFIsAClearError() throws {
        let name = testLabName("novrf")
        let r = try cgnat(["up", "--lab", name, "--backend", "vrf"])
        #expect(r.status != 0)
        #expect(r.stderr.contains("CONFIG_NET_VRF") && r.stderr.contains("--backend netns"), "\(r.stderr)")
        #expect(namespaces(withPrefix: name).isEmpty)
        #expect(LabRecord.load(lab: name) == nil)
        let auto = try cgnat(["up", "--lab", name])
        defer { _ = try? cgnat(["down", "--lab", name]) }
        #expect(auto.stdout.contains("netns backend: auto:") && auto.stdout.contains("no VRF driver"), "\(auto.stdout)")
    }

    @Test func failingUpRollsBack() throws {
        let name = testLabName("fault")
        let plan = Plan.netns(Lab.seed(name: name))
        // Fail in the middle: after several namespaces and links exist.
        let middle = plan.steps.firstIndex { if case .addRoute = $0 { return true } else { return false } }!
        #expect(throws: LabControl.RolledBack.self) {
            _ = try LabControl.up(Lab.seed(name: name), backend: .netns, failBeforeStep: middle)
        }
        #expect(namespaces(withPrefix: name).isEmpty)
        #expect(LabRecord.load(lab: name) == nil)
    }

    @Test func kernelErrorNamesTheStepAndRollsBack() throws {
        // A valid-looking model whose route has a source address the host does not own: only the
        // kernel can tell, and it says so in its extended ACK.
        var lab = Lab.seed(name: testLabName("kerr"))
        lab.hosts[0].routes.append(HostRoute(IPPrefix("198.51.100.0/24")!, via: IPAddress("100.64.0.1")!, source: IPAddress("203.0.113.9")))
        do {
            _ = try LabControl.up(lab, backend: .netns)
            Issue.record("up should have failed")
            _ = try? Teardown.down(lab: lab.name)
        } catch let e as LabControl.RolledBack {
            let text = "\(e)"
            #expect(text.contains("add route 198.51.100.0/24 via 100.64.0.1 dev client1 src 203.0.113.9"), "\(text)")
            #expect(text.contains("Invalid prefsrc address"), "the kernel's own words: \(text)")
            #expect(text.contains("rolled back (removed 7 namespaces)"), "\(text)")
        }
        #expect(namespaces(withPrefix: lab.name).isEmpty)
    }

    @Test func sigtermDuringUpRollsBack() throws {
        let name = testLabName("term")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: cgnatBinary)
        p.arguments = ["up", "--lab", name, "--step-delay-ms", "5"]
        p.standardOutput = FileHandle.nullDevice
        let err = Pipe()
        p.standardError = err
        try p.run()
        usleep(150_000)
        kill(p.processIdentifier, SIGTERM)
        p.waitUntilExit()
        let msg = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(p.terminationStatus != 0)
        #expect(msg.contains("interrupted") && msg.contains("rolled back"), "\(msg)")
        #expect(namespaces(withPrefix: name).isEmpty)
        #expect(LabRecord.load(lab: name) == nil)
    }

    @Test func downAfterACrashRemovesWhatWasMade() throws {
        let name = testLabName("crash")
        // --crash-after-step makes the process die as a kill -9 would: no rollback runs.
        let r = try cgnat(["up", "--lab", name, "--crash-after-step", "40"])
        #expect(r.status != 0)
        #expect(!namespaces(withPrefix: name).isEmpty)
        let again = try cgnat(["up", "--lab", name])
        #expect(again.stderr.contains("half-built") || again.stderr.contains("crashed"), "\(again.stderr)")
        let down = try cgnat(["down", "--lab", name])
        #expect(down.status == 0)
        #expect(namespaces(withPrefix: name).isEmpty)
        #expect(LabRecord.load(lab: name) == nil)
    }

    @Test func downLeavesANamespaceItDidNotCreate() throws {
        let name = testLabName("own")
        _ = try LabControl.up(Lab.seed(name: name), backend: .netns)
        // Someone replaces one of the lab's namespaces with their own of the same name.
        try NetNamespace.delete("\(name)-uplink")
        let fd = try NetNamespace.create("\(name)-uplink")
        close(fd)
        defer { try? NetNamespace.delete("\(name)-uplink") }
        let report = try Teardown.down(lab: name)
        #expect(report.foreign == ["\(name)-uplink"])
        #expect(namespaces(withPrefix: name) == ["\(name)-uplink"])
    }

    @Test func downEndsProcessesInsideTheLab() throws {
        let name = testLabName("proc")
        _ = try LabControl.up(Lab.seed(name: name), backend: .netns)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: cgnatBinary)
        p.arguments = ["exec", "--lab", name, "blue_c1", "--", "sleep", "30"]
        try p.run()
        usleep(200_000)
        let down = try cgnat(["down", "--lab", name])
        p.waitUntilExit()
        #expect(down.status == 0)
        #expect(down.stdout.contains("ended 1 processes"), "\(down.stdout)")
        #expect(namespaces(withPrefix: name).isEmpty)
    }

    /// The upstream's probe routes live only for a check, also when an earlier check was killed
    /// before it could remove them.
    @Test func checkLeavesNoProbeRoute() throws {
        try withLab(testLabName("route")) { lab in
            let fd = try NetNamespace.open(lab.namespaceName("uplink"))
            defer { close(fd) }
            func probeRoutes() throws -> [Route] {
                try NetNamespace.run(in: fd) {
                    try RouteSocket().routes(family: .v4).filter { $0.destination == IPPrefix("100.64.0.2/32") }
                }
            }
            // What a killed check leaves behind.
            try NetNamespace.run(in: fd) {
                let sock = try RouteSocket()
                try sock.addRoute(Route(family: .v4, destination: IPPrefix("100.64.0.2/32")!, gateway: IPAddress("100.64.0.1"),
                                        outputInterface: try sock.linkIndex("client1"), preferredSource: IPAddress("192.0.2.1"), table: 254))
            }
            #expect(try probeRoutes().count == 1)
            let report = try CheckRun.run(lab: lab)
            #expect(report.passed, "\(failures(report))")
            #expect(try probeRoutes().isEmpty)
        }
    }

    /// `render` is the exact equivalent of `up`: the shell script, run with ip/sysctl/nft, builds
    /// a lab that passes the same check.
    @Test func renderedScriptBuildsAnEquivalentLab() throws {
        let name = testLabName("render")
        let plan = Plan.netns(Lab.seed(name: name))
        let script = ShellRenderer.render(plan)
        let path = "/tmp/\(name).sh"
        try script.write(toFile: path, atomically: true, encoding: .utf8)
        defer { unlink(path) }
        // Adopt the namespaces the script makes into a record, so check and down can use them.
        let record = try LabRecord.begin(lab: name, backend: .netns)
        defer { _ = try? Teardown.down(lab: name) }
        let sh = Process()
        sh.executableURL = URL(fileURLWithPath: "/bin/sh")
        sh.arguments = [path]
        sh.standardOutput = FileHandle.nullDevice
        try sh.run()
        sh.waitUntilExit()
        for ns in plan.namespaces {
            if let id = NetNamespace.identity(of: ns) { try record.append("ns \(ns) \(id.device):\(id.inode)") }
        }
        #expect(sh.terminationStatus == 0, "the rendered script failed")
        try record.append("complete")
        let report = try CheckRun.run(lab: Lab.seed(name: name))
        #expect(report.passed, "\(failures(report))")
        #expect(report.results.count == CheckMatrix.rowCount(Lab.seed(name: name)))
    }

    @Test func twoLabsCoexistAndBothPass() throws {
        let a = testLabName("a"), b = testLabName("b")
        try withLab(a) { labA in
            try withLab(b) { labB in
                let ra = try CheckRun.run(lab: labA)
                let rb = try CheckRun.run(lab: labB)
                #expect(ra.passed, "\(failures(ra))")
                #expect(rb.passed, "\(failures(rb))")
            }
        }
        #expect(namespaces(withPrefix: a).isEmpty && namespaces(withPrefix: b).isEmpty)
    }

    /// The negative rows can fail: flush the forward chain and the unsolicited rows must turn
    /// red, with the check's own probe routes alone leading the packet inside.
    @Test func negativeRowsFailWhenTheRouterLeaks() throws {
        try withLab(testLabName("leak")) { lab in
            let fd = try NetNamespace.open(lab.namespaceName("main"))
            defer { close(fd) }
            _ = try NetNamespace.run(in: fd) { try Nftables().run("flush chain inet cgnat forward") }
            let report = try CheckRun.run(lab: lab)
            let unsolicited = report.results.filter { $0.name.contains("unsolicited") }
            #expect(unsolicited.count == 3)
            #expect(unsolicited.allSatisfy { !$0.passed && $0.detail.hasPrefix("LEAK: seen at blue_c2") },
                    "leaked packets reach blue_c2: \(unsolicited.map(\.detail))")
            #expect(!report.passed)
            #expect(try probeRoutesLeft(lab).isEmpty)
        }
    }

    /// Each blocked row names its rule by handle; removing exactly that rule fails every such row.
    @Test func blockedRowsNameTheirRuleAndFailWithoutIt() throws {
        try withLab(testLabName("blk")) { lab in try blockedRowsFailWithoutTheirRules(lab) }
    }

    /// Blocked rows conclude from evidence, not from a fixed wait: the drop counted by its rule,
    /// the router's own reject. Seen in the rows' times: far below the timeout.
    @Test func blockedRowsConcludeOnEvidence() throws {
        try withLab(testLabName("evid")) { lab in
            let report = try CheckRun.run(lab: lab, timeoutMilliseconds: 3000)
            #expect(report.passed, "\(failures(report))")
            for r in report.results where r.probe.expect == .blocked {
                #expect(r.milliseconds < 1500, "\(r.name) concluded after \(r.milliseconds) ms: \(r.detail)")
            }
            let cross = report.results.filter { $0.kind == .crossDomainV4 }
            #expect(cross.count == 2 && cross.allSatisfy { $0.detail.contains("admin prohibited") }, "\(cross.map(\.detail))")
        }
    }

    /// The lab's expectations are rows: one that holds passes, one written wrong fails.
    @Test func expectationsAreCheckedAndAWrongOneFails() throws {
        var lab = Lab.seed(name: testLabName("expect"))
        let c1 = lab.hosts.first { $0.name == "red_c1" }!
        let target = lab.hosts.first { $0.name == "blue_c2" }!
        let upstream = lab.uplinkHost!.loopbackAddresses[0].address
        lab.expectations = [
            // IPv6 across domains over UDP, seen with its real source.
            Expectation(from: c1.name, to: target.addresses.first { $0.family == .v6 }!.address, proto: .udp, outcome: .reach,
                        source: c1.addresses.first { $0.family == .v6 }!.address, location: "test:1:1"),
            // Nothing opens TCP into the subscriber space from upstream.
            Expectation(from: "uplink", to: target.addresses.first { $0.family == .v4 }!.address, proto: .tcp, outcome: .blocked,
                        location: "test:2:1"),
            // Written wrong: the uplink's public address is reachable through NAT.
            Expectation(from: "blue_c1", to: upstream, proto: .icmp, outcome: .blocked, location: "test:3:1"),
        ]
        try withLab(lab) { lab in
            let report = try CheckRun.run(lab: lab, timeoutMilliseconds: probeTimeout)
            let rows = report.results.filter { $0.kind == .expectation }
            #expect(rows.count == 3)
            #expect(rows[0].passed && rows[0].observedSource == c1.addresses.first { $0.family == .v6 }!.address, "\(rows[0].detail)")
            #expect(rows[1].passed && rows[1].detail.hasPrefix("dropped: counted by"), "\(rows[1].detail)")
            #expect(!rows[2].passed && rows[2].detail.hasPrefix("LEAK"), "\(rows[2].detail)")
            #expect(report.results.filter { $0.kind != .expectation }.allSatisfy { $0.passed }, "\(failures(report))")
            #expect(!report.passed)
        }
    }

    /// A lab of many subscribers in domains that share their addresses: every row passes, the
    /// phases run one after the other and leave no probe route. 2 x 50 by default;
    /// CGNAT_SCALE_DOMAINS / CGNAT_SCALE_PER_DOMAIN choose another size (10 x 100 needs an `up`
    /// that holds fewer than 1024 fds while it loads the ruleset).
    @Test func scaledLabPassesItsCheck() throws {
        let lab = Lab.seedScaled(name: testLabName("scale"), domains: Int(ProcessInfo.processInfo.environment["CGNAT_SCALE_DOMAINS"] ?? "") ?? 2, perDomain: Int(ProcessInfo.processInfo.environment["CGNAT_SCALE_PER_DOMAIN"] ?? "") ?? 50)
        let t0 = monotonicMilliseconds()
        try withLab(lab) { lab in
            fputs("scaled lab \(lab.router.subscribers.count)x\(lab.hosts.count / max(1, lab.router.subscribers.count)): up in \(Int(monotonicMilliseconds() - t0)) ms\n", stderr)
            let report = try CheckRun.run(lab: lab, timeoutMilliseconds: max(1000, probeTimeout))
            print("scaled lab 2x50: \(report.results.count) rows in \(Int(report.wallMilliseconds)) ms, \(report.phases) phases")
            #expect(report.results.count == CheckMatrix.rowCount(lab))
            #expect(report.phases == lab.router.subscribers.count)
            #expect(report.passed, "\(failures(report).split(separator: "\n").prefix(20).joined(separator: "\n"))")
            #expect(try probeRoutesLeft(lab).isEmpty)
        }
    }
}

/// Probe routes (host routes into the subscriber space) left in the uplink or the router.
func probeRoutesLeft(_ lab: Lab) throws -> [Route] {
    var out: [Route] = []
    for ns in [lab.uplinkHost!.name, lab.router.name].map(lab.namespaceName) {
        let fd = try NetNamespace.open(ns)
        defer { close(fd) }
        out += try NetNamespace.run(in: fd) {
            try RouteSocket().routes(family: .v4).filter { $0.kind == .unicast && $0.destination.length == 32 && lab.router.nat.inside.contains($0.destination.address) }
        }
    }
    return out
}
