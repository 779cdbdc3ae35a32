import Foundation
import Testing
import Netlink
@testable import CGNat

/// The typed maps of the ruleset: their text (what nft -f reads), their wire layout (what the
/// netlink loader sends, checked against what nft itself sent: Tests/Golden/nft/README.md), and
/// where the plan puts their elements.
@Suite struct NftMapTests {
    static let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Golden/nft")

    static func ip(_ s: String) -> IPAddress { IPAddress(s)! }

    static func portMap(_ elements: [NftMap.Element]) -> NftMap {
        NftMap(name: Ruleset.portMap, key: .init([.mark, .ipv4Address]), data: .init([.ipv4Address, .inetService], interval: true),
               elements: elements)
    }

    /// Every message's nlmsg_seq zeroed (nft gives one command's requests one number; ours differ).
    static func sequencesCleared(_ bytes: [UInt8]) -> [UInt8] {
        var b = bytes, i = 0
        while i + 16 <= b.count {
            let len = Int(b[i]) | Int(b[i + 1]) << 8 | Int(b[i + 2]) << 16 | Int(b[i + 3]) << 24
            guard len >= 16 else { break }
            for k in 8..<12 { b[i + k] = 0 }
            i += (len + 3) & ~3
        }
        return b
    }

    static func bytes(hex: String) -> [UInt8] {
        let d = Array(hex.filter { !$0.isWhitespace }.utf8)
        return stride(from: 0, to: d.count, by: 2).map { UInt8(String(decoding: d[$0..<($0 + 2)], as: UTF8.self), radix: 16)! }
    }

    /// 1,500 elements of the port map, as nft split them into two requests (1489 + 11): the whole
    /// chain, typed values -> wire layout -> batch, byte for byte.
    @Test func splitBatchMatchesNft() throws {
        let elements = (0..<1500).map { i -> NftMap.Element in
            let low = UInt16(1024 + 16 * (i % 64))
            return .init(key: [.mark(UInt32(1 + i % 2)), .ipv4(IPAddress(family: .v4, bytes: [100, 64, UInt8(i / 256), UInt8(i % 256)]))],
                         data: [.ipv4(IPAddress(family: .v4, bytes: [198, 51, 100, UInt8(1 + i / 64)])), .range(.service(low), .service(low + 15))])
        }
        let map = Self.portMap(elements)
        #expect(map.problems().isEmpty)
        var batch = NftBatch(sequence: 0, ack: false)
        // The loader's path: each element written straight into the batch.
        let lengths = map.wireLengths
        batch.addSetElements(family: NFT.NFPROTO_INET, table: Ruleset.tableName, set: map.name, setID: 1, count: map.elements.count,
                             keyLength: lengths.key, keyEndLength: lengths.keyEnd, dataLength: lengths.data) { i, part, out in
            map.appendWire(map.elements[i], part == .key ? .key : part == .keyEnd ? .keyEnd : .data, to: &out)
        }
        batch.end()
        // The element-by-element path (NftSetElement) gives the same bytes.
        var slow = NftBatch(sequence: 0, ack: false)
        slow.addSetElements(family: NFT.NFPROTO_INET, table: Ruleset.tableName, set: map.name, setID: 1, elements: map.elements.map {
            let w = map.wire($0)
            return NftSetElement(key: w.key, keyEnd: w.keyEnd, data: w.data)
        })
        slow.end()
        #expect(slow.bytes == batch.bytes)
        // And the loader's own batch (no set id) differs from it only by that attribute.
        var loader = NftBatch(sequence: 0, ack: false)
        try SetElementLoader.batch(table: Ruleset.tableName, maps: [map], into: &loader)
        loader.end()
        #expect(loader.bytes.count == batch.bytes.count - 8 * batch.requests.count)
        let text = try String(contentsOf: Self.golden.appendingPathComponent("newsetelem-split-1500.hex"), encoding: .utf8)
        let nft = Self.bytes(hex: text)
        #expect(batch.requests.map(\.elements) == [0..<1489, 1489..<1500])
        #expect(batch.bytes.count == nft.count)
        var ours = Self.sequencesCleared(batch.bytes), theirs = Self.sequencesCleared(nft)
        // nft leaves the padding after the table name of its second request as it found it in
        // the reused buffer (libmnl does not clear padding): those 2 bytes are compared zeroed.
        let pad = batch.requests[1].offset + 20 + 4 + Ruleset.tableName.utf8.count + 1
        for i in pad..<(pad + 2) { ours[i] = 0; theirs[i] = 0 }
        let firstDifference = zip(ours, theirs).enumerated().first { $0.element.0 != $0.element.1 }?.offset
        #expect(ours == theirs, "first difference at byte \(firstDifference.map(String.init) ?? "none"): ours \(ours[(firstDifference ?? 0)...].prefix(16).map { $0 }), nft's \(theirs[(firstDifference ?? 0)...].prefix(16).map { $0 })")
    }

