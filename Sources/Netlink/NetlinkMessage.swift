/// Netlink wire format: a 16-byte `nlmsghdr` (host byte order), a fixed family header
/// (`ifinfomsg`, `rtmsg`, `nfgenmsg`, ...), then type-length-value attributes, each padded to 4 bytes.

/// Numbers from linux/netlink.h.
public enum NL {
    public static let NLMSG_NOOP: UInt16 = 1
    public static let NLMSG_ERROR: UInt16 = 2
    public static let NLMSG_DONE: UInt16 = 3
    public static let NLMSG_OVERRUN: UInt16 = 4

    public static let F_REQUEST: UInt16 = 0x01
    public static let F_MULTI: UInt16 = 0x02
    public static let F_ACK: UInt16 = 0x04
    public static let F_ECHO: UInt16 = 0x08
    public static let F_DUMP_INTR: UInt16 = 0x10
    public static let F_DUMP_FILTERED: UInt16 = 0x20
    // GET requests
    public static let F_ROOT: UInt16 = 0x100
    public static let F_MATCH: UInt16 = 0x200
    public static let F_DUMP: UInt16 = 0x300
    // NEW requests
    public static let F_REPLACE: UInt16 = 0x100
    public static let F_EXCL: UInt16 = 0x200
    public static let F_CREATE: UInt16 = 0x400
    public static let F_APPEND: UInt16 = 0x800
    // ACK flags
    public static let F_CAPPED: UInt16 = 0x100
    public static let F_ACK_TLVS: UInt16 = 0x200

    public static let NLA_F_NESTED: UInt16 = 0x8000
    public static let NLA_F_NET_BYTEORDER: UInt16 = 0x4000
    public static let NLA_TYPE_MASK: UInt16 = 0x3fff

    public static let NLMSGERR_ATTR_MSG: UInt16 = 1
    public static let NLMSGERR_ATTR_OFFS: UInt16 = 2
    public static let NLMSGERR_ATTR_MISS_TYPE: UInt16 = 5

    public static let headerLength = 16

    @inline(__always) public static func align(_ n: Int) -> Int { (n + 3) & ~3 }
}

/// Little helpers to write fixed-layout structs and attribute payloads.
public struct ByteWriter {
    public var bytes: [UInt8] = []
    public init() {}
    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    /// Host byte order (netlink headers and most rtnetlink attributes).
    public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v) { bytes.append(contentsOf: $0) } }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v) { bytes.append(contentsOf: $0) } }
    public mutating func i32(_ v: Int32) { withUnsafeBytes(of: v) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v) { bytes.append(contentsOf: $0) } }
    /// Network byte order (ports, conntrack numbers).
    public mutating func u16be(_ v: UInt16) { u16(v.bigEndian) }
    public mutating func u32be(_ v: UInt32) { u32(v.bigEndian) }
    public mutating func u64be(_ v: UInt64) { u64(v.bigEndian) }
    public mutating func append(_ b: [UInt8]) { bytes.append(contentsOf: b) }
    public mutating func zeros(_ n: Int) { bytes.append(contentsOf: repeatElement(0, count: n)) }
}

/// Reads fixed-layout fields at offsets; out-of-range reads yield 0 (callers check lengths first).
public struct ByteReader {
    public let bytes: ArraySlice<UInt8>
    public init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }
    public init(_ bytes: [UInt8]) { self.bytes = bytes[...] }
    public var count: Int { bytes.count }
    private func raw<T: FixedWidthInteger>(_ off: Int, _: T.Type) -> T {
        let start = bytes.startIndex + off
        guard off >= 0, start + MemoryLayout<T>.size <= bytes.endIndex else { return 0 }
        var v: T = 0
        withUnsafeMutableBytes(of: &v) { dst in
            for i in 0..<MemoryLayout<T>.size { dst[i] = bytes[start + i] }
        }
        return v
    }
    public func u8(_ off: Int) -> UInt8 { raw(off, UInt8.self) }
    public func u16(_ off: Int) -> UInt16 { raw(off, UInt16.self) }
    public func u32(_ off: Int) -> UInt32 { raw(off, UInt32.self) }
    public func i32(_ off: Int) -> Int32 { raw(off, Int32.self) }
    public func u64(_ off: Int) -> UInt64 { raw(off, UInt64.self) }
    public func u16be(_ off: Int) -> UInt16 { UInt16(bigEndian: u16(off)) }
    public func u32be(_ off: Int) -> UInt32 { UInt32(bigEndian: u32(off)) }
    public func u64be(_ off: Int) -> UInt64 { UInt64(bigEndian: u64(off)) }
}

/// Builds an attribute stream: each attribute is `nla_len` (u16, header + payload, unpadded),
/// `nla_type` (u16), the payload, then zero padding to 4 bytes.
public struct AttributeWriter {
    public private(set) var bytes: [UInt8] = []
    public init() {}

