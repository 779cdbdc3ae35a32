import Glibc

/// Buffered stdout without Foundation. Flush before running child processes, or their output
/// lands before ours.
public enum Output {
    nonisolated(unsafe) private static var buffer: [UInt8] = []

    public static func write(_ s: String) {
        buffer.append(contentsOf: s.utf8)
        if buffer.count > 1 << 16 { flush() }
    }

    public static func line(_ s: String = "") { write(s + "\n") }

    public static func flush() {
        var off = 0
        while off < buffer.count {
            let n = buffer[off...].withUnsafeBytes { Glibc.write(1, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            off += n
        }
        buffer.removeAll(keepingCapacity: true)
    }

    public static func error(_ s: String) {
        flush()
        fputs(s + "\n", stderr)
    }
}
