import NetAddress

/// A named nftables map (or set) of the ruleset as typed values: the text writer (`nft -f`,
/// `render`) and the netlink loader (NFT_MSG_NEWSETELEM) both start from this, so the two paths
/// cannot drift apart. Keys and data are concatenations of typed components; either side may be an
/// interval (a range in its last components, as nft writes `a . b-c`).
public struct NftMap: Equatable, Sendable {
    /// The nft data types the ruleset's maps use.
    public enum DataType: String, Equatable, Sendable {
        case mark
        case ipv4Address = "ipv4_addr"
        case inetService = "inet_service"

        /// Bytes of the value in a concatenation (each component is then padded to 4).
        public var length: Int {
            switch self {
            case .mark, .ipv4Address: return 4
            case .inetService: return 2
            }
        }
    }

    /// One component's value, or a range of them (only in an interval layout).
    public enum Value: Equatable, Sendable, CustomStringConvertible {
        case mark(UInt32)
        case ipv4(IPAddress)
        case service(UInt16)
        indirect case range(Value, Value)

        public var low: Value { if case .range(let a, _) = self { return a } else { return self } }
        public var high: Value { if case .range(_, let b) = self { return b } else { return self } }

        public var description: String {
            switch self {
            case .mark(let m): return String(m)
            case .ipv4(let a): return a.description
            case .service(let p): return String(p)
            case .range(let a, let b): return "\(a)-\(b)"
            }
        }
    }

    /// The type of a key or of the data: components, and whether it holds ranges.
    public struct Layout: Equatable, Sendable, CustomStringConvertible {
        public var components: [DataType]
        public var interval: Bool
        public init(_ components: [DataType], interval: Bool = false) {
            self.components = components
            self.interval = interval
        }
        public var description: String { components.map(\.rawValue).joined(separator: " . ") }
    }

    public struct Element: Equatable, Sendable {
        public var key: [Value]
        public var data: [Value]
        public init(key: [Value], data: [Value] = []) { self.key = key; self.data = data }
    }

    public var name: String
    public var key: Layout
    /// nil for a set.
    public var data: Layout?
    public var elements: [Element]
    /// `size N` of the declaration: the most elements the kernel takes, and what it sizes the set
    /// by. nft gives the kernel the count of the elements written in a declaration; a map
    /// declared empty and filled by netlink must say it, or the kernel picks a growing hash table
    /// (measured: twice the insert time for 2 x 131,072 elements).
    public var size: Int?

    public init(name: String, key: Layout, data: Layout?, elements: [Element] = [], size: Int? = nil) {
        self.name = name
        self.key = key
        self.data = data
        self.elements = elements
        self.size = size
    }

    /// What makes the map unencodable (a value of the wrong type, a range outside an interval
    /// layout, an interval key that is not a concatenation); empty if none. `Ruleset` only builds
    /// maps without problems; the netlink loader checks before it sends.
    public func problems() -> [String] {
        var out: [String] = []
        // A single-component interval key is sent as start and end elements (NFT_SET_ELEM_INTERVAL_END),
        // not as KEY/KEY_END: not supported here.
        if key.interval && key.components.count < 2 { out.append("map \(name): an interval key must be a concatenation of at least two types") }
        func check(_ values: [Value], _ layout: Layout, _ what: String, _ i: Int) {
            guard values.count == layout.components.count else {
                out.append("map \(name), element \(i + 1): \(what) has \(values.count) components, the type \(layout) has \(layout.components.count)")
                return
            }
            for (v, t) in zip(values, layout.components) {
                if case .range = v, !layout.interval { out.append("map \(name), element \(i + 1): a range in a \(what) that is no interval"); return }
                // No array per component: this runs over every element of a /16 map before it is sent.
                func fits(_ part: Value) -> Bool {
                    switch (part, t) {
                    case (.mark, .mark), (.service, .inetService): return true
                    case (.ipv4(let a), .ipv4Address): return a.family == .v4
                    default: return false
                    }
                }
                if !fits(v.low) { out.append("map \(name), element \(i + 1): \(v.low) is no \(t.rawValue)"); return }
                if !fits(v.high) { out.append("map \(name), element \(i + 1): \(v.high) is no \(t.rawValue)"); return }
            }
        }
        for (i, e) in elements.enumerated() {
            check(e.key, key, "key", i)
            if let data { check(e.data, data, "data", i) } else if !e.data.isEmpty { out.append("map \(name) is a set: element \(i + 1) has data") }
            if out.count > 10 { break }
        }
        return out
    }

    // MARK: text (nft syntax)

