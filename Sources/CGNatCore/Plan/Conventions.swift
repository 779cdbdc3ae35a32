import NetAddress

/// The backends' own conventions: names, addresses, table numbers and rule priorities that are
/// not in the lab model but that every plan, the check matrix and `status` must agree on.
public enum Conventions {
    // MARK: netns backend

    /// Transfer link between the router's uplink namespace and a domain's namespace: `t-<domain>`
    /// on the router side, `t-<uplink domain>` on the domain side.
    public static func transferLink(_ domain: String) -> String { "t-\(domain)" }
    /// The router's hairpin loop (a veth pair of its own): packets to a public address of the pool
    /// leave by `hairpinOut`, translated like any outbound flow, and come back in by `hairpinIn`,
    /// where they are inbound traffic like any from the uplink (RFC 4787 REQ-9).
    public static let hairpinOut = "nat-hp-out"
    public static let hairpinIn = "nat-hp-in"
    /// IPv6 link-locals of the transfer links (and the router's side of every bridge): IPv4 is
    /// routed over them as `via inet6`, so the links need no IPv4 addresses and no ARP.
    public static let routerLinkLocal = IPAddress("fe80::1")!
    public static let domainLinkLocal = IPAddress("fe80::2")!
    public static let linkLocalLength = 64
    /// RFC 7600's dummy IPv4 address: the source of the ICMP errors the router sends, because it
    /// has no IPv4 address on the transfer links.
    public static let errorSource = IPAddress("192.0.0.8")!
    /// A domain's return table is `returnTableBase + id` (101, 102, ...).
    public static let returnTableBase: UInt32 = 100
    /// Its fwmark rule has priority `fwmarkRuleBase + id` (100, 101, ...), before the local table.
    public static let fwmarkRuleBase: UInt32 = 99
    /// Where the local table's rule moves to (from 0), behind the fwmark rules.
    public static let localRulePriority: UInt32 = 1000

    // MARK: vrf backend

    /// The uplink domain's VRF table; subscriber domain `id` gets `vrfTableStep * (id + 1)`.
    public static let uplinkVRFTable: UInt32 = 10
    public static let vrfTableStep: UInt32 = 10
    /// fwmark rules to a domain's VRF table: `vrfFwmarkRuleBase + id` (500, 501, ...), before the
    /// kernel's l3mdev rule (1000).
    public static let vrfFwmarkRuleBase: UInt32 = 499
    /// The seed's layout: l3mdev unreachable at 2000, the local table moved to 32765.
    public static let vrfUnreachableRulePriority: UInt32 = 2000
    public static let vrfLocalRulePriority: UInt32 = 32765

    // MARK: both

    public static let localTable: UInt32 = 255
    public static let mainTable: UInt32 = 254

    /// Links the plan creates get explicit ifindexes from here on, each one distinct in the lab
    /// (see `StepList.addVeth` for why veth ends must not share one).
    public static let firstLinkIndex: Int32 = 10

    /// The MAC of the link with plan index `index`: locally administered, unicast, unique in the
    /// lab, so both sides of a link can be given permanent neighbour entries without a lookup.
    public static func mac(linkIndex index: Int32) -> MACAddress {
        let i = UInt32(bitPattern: index)
        return MACAddress([0x02, 0x63, UInt8(i >> 24), UInt8((i >> 16) & 0xff), UInt8((i >> 8) & 0xff), UInt8(i & 0xff)])
    }

    /// A Linux bridge takes at most this many ports (BR_MAX_PORTS - 1; the next one fails with EXFULL).
    public static let maxBridgePorts = 1023
}
