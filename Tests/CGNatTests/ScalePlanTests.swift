import Testing
import NetAddress
@testable import CGNat

/// What a lab of a thousand subscribers needs from its plan, checked on small scaled labs.
@Suite struct ScalePlanTests {
    let lab = Lab.seedScaled(name: "sc", domains: 2, perDomain: 3)

    func plans() -> [Plan] { [Plan.netns(lab), Plan.vrf(lab), Plan.netns(Lab.seed()), Plan.vrf(Lab.seed())] }

    @Test func everyLinkHasItsOwnIndexAndMAC() {
        for plan in plans() {
            let all = plan.linkIndexes.flatMap { ns, links in links.filter { $0.key != "lo" }.map { ("\(ns)/\($0.key)", $0.value) } }
            #expect(Set(all.map(\.1)).count == all.count, "two links share an ifindex")
            #expect(all.allSatisfy { $0.1 >= Conventions.firstLinkIndex })
            #expect(Set(all.map { Conventions.mac(linkIndex: $0.1) }).count == all.count)
            // Bridges and VRFs are in the map, so the applier never has to look one up.
            for d in plan.lab.router.subscribers {
                #expect(plan.linkIndexes.values.contains { $0[d.bridge] != nil }, "bridge \(d.bridge) has no index")
            }
        }
    }

    @Test func macsAreLocallyAdministeredUnicast() {
        let m = Conventions.mac(linkIndex: 0x0102_0304)
        #expect(m.description == "02:63:01:02:03:04")
        #expect(m.bytes[0] & 0x01 == 0 && m.bytes[0] & 0x02 == 0x02)
    }

    /// Both sides of every subscriber link know each other's MAC, permanently, after the links are
    /// up (taking a link down flushes even permanent entries).
    @Test func permanentNeighboursOnBothSidesOfEverySubscriberLink() {
        for plan in [Plan.netns(lab), Plan.vrf(lab)] {
            let idx = plan.linkIndexes
            var neighbours: [String: Set<String>] = [:]
            var lastUp = -1, firstNeighbour = Int.max
            for (i, s) in plan.steps.enumerated() {
                if case .setUp = s { lastUp = max(lastUp, i) }
                if case .addNeighbour(let ns, let link, let a, let m) = s {
                    neighbours[ns, default: []].insert("\(link) \(a) \(m)")
                    firstNeighbour = min(firstNeighbour, i)
                }
            }
            #expect(lastUp < firstNeighbour)
            for d in lab.router.subscribers {
                let bns = plan.backend == .netns ? lab.namespaceName("main-\(d.name)") : lab.namespaceName("main")
                let bridgeMAC = Conventions.mac(linkIndex: idx[bns]![d.bridge]!)
                for h in lab.hosts(in: d.name) {
                    let hns = lab.namespaceName(h.name)
                    let hostMAC = Conventions.mac(linkIndex: idx[hns]![h.interface]!)
                    for gw in d.addresses {
                        #expect(neighbours[hns, default: []].contains("\(h.interface) \(gw.address) \(bridgeMAC)"), "\(h.name) -> \(gw)")
                    }
                    for a in h.addresses {
                        #expect(neighbours[bns, default: []].contains("\(d.bridge) \(a.address) \(hostMAC)"), "\(d.bridge) -> \(a)")
                    }
                }
            }
            // The uplink's link, both sides: the router's uplink addresses at the host, the host's at the router.
            let up = lab.router.uplink, host = lab.uplinkHost!
            let routerMAC = Conventions.mac(linkIndex: idx[lab.namespaceName("main")]![up.interface]!)
            let hostMAC = Conventions.mac(linkIndex: idx[lab.namespaceName(host.name)]![host.interface]!)
            for a in up.addresses {
                #expect(neighbours[lab.namespaceName(host.name), default: []].contains("\(host.interface) \(a.address) \(routerMAC)"))
            }
            for a in host.addresses {
                #expect(neighbours[lab.namespaceName("main"), default: []].contains("\(up.interface) \(a.address) \(hostMAC)"))
            }
            let count = plan.steps.filter { if case .addNeighbour = $0 { return true } else { return false } }.count
            // 3 subscribers x 2 domains, 2 gateway addresses each way; 2 + 2 on the uplink's link.
            #expect(count == 6 * 2 + 6 * 2 + up.addresses.count + host.addresses.count)
        }
    }

