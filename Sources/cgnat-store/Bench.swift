import CGNatCore
import CGNatStore
import Glibc

/// `cgnat-store bench`: fills a store with synthetic sessions (as a CGN with deterministic port
/// blocks would log them over a week), then prints the file size, bytes per session, the latency
/// of the `whois --at` query, and the logging volume of session logging against block logging.
enum StoreBench {
    /// Synthetic network: 16 public addresses (TEST-NET-3), blocks of 1008 ports from 1024, so
    /// 64 blocks per address, 1024 subscribers in all, each with one inside address.
    static let publicBase: UInt32 = 0xCB00_7100   // 203.0.113.0
    static let insideBase: UInt32 = 0x6440_0000   // 100.64.0.0 (RFC 6598 shared space)
    static let addresses = 16, blockSize = 1008, firstPort = 1024, blocksPerAddress = 64
    static let week: Int64 = 7 * 86_400_000

    static func dotted(_ a: UInt32) -> String { "\(a >> 24).\(a >> 16 & 255).\(a >> 8 & 255).\(a & 255)" }

    struct Flow {
        var subscriber: Int, outside: String, outsidePort: Int, inside: String, insidePort: Int, proto: Int, start: Int64, end: Int64
    }

    /// Flow i of n: starts spread evenly over the week (a log is written in time order), random
    /// subscriber, a random port of its block, 1 s to 10 min long.
    static func flow(_ i: Int, of n: Int, t0: Int64, rng: inout SystemRandomNumberGenerator) -> Flow {
        let sub = Int.random(in: 0..<(addresses * blocksPerAddress), using: &rng)
        let addr = sub % addresses, block = sub / addresses
        let port = firstPort + block * blockSize + Int.random(in: 0..<blockSize, using: &rng)
        let start = t0 + Int64(i) * week / Int64(n)
        return Flow(subscriber: sub, outside: dotted(publicBase + UInt32(addr)), outsidePort: port, inside: dotted(insideBase + UInt32(sub + 1)),
                    insidePort: Int.random(in: 32768..<61000, using: &rng), proto: Int.random(in: 0..<4, using: &rng) == 0 ? 6 : 17,
                    start: start, end: start + Int64.random(in: 1000...600_000, using: &rng))
    }

    /// The two lines `cgnat events --json` writes for a flow (NEW and DESTROY): what the store
    /// reads, and what a text mapping log would keep.
    static func lines(_ f: Flow, id: Int) -> [String] {
        func obj(_ event: String, _ time: Int64, stop: Bool) -> String {
            JSON.object([
                ("event", .string(event)), ("time", .string(Timestamp.format(milliseconds: time))),
                ("domain", .string("sub\(f.subscriber)")), ("domain_id", .int(Int64(f.subscriber + 1))), ("zone", .int(Int64(f.subscriber + 1))),
                ("mark", .int(Int64(f.subscriber + 1))), ("protocol", .string(f.proto == 6 ? "tcp" : "udp")),
                ("inside", .string(f.inside)), ("inside_port", .int(Int64(f.insidePort))),
                ("outside", .string(f.outside)), ("outside_port", .int(Int64(f.outsidePort))),
                ("destination", .string("198.18.0.1")), ("destination_port", .int(443)), ("nat", .bool(true)),
                ("start", .string(Timestamp.format(milliseconds: f.start))),
                ("stop", stop ? .string(Timestamp.format(milliseconds: f.end)) : .null), ("id", .int(Int64(id))),
            ]).serialized()
        }
        return [obj("new", f.start, stop: false), obj("destroy", f.end, stop: true)]
    }

    static func fileSize(_ path: String) -> Int64 {
        var st = stat()
        return stat(path, &st) == 0 ? Int64(st.st_size) : 0
    }

    static func remove(_ path: String) { for s in ["", "-wal", "-shm"] { unlink(path + s) } }

