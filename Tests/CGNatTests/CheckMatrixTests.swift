import Testing
import Netlink
@testable import CGNat

/// The check matrix as data: which rows the seed lab gets, without root.
@Suite struct CheckMatrixTests {
    func matrix(_ backend: Backend = .netns, _ lab: Lab = Lab.seed()) -> CheckMatrix {
        try! CheckMatrix(lab: lab, backend: backend,
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
        // From the uplink's public address, as an Internet host would send it.
        #expect(unsolicited.allSatisfy { $0.bindAddress == IPAddress("192.0.2.1") && $0.kind == .unsolicited })
        // The upstream routes the address to the router, and the router routes it into blue, as
        // it routes blue's own prefixes: only the policy is left to stop the probe.
        let uplinkRoute = ProbeRoute(context: "uplink", route: PlannedRoute(IPPrefix("100.64.0.2/32")!, via: IPAddress("100.64.0.1"),
                                                                            device: "client1", source: IPAddress("192.0.2.1")))
        #expect(m.probeRoutes == [uplinkRoute,
                                  ProbeRoute(context: "main", route: PlannedRoute(IPPrefix("100.64.0.2/32")!, via: IPAddress("fe80::2"), device: "t-blue"))])
        #expect(matrix(.vrf).probeRoutes == [uplinkRoute,
                                             ProbeRoute(context: "main", route: PlannedRoute(IPPrefix("100.64.0.2/32")!, device: "blue", table: 10))])
        #expect(m.phases.count == 1)
    }

    @Test func everyBlockedRowNamesWhatStopsIt() throws {
        for backend in Backend.allCases {
            let m = matrix(backend)
            // The inbound-unheld rows name a mechanism on the seed (InboundMappingRowTests).
            let blocked = m.probes.filter { $0.expect == .blocked && $0.kind != .inboundUnheld }
            #expect(blocked.count == 7)
            let unsolicited = RuleRef(context: "main", table: "cgnat", chain: "forward", comment: Ruleset.Comment.unsolicited)
            for p in blocked where p.kind == .unsolicited {
                #expect(p.blockedBy == .rule(unsolicited) && p.evidence == .counted(unsolicited), "\(p.name)")
            }
            let cross = RuleRef(context: "main", table: "cgnat", chain: "forward",
                                comment: Ruleset.Comment.interDomain(from: backend == .vrf ? "red" : nil))
            for p in blocked where p.kind == .crossDomainV4 {
                #expect(p.blockedBy == .rule(cross) && p.evidence == .reject, "\(p.name)")
            }
            // blue_c1 sends with blue_c2's addresses (one row per family); the bridge's binding drops it.
            let bind = BridgeBinding.unboundRule(Lab.seed(), domain: Lab.seed().router.subscribers[0], backend: backend)
            #expect(bind.context == (backend == .netns ? "main:blue" : "main") && bind.family == "bridge")
            let spoof = blocked.filter { $0.kind == .spoofNeighbour }
            #expect(spoof.map(\.bindAddress) == [IPAddress("100.64.0.2"), IPAddress("2001:db8:b:10::2")])
            #expect(spoof.allSatisfy { $0.from.context == "blue_c1" && $0.target.context == "main:blue" && $0.targetInterface == "br-blue" })
            #expect(spoof.allSatisfy { $0.blockedBy == .rule(bind) && $0.evidence == .counted(bind) && $0.proto == .udp })
            // Each named rule is in a ruleset the plan loads, with its comment, in its context's namespace.
            let lab = Lab.seed()
            let plan = backend == .netns ? Plan.netns(lab) : Plan.vrf(lab)
            for p in blocked {
                guard case .rule(let r)? = p.blockedBy else { Issue.record("\(p.name) names no rule"); continue }
                let ns = lab.context(named: r.context, backend: backend)!.namespace
                let loaded = plan.steps.contains { step in
                    if case .loadRuleset(ns, let text) = step { return text.contains("table \(r.family) \(r.table) {") && text.contains("comment \"\(r.comment)\"") }
                    return false
                }
                #expect(loaded, "\(r)")
            }
        }
    }

    @Test func expectationsBecomeRows() throws {
        var lab = Lab.seed()
        lab.expectations = [
            Expectation(from: "red_c1", to: IPAddress("2001:db8:b:10::2")!, proto: .udp, outcome: .reach,
                        source: IPAddress("2001:db8:b:20::1"), location: "lab.yaml:3:5"),
            Expectation(from: "uplink", to: IPAddress("100.64.0.2")!, proto: .tcp, outcome: .blocked),
            Expectation(from: "blue_c1", to: IPAddress("192.0.2.1")!, proto: .icmp, outcome: .blocked),
        ]
        let m = matrix(.netns, lab)
        let rows = m.probes.filter { $0.kind == .expectation }
        #expect(rows.count == 3)
        #expect(rows[0].target.context == "blue_c2" && rows[0].targetInterface == "cuplink")
        #expect(rows[0].expect == .reach(source: IPAddress("2001:db8:b:20::1")) && rows[0].note == "expectation at lab.yaml:3:5")
        #expect(rows[1].target.context == "blue_c2" && rows[1].bindAddress == IPAddress("192.0.2.1"))
        if case .rule(let r)? = rows[1].blockedBy { #expect(r.comment == Ruleset.Comment.unsolicited) } else { Issue.record("no rule") }
        // Nothing in the policy stops it: the row can only wait (and a leak fails it).
        #expect(rows[2].evidence == .wait && rows[2].target.context == "uplink")
        #expect(CheckMatrix.rowCount(lab) == CheckMatrix.rowCount(Lab.seed()) + 3)
        lab.expectations = [Expectation(from: "green_c1", to: IPAddress("192.0.2.1")!, proto: .icmp, outcome: .reach)]
        #expect(throws: UsageError.self) {
            _ = try CheckMatrix(lab: lab, backend: .netns, endpoint: { ProbeEndpoint(context: $0, namespaceFD: -1) }, port: { 1 })
        }
    }

    /// At scale every subscriber gets its own rows (gateway, NAT, the negatives) and a fixed sample
    /// of the pair rows: the count is linear in subscribers.
    @Test func rowCountIsLinearInSubscribers() throws {
        func expected(domains d: Int, perDomain n: Int) -> Int {
            let s = CheckSampling.standard
            let subscribers = d * n
            // gateway v4+v6, neighbours (v4+v6 each), other domains (v6), uplink v6, router v6, NAT; from the uplink: v6 in
            let perSubscriber = 2 + min(s.crossDomain, (d - 1) * n) + 3 + 1
            // Neighbour rows: a budget in all (the kernel's neighbour table is shared), spread evenly.
            let wanted = n * 2 * min(s.neighbours, n - 1)
            let share = max(2, s.neighbourBudget / d)
            let every = wanted <= share ? 1 : (wanted + share - 1) / share
            let neighbourRows = d * ((n + every - 1) / every) * 2 * min(s.neighbours, n - 1)
            // unsolicited rows: every subscriber whose address is not the router's own (the first of each domain)
            let unsolicited = 3 * (subscribers - d)
            let pairs = d > 1 ? 3 * n * s.samePortPerAddress : 0
            // One spoofed-source row per family in each domain of two or more hosts.
            let spoof = n >= 2 ? 2 * d : 0
            return subscribers * perSubscriber + neighbourRows + unsolicited + 1 + pairs + spoof
        }
        for (d, n) in [(10, 100), (10, 50), (2, 50), (3, 7)] {
            let lab = Lab.seedScaled(domains: d, perDomain: n)
            let m = matrix(.netns, lab)
            #expect(m.probes.count + m.pairs.count == expected(domains: d, perDomain: n) + 2 * d, "\(d)x\(n)")
            let neighbourRows = m.probes.filter { $0.kind == .neighbour }.count
            #expect(neighbourRows <= CheckSampling.standard.neighbourBudget + 2 * 2 * d, "\(d)x\(n): \(neighbourRows) neighbour rows")
            // An address held in every domain is probed from the uplink into one domain per phase.
            #expect(m.phases.count == d)
            for (i, phase) in m.phases.enumerated() where i > 0 {
                #expect(phase.probes.allSatisfy { $0.kind == .unsolicited } && phase.pairs.isEmpty && phase.inbound.isEmpty)
                let targets = Set(phase.probes.map(\.target.context))
                #expect(targets.allSatisfy { $0.hasPrefix(lab.router.subscribers[i].name) }, "phase \(i)")
            }
            // Every subscriber: its gateway, NAT upstream, and (but the router's own address) the negatives.
            var kinds: [String: [RowKind: Int]] = [:]
            for p in m.probes {
                let who = p.kind == .unsolicited ? p.target.context : p.from.context
                kinds[who, default: [:]][p.kind, default: 0] += 1
            }
            for h in lab.hosts where h.attachment != .uplink {
                #expect(kinds[h.name]?[.gateway] == 2 && kinds[h.name]?[.nat] == 1, "\(h.name)")
                let own = lab.router.uplink.addresses.contains { a in h.addresses.contains { $0.address == a.address } }
                #expect(kinds[h.name]?[.unsolicited] == (own ? nil : 3), "\(h.name)")
            }
        }
        // ... and per domain one inbound-mapping row and two inbound-unheld rows.
        #expect(CheckMatrix.rowCount(Lab.seedScaled(domains: 10, perDomain: 100)) == 11491 + 10 * 3)
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
        // The seed's 45 rows: its pairs are all within the sample; per domain an inbound-mapping
        // row and two inbound-unheld rows.
        #expect(CheckMatrix.rowCount(Lab.seed()) == 45)
        #expect(matrix(.netns).inbound.map(\.probe.name) == matrix(.vrf).inbound.map(\.probe.name))
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

/// Inbound rows to a live mapping: which subscribers, what is expected under each filtering, and
/// what stops the negative ones.
@Suite struct InboundMappingRowTests {
    func matrix(_ lab: Lab, _ backend: Backend = .netns, sampling: CheckSampling = .standard) -> CheckMatrix {
        var next: UInt16 = 30000
        return try! CheckMatrix(lab: lab, backend: backend, sampling: sampling,
                                endpoint: { ProbeEndpoint(context: $0, namespaceFD: -1) }, port: { next += 1; return next })
    }

    /// The seed translated to a pool outside the router's own addresses (as labs/cgn-pool.yaml).
    func poolLab(_ filtering: NATPolicy.Filtering? = nil) -> Lab {
        var lab = Lab.seed()
        let inside = lab.router.nat.inside
        lab.router.nat = NATPolicy(inside: inside, pool: [IPPrefix("198.51.100.0/28")!],
                                   mapping: .portBlocks(.init(insideRange: IPPrefix(inside.address, 24), blockSize: 2016)))
        if let filtering { lab.router.nat.filtering = filtering }
        return lab
    }

    func check(_ lab: Lab, expectReach: Bool) throws -> [InboundRow] {
        let m = matrix(lab)
        let rows = m.inbound
        let policy = try #require(lab.portBlockPolicy)
        let uplink = try #require(lab.uplinkHost)
        let external = try #require(uplink.loopbackAddresses.first { $0.family == .v4 }?.address)
        // The first subscriber of each domain, once.
        #expect(rows.map(\.opener.from.context) == lab.router.subscribers.map { d in lab.hosts(in: d.name)[0].name })
        for row in rows {
            let h = try #require(lab.hosts.first { $0.name == row.opener.from.context })
            let mapped = try #require(lab.portBlock(of: h, policy: policy)?.publicAddress)
            // The opener: a datagram to the uplink, seen there from the subscriber's public address.
            #expect(row.opener.proto == .udp && row.opener.destination == external && row.opener.target.context == uplink.name)
            #expect(row.opener.expect == .reach(source: mapped) && row.opener.sourcePort != nil)
            // The row: from the uplink, from another port than the opener sent to, to the mapping,
            // looked for at the subscriber on the port the opener sent from.
            let p = row.probe
            #expect(p.from.context == uplink.name && p.bindAddress == external && p.proto == .udp)
            #expect(p.sourcePort != nil && p.sourcePort != row.opener.sourcePort)
            #expect(p.target.context == h.name && p.targetInterface == h.interface && p.listenerPort == row.opener.sourcePort)
            #expect(p.kind == .inboundMapping && p.destination == mapped && p.destinationPort == nil)
            let aimed = row.aimed(at: mapped, port: 1234)
            #expect(aimed.destination == mapped && aimed.destinationPort == 1234)
            #expect(p.expect == (expectReach ? .reach(source: external) : .blocked), "\(p.name)")
        }
        return rows
    }

    @Test func seedRowsAreStoppedByTheRoutersOwnStack() throws {
        let lab = Lab.seed()
        let rows = try check(lab, expectReach: false)
        #expect(rows.count == lab.router.subscribers.count)
        // The seed's public address is the router's own: delivered locally, answered port unreachable.
        for row in rows {
            guard case .mechanism(let why)? = row.probe.blockedBy else { Issue.record("\(row.probe.name): \(String(describing: row.probe.blockedBy))"); continue }
            let counter = RuleRef(context: lab.router.name, table: Ruleset.tableName, chain: "input", comment: Ruleset.Comment.localUDP)
            #expect(why.contains("port unreachable") && row.probe.evidence == .counted(counter))
            #expect(Plan.netns(lab).ruleset.text.contains("comment \"\(counter.comment)\""))
        }
    }

    @Test func poolRowsAreDroppedByTheUnsolicitedRule() throws {
        for backend in Backend.allCases {
            let lab = poolLab()
            let rows = matrix(lab, backend).inbound
            #expect(rows.count == lab.router.subscribers.count)
            let ref = RuleRef(context: lab.router.name, table: Ruleset.tableName, chain: Ruleset.forwardChain, comment: Ruleset.Comment.unsolicited)
            let plan = backend == .netns ? Plan.netns(lab) : Plan.vrf(lab)
            for row in rows {
                #expect(row.probe.blockedBy == .rule(ref) && row.probe.evidence == .counted(ref))
                #expect(plan.ruleset.text.contains("comment \"\(ref.comment)\""))
            }
        }
        _ = try check(poolLab(), expectReach: false)
    }

    @Test func endpointIndependentRowsReach() throws {
        let rows = try check(poolLab(.endpointIndependent), expectReach: true)
        #expect(rows.allSatisfy { $0.probe.blockedBy == nil })
        var seed = Lab.seed()
        seed.router.nat.filtering = .endpointIndependent
        _ = try check(seed, expectReach: true)
    }

    @Test func unheldPortsReachNobody() throws {
        for lab in [Lab.seed(), poolLab(), poolLab(.endpointIndependent)] {
            let m = matrix(lab)
            let policy = try #require(lab.portBlockPolicy)
            let external = lab.uplinkHost!.loopbackAddresses.first { $0.family == .v4 }!.address
            let rows = m.probes.filter { $0.kind == .inboundUnheld }
            #expect(rows.count == 2 * lab.router.subscribers.count)
            for row in m.inbound {
                let h = try #require(lab.hosts.first { $0.name == row.opener.from.context })
                let block = try #require(lab.portBlock(of: h, policy: policy))
                let mine = rows.filter { $0.target.context == h.name }
                // One port of its block, one below every block; both to its public address, at it.
                #expect(mine.compactMap(\.destinationPort) == [block.ports.upperBound, policy.ports.lowerBound - 1])
                for u in mine {
                    #expect(u.destination == block.publicAddress && u.from.context == lab.uplinkHost!.name && u.bindAddress == external)
                    #expect(u.expect == .blocked && u.listenerPort == u.destinationPort && u.targetInterface == h.interface)
                    // The router's own address: answered by its own stack; any other: the forward chain's rule.
                    if lab.router.uplink.addresses.contains(where: { $0.address == block.publicAddress }) {
                        if case .mechanism? = u.blockedBy {} else { Issue.record("\(u.name): \(String(describing: u.blockedBy))") }
                        #expect(u.evidence == .counted(RuleRef(context: lab.router.name, table: Ruleset.tableName, chain: "input", comment: Ruleset.Comment.localUDP)))
                    } else {
                        let ref = RuleRef(context: lab.router.name, table: Ruleset.tableName, chain: Ruleset.forwardChain, comment: Ruleset.Comment.unsolicited)
                        #expect(u.blockedBy == .rule(ref) && u.evidence == .counted(ref))
                    }
                }
                // The unheld port is not a port of any other subscriber's block on that address.
                let others = lab.hosts.filter { $0.name != h.name }.compactMap { lab.portBlock(of: $0, policy: policy) }
                #expect(!others.contains { $0.publicAddress == block.publicAddress && $0.ports.contains(block.ports.upperBound) })
            }
        }
    }

    @Test func sampledPerDomainNotPerSubscriber() {
        let lab = Lab.seedScaled(domains: 3, perDomain: 40)
        #expect(matrix(lab).inbound.count == 3)
        #expect(matrix(lab, sampling: CheckSampling(inboundPerDomain: 2)).inbound.count == 6)
        #expect(matrix(lab, sampling: CheckSampling(inboundPerDomain: 0)).inbound.isEmpty)
        #expect(CheckMatrix.rowCount(lab, sampling: CheckSampling(inboundPerDomain: 2)) == CheckMatrix.rowCount(lab) + 3 * 3)   // a mapping row and two unheld rows each
    }
}
