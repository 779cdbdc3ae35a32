import Foundation
import Testing
import Netlink
@testable import CGNat

/// The port-block maps of a lab with a /16 of inside space per domain: above
/// `Ruleset.inlineElementLimit`, so `up` loads their elements by netlink after the ruleset.
func wideLab(_ name: String) -> Lab {
    var lab = Lab.seed(name: name)
    let pool = IPPrefix("198.51.100.0/28")!
    lab.router.nat.pool = [pool]
    lab.router.nat.mapping = .portBlocks(.init(insideRange: IPPrefix("100.64.0.0/16")!))
    // The uplink host routes the pool to the router, as labs/cgn-pool.yaml does.
    if let u = lab.hosts.firstIndex(where: { $0.attachment == .uplink }),
       let router = lab.router.uplink.addresses.first(where: { $0.family == .v4 })?.address {
        lab.hosts[u].routes.append(HostRoute(pool, via: router))
    }
    return lab
}

/// `nft -j list map` of each map, in the calling thread's namespace.
func listedMaps(_ names: [String]) throws -> [String] {
    let json = try Nftables(output: .json)
    return try names.map { try json.run("list map inet \(Ruleset.tableName) \($0)") }
}

@Suite(.serialized, .enabled(if: isRoot, "needs root (namespaces, nftables)"))
struct SetElementTests {
    /// Text (`nft -f` with every element) and netlink (ruleset text, then the batch) leave the
    /// same maps in the kernel, element for element, each in a scratch namespace of its own.
    @Test func netlinkGivesTheSameMapsAsText() throws {
        let ruleset = Plan.netns(wideLab("cgt-sets-same")).ruleset
        let maps = ruleset.elementsByNetlink
        #expect(maps.map(\.name) == [Ruleset.portMap, Ruleset.addressMap])
        let names = maps.map(\.name)
        let text = try NetNamespace.runInScratch { () -> [String] in
            try Nftables().run(ruleset.fullText)
            return try listedMaps(names)
        }
        let netlink = try NetNamespace.runInScratch { () -> [String] in
            try Nftables().run(ruleset.text)
            #expect(try listedMaps(names).allSatisfy { !$0.contains("\"elem\"") }, "declared empty")
            try SetElementLoader.load(table: Ruleset.tableName, maps: maps)
            return try listedMaps(names)
        }
        #expect(netlink == text)
        // Each element listed: one `[{"concat": ...}, ...]` pair per element.
        for (i, m) in maps.enumerated() {
            #expect(netlink[i].components(separatedBy: "[{\"concat\": [").count - 1 == m.elements.count, "\(m.name)")
        }
    }

    /// The kernel's refusal comes back naming the request, what it pointed at, and its errno;
    /// nothing of the batch stays (one transaction).
    @Test func kernelErrorNamesTheSetAndNothingStays() throws {
        let plan = Plan.netns(wideLab("cgt-sets-err"))
        var maps = plan.ruleset.elementsByNetlink
        maps[1].name = "nosuch"
        let names = [maps[0].name]
        let (error, after) = try NetNamespace.runInScratch { () -> (NetlinkError?, [String]) in
            try Nftables().run(plan.ruleset.text)
            do {
                try SetElementLoader.load(table: Ruleset.tableName, maps: maps, step: "test load")
                return (nil, [])
            } catch let e as NetlinkError {
                return (e, try listedMaps(names))
            }
        }
        let e = try #require(error, "loading into a set that does not exist must fail")
        #expect(e.errno == ENOENT)
        #expect(e.step.hasPrefix("test load: add elements 1-"), "\(e)")
        #expect(e.step.contains("to set nosuch of table \(Ruleset.tableName)"), "\(e)")
        #expect(e.step.contains("the kernel points at the set name \"nosuch\""), "\(e)")
        #expect(after.allSatisfy { !$0.contains("\"elem\"") }, "the first map's elements were in the same transaction")
    }

