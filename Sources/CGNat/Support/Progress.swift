import Glibc

/// Progress of long work on stderr: a bar redrawn in place on a terminal, a plain line at every
/// quarter otherwise (logs, CI). Short work shows nothing: it appears only when the work is
/// large from the start (`large`, e.g. more than 200 namespaces) or has taken over a second.
/// `update` may be called from any thread, but not from two at once.
public final class Progress {
    private let label: String
    private let unit: String
    private let total: Int
    private let terminal: Bool
    private let start = monotonicMilliseconds()
    private var shown: Bool
    private var lastDraw = 0.0
    private var lastQuarter = 0
    private var finished = false
    private let fd: Int32

    /// - Parameters:
    ///   - label: what is being done (`up cgnat`), printed first.
    ///   - total: units of work (steps, namespaces, rows).
    ///   - large: show from the start, without waiting a second.
    public init(_ label: String, total: Int, unit: String = "steps", large: Bool, fd: Int32 = 2) {
        self.label = label
        self.unit = unit
        self.total = max(total, 1)
        self.fd = fd
        self.terminal = isatty(fd) == 1
        self.shown = large
    }

    /// Whether the work is large enough for progress: more than 200 namespaces.
    public static func isLarge(namespaces: Int) -> Bool { namespaces > 200 }

    public func update(_ done: Int) {
        guard !finished else { return }
        let now = monotonicMilliseconds()
        if !shown {
            guard now - start > 1000 else { return }
            shown = true
        }
        if terminal {
            // A redraw costs a write; a few per second are enough.
            guard now - lastDraw >= 50 || done >= total else { return }
            lastDraw = now
            emit("\r\u{1b}[K" + Progress.bar(label: label, done: done, total: total, unit: unit))
        } else {
            let quarter = min(4, done * 4 / total)
            guard quarter > lastQuarter else { return }
            lastQuarter = quarter
            emit("\(label): \(min(done, total))/\(total) \(unit) (\(quarter * 25)%), \(Int((now - start).rounded())) ms\n")
        }
    }

    /// Clears the bar (the command prints its own summary next).
    public func finish() {
        guard !finished else { return }
        finished = true
        if shown && terminal { emit("\r\u{1b}[K") }
    }

    /// `up cgnat [##########..........] 580/1160 steps`
    public static func bar(label: String, done: Int, total: Int, unit: String, width: Int = 30) -> String {
        let d = min(max(done, 0), total)
        let filled = total == 0 ? width : d * width / total
        return "\(label) [" + String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
            + "] \(d)/\(total) \(unit)"
    }

    private func emit(_ s: String) {
        let b = Array(s.utf8)
        _ = b.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
    }
}