    public mutating func bytes(_ type: UInt16, _ payload: [UInt8]) {
        let len = 4 + payload.count
        precondition(len <= Int(UInt16.max), "netlink attribute too long")
        var w = ByteWriter()
        w.u16(UInt16(len)); w.u16(type); w.append(payload)
        w.zeros(NL.align(len) - len)
        bytes.append(contentsOf: w.bytes)
    }
    public mutating func flag(_ type: UInt16) { bytes(type, []) }
    public mutating func u8(_ type: UInt16, _ v: UInt8) { bytes(type, [v]) }
    public mutating func u16(_ type: UInt16, _ v: UInt16) { var w = ByteWriter(); w.u16(v); bytes(type, w.bytes) }
    public mutating func u32(_ type: UInt16, _ v: UInt32) { var w = ByteWriter(); w.u32(v); bytes(type, w.bytes) }
    public mutating func i32(_ type: UInt16, _ v: Int32) { var w = ByteWriter(); w.i32(v); bytes(type, w.bytes) }
    public mutating func u16be(_ type: UInt16, _ v: UInt16) { var w = ByteWriter(); w.u16be(v); bytes(type, w.bytes) }
    public mutating func u32be(_ type: UInt16, _ v: UInt32) { var w = ByteWriter(); w.u32be(v); bytes(type, w.bytes) }
    public mutating func u64be(_ type: UInt16, _ v: UInt64) { var w = ByteWriter(); w.u64be(v); bytes(type, w.bytes) }
    /// A NUL-terminated string (IFLA_IFNAME, IFLA_INFO_KIND).
    public mutating func string(_ type: UInt16, _ s: String) { bytes(type, Array(s.utf8) + [0]) }
    /// A string without terminator (NLA_STRING attributes such as IFLA_INFO_KIND, as iproute2 sends them).
    public mutating func unterminatedString(_ type: UInt16, _ s: String) { bytes(type, Array(s.utf8)) }
    public mutating func address(_ type: UInt16, _ a: IPAddress) { bytes(type, a.bytes) }
    /// A nested attribute; `nestedFlag` sets NLA_F_NESTED (nfnetlink wants it, rtnetlink is indifferent).
    public mutating func nested(_ type: UInt16, nestedFlag: Bool = false, _ body: (inout AttributeWriter) -> Void) {
        var inner = AttributeWriter()
        body(&inner)
        bytes(nestedFlag ? type | NL.NLA_F_NESTED : type, inner.bytes)
    }
    /// Raw bytes that are already a padded attribute stream or a fixed struct inside a nest.
    public mutating func raw(_ b: [UInt8]) { bytes.append(contentsOf: b) }
}

/// One received attribute. `type` has the NESTED / NET_BYTEORDER flags removed.
public struct NetlinkAttribute: Equatable, Sendable {
    public var type: UInt16
    public var isNested: Bool
    public var payload: [UInt8]

    public init(type: UInt16, isNested: Bool = false, payload: [UInt8]) {
        self.type = type; self.isNested = isNested; self.payload = payload
    }

    /// Splits an attribute stream; a truncated or malformed tail ends the list (never traps).
    public static func parse(_ b: ArraySlice<UInt8>) -> [NetlinkAttribute] {
        var out: [NetlinkAttribute] = []
        var i = b.startIndex
        while i + 4 <= b.endIndex {
            let r = ByteReader(b[i..<(i + 4)])
            let len = Int(r.u16(0)), rawType = r.u16(2)
            guard len >= 4, i + len <= b.endIndex else { break }
            out.append(NetlinkAttribute(type: rawType & NL.NLA_TYPE_MASK,
                                        isNested: rawType & NL.NLA_F_NESTED != 0,
                                        payload: Array(b[(i + 4)..<(i + len)])))
            i += NL.align(len)
        }
        return out
    }
    public static func parse(_ b: [UInt8]) -> [NetlinkAttribute] { parse(b[...]) }

    private var r: ByteReader { ByteReader(payload) }
    public var u8: UInt8? { payload.count >= 1 ? r.u8(0) : nil }
    public var u16: UInt16? { payload.count >= 2 ? r.u16(0) : nil }
    public var u32: UInt32? { payload.count >= 4 ? r.u32(0) : nil }
    public var i32: Int32? { payload.count >= 4 ? r.i32(0) : nil }
    public var u64: UInt64? { payload.count >= 8 ? r.u64(0) : nil }
    public var u16be: UInt16? { payload.count >= 2 ? r.u16be(0) : nil }
    public var u32be: UInt32? { payload.count >= 4 ? r.u32be(0) : nil }
    public var u64be: UInt64? { payload.count >= 8 ? r.u64be(0) : nil }
    /// A string up to the first NUL (or the whole payload if none).
    public var string: String {
        let end = payload.firstIndex(of: 0) ?? payload.endIndex
        return String(decoding: payload[..<end], as: UTF8.self)
    }
    /// The payload read as an attribute stream (whether or not NLA_F_NESTED was set).
    public var nested: [NetlinkAttribute] { NetlinkAttribute.parse(payload) }
    public func address(_ family: IPFamily) -> IPAddress? {
        payload.count == family.addressLength ? IPAddress(family: family, bytes: payload) : nil
    }
}

