import Foundation
import Testing
import NetAddress
@testable import CGNat

/// The store output never blocks the reader: with a helper that reads nothing, records past the
/// bounded buffer are dropped and counted, and close returns in bounded time. No root.
@Suite struct StoreOutputTests {
    @Test func aHelperThatDoesNotReadCostsDropsNotTime() throws {
        let dir = NSTemporaryDirectory() + "cgt-store-out-\(getpid())"
        mkdir(dir, 0o755)
        defer { _ = try? FileManager.default.removeItem(atPath: dir) }
        let helper = dir + "/stuck-helper"
        try "#!/bin/sh\nexec sleep 30\n".write(toFile: helper, atomically: true, encoding: .utf8)
        chmod(helper, 0o755)
        let lab = Lab.seed(name: "cgt-store-out")
        let out = try StoreOutput(path: dir + "/x.db", lab: lab, capacity: 64 << 10, helper: helper)
        let r = MappingRecord(kind: .new, resync: false, time: 1_796_083_200_000_000_000, domainID: 1, domain: "d", zone: 1, mark: 1,
                              protocolNumber: 17, inside: IPAddress("10.0.0.1")!, insidePort: 1, outside: IPAddress("10.0.0.2")!,
                              outsidePort: 2, destination: IPAddress("10.0.0.3")!, destinationPort: 3, nat: true, start: nil, stop: nil, id: 1)
        let t0 = Date()
        for _ in 0..<20_000 { out.submit(.record(r)); out.flush() }
        let submitSeconds = Date().timeIntervalSince(t0)
        // A socket buffer (some hundred KiB) plus 64 KiB of ours hold a few thousand lines; 20,000 do not fit.
        #expect(out.dropped > 0 && out.dropped + out.delivered <= 20_000, "dropped \(out.dropped) delivered \(out.delivered)")
        #expect(submitSeconds < 5, "submit blocked: \(submitSeconds) s for 20,000 records")
        let c0 = Date()
        out.close(labWentDown: true)
        #expect(Date().timeIntervalSince(c0) < 2, "close must be bounded")
        #expect(out.dropped + out.delivered == 20_000)
        kill(out.pid, SIGKILL)
    }
}
