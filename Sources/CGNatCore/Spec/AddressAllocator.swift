import NetAddress

/// Hands out the addresses of a prefix in order: from the first host address up, skipping the
/// addresses already taken on the link (gateways, hosts written out), the IPv4 network and
/// broadcast addresses (not for /31 and /32) and the IPv6 subnet-router anycast address (::0).
public struct AddressAllocator {
    public let prefix: IPPrefix
    private var taken: Set<IPAddress>
    private var nextOffset: UInt64
    private let lastOffset: UInt64
    private var exhausted: Bool

    public init(_ prefix: IPPrefix, taken: Set<IPAddress> = []) {
        self.prefix = prefix.network
        self.taken = taken
        let hostBits = prefix.family.bitLength - prefix.length
        let size: UInt64 = hostBits >= 64 ? .max : (1 << UInt64(hostBits)) - 1   // largest offset
        switch prefix.family {
        case .v4:
            nextOffset = hostBits <= 1 ? 0 : 1
            lastOffset = hostBits <= 1 ? size : size - 1
        case .v6:
            nextOffset = hostBits == 0 ? 0 : 1
            lastOffset = size
        }
        exhausted = lastOffset < nextOffset
        usable = exhausted ? 0 : lastOffset - nextOffset + 1
        let (first, last, net) = (nextOffset, lastOffset, self.prefix)
        takenInRange = exhausted ? 0 : taken.filter {
            net.contains($0) && (first...last).contains(AddressAllocator.offset(of: $0, in: net))
        }.count
    }

    /// How many addresses the prefix has for hosts, before any is taken.
    public private(set) var usable: UInt64 = 0
    /// Addresses of the usable range taken by something else on the link before allocation.
    public private(set) var takenInRange = 0
    /// What is left for allocation at the start.
    public var free: UInt64 { usable - UInt64(takenInRange) }

    public mutating func allocate() -> IPAddress? {
        while !exhausted {
            let a = AddressAllocator.address(prefix.address, plus: nextOffset)
            if nextOffset == lastOffset { exhausted = true } else { nextOffset += 1 }
            if taken.insert(a).inserted { return a }
        }
        return nil
    }

    /// `base + n`, carrying across bytes (big-endian); the caller keeps `n` inside the prefix.
    public static func address(_ base: IPAddress, plus n: UInt64) -> IPAddress {
        var bytes = base.bytes
        var carry = n
        var i = bytes.count - 1
        while carry > 0 && i >= 0 {
            let sum = UInt64(bytes[i]) + (carry & 0xff)
            bytes[i] = UInt8(sum & 0xff)
            carry = (carry >> 8) + (sum >> 8)
            i -= 1
        }
        return IPAddress(family: base.family, bytes: bytes)
    }

    /// The low 64 bits of `a - network`.
    static func offset(of a: IPAddress, in prefix: IPPrefix) -> UInt64 {
        var v: UInt64 = 0
        for b in a.bytes.suffix(8) { v = v << 8 | UInt64(b) }
        var n: UInt64 = 0
        for b in prefix.address.bytes.suffix(8) { n = n << 8 | UInt64(b) }
        return v &- n
    }
}
