import Testing
import Netlink
@testable import CGNat

/// The check matrix as data: which rows the seed lab gets, without root.
@Suite struct CheckMatrixTests {
    func matrix(_ backend: Backend = .netns) -> CheckMatrix {
        CheckMatrix(lab: Lab.seed(), backend: backend,
                    endpoint: { ProbeEndpoint(context: $0, namespaceFD: -1) }, port: { 40000 })
    }

    func row(_ m: CheckMatrix, _ from: String, _ name: String) -> Probe? {
        m.probes.first { $0.from.context == from && $0.name == name }
    }

    @Test func everyExamplePingOfTheSeedIsARow() throws {
        let m = matrix()
        let expected: [(String, String, String)] = [   // from, probe, source the far side must see
            ("blue_c2", "ping -I 192.0.2.2 192.0.2.1", "192.0.2.2"),
            ("blue_c2", "ping 100.64.0.1", "100.64.0.2"),
            ("blue_c2", "ping 2001:db8:b:10::1", "2001:db8:b:10::2"),
            ("blue_c2", "ping 100.127.255.254", "100.64.0.2"),
            ("blue_c2", "ping 2001:db8:b:10::ffff", "2001:db8:b:10::2"),
            ("blue_c2", "ping 2001:db8:b:20::1", "2001:db8:b:10::2"),
            ("blue_c2", "ping 2001:db8:a::ffff", "2001:db8:b:10::2"),
            ("blue_c2", "ping 2001:db8:a::1", "2001:db8:b:10::2"),
            ("blue_c1", "ping 192.0.2.1", "100.64.0.1"),
            ("blue_c2", "ping 192.0.2.1", "100.64.0.1"),
            ("red_c1", "ping 192.0.2.1", "100.64.0.1"),
            ("main:up", "ping 100.127.255.254", "100.64.0.1"),
            ("uplink", "ping 192.0.2.2", "192.0.2.1"),
        ]
        for (from, name, source) in expected {
            let p = try #require(row(m, from, name), "\(from): \(name)")
            #expect(p.expect == .reach(source: IPAddress(source)), "\(from): \(name)")
        }
    }

    @Test func natIsObservedUpstreamAndIPv6KeepsTheRealSource() throws {
        let m = matrix()
        for from in ["blue_c1", "blue_c2", "red_c1"] {
            let nat = try #require(row(m, from, "ping 192.0.2.1"))
            #expect(nat.target.context == "uplink" && nat.targetInterface == "client1")
            let v6 = try #require(row(m, from, "ping 2001:db8:a::ffff"))
            #expect(v6.expect == .reach(source: Lab.seed().hosts.first { $0.name == from }!.addresses.first { $0.family == .v6 }!.address))
        }
    }

    @Test func negativesLookAtTheTargetAndCanBeReached() throws {
        let m = matrix()
        let cross = try #require(row(m, "red_c1", "ping 192.0.2.2"))
        #expect(cross.expect == .blocked && cross.target.context == "blue_c2" && cross.targetInterface == "cuplink")
        #expect(cross.note?.contains("192.0.0.8") == true)
        #expect(matrix(.vrf).probes.first { $0.from.context == "red_c1" && $0.name == "ping 192.0.2.2" }?.note?.contains("bridge") == true)
        let unsolicited = m.probes.filter { $0.name.hasSuffix("(unsolicited)") }
        #expect(Set(unsolicited.map(\.proto)) == [.icmp, .udp, .tcp])
        #expect(unsolicited.allSatisfy { $0.from.context == "uplink" && $0.target.context == "blue_c2" && $0.expect == .blocked })
        // The upstream reaches inside only through a route of the probe's own, from its public address.
        #expect(m.probeRoutes == [PlannedRoute(IPPrefix("100.64.0.2/32")!, via: IPAddress("100.64.0.1"), device: "client1",
                                               source: IPAddress("192.0.2.1"))])
    }

    @Test func samePortPairsCoverThreeProtocols() {
        let m = matrix()
        #expect(m.pairs.count == 3)
        for p in m.pairs {
            #expect(p.first.from.context == "blue_c1" && p.second.from.context == "red_c1")
            #expect(p.first.sourcePort == p.second.sourcePort)
            #expect(p.first.expect == .reach(source: IPAddress("100.64.0.1")))
        }
        #expect(Set(m.pairs.map(\.first.proto)) == [.icmp, .udp, .tcp])
    }

    @Test func bothBackendsHaveTheSameRows() {
        #expect(matrix(.netns).probes.map(\.name) == matrix(.vrf).probes.map(\.name))
        #expect(CheckMatrix.rowCount(Lab.seed()) == 37)
    }
}

@Suite struct BackendChoiceTests {
    func kernel(_ release: String, vrf: Bool, major: Int, minor: Int) -> () -> KernelSupport {
        { KernelSupport(release: release, version: (major, minor), hasVRF: vrf, vrfError: vrf ? nil : "no vrf") }
    }

    @Test func autoPrefersVRFsOnlyWhereNATOnThemWorks() throws {
        #expect(try BackendChoice.auto.resolve(kernel: kernel("6.1.0", vrf: true, major: 6, minor: 1)).0 == .vrf)
        #expect(try BackendChoice.auto.resolve(kernel: kernel("6.18.4", vrf: false, major: 6, minor: 18)).0 == .netns)
        let old = try BackendChoice.auto.resolve(kernel: kernel("5.10.0", vrf: true, major: 5, minor: 10))
        #expect(old.0 == .netns && old.1.contains("5.16"))
    }