    /// The same refusal inside `up`'s applier: the error names the plan step and the kernel's
    /// answer, and the lab's record takes every namespace away.
    @Test func failingElementStepRollsBack() throws {
        let lab = wideLab(testLabName("sets-up"))
        var plan = Plan.netns(lab)
        let i = try #require(plan.steps.firstIndex { if case .loadSetElements = $0 { return true } else { return false } })
        guard case .loadSetElements(let ns, let table, var maps) = plan.steps[i] else { return }
        maps[0].name = "nosuch"
        plan.steps[i] = .loadSetElements(namespace: ns, table: table, maps: maps)
        try LabRecord.storeLab(lab)
        let record = try LabRecord.begin(lab: lab.name, backend: .netns)
        defer { _ = try? Teardown.down(lab: lab.name) }
        do {
            try Applier(plan: plan).apply(record: record)
            Issue.record("the element step should have failed")
        } catch let e as ApplyError {
            #expect(e.index == i)
            #expect("\(e)".hasPrefix("step \(i + 1), \(plan.steps[i].summary)"), "\(e)")
            #expect("\(e)".contains("No such file or directory"), "\(e)")
        }
        _ = try Teardown.down(lab: lab.name)
        #expect(namespaces(withPrefix: lab.name).isEmpty)
        // And through `up` itself: a failure at the element step rolls the lab back.
        #expect(throws: LabControl.RolledBack.self) { _ = try LabControl.up(lab, backend: .netns, failBeforeStep: i) }
        #expect(namespaces(withPrefix: lab.name).isEmpty)
        #expect(LabRecord.load(lab: lab.name) == nil)
    }

    /// A whole lab with a /16 per domain comes up with its maps loaded by netlink, the same as
    /// the text; with the maps empty (the moment between the two transactions) the NAT fails
    /// closed: nothing leaves, "CGN no port block" counts it.
    @Test func wideLabUpLoadsMapsAndFailsClosedWithoutThem() throws {
        try withLab(wideLab(testLabName("sets-wide"))) { lab in
            let plan = Plan.netns(lab)
            let names = plan.ruleset.elementsByNetlink.map(\.name)
            #expect(names.count == 2)
            let router = try NetNamespace.open(lab.namespaceName(lab.router.name))
            defer { close(router) }
            let loaded = try NetNamespace.run(in: router) { try listedMaps(names) }
            let text = try NetNamespace.runInScratch { () -> [String] in
                try Nftables().run(plan.ruleset.fullText)
                return try listedMaps(names)
            }
            #expect(loaded == text)

            let uplink = try #require(lab.uplinkHost)
            let target = try #require(uplink.loopbackAddresses.first?.address ?? uplink.addresses.first?.address)
            let sub = try #require(lab.hosts.first { if case .domain = $0.attachment { return true } else { return false } })
            func ping() throws -> Int32 {
                try runCommand(["ip", "netns", "exec", lab.namespaceName(sub.name), "ping", "-c", "1", "-W", "1", "\(target)"]).status
            }
            func noBlockDrops() throws -> Int {
                let chain = try NetNamespace.run(in: router) { try Nftables().run("list chain inet \(Ruleset.tableName) srcnat") }
                let line = try #require(chain.split(separator: "\n").first { $0.contains("\"CGN no port block\"") })
                let packets = line.components(separatedBy: "counter packets ").last?.split(separator: " ").first
                return Int(packets ?? "") ?? -1
            }
            #expect(try ping() == 0, "translated through the loaded maps")
            #expect(try noBlockDrops() == 0)
            try NetNamespace.run(in: router) {
                for n in names { try Nftables().run("flush map inet \(Ruleset.tableName) \(n)") }
            }
            #expect(try ping() != 0, "with empty maps nothing may leave")
            #expect(try noBlockDrops() >= 1)
            try NetNamespace.run(in: router) { try SetElementLoader.load(table: Ruleset.tableName, maps: plan.ruleset.elementsByNetlink) }
            #expect(try ping() == 0, "reloaded by netlink, translated again")
        }
    }
}