    @Test func bridgePortsGenerateNoIPv6AddressesBeforeTheyComeUp() {
        for plan in [Plan.netns(lab), Plan.vrf(lab)] {
            for h in lab.hosts where h.attachment != .uplink {
                let none = plan.steps.firstIndex { if case .setAddrGenModeNone(_, h.name) = $0 { return true } else { return false } }
                let up = plan.steps.firstIndex { if case .setUp(_, h.name) = $0 { return true } else { return false } }
                #expect(none != nil && up != nil && none! < up!, "port \(h.name)")
            }
        }
    }

    @Test func aBridgeTakesAtMost1023Ports() throws {
        var lab = Lab.seedScaled(name: "big", domains: 1, perDomain: 1000)
        let template = lab.hosts.last!
        for n in 1001...1023 {
            var h = template
            h.name = "d01_c\(n)"
            lab.hosts.append(h)
        }
        try lab.validate()
        var h = template
        h.name = "d01_c1024"
        lab.hosts.append(h)
        do {
            try lab.validate()
            Issue.record("1024 ports on one bridge passed validation")
        } catch {
            let text = "\(error)"
            #expect(text.contains("domain 'd01' has 1024 subscribers"), "\(text)")
            #expect(text.contains("at most 1023 ports") && text.contains("EXFULL"), "\(text)")
        }
    }

    @Test func conventionsAreWhatThePlansUse() {
        let plan = Plan.netns(Lab.seed())
        #expect(plan.steps.contains(.addAddress(namespace: "cgnat-main", link: "lo", address: IPPrefix(Conventions.errorSource, 32))))
        #expect(plan.steps.contains(.addAddress(namespace: "cgnat-main", link: Conventions.transferLink("blue"),
                                                address: IPPrefix(Conventions.routerLinkLocal, 64))))
        #expect(plan.steps.contains(.addRule(namespace: "cgnat-main", rule: PlannedRule(
            family: .v4, priority: Conventions.fwmarkRuleBase + 1, fwmark: 1, table: Conventions.returnTableBase + 1))))
        #expect(Lab.seed().vrfTable("up") == Conventions.uplinkVRFTable)
    }
}

@Suite struct BatchedRenderTests {
    let plan = Plan.netns(Lab.seedScaled(name: "sc", domains: 2, perDomain: 3))

    /// Every step of the plan is in the batched script exactly once, as a batch line or a command.
    @Test func everyStepOnce() {
        let script = ShellRenderer.renderBatched(plan)
        let lines = script.split(separator: "\n").map(String.init)
        for ns in plan.namespaces { #expect(lines.filter { $0 == "netns add \(ns)" }.count == 1) }
        var netlink = 0
        for step in plan.steps {
            guard let args = ShellRenderer.batchLine(step, placed: step.createsLink) else { continue }
            netlink += 1
            #expect(lines.contains(args), "missing: \(args)")
        }
        var batchLines = 0, inBatch = false
        for l in lines {
            if l.hasSuffix("-batch - <<'CGNAT_BATCH'") { inBatch = true } else if l == "CGNAT_BATCH" { inBatch = false } else if inBatch { batchLines += 1 }
        }
        #expect(batchLines == plan.namespaces.count + netlink)
        let sysctls = plan.steps.filter { if case .sysctl = $0 { return true } else { return false } }.count
        #expect(script.components("=") >= sysctls)
        // One ip process per namespace for its commands, not one per command.
        #expect(lines.filter { $0.hasPrefix("ip -n ") && $0.hasSuffix("-batch - <<'CGNAT_BATCH'") }.count <= plan.namespaces.count + 4)
    }

    @Test func linksArePlacedFromInsideTheFirstNamespace() {
        let script = ShellRenderer.renderBatched(plan)
        #expect(script.contains("ip -n sc-uplink -batch - <<'CGNAT_BATCH'\nlink add dev client1 index 10 address 02:63:00:00:00:0a netns sc-uplink type veth peer name muplink index 11 address 02:63:00:00:00:0b netns sc-main\n"))
        let down = ShellRenderer.renderDownBatched(plan)
        #expect(down.contains("netns del sc-d02_c003\n") && down.hasSuffix("netns del sc-uplink\nCGNAT_BATCH\n"))
    }
}
