import Foundation
import Testing
import Netlink
@testable import CGNat

/// `check`'s inbound-mapping rows (issue 9): a subscriber opens a UDP mapping, and the uplink
/// sends to it from an endpoint the subscriber never sent to. Each kind of row passes on its lab
/// and fails once the rule that decides it is deleted from the kernel, by handle.
@Suite(.serialized, .enabled(if: isRoot))
struct InboundCheckTests {
    /// A copy of labs/cgn-pool.yaml under a test name, resolved by the lab-file helper.
    func poolLab(_ tag: String, filtering: NATPolicy.Filtering? = nil) throws -> Lab {
        setenv("CGNAT_LAB_HELPER", (cgnatBinary as NSString).deletingLastPathComponent + "/cgnat-lab", 0)
        var lab = try LabSource.resolve(file: "labs/cgn-pool.yaml")
        lab.name = testLabName(tag)
        if let filtering { lab.router.nat.filtering = filtering }
        return lab
    }

    func inboundRows(_ report: CheckRun.Report) -> [ProbeResult] { report.results.filter { $0.kind == .inboundMapping } }
    func unheldRows(_ report: CheckRun.Report) -> [ProbeResult] { report.results.filter { $0.kind == .inboundUnheld } }

    /// Deletes the rule of `chain` whose comment is `comment` in the router's namespace.
    func deleteRule(_ lab: Lab, chain: String, comment: String) throws {
        let ctx = try #require(lab.context(named: lab.router.name, backend: try LabControl.runningBackend(lab: lab.name)))
        let fd = try NetNamespace.open(ctx.namespace)
        defer { close(fd) }
        try NetNamespace.run(in: fd) {
            let nft = try Nftables(output: [.handle, .json])
            let listed = try RuleCounters.rules(fromJSON: try nft.run("list chain inet \(Ruleset.tableName) \(chain)"))
            let hits = listed.filter { $0.rule.comment == comment }
            #expect(!hits.isEmpty, "no rule \"\(comment)\" in \(chain)")
            for h in hits { try nft.run("delete rule inet \(Ruleset.tableName) \(chain) handle \(h.rule.handle)") }
        }
    }

    /// Address-and-port-dependent filtering on a pool outside the router's own addresses: the
    /// forward chain's unsolicited rule drops the packet, counted; without it the rows fail.
    @Test func inboundToAMappingIsDroppedByTheUnsolicitedRuleAndFailsWithoutIt() throws { try droppedByTheUnsolicitedRule(.netns) }

    @Test(.enabled(if: kernelHasVRF, "this kernel has no VRF driver (the VM run covers it)"))
    func inboundToAMappingIsDroppedByTheUnsolicitedRuleAndFailsWithoutItOnVRFs() throws { try droppedByTheUnsolicitedRule(.vrf) }