    /// The declaration inside `table ... { }`: type, flags, and the elements if `withElements`.
    public func declaration(withElements: Bool, indent: String = "\t") -> String {
        var lines = ["\(indent)\(data == nil ? "set" : "map") \(name) {"]
        let type = data.map { "\(key) : \($0.interval ? "interval " : "")\($0)" } ?? "\(key)"
        lines.append("\(indent)\ttype \(type)")
        if let size { lines.append("\(indent)\tsize \(size)") }

        if key.interval { lines.append("\(indent)\tflags interval") }
        if withElements && !elements.isEmpty {
            lines.append("\(indent)\telements = { " + elementList(separator: ",\n\(indent)\t\t\t") + " }")
        }
        lines.append("\(indent)}")
        return lines.joined(separator: "\n")
    }

    /// `add element` commands for the elements, for `nft -f`: what `render` prints for the
    /// netlink path, so a user can replay it. Chunks of `perCommand` keep lines readable.
    public func addElementCommands(family: String = "inet", table: String, perCommand: Int = 256) -> String {
        guard !elements.isEmpty else { return "" }
        var out = ""
        for start in stride(from: 0, to: elements.count, by: perCommand) {
            let chunk = elements[start..<min(start + perCommand, elements.count)]
            out += "add element \(family) \(table) \(name) { " + NftMap.list(chunk, data != nil, separator: ",\n\t") + " }\n"
        }
        return out
    }

    /// Four elements a line keeps `render` readable for a few thousand subscribers.
    private func elementList(separator: String) -> String { NftMap.list(elements[...], data != nil, separator: separator) }

    private static func list(_ e: ArraySlice<Element>, _ isMap: Bool, separator: String) -> String {
        func text(_ el: Element) -> String {
            let k = el.key.map(\.description).joined(separator: " . ")
            return isMap ? k + " : " + el.data.map(\.description).joined(separator: " . ") : k
        }
        return stride(from: e.startIndex, to: e.endIndex, by: 4).map { i in
            e[i..<min(i + 4, e.endIndex)].map(text).joined(separator: ", ")
        }.joined(separator: separator)
    }

    // MARK: wire layout (what nft sends)

    /// The bytes of one concatenation: each component in its type's byte order (mark in host
    /// order, as nft sends meta and ct marks; addresses and ports in network order), padded to 4.
    public static func concatenation(_ values: [Value], high: Bool = false) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(values.count * 4)
        append(values, high: high, to: &out)
        return out
    }

    /// `concatenation` appended to `out` (the encoder's hot path: no array of its own).
    public static func append(_ values: [Value], high: Bool = false, to out: inout [UInt8]) {
        for v in values {
            switch high ? v.high : v.low {
            case .mark(let m): withUnsafeBytes(of: m) { out.append(contentsOf: $0) }
            case .ipv4(let a): out.append(contentsOf: a.bytes)
            case .service(let p):
                out.append(UInt8(p >> 8)); out.append(UInt8(p & 0xff))
                // Padding only inside a concatenation: a lone port is its 2 bytes.
                if values.count > 1 { out.append(0); out.append(0) }
            case .range: preconditionFailure("nested range")
            }
        }
    }

    /// NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_KEY_END (interval keys only) and the data value of an
    /// element, as nft 1.0.6 sends them: an interval key as its low and high concatenations; interval
    /// data as the low concatenation followed by the high one, in one NFTA_DATA_VALUE.
    public func wire(_ e: Element) -> (key: [UInt8], keyEnd: [UInt8]?, data: [UInt8]?) {
        func part(_ p: WirePart) -> [UInt8] { var b: [UInt8] = []; appendWire(e, p, to: &b); return b }
        let lengths = wireLengths
        return (part(.key), lengths.keyEnd.map { _ in part(.keyEnd) }, lengths.data.map { _ in part(.data) })
    }

    public enum WirePart: Sendable { case key, keyEnd, data }

    /// Bytes of each part of every element (the layouts fix them); nil: the part is not sent.
    public var wireLengths: (key: Int, keyEnd: Int?, data: Int?) {
        func concat(_ l: Layout) -> Int { l.components.count == 1 ? l.components[0].length : 4 * l.components.count }
        let k = concat(key)
        return (k, key.interval ? k : nil, data.map { concat($0) * ($0.interval ? 2 : 1) })
    }

    /// One part of an element's wire layout appended to `out` (`wireLengths` bytes of it).
    public func appendWire(_ e: Element, _ part: WirePart, to out: inout [UInt8]) {
        switch part {
        case .key: NftMap.append(e.key, to: &out)
        case .keyEnd: NftMap.append(e.key, high: true, to: &out)
        case .data:
            NftMap.append(e.data, to: &out)
            if data?.interval == true { NftMap.append(e.data, high: true, to: &out) }
        }
    }

}