    static func run(path: String, sessions n: Int, queries: Int) throws {
        remove(path)
        var rng = SystemRandomNumberGenerator()
        let store = try NATLogStore(path: path)
        let t0: Int64 = 1_796_083_200_000   // 2026-12-01T00:00:00Z
        try store.append(lines: [
            "{\"event\":\"run\",\"time\":\"\(Timestamp.format(milliseconds: t0))\",\"pid\":1}",
            "{\"event\":\"policy\",\"time\":\"\(Timestamp.format(milliseconds: t0))\",\"lab\":\"bench\",\"policy\":\"{}\"}",
        ])
        // The first flows go through the real path: JSON lines, pairing, batched transactions.
        let viaLines = min(n, 200_000)
        var lineBytes = 0, lineCount = 0
        var batch: [String] = []
        var flows: [Flow] = []
        let fillStart = monotonicMs()
        for i in 0..<viaLines {
            let f = flow(i, of: n, t0: t0, rng: &rng)
            flows.append(f)
            for l in lines(f, id: i) { lineBytes += l.utf8.count + 1; lineCount += 1; batch.append(l) }
            if batch.count >= 20_000 { try store.append(lines: batch); batch.removeAll(keepingCapacity: true) }
        }
        try store.append(lines: batch)
        let lineSeconds = Double(monotonicMs() - fillStart) / 1000
        // The rest straight into the table (the same rows the line path writes), in batches of 50,000.
        let bulkStart = monotonicMs()
        var i = viaLines
        while i < n {
            let upto = min(n, i + 50_000)
            try store.write { db in
                let st = try db.cachedStatement(sql: """
                    INSERT INTO session (domain_id, domain, proto, inside, inside_port, outside, outside_port, destination, destination_port,
                                         start_ms, end_ms, end_reason, ct_id, run_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'destroy', ?, 1)
                    """)
                for k in i..<upto {
                    let f = flow(k, of: n, t0: t0, rng: &rng)
                    if flows.count < 1_000_000 { flows.append(f) }
                    try st.execute(arguments: [f.subscriber + 1, "sub\(f.subscriber)", f.proto, f.inside, f.insidePort, f.outside, f.outsidePort,
                                               "198.18.0.1", 443, f.start, f.end, k])
                }
            }
            i = upto
        }
        let bulkSeconds = Double(monotonicMs() - bulkStart) / 1000
        try store.append(lines: ["{\"event\":\"close\",\"time\":\"\(Timestamp.format(milliseconds: t0 + week + 700_000))\",\"reason\":\"logger stopped\"}"])
        try store.checkpoint()
        let size = fileSize(path)
        let counted = try store.stats().sessions
        print("store: \(counted) sessions in \(path): \(size) bytes (\(String(format1(Double(size) / 1_048_576))) MiB), \(String(format1(Double(size) / Double(max(counted, 1))))) bytes per session")
        print("fill: \(viaLines) flows as \(lineCount) JSON lines in \(format1(lineSeconds)) s (\(Int(Double(lineCount) / max(lineSeconds, 0.001))) lines/s); \(n - viaLines) more rows in \(format1(bulkSeconds)) s")

        // Queries: half at a moment inside a known flow (must find it), half at random ports and times.
        let reader = try NATLogStore(path: path, readOnly: true)
        var lat: [Double] = []
        var found = 0, hits = 0, expectedHits = 0
        for q in 0..<queries {
            let (outside, port, at): (String, Int, Int64)
            let probe = q % 2 == 0
            var want: Flow?
            if probe {
                let f = flows[Int.random(in: 0..<flows.count, using: &rng)]
                want = f
                (outside, port, at) = (f.outside, f.outsidePort, f.start + (f.end - f.start) / 2)
                expectedHits += 1
            } else {
                (outside, port, at) = (dotted(publicBase + UInt32.random(in: 0..<UInt32(addresses), using: &rng)),
                                       Int.random(in: firstPort..<65536, using: &rng), t0 + Int64.random(in: 0..<week, using: &rng))
            }
            let a0 = monotonicNs()
            let a = try reader.query(outside: outside, port: Int64(port), at: at, protos: [17, 6, 1])
            lat.append(Double(monotonicNs() - a0) / 1e6)
            if !a.sessions.isEmpty { found += 1 }
            if let want, a.sessions.contains(where: { $0.inside == want.inside && $0.startMs == want.start }) { hits += 1 }
        }
        lat.sort()
        let median = lat[lat.count / 2], p99 = lat[min(lat.count - 1, lat.count * 99 / 100)]
        print("whois --at: \(queries) queries, median \(format3(median)) ms, p99 \(format3(p99)) ms, max \(format3(lat.last!)) ms (target < 10 ms: \(p99 < 10 ? "met" : "NOT met"), p99 \(format1(10 / p99))x under)")
        print("whois --at: \(hits)/\(expectedHits) queries inside a known flow found it; \(found) of \(queries) answers had a session")

        // Logging volume per 1000 flows. Session logging: two records per flow (NEW, DESTROY), as
        // JSON lines and as store rows. Block logging (deterministic port blocks): one record per
        // subscriber's block for the whole period, however many flows it carries.
        let subscribers = addresses * blocksPerAddress
        let blockPath = path + ".blocks"
        remove(blockPath)
        let blockStore = try NATLogStore(path: blockPath)
        var blockLines: [String] = []
        for s in 0..<subscribers {
            let first = firstPort + (s / addresses) * blockSize
            blockLines.append(JSON.object([
                ("event", .string("block")), ("time", .string(Timestamp.format(milliseconds: t0))), ("domain", .string("sub\(s)")),
                ("domain_id", .int(Int64(s + 1))), ("inside", .string(dotted(insideBase + UInt32(s + 1)))),
                ("outside", .string(dotted(publicBase + UInt32(s % addresses)))), ("first_port", .int(Int64(first))),
                ("last_port", .int(Int64(first + blockSize - 1))),
            ]).serialized())
        }
        let emptySize: Int64 = {
            let p = path + ".empty"; remove(p)
            _ = try? NATLogStore(path: p).checkpoint()
            defer { remove(p) }
            return fileSize(p)
        }()
        try blockStore.append(lines: blockLines)
        try blockStore.checkpoint()
        let blockStoreBytes = Double(fileSize(blockPath) - emptySize) / Double(subscribers)
        remove(blockPath)
        let blockLineBytes = Double(blockLines.reduce(0) { $0 + $1.utf8.count + 1 }) / Double(subscribers)
        let perFlowLines = Double(lineBytes) / Double(viaLines)
        let perSessionStore = Double(size - emptySize) / Double(counted)
        let blockRecordsPer1000 = 1000 * Double(subscribers) / Double(n)
        print("volume per 1000 flows (\(n / subscribers) flows per subscriber over the week):")
        print("  session logging: \(2000) records, \(Int(perFlowLines * 1000)) bytes as JSON lines, \(Int(perSessionStore * 1000)) bytes in the store (1000 rows)")
        print("  block logging:   \(format3(blockRecordsPer1000)) records, \(Int(blockLineBytes * blockRecordsPer1000)) bytes as JSON lines, \(Int(blockStoreBytes * blockRecordsPer1000)) bytes in the store")
        print("  ratio: session logging writes \(Int((perFlowLines * 1000) / max(blockLineBytes * blockRecordsPer1000, 1)))x the bytes of block logging")
    }

    static func monotonicMs() -> Int64 { monotonicNs() / 1_000_000 }
    static func monotonicNs() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_MONOTONIC, &ts)
        return Int64(ts.tv_sec) * 1_000_000_000 + Int64(ts.tv_nsec)
    }
    static func format1(_ v: Double) -> String { fmt(v, 1) }
    static func format3(_ v: Double) -> String { fmt(v, 3) }
    static func fmt(_ v: Double, _ digits: Int) -> String {
        var p = 1.0
        for _ in 0..<digits { p *= 10 }
        let r = (v * p).rounded() / p
        let whole = Int(r)
        var frac = String(Int(((r - Double(whole)) * p).rounded()))
        while frac.count < digits { frac = "0" + frac }
        return "\(whole).\(frac)"
    }
}
