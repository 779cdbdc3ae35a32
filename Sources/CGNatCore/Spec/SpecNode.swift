/// A lab file as a document tree, independent of the syntax it was written in: the YAML reader
/// (CGNatLabFile, which needs Foundation) builds it, the pure core decodes it into a `LabSpec`.
/// Every node keeps where it was written, so every diagnostic can point at the line and column.
public struct Position: Equatable, Sendable, CustomStringConvertible {
    public var line: Int
    public var column: Int
    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }
    public var description: String { "\(line):\(column)" }
}

public indirect enum SpecNode: Equatable, Sendable {
    /// How the syntax typed a scalar: `1` is an int, `"1"` and `blue` are strings.
    public enum ScalarKind: String, Sendable { case string, int, float, bool, null }

    case scalar(String, ScalarKind, Position?)
    /// Keys in file order, each with its own position (unknown keys point at the key itself).
    case mapping([(key: String, keyPosition: Position?, value: SpecNode)], Position?)
    case sequence([SpecNode], Position?)

    public var position: Position? {
        switch self {
        case .scalar(_, _, let p), .mapping(_, let p), .sequence(_, let p): return p
        }
    }

    /// What a user calls this kind of value, for "expected a list, found a mapping".
    public var kindName: String {
        switch self {
        case .scalar(_, .null, _): return "nothing"
        case .scalar(_, .int, _): return "a number"
        case .scalar(_, .bool, _): return "a boolean"
        case .scalar: return "a scalar"
        case .mapping: return "a mapping"
        case .sequence: return "a list"
        }
    }

    public static func == (a: SpecNode, b: SpecNode) -> Bool {
        switch (a, b) {
        case let (.scalar(s1, k1, p1), .scalar(s2, k2, p2)): return s1 == s2 && k1 == k2 && p1 == p2
        case let (.sequence(i1, p1), .sequence(i2, p2)): return i1 == i2 && p1 == p2
        case let (.mapping(m1, p1), .mapping(m2, p2)):
            return p1 == p2 && m1.count == m2.count
                && zip(m1, m2).allSatisfy { $0.key == $1.key && $0.keyPosition == $1.keyPosition && $0.value == $1.value }
        default: return false
        }
    }
}

/// One problem in a lab file: where (key path and position), what is wrong, what to do.
public struct Diagnostic: Error, Equatable, Sendable, CustomStringConvertible {
    /// `domains[2].hosts[0].addresses[1]`; empty for the document itself.
    public var path: String
    public var position: Position?
    public var message: String
    public var hint: String

    public init(path: String, position: Position?, message: String, hint: String) {
        self.path = path
        self.position = position
        self.message = message
        self.hint = hint
    }

    public init(_ at: SpecPlace, _ message: String, hint: String) {
        self.init(path: at.path, position: at.position, message: message, hint: hint)
    }

    /// `FILE:LINE:COL: key.path: what is wrong; what to do` (the compilers' form editors jump to).
    public func formatted(file: String) -> String {
        let pos = position.map { ":\($0.line):\($0.column)" } ?? ""
        return "\(file)\(pos): \(path.isEmpty ? "(document)" : path): \(message); \(hint)"
    }

    public var description: String { formatted(file: "<lab>") }

    public func json(file: String) -> JSON {
        .object([("file", .string(file)),
                 ("line", position.map { .int(Int64($0.line)) } ?? .null),
                 ("column", position.map { .int(Int64($0.column)) } ?? .null),
                 ("path", .string(path)), ("message", .string(message)), ("hint", .string(hint))])
    }
}

/// Where a value of the spec was written: its key path and position.
public struct SpecPlace: Equatable, Sendable {
    public var path: String
    public var position: Position?
    public init(_ path: String, _ position: Position?) {
        self.path = path
        self.position = position
    }
    public static let document = SpecPlace("", Position(line: 1, column: 1))

    public func key(_ k: String, _ p: Position?) -> SpecPlace { SpecPlace(path.isEmpty ? k : "\(path).\(k)", p) }
    public func index(_ i: Int, _ p: Position?) -> SpecPlace { SpecPlace("\(path)[\(i)]", p) }
}

/// A value with the place it was written.
public struct Placed<Value: Equatable & Sendable>: Equatable, Sendable {
    public var value: Value
    public var at: SpecPlace
    public init(_ value: Value, at: SpecPlace) {
        self.value = value
        self.at = at
    }
}
