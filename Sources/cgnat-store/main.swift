import CGNatCore
import CGNatStore
import Glibc

/// The NAT log store helper (it links GRDB and Foundation, which `cgnat` itself does not):
///   cgnat-store append --db FILE [--retention DAYS]     lines on stdin, batched transactions
///   cgnat-store query --db FILE --outside ADDR --port N --at MS [--proto N[,N...]]   JSON answer
///   cgnat-store bench --db FILE [--sessions N] [--queries N]   fill and measure (release build)
func usage() -> Never {
    fputs("""
        usage: cgnat-store append --db FILE [--retention DAYS]
               cgnat-store query --db FILE --outside ADDRESS --port PORT --at MILLISECONDS [--proto 17,6,1]
               cgnat-store bench --db FILE [--sessions N] [--queries N]

        """, stderr)
    exit(2)
}

func die(_ message: String) -> Never {
    fputs("cgnat-store: \(message)\n", stderr)
    exit(1)
}

var args = Array(CommandLine.arguments.dropFirst())
guard let command = args.first else { usage() }
args.removeFirst()
var options: [String: String] = [:]
while !args.isEmpty {
    let k = args.removeFirst()
    guard k.hasPrefix("--"), !args.isEmpty else { die("option '\(k)' needs a value (see cgnat-store with no arguments)") }
    options[String(k.dropFirst(2))] = args.removeFirst()
}
guard let path = options["db"] else { die("--db FILE is required: the store's SQLite file") }

func nowMs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_REALTIME, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

func monotonicMs() -> Int64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Int64(ts.tv_sec) * 1000 + Int64(ts.tv_nsec) / 1_000_000
}

func intOption(_ name: String, _ def: Int? = nil) -> Int? {
    guard let v = options[name] else { return def }
    guard let n = Int(v), n > 0 else { die("--\(name) '\(v)' is not a positive whole number") }
    return n
}

switch command {
case "append":
    let retention = intOption("retention")
    let store: NATLogStore
    do { store = try NATLogStore(path: path) } catch { die("\(error)") }
    var lastRetention = monotonicMs()
    if let retention { do { try store.retain(days: retention, now: nowMs()) } catch { fputs("cgnat-store: retention: \(error)\n", stderr) } }
    // Lines are committed in batches: at most 20,000 lines or 200 ms after the first one waits.
    var pending: [String] = []
    var firstPendingAt: Int64 = 0
    var partial: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 1 << 16)
    func commit() {
        guard !pending.isEmpty else { return }
        do { try store.append(lines: pending) } catch { fputs("cgnat-store: \(path): \(error)\n", stderr) }
        pending.removeAll(keepingCapacity: true)
    }
    var eof = false
    while !eof {
        var pfd = pollfd(fd: 0, events: Int16(POLLIN), revents: 0)
        let wait: Int32 = pending.isEmpty ? 1000 : Int32(max(1, 200 - (monotonicMs() - firstPendingAt)))
        let rc = poll(&pfd, 1, wait)
        if rc < 0 && errno != EINTR { break }
        if rc > 0 {
            let n = read(0, &buf, buf.count)
            if n <= 0 { if n < 0 && errno == EINTR { continue }; eof = true } else {
                var start = 0
                for i in 0..<n where buf[i] == 10 {
                    partial += buf[start..<i]
                    if pending.isEmpty { firstPendingAt = monotonicMs() }
                    pending.append(String(decoding: partial, as: UTF8.self))
                    partial.removeAll(keepingCapacity: true)
                    start = i + 1
                }
                partial += buf[start..<n]
            }
        }
        if !pending.isEmpty && (eof || pending.count >= 20_000 || monotonicMs() - firstPendingAt >= 200) { commit() }
        if let retention, monotonicMs() - lastRetention > 3_600_000 {
            lastRetention = monotonicMs()
            do { try store.retain(days: retention, now: nowMs()) } catch { fputs("cgnat-store: retention: \(error)\n", stderr) }
        }
    }
    if !partial.isEmpty { pending.append(String(decoding: partial, as: UTF8.self)) }
    commit()

case "query":
    guard let outside = options["outside"], let portText = options["port"], let port = Int64(portText),
          let atText = options["at"], let at = Int64(atText) else { usage() }
    let protos = (options["proto"] ?? "17,6,1").split(separator: ",").compactMap { Int64($0) }
    guard access(path, R_OK) == 0 else {
        die("no NAT log store at \(path): `cgnat events --store \(path)` writes one (give --store FILE for another)")
    }
    do {
        let store = try NATLogStore(path: path, readOnly: true)
        let a = try store.query(outside: outside, port: port, at: at, protos: protos)
        print(a.json(at: at, outside: outside, port: port).serialized())
    } catch { die("\(error)") }

case "bench":
    do {
        try StoreBench.run(path: path, sessions: intOption("sessions", 10_000_000)!, queries: intOption("queries", 2000)!)
    } catch { die("\(error)") }

default:
    usage()
}
