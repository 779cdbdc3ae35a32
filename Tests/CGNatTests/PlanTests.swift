import Testing
import Netlink
@testable import CGNat

@Suite struct SeedPlanTests {
    let plan = Plan.netns(Lab.seed())

    @Test func namespacesAreTheLabsOwnPrefixedByItsName() {
        #expect(plan.namespaces == ["cgnat-uplink", "cgnat-main", "cgnat-main-blue", "cgnat-main-red",
                                    "cgnat-blue_c1", "cgnat-blue_c2", "cgnat-red_c1"])
        let other = Plan.netns(Lab.seed(name: "lab2"))
        #expect(Set(other.namespaces).isDisjoint(with: plan.namespaces))
    }

    @Test func contextsMapToNamespaces() {
        let map = Dictionary(uniqueKeysWithValues: plan.contexts.map { ($0.name, $0.namespace) })
        #expect(map == ["uplink": "cgnat-uplink", "blue_c1": "cgnat-blue_c1", "blue_c2": "cgnat-blue_c2",
                        "red_c1": "cgnat-red_c1", "main": "cgnat-main", "main:up": "cgnat-main",
                        "main:blue": "cgnat-main-blue", "main:red": "cgnat-main-red"])
    }

    /// Every step only touches namespaces and links that earlier steps created.
    @Test func stepsAreOrderedSoEverythingExistsBeforeUse() {
        var namespaces = Set<String>()
        var links = Set<String>()   // "ns/link"
        func need(_ ns: String, _ link: String? = nil) {
            #expect(namespaces.contains(ns), "namespace \(ns) used before creation")
            if let l = link, l != "lo" { #expect(links.contains("\(ns)/\(l)"), "link \(l) in \(ns) used before creation") }
        }
        for step in plan.steps {
            switch step {
            case .createNamespace(let ns): namespaces.insert(ns)
            case .addVeth(let ns, let n, let pns, let p, _, _):
                need(ns); need(pns); links.insert("\(ns)/\(n)"); links.insert("\(pns)/\(p)")
            case .addBridge(let ns, let n, _), .addVRF(let ns, let n, _, _): need(ns); links.insert("\(ns)/\(n)")
            case .setMaster(let ns, let l, let m): need(ns, l); need(ns, m)
            case .setUp(let ns, let l), .addAddress(let ns, let l, _), .setAddrGenModeNone(let ns, let l),
                 .addNeighbour(let ns, let l, _, _): need(ns, l)
            case .addRoute(let ns, let r): need(ns, r.device)
            case .sysctl(let ns, let key, _):
                need(ns)
                let parts = key.split(separator: ".")
                if parts.count == 5, parts[2] == "conf", !["all", "default"].contains(parts[3]) { need(ns, String(parts[3])) }
            default: need(step.namespace)
            }
        }
    }

    @Test func ipv4LeavesSubscriberDomainsViaLinkLocalNextHop() {
        let r = PlannedRoute(IPPrefix("0.0.0.0/0")!, via: IPAddress("fe80::1")!, device: "t-up")
        #expect(plan.steps.contains(.addRoute(namespace: "cgnat-main-blue", route: r)))
        #expect(plan.steps.contains(.addRoute(namespace: "cgnat-main-red", route: r)))
    }

    @Test func returnTablesHoldOnlyTheirDomainsPrefixes() {
        let t101 = plan.steps.compactMap { s -> PlannedRoute? in
            if case .addRoute("cgnat-main", let r) = s, r.table == 101 { return r } else { return nil }
        }
        #expect(t101.map(\.destination.description).sorted() == ["100.64.0.0/10", "192.0.2.2/32"])
        #expect(t101.allSatisfy { $0.device == "t-blue" && $0.source == IPAddress("192.0.0.8") })
    }

    @Test func marksSelectReturnTablesBeforeTheLocalTable() {
        let rules = plan.steps.compactMap { s -> PlannedRule? in
            if case .addRule("cgnat-main", let r) = s { return r } else { return nil }
        }
        #expect(rules.contains(PlannedRule(family: .v4, priority: 100, fwmark: 1, table: 101)))
        #expect(rules.contains(PlannedRule(family: .v4, priority: 101, fwmark: 2, table: 102)))
        let local = rules.first { $0.table == 255 }
        #expect(local?.priority == 1000)
        #expect(rules.filter { $0.fwmark != nil }.allSatisfy { $0.priority < local!.priority })
        #expect(plan.steps.contains(.deleteRule(namespace: "cgnat-main", rule: PlannedRule(family: .v4, priority: 0, table: 255))))
    }

    @Test func sysctlsTheDesignNeedsAreExplicit() {
        func has(_ ns: String, _ k: String, _ v: String) -> Bool { plan.steps.contains(.sysctl(namespace: ns, key: k, value: v)) }
        #expect(has("cgnat-main", "net.ipv4.conf.t-blue.accept_local", "1"))
        #expect(has("cgnat-main", "net.ipv4.conf.t-red.accept_local", "1"))
        #expect(has("cgnat-main", "net.ipv4.fwmark_reflect", "1"))
        #expect(has("cgnat-main", "net.netfilter.nf_conntrack_timestamp", "1"))
        for ns in plan.namespaces {
            #expect(has(ns, "net.ipv4.conf.all.rp_filter", "0"))
            #expect(has(ns, "net.ipv4.conf.default.rp_filter", "0"))
            #expect(has(ns, "net.ipv6.conf.default.accept_dad", "0"))
        }
        #expect(has("cgnat-main-blue", "net.ipv4.ip_forward", "1"))
        #expect(has("cgnat-blue_c1", "net.ipv4.ip_forward", "0"))
    }

    @Test func uplinkRouteToRoutedAddressUsesItsPublicSource() {
        let r = PlannedRoute(IPPrefix("192.0.2.2/32")!, via: IPAddress("100.64.0.1")!, device: "client1", source: IPAddress("192.0.2.1"))
        #expect(plan.steps.contains(.addRoute(namespace: "cgnat-uplink", route: r)))
    }
}

