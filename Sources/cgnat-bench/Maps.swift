import CGNat
import Glibc
import Netlink

// `cgnat-bench maps`: the port-block maps loaded as nft text (libnftables, as `up` loads a
// ruleset) against the netlink batch (NEWSETELEM), for 1k, 10k, 65k and 131k subscribers (131k:
// a /16 of inside space for each of two domains). Each load runs in a scratch namespace of its
// own (no name, gone with its thread); medians of alternating runs.

/// The ruleset of two domains with a /16 each, and its two maps cut to the first `n` subscribers.
func mapsBenchRuleset() -> Ruleset {
    var lab = Lab.seed(name: "cgb-maps")
    lab.router.nat.pool = [IPPrefix("198.51.100.0/28")!]
    lab.router.nat.mapping = .portBlocks(.init(insideRange: IPPrefix("100.64.0.0/16")!))
    return Plan.netns(lab).ruleset
}

func runMaps(runs: Int) {
    let t0 = monotonicMilliseconds()
    let ruleset = mapsBenchRuleset()
    let full = ruleset.elementsByNetlink
    guard full.count == 2, full.allSatisfy({ $0.elements.count == 131_072 }) else {
        fputs("cgnat-bench: the /16 lab's maps are not 2 x 131072 elements (\(full.map(\.elements.count)))\n", stderr)
        exit(1)
    }
    print("cgnat-bench maps: ruleset and typed maps of 2 x /16 planned in \(fmt(monotonicMilliseconds() - t0)) ms; median of \(runs) alternating runs, each in a fresh scratch namespace")
    print("  subscribers | text: make   nft -f  | netlink: encode  send+ack | ruleset only | text/netlink (elements) | total via netlink")
    var slowest: (n: Int, total: Double) = (0, 0)
    for n in [1000, 10_000, 65_536, 131_072] {
        let maps = full.map { m -> NftMap in var c = m; c.elements = Array(m.elements.prefix(n)); return c }
        var make: [Double] = [], textLoad: [Double] = [], encode: [Double] = [], send: [Double] = [], base: [Double] = []
        for i in 0..<(runs * 2) {
            do {
                if i % 2 == 0 {
                    // Text: the maps' elements as `add element` commands after the ruleset, one run = one transaction.
                    let m0 = monotonicMilliseconds()
                    let text = maps.map { $0.addElementCommands(table: Ruleset.tableName) }.joined()
                    make.append(monotonicMilliseconds() - m0)
                    let t = try NetNamespace.runInScratch { () -> Double in
                        let nft = try Nftables()
                        try nft.run(ruleset.text)
                        let s = monotonicMilliseconds()
                        try nft.run(text)
                        return monotonicMilliseconds() - s
                    }
                    textLoad.append(t)
                } else {
                    let (b, e, s) = try NetNamespace.runInScratch { () -> (Double, Double, Double) in
                        let b0 = monotonicMilliseconds()
                        try Nftables().run(ruleset.text)
                        let b1 = monotonicMilliseconds()
                        let socket = try NftablesSocket()
                        defer { socket.close() }
                        var batch = socket.makeBatch()
                        try SetElementLoader.batch(table: Ruleset.tableName, maps: maps, into: &batch)
                        let e1 = monotonicMilliseconds()
                        try socket.commit(batch, step: "bench")
                        return (b1 - b0, e1 - b1, monotonicMilliseconds() - e1)
                    }
                    base.append(b); encode.append(e); send.append(s)
                }
            } catch {
                fputs("cgnat-bench: maps of \(n): \(error)\n", stderr)
                exit(1)
            }
        }
        let textMs = median(make) + median(textLoad), netMs = median(encode) + median(send)
        let total = median(base) + netMs
        if n == 131_072 { slowest = (n, total) }
        func col(_ v: Double, _ w: Int) -> String { let s = fmt(v); return String(repeating: " ", count: max(0, w - s.count)) + s }
        print("  \(String(repeating: " ", count: max(0, 11 - String(n).count)))\(n) | \(col(median(make), 10)) \(col(median(textLoad), 8)) | \(col(median(encode), 15)) \(col(median(send), 9)) | \(col(median(base), 12)) | \(col(textMs / netMs, 22))x | \(col(total, 14)) ms")
    }
    print("  (ms; 2 maps of n elements each. text = `add element` lines generated and run through libnftables;")
    print("   netlink = typed elements encoded to one NEWSETELEM batch and committed, acks read; ruleset only =")
    print("   the ruleset text with the maps declared empty, which the netlink path loads first)")
    print("  a /16 per domain (2 domains, \(slowest.n) subscribers): \(fmt(slowest.total)) ms via netlink, ruleset included   (target: < 1000 ms) \(slowest.total < 1000 ? "met" : "NOT met")")
}
