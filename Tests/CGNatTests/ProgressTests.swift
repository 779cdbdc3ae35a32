import Glibc
import Testing
@testable import CGNat

@Suite struct ProgressTests {
    /// Reads what a Progress wrote into a pipe (not a terminal: plain lines).
    func lines(large: Bool, updates: [Int], total: Int) -> [String] {
        var fds: [Int32] = [0, 0]
        pipe(&fds)
        let p = Progress("up lab", total: total, large: large, fd: fds[1])
        for u in updates { p.update(u) }
        p.finish()
        close(fds[1])
        var buf = [UInt8](repeating: 0, count: 4096)
        let n = read(fds[0], &buf, buf.count)
        close(fds[0])
        return String(decoding: buf[0..<max(n, 0)], as: UTF8.self).split(separator: "\n").map(String.init)
    }

    @Test func largeWorkPrintsALinePerQuarterWhenNotOnATerminal() {
        let out = lines(large: true, updates: Array(stride(from: 10, through: 1000, by: 10)), total: 1000)
        #expect(out.count == 4, "\(out)")
        #expect(out.first?.hasPrefix("up lab: 250/1000 steps (25%)") == true, "\(out)")
        #expect(out.last?.hasPrefix("up lab: 1000/1000 steps (100%)") == true, "\(out)")
    }

    @Test func shortWorkPrintsNothing() {
        #expect(lines(large: false, updates: [1, 50, 100], total: 100).isEmpty)
    }

    @Test func theBar() {
        #expect(Progress.bar(label: "up x", done: 5, total: 10, unit: "steps", width: 10) == "up x [#####.....] 5/10 steps")
        #expect(Progress.isLarge(namespaces: 1012) && !Progress.isLarge(namespaces: 7))
    }
}