@Suite struct RulesetTests {
    let text = Plan.netns(Lab.seed()).ruleset.text

    @Test func zonesAreOriginalDirectionKeyedOnTransferLinks() {
        #expect(text.contains("ct original zone set iifname map { \"t-blue\" : 1, \"t-red\" : 2 }"))
        #expect(text.contains("type filter hook prerouting priority raw;"))
    }

    @Test func natMatchesTheRealUplinkDeviceThroughPortBlocks() {
        let m = "oifname \"muplink\" ct mark { 1, 2 } ip saddr 100.64.0.0/10"
        #expect(text.contains("\(m) meta l4proto { tcp, udp } counter snat ip to ct mark . ip saddr map @subscriber_ports"))
        #expect(text.contains("\(m) meta l4proto icmp counter snat ip to ct mark . ip saddr map @subscriber_ports"))
        #expect(text.contains("\(m) meta l4proto != { tcp, udp, icmp } counter snat ip to ct mark . ip saddr map @subscriber_addresses"))
        #expect(text.contains("\(m) counter drop comment \"CGN no port block\""))
        #expect(!text.contains("fully-random") && !text.contains("masquerade"))
        // The seed: 2 domains x 32 inside addresses on one address: 1008 ports each, disjoint.
        #expect(text.contains("1 . 100.64.0.1 : 100.64.0.1 . 2032-3039"))
        #expect(text.contains("2 . 100.64.0.1 : 100.64.0.1 . 34288-35295"))
        #expect(text.components(" : 100.64.0.1 . ") == 64)
    }

    @Test func sessionLimitPerSubscriber() {
        var lab = Lab.seed()
        #expect(!text.contains("subscriber_sessions"))
        lab.router.nat.sessionLimit = 500
        let t = Plan.netns(lab).ruleset.text
        #expect(t.contains("set subscriber_sessions {\n\t\ttype mark . ipv4_addr\n\t\tsize 1048576\n\t\tflags dynamic\n\t}"))
        #expect(t.contains("ct state new ct mark { 1, 2 } ip saddr 100.64.0.0/10 add @subscriber_sessions { ct mark . ip saddr ct count over 500 } counter drop comment \"session limit per subscriber\""))
    }

    @Test func randomMappingIsTheOldSNAT() {
        var lab = Lab.seed()
        lab.router.nat.mapping = .random
        let t = Plan.netns(lab).ruleset.text
        #expect(t.contains("oifname \"muplink\" ct mark { 1, 2 } ip saddr 100.64.0.0/10 counter snat ip to 100.64.0.1 fully-random"))
        #expect(!t.contains("subscriber_ports"))
    }

    @Test func forwardPolicy() {
        #expect(text.contains("iifname \"muplink\" ip daddr != { 192.0.2.2/32 } counter drop"))
        #expect(text.contains("iifname { \"t-blue\", \"t-red\" } oifname { \"t-blue\", \"t-red\" } meta nfproto ipv4 counter reject with icmp type admin-prohibited"))
        #expect(text.contains("ct state new ct mark set iifname map"))
        #expect(text.contains("chain dstnat"))   // a nat chain must exist for zones (VyOS T6097)
    }
}

@Suite struct RenderTests {
    let script = ShellRenderer.render(Plan.netns(Lab.seed()))

    @Test func rendersIproute2Commands() {
        let lines = Set(script.split(separator: "\n").map(String.init))
        #expect(lines.contains("ip netns add cgnat-main"))
        #expect(lines.contains("ip -n cgnat-uplink link add dev client1 index 10 address 02:63:00:00:00:0a type veth peer name muplink index 11 address 02:63:00:00:00:0b netns cgnat-main"))
        #expect(lines.contains("ip -n cgnat-main-blue link add dev br-blue index 14 address 02:63:00:00:00:0e type bridge"))
        #expect(lines.contains("ip -n cgnat-main-blue link set dev blue_c1 addrgenmode none"))
        #expect(lines.contains("ip -n cgnat-blue_c1 neigh add 100.127.255.254 lladdr 02:63:00:00:00:0e dev cuplink nud permanent"))
        #expect(lines.contains("ip -n cgnat-main-blue -4 route add default via inet6 fe80::1 dev t-up"))
        #expect(lines.contains("ip -n cgnat-main -4 route add 100.64.0.0/10 via inet6 fe80::2 dev t-red src 192.0.0.8 table 102"))
        #expect(lines.contains("ip -n cgnat-main -4 rule add pref 100 fwmark 1 lookup 101"))
        #expect(lines.contains("ip -n cgnat-main -4 rule del pref 0 lookup local"))
        #expect(lines.contains("ip netns exec cgnat-main sysctl -qw net.ipv4.ping_group_range='0 2147483647'"))
        #expect(lines.contains("ip -n cgnat-uplink -4 route add 192.0.2.2/32 via 100.64.0.1 dev client1 src 192.0.2.1"))
    }

