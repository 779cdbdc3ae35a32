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
            net.contains($0) && (first...last).contains($0.distance(from: net.address))
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
            let a = prefix.address.advanced(by: nextOffset)
            if nextOffset == lastOffset { exhausted = true } else { nextOffset += 1 }
            if taken.insert(a).inserted { return a }
        }
        return nil
    }

}
