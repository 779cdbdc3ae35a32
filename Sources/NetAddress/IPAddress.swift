import Glibc

/// Address family, with the kernel's AF_* values so it goes straight into netlink headers.
public enum IPFamily: UInt8, Sendable, CustomStringConvertible {
    case v4 = 2   // AF_INET
    case v6 = 10  // AF_INET6

    public var description: String { self == .v4 ? "ipv4" : "ipv6" }
    public var addressLength: Int { self == .v4 ? 4 : 16 }
    public var bitLength: Int { addressLength * 8 }
}

/// An IPv4 or IPv6 address in network byte order.
public struct IPAddress: Hashable, Sendable, CustomStringConvertible, Comparable {
    public let family: IPFamily
    public let bytes: [UInt8]

    public init(family: IPFamily, bytes: [UInt8]) {
        precondition(bytes.count == family.addressLength, "address length does not match family")
        self.family = family
        self.bytes = bytes
    }

    /// Parses dotted-quad IPv4 or RFC 4291 IPv6 text (no zone index, no prefix).
    public init?(_ text: String) {
        var buf = [UInt8](repeating: 0, count: 16)
        if !text.contains(":") {
            guard inet_pton(AF_INET, text, &buf) == 1 else { return nil }
            self.init(family: .v4, bytes: Array(buf[0..<4]))
        } else {
            guard inet_pton(AF_INET6, text, &buf) == 1 else { return nil }
            self.init(family: .v6, bytes: buf)
        }
    }

    public static func any(_ family: IPFamily) -> IPAddress {
        IPAddress(family: family, bytes: [UInt8](repeating: 0, count: family.addressLength))
    }

    public var description: String {
        var out = [CChar](repeating: 0, count: 64)
        let af = family == .v4 ? AF_INET : AF_INET6
        bytes.withUnsafeBufferPointer { src in _ = inet_ntop(af, src.baseAddress, &out, 64) }
        return String(cString: out)
    }

    public var isLinkLocal: Bool {
        family == .v6 ? (bytes[0] == 0xfe && (bytes[1] & 0xc0) == 0x80) : (bytes[0] == 169 && bytes[1] == 254)
    }

    public static func < (a: IPAddress, b: IPAddress) -> Bool {
        a.family.rawValue != b.family.rawValue ? a.family.rawValue < b.family.rawValue : a.bytes.lexicographicallyPrecedes(b.bytes)
    }
}

extension IPAddress {
    /// `self + n`, carrying across bytes (big-endian); the caller keeps the result in range.
    public func advanced(by n: UInt64) -> IPAddress {
        var b = bytes
        var carry = n
        var i = b.count - 1
        while carry > 0 && i >= 0 {
            let sum = UInt64(b[i]) + (carry & 0xff)
            b[i] = UInt8(sum & 0xff)
            carry = (carry >> 8) + (sum >> 8)
            i -= 1
        }
        return IPAddress(family: family, bytes: b)
    }

    /// The low 64 bits of `self - base` (same family).
    public func distance(from base: IPAddress) -> UInt64 {
        func low(_ a: IPAddress) -> UInt64 { a.bytes.suffix(8).reduce(0) { $0 << 8 | UInt64($1) } }
        return low(self) &- low(base)
    }
}

/// An address with a prefix length: an interface address (`100.64.0.1/10`) or a route destination.
public struct IPPrefix: Hashable, Sendable, CustomStringConvertible {
    public let address: IPAddress
    public let length: Int

    public init(_ address: IPAddress, _ length: Int) {
        precondition(length >= 0 && length <= address.family.bitLength, "prefix length out of range")
        self.address = address
        self.length = length
    }

    /// Parses `ADDR/LEN`, or a bare address as a host prefix (/32 or /128).
    public init?(_ text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let addr = IPAddress(String(parts[0])) else { return nil }
        var len = addr.family.bitLength
        if parts.count == 2 {
            guard let l = Int(parts[1]), l >= 0, l <= addr.family.bitLength else { return nil }
            len = l
        }
        self.init(addr, len)
    }

    public var family: IPFamily { address.family }

    /// The prefix with host bits cleared (`100.64.0.1/10` -> `100.64.0.0/10`).
    public var network: IPPrefix {
        var b = address.bytes
        for i in 0..<b.count {
            let bitsHere = max(0, min(8, length - i * 8))
            b[i] &= bitsHere == 0 ? 0 : UInt8(truncatingIfNeeded: 0xff << (8 - bitsHere))
        }
        return IPPrefix(IPAddress(family: address.family, bytes: b), length)
    }

    public func contains(_ a: IPAddress) -> Bool {
        a.family == family && IPPrefix(a, length).network.address == network.address
    }

    /// Whether the two prefixes share an address (one contains the other's network).
    public func overlaps(_ other: IPPrefix) -> Bool {
        family == other.family && (contains(other.network.address) || other.contains(network.address))
    }

    public var isDefault: Bool { length == 0 }
    public var description: String { "\(address)/\(length)" }
}