    func droppedByTheUnsolicitedRule(_ backend: Backend) throws {
        try withLab(try poolLab(backend == .vrf ? "crowpmv" : "crowpm"), backend: backend) { lab in
            let report = try CheckRun.run(lab: lab, timeoutMilliseconds: probeTimeout)
            #expect(report.passed, "\(failures(report))")
            let rows = inboundRows(report)
            #expect(rows.count == lab.router.subscribers.count)
            for r in rows {
                #expect(r.passed && r.probe.expect == .blocked && r.detail.hasPrefix("dropped: counted by"), "\(r.name): \(r.detail)")
            }
            let unheld = unheldRows(report)
            #expect(unheld.count == 2 * lab.router.subscribers.count)
            for r in unheld { #expect(r.passed && r.detail.hasPrefix("dropped: counted by"), "\(r.name): \(r.detail)") }
            try deleteRule(lab, chain: Ruleset.forwardChain, comment: Ruleset.Comment.unsolicited)
            let second = try CheckRun.run(lab: lab, timeoutMilliseconds: probeTimeout)
            let after = inboundRows(second) + unheldRows(second)
            #expect(after.count == rows.count + unheld.count)
            for r in after { #expect(!r.passed, "\(r.name) passes without its rule: \(r.detail)") }
        }
    }

    /// Endpoint-independent filtering: the row reaches the subscriber from the external endpoint;
    /// without the DNAT to the live mapping it fails.
    @Test func inboundToAMappingReachesUnderEndpointIndependentFilteringAndFailsWithoutTheDNAT() throws { try reachesUnderEIF(.netns) }

    @Test(.enabled(if: kernelHasVRF, "this kernel has no VRF driver (the VM run covers it)"))
    func inboundToAMappingReachesUnderEndpointIndependentFilteringAndFailsWithoutTheDNATOnVRFs() throws { try reachesUnderEIF(.vrf) }

    func reachesUnderEIF(_ backend: Backend) throws {
        try withLab(try poolLab(backend == .vrf ? "crowpev" : "crowpe", filtering: .endpointIndependent), backend: backend) { lab in
            let report = try CheckRun.run(lab: lab, timeoutMilliseconds: probeTimeout)
            #expect(report.passed, "\(failures(report))")
            let rows = inboundRows(report)
            let external = lab.uplinkHost!.loopbackAddresses.first { $0.family == .v4 }!.address
            #expect(rows.count == lab.router.subscribers.count)
            for r in rows {
                #expect(r.passed && r.observedSource == external, "\(r.name): \(r.detail)")
            }
            // Unheld ports stay closed under endpoint-independent filtering too.
            let unheld = unheldRows(report)
            #expect(unheld.count == 2 * lab.router.subscribers.count)
            for r in unheld { #expect(r.passed && r.detail.hasPrefix("dropped: counted by"), "\(r.name): \(r.detail)") }
            try deleteRule(lab, chain: "dstnat", comment: Ruleset.Comment.endpointIndependent)
            let after = inboundRows(try CheckRun.run(lab: lab, timeoutMilliseconds: probeTimeout))
            #expect(after.count == rows.count)
            for r in after { #expect(!r.passed, "\(r.name) passes without the DNAT: \(r.detail)") }
        }
    }

    /// The seed's public address is the router's own: the packet is delivered to the router
    /// (counted in its input chain; its UDP stack answers port unreachable), and the row says so,
    /// run after run (ICMP errors are rate-limited per peer, the counter is not). Without the
    /// counter the rows cannot prove it and fail. With endpoint-independent filtering on the
    /// same lab the mapping rows reach the subscriber instead.
    @Test func theSeedsInboundRowsEndInTheRouterItself() throws { try seedRowsEndInTheRouter(.netns) }

    @Test(.enabled(if: kernelHasVRF, "this kernel has no VRF driver (the VM run covers it)"))
    func theSeedsInboundRowsEndInTheRouterItselfOnVRFs() throws { try seedRowsEndInTheRouter(.vrf) }

    func seedRowsEndInTheRouter(_ backend: Backend) throws {
        try withLab(testLabName(backend == .vrf ? "crowsv" : "crows"), backend: backend) { lab in
            for run in 0..<3 {
                let report = try CheckRun.run(lab: lab, timeoutMilliseconds: 3000)
                #expect(report.passed, "\(failures(report))")
                let rows = inboundRows(report) + unheldRows(report)
                #expect(rows.count == 3 * lab.router.subscribers.count)
                for r in rows {
                    #expect(r.passed && r.detail.hasPrefix("ended in \(lab.router.name): counted by"), "run \(run): \(r.name): \(r.detail)")
                    // Concluded on the counter, not on the timeout.
                    #expect(r.milliseconds < 1500, "run \(run): \(r.name): \(r.milliseconds) ms")
                }
            }
            try deleteRule(lab, chain: "input", comment: Ruleset.Comment.localUDP)
            let after = try CheckRun.run(lab: lab, timeoutMilliseconds: probeTimeout)
            let rows = inboundRows(after) + unheldRows(after)
            #expect(rows.count == 3 * lab.router.subscribers.count)
            for r in rows { #expect(!r.passed, "\(r.name) passes without its counter: \(r.detail)") }
        }
        try withLab(testLabName(backend == .vrf ? "crowsev" : "crowse"), backend: backend, adjust: { $0.router.nat.filtering = .endpointIndependent }) { lab in
            let report = try CheckRun.run(lab: lab, timeoutMilliseconds: probeTimeout)
            #expect(report.passed, "\(failures(report))")
            #expect(inboundRows(report).allSatisfy { $0.passed && $0.probe.expect != .blocked })
        }
    }
}