    @Test func vrfOnAKernelWithoutItNamesTheOptionAndTheWayOut() {
        do {
            _ = try BackendChoice.vrf.resolve(kernel: kernel("6.18.4", vrf: false, major: 6, minor: 18))
            Issue.record("should fail")
        } catch {
            let text = "\(error)"
            #expect(text.contains("CONFIG_NET_VRF") && text.contains("--backend netns") && text.contains("scripts/vm/run"))
        }
        #expect(throws: UsageError.self) { try BackendChoice.vrf.resolve(kernel: kernel("5.15.0", vrf: true, major: 5, minor: 15)) }
    }
}

@Suite struct VRFPlanTests {
    let plan = Plan.vrf(Lab.seed())

    @Test func theSeedsRuleLayout() {
        let rules = plan.steps.compactMap { s -> PlannedRule? in if case .addRule(_, let r) = s { return r } else { return nil } }
        for f in [IPFamily.v4, .v6] {
            #expect(rules.contains(PlannedRule(family: f, priority: 2000, l3mdev: true, action: .unreachable)))
            #expect(rules.contains(PlannedRule(family: f, priority: 32765, table: 255)))
            #expect(plan.steps.contains(.deleteRule(namespace: "cgnat-main", rule: PlannedRule(family: f, priority: 0, table: 255))))
        }
        #expect(rules.contains(PlannedRule(family: .v4, priority: 500, fwmark: 1, table: 20)))
        #expect(rules.contains(PlannedRule(family: .v4, priority: 501, fwmark: 2, table: 30)))
        // The kernel adds l3mdev at 1000 itself: adding it again would fail.
        #expect(!rules.contains { $0.priority == 1000 })
    }

    @Test func slavesAreEnslavedBeforeTheyGetAddresses() {
        func index(_ match: (Step) -> Bool) -> Int { plan.steps.firstIndex(where: match)! }
        let enslave = index { if case .setMaster(_, "muplink", "up") = $0 { return true } else { return false } }
        let address = index { if case .addAddress(_, "muplink", _) = $0 { return true } else { return false } }
        #expect(enslave < address)
    }

    @Test func leakedRoutesAsTheSeedHadThem() {
        func has(_ dst: String, dev: String, table: UInt32) -> Bool {
            plan.steps.contains(.addRoute(namespace: "cgnat-main", route: PlannedRoute(IPPrefix(dst)!, device: dev, table: table)))
        }
        #expect(has("0.0.0.0/0", dev: "up", table: 20) && has("::/0", dev: "up", table: 20))
        #expect(has("0.0.0.0/0", dev: "up", table: 30))
        #expect(has("2001:db8:b:10::/64", dev: "blue", table: 10) && has("2001:db8:b:20::/64", dev: "red", table: 10))
        #expect(has("192.0.2.2/32", dev: "blue", table: 10) && has("192.0.2.2/32", dev: "br-blue", table: 20))
    }

    @Test func rulesetMatchesTheRealDevicesAndTheVRFsTheForwardHookSees() {
        let text = plan.ruleset.text
        #expect(text.contains("ct original zone set iifname map { \"br-blue\" : 1, \"br-red\" : 2 }"))
        #expect(text.contains("oifname \"muplink\" ct mark { 1, 2 }"))
        #expect(text.contains("iifname \"up\" ip daddr != { 192.0.2.2/32 } counter drop"))
        #expect(text.contains("iifname \"red\" ip daddr { 192.0.2.2/32 } counter reject with icmp type admin-prohibited"))
        #expect(!text.contains("oifname \"up\""))
    }

    @Test func contextsAreVRFsInMain() {
        let map = Dictionary(uniqueKeysWithValues: plan.contexts.map { ($0.name, "\($0.namespace)/\($0.vrf ?? "-")") })
        #expect(map["main:blue"] == "cgnat-main/blue" && map["main:up"] == "cgnat-main/up" && map["main"] == "cgnat-main/-")
        #expect(plan.namespaces == ["cgnat-uplink", "cgnat-main", "cgnat-blue_c1", "cgnat-blue_c2", "cgnat-red_c1"])
    }
}

@Suite struct VRFBindingTests {
    /// The sock_create program, byte for byte: r3 = ifindex; *(u32 *)(r1 + 0) = r3 (bound_dev_if);
    /// r0 = 1; exit. The encoding of BPF_MOV64_IMM, BPF_STX_MEM(BPF_W) and BPF_EXIT_INSN.
    @Test func programBytes() {
        #expect(VRFBinding.instructions(ifindex: 7) == [
            0xb7, 0x03, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00,
            0x63, 0x31, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0xb7, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,
            0x95, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        ])
    }

    @Test func cgroupsFollowIproute2sLayoutAndAreRecorded() {
        #expect(VRFBinding.cgroupPath(root: "/sys/fs/cgroup", lab: "cgnat", vrf: "blue") == "/sys/fs/cgroup/cgnat-cgnat/vrf/blue")
        let c = LabRecord.Contents(parsing: "backend vrf\ncomplete\ncgroup /x/vrf/blue\ncgroup /x/vrf/blue\ncgroup /x/vrf/red\n")
        #expect(c.cgroups == ["/x/vrf/blue", "/x/vrf/red"])
    }
}
