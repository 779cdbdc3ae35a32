import Testing
import CGNatCore
import NetAddress

/// The policy read backwards a run at a time, and the inbound parts of the ruleset, without root.
@Suite struct InboundRulesetTests {
    func a(_ s: String) -> IPAddress { IPAddress(s)! }
    func p(_ s: String) -> IPPrefix { IPPrefix(s)! }

    /// Every port of every run belongs, by the per-port reverse lookup, to the run's domain; the
    /// runs cover exactly the ports some subscriber of those domains holds.
    @Test func domainRunsAgreeWithTheReverseLookup() {
        let pol = PortBlockPolicy(pool: [p("198.51.100.0/28")], insideRange: p("100.64.0.0/25"), maxDomainID: 3)
        let runs = pol.domainRuns(domainIDs: [3, 1])   // domain 2 is provisioned but not in the lab
        #expect(!runs.isEmpty)
        var covered = 0
        for r in runs {
            #expect(r.domainID == 1 || r.domainID == 3)
            for port in stride(from: Int(r.ports.lowerBound), through: Int(r.ports.upperBound), by: 97) {
                #expect(pol.owner(publicAddress: r.publicAddress, port: UInt16(port))?.domainID == r.domainID, "\(r)")
            }
            covered += r.ports.count
        }
        // 2 domains x 128 subscribers x 512 ports.
        #expect(covered == 2 * 128 * pol.portsPerSubscriber)
        // A domain's share on one address is one contiguous run: few elements at any scale.
        #expect(runs.count <= 2 * (128 / pol.subscribersPerAddress + 2))
        let big = PortBlockPolicy(pool: [p("198.51.100.0/24")], insideRange: p("100.64.0.0/16"), maxDomainID: 2, blockSize: 120)
        #expect(big.problems().isEmpty)
        #expect(big.domainRuns(domainIDs: [1, 2]).count <= 256 + 2)
    }

    func poolLab(_ filtering: NATPolicy.Filtering) -> Lab {
        var lab = Lab.seed(name: "t")
        lab.router.nat.pool = [p("198.51.100.0/28")]
        lab.router.nat.filtering = filtering
        return lab
    }

    @Test func theSeedHasZonesAtBothEdgesButNoHairpin() {
        let lab = Lab.seed(name: "t")
        #expect(!lab.hairpinning)   // its public address is inside the subscribers' on-link prefix
        let plan = Plan.netns(lab)
        let text = plan.ruleset.text
        #expect(text.contains("ct zone set ip daddr . th dport map @\(Ruleset.inboundZoneMap)"))
        #expect(text.contains("ct zone set iifname map"))
        #expect(text.contains(Ruleset.Comment.unsolicitedSYN))
        #expect(!text.contains(Conventions.hairpinIn) && !text.contains("@\(Ruleset.mappingsMap)"))
        #expect(!plan.steps.contains { if case .addVeth(_, let n, _, _, _, _) = $0 { return n == Conventions.hairpinOut }; return false })
    }

    @Test func aPoolOutsideTheInsidePrefixHairpinsOnBothBackends() {
        let lab = poolLab(.addressPortDependent)
        #expect(lab.hairpinning)
        for plan in [Plan.netns(lab), Plan.vrf(lab)] {
            #expect(plan.steps.contains { if case .addVeth(_, let n, _, let peer, _, _) = $0 { return n == Conventions.hairpinOut && peer == Conventions.hairpinIn }; return false })
            #expect(plan.steps.contains { if case .addRoute(_, let r) = $0 { return r.destination == p("198.51.100.0/28") && r.device == Conventions.hairpinOut }; return false })
            let text = plan.ruleset.text
            #expect(text.contains("oifname { \"\(lab.router.uplink.interface)\", \"\(Conventions.hairpinOut)\" }"), "SNAT and learning on both exits")
            // Address-and-port-dependent filtering: no DNAT at all, conntrack's replies only.
            #expect(!text.contains("dnat") && !text.contains(Ruleset.Comment.endpointIndependent))
        }
    }

    @Test func endpointIndependentFilteringLearnsAndLetsIn() {
        let text = Plan.netns(poolLab(.endpointIndependent)).ruleset.text
        #expect(text.contains("map \(Ruleset.mappingsMap) {") && text.contains("flags dynamic,timeout"))
        #expect(text.contains("update @\(Ruleset.mappingsMap) { meta l4proto . ct reply ip daddr . ct reply proto-dst timeout 120s"))
        #expect(text.contains("meta mark set meta l4proto . ip daddr . th dport map @\(Ruleset.mappingMarksMap) ct mark set meta mark dnat ip to meta l4proto . ip daddr . th dport map @\(Ruleset.mappingsMap)"))
        // Accepted by the mark the DNAT rule sets, ahead of the unsolicited drop.
        let accept = text.range(of: Ruleset.Comment.endpointIndependent + "\"\n")!, drop = text.range(of: Ruleset.Comment.unsolicited)!
        #expect(accept.lowerBound < drop.lowerBound)
    }

    @Test func randomMappingKeepsOriginalDirectionZones() {
        var lab = Lab.seed(name: "t")
        lab.router.nat.mapping = .random
        let text = Plan.netns(lab).ruleset.text
        #expect(text.contains("ct original zone set iifname map") && !text.contains("@\(Ruleset.inboundZoneMap)"))
        #expect(!lab.hairpinning)
    }
}