    @Test func rulesetInScriptIsTheOneUpLoads() {
        let plan = Plan.netns(Lab.seed())
        #expect(script.contains("nft -f - <<'CGNAT_RULESET'\n\(plan.ruleset.text)CGNAT_RULESET"))
    }

    @Test func oneCommandPerStep() {
        let plan = Plan.netns(Lab.seed())
        let commands = script.split(separator: "\n").filter { $0.hasPrefix("ip ") }
        #expect(commands.count == plan.steps.count)
    }

    @Test func downRemovesNamespacesInReverse() {
        let down = ShellRenderer.renderDown(Plan.netns(Lab.seed()))
        #expect(down.split(separator: "\n").dropFirst().first == "ip netns del cgnat-red_c1")
        #expect(down.split(separator: "\n").last == "ip netns del cgnat-uplink")
    }
}

@Suite struct RecordTests {
    @Test func parsesCreatedAndPendingNamespaces() {
        let c = LabRecord.Contents(parsing: """
            cgnat-lab 1
            backend netns
            pid 42
            pending lab-a
            ns lab-a 4:100
            pending lab-b
            """)
        #expect(c.backend == .netns)
        #expect(c.pid == 42)
        #expect(c.namespaces.map(\.name) == ["lab-a"])
        #expect(c.namespaces.first?.identity == NetNamespace.Identity(device: 4, inode: 100))
        #expect(c.pending == ["lab-b"])
        #expect(!c.complete)
    }

    @Test func labNames() {
        #expect(throws: Never.self) { try LabName.validate("cgnat") }
        #expect(throws: Never.self) { try LabName.validate("t-1_x") }
        for bad in ["", "-x", "a/b", "A", "a b", String(repeating: "a", count: 33)] {
            #expect(throws: UsageError.self) { try LabName.validate(bad) }
        }
    }
}

extension String {
    func components(_ needle: String) -> Int { split(separator: needle, omittingEmptySubsequences: false).count - 1 }
}

@Suite struct LabValidationTests {
    func error(_ change: (inout Lab) -> Void) -> String? {
        var lab = Lab.seed()
        change(&lab)
        do { try lab.validate(); return nil } catch { return "\(error)" }
    }

    @Test func theSeedIsValid() throws {
        try Lab.seed().validate()
        try Lab.seed(name: "x-1").validate()
    }

    @Test func mistakesAreNamed() {
        #expect(error { $0.router.subscribers[1].id = 1 }?.contains("two domains share id 1") == true)
        #expect(error { $0.router.subscribers[0].id = 0 }?.contains("domain 'blue' has id 0") == true)
        #expect(error { $0.router.subscribers[1].name = "blue" }?.contains("domain 'blue' is defined twice") == true)
        #expect(error { $0.hosts[1].name = "blue_c2" }?.contains("'blue_c2' names two contexts") == true)
        #expect(error { $0.hosts[1].attachment = .domain("green") }?.contains("attaches to domain 'green', which does not exist") == true)
        #expect(error { $0.router.subscribers[0].bridge = "a-very-long-bridge-name" }?.contains("1-15 characters") == true)
        #expect(error { $0.hosts[2].name = "blue:c2" }?.contains("must not contain ':'") == true)
        #expect(error { $0.router.nat.pool = [IPPrefix("198.51.100.1/32")!] }?.contains("is neither one of the uplink's addresses") == true)
        #expect(error { $0.router.nat.mapping = .portBlocks(.init(blockSize: 200)) }?
            .contains("512 subscribers x 200 ports need 102400 ports, but 1 public address(es) x 64512 ports give 64512") == true)
        #expect(error { $0.hosts[1].addresses[0] = IPPrefix("100.64.1.1/10")! }?
            .contains("host 'blue_c1' has 100.64.1.1, outside the port-block range 100.64.0.0/27") == true)
        #expect(error { $0.hosts[0].routes.append(HostRoute(IPPrefix("10.0.0.0/8")!, via: IPAddress("203.0.113.1")!)) }?
            .contains("via 203.0.113.1, which is on none of its subnets") == true)
        #expect(error { $0.hosts.removeFirst() }?.contains("exactly one host attached to the uplink") == true)
    }

    @Test func plansRefuseInvalidLabs() {
        var lab = Lab.seed()
        lab.router.subscribers[1].id = 1
        #expect(throws: UsageError.self) { try Planner.plan(lab, backend: .netns) }
    }
}