extension Array where Element == NetlinkAttribute {
    /// The first attribute of this type (later duplicates are ignored, as the kernel does).
    public subscript(type type: UInt16) -> NetlinkAttribute? { first { $0.type == type } }
}

/// One netlink message: the header fields and everything after the header (`payload` = fixed
/// family header followed by attributes).
public struct NetlinkMessage: Equatable, Sendable {
    public var type: UInt16
    public var flags: UInt16
    public var seq: UInt32
    public var pid: UInt32
    public var payload: [UInt8]

    public init(type: UInt16, flags: UInt16, seq: UInt32 = 0, pid: UInt32 = 0, payload: [UInt8]) {
        self.type = type; self.flags = flags; self.seq = seq; self.pid = pid; self.payload = payload
    }

    /// A request: fixed header bytes, then the attributes written by `attributes`.
    public init(type: UInt16, flags: UInt16, fixed: [UInt8], attributes: (inout AttributeWriter) -> Void = { _ in }) {
        var a = AttributeWriter()
        attributes(&a)
        self.init(type: type, flags: flags, payload: fixed + a.bytes)
    }

    /// Wire bytes: nlmsghdr (nlmsg_len = 16 + payload) + payload, padded to 4.
    public func encoded() -> [UInt8] {
        var w = ByteWriter()
        let len = NL.headerLength + payload.count
        w.u32(UInt32(len)); w.u16(type); w.u16(flags); w.u32(seq); w.u32(pid)
        w.append(payload)
        w.zeros(NL.align(len) - len)
        return w.bytes
    }

    /// Attributes that follow a fixed header of `fixedLength` bytes.
    public func attributes(after fixedLength: Int) -> [NetlinkAttribute] {
        guard payload.count >= fixedLength else { return [] }
        return NetlinkAttribute.parse(payload[NL.align(fixedLength)...])
    }

    public var reader: ByteReader { ByteReader(payload) }

    /// Splits one received datagram into messages. Throws on a length that runs past the end.
    public static func parse(_ b: [UInt8]) throws -> [NetlinkMessage] {
        var out: [NetlinkMessage] = []
        var i = 0
        while i + NL.headerLength <= b.count {
            let r = ByteReader(b[i..<(i + NL.headerLength)])
            let len = Int(r.u32(0))
            guard len >= NL.headerLength, i + len <= b.count else {
                throw NetlinkError(step: "parse netlink message", errno: EBADMSG_)
            }
            out.append(NetlinkMessage(type: r.u16(4), flags: r.u16(6), seq: r.u32(8), pid: r.u32(12),
                                      payload: Array(b[(i + NL.headerLength)..<(i + len)])))
            i += NL.align(len)
        }
        return out
    }

    /// For NLMSG_ERROR (and NLMSG_DONE of a dump): the negated errno (0 = ACK) and the
    /// extended-ACK attributes, if the kernel sent any.
    public var errorInfo: (errno: Int32, message: String?, offset: UInt32?)? {
        guard type == NL.NLMSG_ERROR || type == NL.NLMSG_DONE, payload.count >= 4 else { return nil }
        let r = reader
        let err = r.i32(0)
        var tlvStart = 4
        if type == NL.NLMSG_ERROR {
            // The request's header is echoed; its payload too unless the socket set NETLINK_CAP_ACK.
            let origLen = Int(r.u32(4))
            tlvStart += flags & NL.F_CAPPED != 0 ? NL.headerLength : NL.align(max(origLen, NL.headerLength))
        }
        var message: String?, offset: UInt32?
        if flags & NL.F_ACK_TLVS != 0, tlvStart <= payload.count {
            let tlvs = NetlinkAttribute.parse(payload[tlvStart...])
            if let m = tlvs[type: NL.NLMSGERR_ATTR_MSG] { message = m.string }
            offset = tlvs[type: NL.NLMSGERR_ATTR_OFFS]?.u32
            if message == nil, let miss = tlvs[type: NL.NLMSGERR_ATTR_MISS_TYPE]?.u32 {
                message = "missing attribute type \(miss)"
            }
        }
        return (-err, message, offset)
    }
}

// EBADMSG without pulling Glibc into this file's namespace of names.
let EBADMSG_: Int32 = 74