    /// Mark in host order, address and port in network order, each padded to 4 in a
    /// concatenation; an interval key has its high end apart (KEY_END), interval data follows its
    /// low concatenation with the high one.
    @Test func wireLayoutOfComponents() {
        let ports = Self.portMap([.init(key: [.mark(1), .ipv4(Self.ip("100.64.0.0"))],
                                        data: [.ipv4(Self.ip("198.51.100.1")), .range(.service(1024), .service(2047))])])
        let w = ports.wire(ports.elements[0])
        #expect(w.key == [1, 0, 0, 0, 100, 64, 0, 0])
        #expect(w.keyEnd == nil)
        #expect(w.data == [198, 51, 100, 1, 0x04, 0x00, 0, 0, 198, 51, 100, 1, 0x07, 0xff, 0, 0])
        let marks = NftMap(name: "public_marks", key: .init([.ipv4Address, .inetService], interval: true), data: .init([.mark]),
                           elements: [.init(key: [.ipv4(Self.ip("198.51.100.2")), .range(.service(2048), .service(3071))], data: [.mark(2)])])
        let m = marks.wire(marks.elements[0])
        #expect(m.key == [198, 51, 100, 2, 0x08, 0x00, 0, 0])
        #expect(m.keyEnd == [198, 51, 100, 2, 0x0b, 0xff, 0, 0])
        #expect(m.data == [2, 0, 0, 0])
        #expect(marks.declaration(withElements: true) == """
            \tmap public_marks {
            \t\ttype ipv4_addr . inet_service : mark
            \t\tflags interval
            \t\telements = { 198.51.100.2 . 2048-3071 : 2 }
            \t}
            """)
    }

    @Test func problemsNameTheElement() {
        let bad = Self.portMap([.init(key: [.mark(1), .service(80)], data: [.ipv4(Self.ip("198.51.100.1")), .service(1)])])
        #expect(bad.problems() == ["map subscriber_ports, element 1: 80 is no ipv4_addr"])
        let range = NftMap(name: "m", key: .init([.mark, .ipv4Address]), data: .init([.ipv4Address]),
                           elements: [.init(key: [.mark(1), .range(.ipv4(Self.ip("1.0.0.0")), .ipv4(Self.ip("1.0.0.9")))], data: [.ipv4(Self.ip("1.1.1.1"))])])
        #expect(range.problems() == ["map m, element 1: a range in a key that is no interval"])
        #expect(!NftMap(name: "s", key: .init([.ipv4Address], interval: true), data: nil).problems().isEmpty)
    }

    /// A /16 per domain: the ruleset declares both maps empty, the plan loads their elements by
    /// netlink right after the ruleset, and `render` replays them as `add element` commands.
    @Test func largeMapsGoByNetlink() throws {
        var lab = Lab.seed(name: "cgt-sets-plan")
        lab.router.nat.pool = [IPPrefix("198.51.100.0/28")!]
        lab.router.nat.mapping = .portBlocks(.init(insideRange: IPPrefix("100.64.0.0/16")!))
        let policy = try #require(lab.portBlockPolicy)
        #expect(policy.problems().isEmpty)
        let plan = Plan.netns(lab)
        let maps = plan.ruleset.elementsByNetlink
        #expect(maps.map(\.name) == [Ruleset.portMap, Ruleset.addressMap])
        #expect(maps.allSatisfy { $0.elements.count == lab.router.subscribers.count * policy.insideCount })
        // None of their elements inline (the small zone maps of the inbound side keep theirs).
        #expect(!plan.ruleset.text.contains(" . 100.64.0.0 : "))
        #expect(plan.ruleset.text.contains("\tmap \(Ruleset.portMap) {\n\t\ttype mark . ipv4_addr : interval ipv4_addr . inet_service\n\t\tsize \(maps[0].elements.count)\n\t}"))
        let load = try #require(plan.steps.firstIndex { if case .loadRuleset = $0 { return true } else { return false } })
        guard case .loadSetElements(let ns, let table, let stepMaps) = plan.steps[load + 1] else {
            Issue.record("no element step after the ruleset: \(plan.steps[load + 1])"); return
        }
        #expect(ns == plan.steps[load].namespace && table == Ruleset.tableName && stepMaps == maps)
        // Each element once in the replayable script, in nft's syntax.
        let d = lab.router.subscribers.map(\.id).min()!
        let first = policy.allocation(domainID: d, inside: policy.insideRange.network.address)!
        let script = ShellRenderer.render(plan)
        #expect(script.contains("nft -f - <<'CGNAT_ELEMENTS'\nadd element inet \(Ruleset.tableName) \(Ruleset.portMap) { \(d) . \(policy.insideRange.network.address) : \(first.publicAddress) . \(first.ports.lowerBound)-\(first.ports.upperBound), "))
        #expect(plan.ruleset.fullText.components(separatedBy: "add element inet").count - 1 == maps.reduce(0) { $0 + ($1.elements.count + 255) / 256 })
    }

    /// On VRFs the same maps go to the router namespace, right after its ruleset.
    @Test func vrfPlanLoadsTheSameElements() throws {
        var lab = Lab.seed(name: "cgt-sets-vrf")
        lab.router.nat.pool = [IPPrefix("198.51.100.0/28")!]
        lab.router.nat.mapping = .portBlocks(.init(insideRange: IPPrefix("100.64.0.0/20")!))
        let plan = Plan.vrf(lab)
        let load = try #require(plan.steps.firstIndex { if case .loadRuleset = $0 { return true } else { return false } })
        guard case .loadSetElements(let ns, _, let maps) = plan.steps[load + 1] else {
            Issue.record("no element step after the ruleset"); return
        }
        #expect(ns == plan.steps[load].namespace)
        #expect(maps == Plan.netns(lab).ruleset.elementsByNetlink)
    }

    /// The seed's 64 subscribers stay in the text: one transaction.
    @Test func smallMapsStayInTheText() {
        let plan = Plan.netns(Lab.seed())
        #expect(plan.ruleset.elementsByNetlink.isEmpty)
        #expect(plan.ruleset.text.contains("elements = { "))
        #expect(!plan.steps.contains { if case .loadSetElements = $0 { return true } else { return false } })
        #expect(plan.ruleset.fullText == plan.ruleset.text)
    }
}
