/// Name and address patterns of templates: `{i}`, `{i:03}` (zero-padded to 3 digits), `{i:x}`
/// (hexadecimal, for IPv6 groups: `2001:db8:b:{i:x}0::/64`), `{i:04x}`, and `{domain}`.
public enum Pattern {
    public struct Failure: Error, Equatable {
        public var message: String
        public var hint: String
    }

    /// Replaces every placeholder with its value from `variables`; text without braces is returned as is.
    public static func expand(_ text: String, _ variables: [String: PatternValue]) throws(Failure) -> String {
        guard text.contains("{") || text.contains("}") else { return text }
        var out = ""
        var rest = Substring(text)
        while let open = rest.firstIndex(where: { $0 == "{" || $0 == "}" }) {
            out += rest[..<open]
            guard rest[open] == "{", let close = rest[open...].firstIndex(of: "}") else {
                throw Failure(message: "'\(text)' has an unmatched brace", hint: "write placeholders as {i}, {i:03}, {i:x} or {domain}")
            }
            let inner = rest[rest.index(after: open)..<close]
            let parts = inner.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
            let name = String(parts[0])
            guard let value = variables[name] else {
                let known = variables.keys.sorted().map { "{\($0)}" }.joined(separator: ", ")
                throw Failure(message: "'\(text)' uses the placeholder {\(name)}, which is not defined here",
                              hint: known.isEmpty ? "remove the braces: only templates (count:) have placeholders" : "use \(known)")
            }
            out += try format(value, parts.count > 1 ? String(parts[1]) : "", in: text)
            rest = rest[rest.index(after: close)...]
        }
        return out + rest
    }

    private static func format(_ value: PatternValue, _ spec: String, in text: String) throws(Failure) -> String {
        switch value {
        case .text(let s):
            guard spec.isEmpty else { throw Failure(message: "'\(text)': a name takes no format (':\(spec)')", hint: "write {domain}") }
            return s
        case .number(let n):
            var spec = Substring(spec)
            var radix = 10
            if spec.last == "x" { radix = 16; spec = spec.dropLast() }
            var width = 0
            if !spec.isEmpty {
                guard spec.first == "0", let w = Int(spec), w <= 32 else {
                    throw Failure(message: "'\(text)': unknown number format ':\(spec)'", hint: "use :03 (zero-padded width), :x (hexadecimal) or :04x")
                }
                width = w
            }
            let digits = String(n, radix: radix)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
    }
}

public enum PatternValue: Equatable, Sendable {
    case number(Int)
    case text(String)
}
