/// Every numbered requirement of the four NAT behaviour RFCs a CGN is judged by, with its level
/// and how `cgnat conformance` evaluates it. The summaries are ours; the numbering and the levels
/// follow the RFC texts (RFC 4787 section 12, RFC 5382 section 8, RFC 5508 section 9, RFC 6888
/// sections 3-5). RECOMMENDED counts as SHOULD, MUST NOT as MUST, as RFC 2119 defines them.
public enum ConformanceLevel: String, Sendable, CaseIterable {
    case must = "MUST"
    case should = "SHOULD"
    case may = "MAY"
}

/// How a requirement's verdict is reached.
public enum ConformanceMethod: String, Sendable {
    /// Real traffic through the running lab.
    case measured
    /// A kernel setting read in the router's namespace (timers are read, not waited for).
    case setting
    /// The lab's NAT policy or ruleset, as the model and the kernel hold it.
    case policy
    /// From the verdicts of other rows.
    case derived
    /// Not applicable to this lab; the row says why.
    case notApplicable = "n/a"
    /// Not exercised by any probe yet; the row says what is missing.
    case untested
}

public struct ConformanceRequirement: Sendable, Equatable {
    public var rfc: Int
    /// "REQ-3" or a lettered sub-item "REQ-3a".
    public var number: String
    public var level: ConformanceLevel
    public var method: ConformanceMethod
    public var summary: String

    public init(_ rfc: Int, _ number: String, _ level: ConformanceLevel, _ method: ConformanceMethod, _ summary: String) {
        self.rfc = rfc
        self.number = number
        self.level = level
        self.method = method
        self.summary = summary
    }

    /// "4787 REQ-1": unique across the catalog.
    public var key: String { "\(rfc) \(number)" }
}

public enum ConformanceCatalog {
    public static let rfcs = [4787, 5382, 5508, 6888]

    public static let requirements: [ConformanceRequirement] = rfc4787 + rfc5382 + rfc5508 + rfc6888

    public static func requirement(_ key: String) -> ConformanceRequirement? { requirements.first { $0.key == key } }

    /// RFC 4787, NAT behavioural requirements for unicast UDP (section 12 lists them).
    static let rfc4787: [ConformanceRequirement] = [
        .init(4787, "REQ-1", .must, .measured, "the same inside address:port keeps one public address:port for every destination (EIM)"),
        .init(4787, "REQ-2", .should, .measured, "all of a subscriber's flows use one public address (paired pooling), where there is a pool"),
        .init(4787, "REQ-3", .must, .measured, "no port overloading: two inside endpoints never share one public endpoint"),
        .init(4787, "REQ-3a", .should, .measured, "a well-known inside port (0-1023) maps into 0-1023, any other into 1024-65535"),
        .init(4787, "REQ-4", .should, .measured, "the public port keeps the inside port's parity"),
        .init(4787, "REQ-5", .must, .setting, "the UDP mapping timer is at least 2 minutes"),
        .init(4787, "REQ-5a", .may, .notApplicable, "shorter timers for well-known destination ports of known applications"),
        .init(4787, "REQ-5b", .may, .setting, "the UDP mapping timer can be configured"),
        .init(4787, "REQ-5c", .should, .setting, "the default UDP mapping timer is 5 minutes or more"),
        .init(4787, "REQ-6", .must, .measured, "outbound packets refresh the mapping"),
        .init(4787, "REQ-6a", .may, .measured, "inbound packets may refresh the mapping too"),
        .init(4787, "REQ-7", .must, .notApplicable, "a dynamically configured external interface must not make inside and outside addresses clash unhandled"),
        .init(4787, "REQ-8", .should, .measured, "filtering is endpoint-independent (transparency) or address-dependent (stricter), not stricter still"),
        .init(4787, "REQ-8a", .may, .policy, "the filtering behaviour is an administrator's option"),
        .init(4787, "REQ-9", .must, .measured, "hairpinning: a subscriber reaches another subscriber through its public mapping"),
        .init(4787, "REQ-9a", .must, .measured, "a hairpinned packet arrives from the sender's public address and port"),
        .init(4787, "REQ-10", .should, .policy, "ALGs for UDP protocols are off"),
        .init(4787, "REQ-10a", .should, .policy, "each ALG can be switched on or off on its own"),
        .init(4787, "REQ-11", .must, .measured, "the mapping and filtering behaviour is deterministic: the same in every case"),
        .init(4787, "REQ-12", .must, .measured, "an ICMP message never ends a mapping"),
        .init(4787, "REQ-12a", .should, .policy, "ICMP messages are not filtered by their source address by default"),
        .init(4787, "REQ-12b", .should, .measured, "ICMP Destination Unreachable is supported (translated back to the inside)"),
        .init(4787, "REQ-13", .must, .measured, "a DF=1 packet too big for the next link gets ICMP fragmentation-needed"),
        .init(4787, "REQ-13a", .must, .measured, "a DF=0 packet too big is fragmented (fragments sent in order)"),
        .init(4787, "REQ-14", .must, .measured, "fragments are received in order and out of order"),
        .init(4787, "REQ-14a", .must, .untested, "out-of-order fragment handling withstands fragment DoS attacks"),
    ]

    /// RFC 5382, NAT behavioural requirements for TCP (section 8).
    static let rfc5382: [ConformanceRequirement] = [
        .init(5382, "REQ-1", .must, .measured, "endpoint-independent mapping for TCP"),
        .init(5382, "REQ-2", .must, .measured, "every valid TCP packet sequence of a permitted connection passes"),
        .init(5382, "REQ-2a", .must, .untested, "TCP simultaneous open is handled"),
        .init(5382, "REQ-3", .should, .measured, "TCP filtering is endpoint-independent or address-dependent"),
        .init(5382, "REQ-3a", .may, .policy, "the TCP filtering behaviour is an administrator's option"),
        .init(5382, "REQ-3b", .may, .policy, "TCP filtering may differ from UDP filtering"),
        .init(5382, "REQ-4", .must, .measured, "an unsolicited inbound SYN gets no answer for at least 6 s (then ICMP port unreachable, SHOULD)"),
        .init(5382, "REQ-4a", .must, .measured, "the unsolicited SYN is dropped silently where answering breaks the security policy"),
        .init(5382, "REQ-5", .must, .setting, "established idle timeout at least 2 h 4 min, transitory at least 4 min"),
        .init(5382, "REQ-5a", .may, .setting, "the TCP idle timeouts can be configured"),
        .init(5382, "REQ-6", .should, .policy, "TCP ALGs other than FTP are off by default"),
        .init(5382, "REQ-7", .must, .measured, "no port overloading for TCP"),
        .init(5382, "REQ-8", .must, .measured, "hairpinning for TCP"),
        .init(5382, "REQ-8a", .must, .measured, "a hairpinned TCP connection arrives from the sender's public address and port"),
        .init(5382, "REQ-9", .should, .measured, "ICMP Destination Unreachable for a TCP flow is translated"),
        .init(5382, "REQ-10", .must, .measured, "an ICMP message never ends a TCP mapping or connection"),
    ]

    /// RFC 5508, NAT behavioural requirements for ICMP (section 9).
    static let rfc5508: [ConformanceRequirement] = [
        .init(5508, "REQ-1", .must, .measured, "echo queries from the inside and their replies pass"),
        .init(5508, "REQ-1a", .should, .measured, "the echo identifier mapping is the same for every external host"),
        .init(5508, "REQ-2", .must, .setting, "the ICMP query session timer is at least 60 s"),
        .init(5508, "REQ-2a", .should, .setting, "the ICMP query session timer can be configured"),
        .init(5508, "REQ-3", .should, .setting, "an ICMP error with a bad ICMP checksum is dropped"),
        .init(5508, "REQ-3a", .should, .untested, "an ICMP error whose embedded IP checksum is bad is dropped"),
        .init(5508, "REQ-3b", .must, .untested, "IP options of the embedded packet are skipped to find its transport header"),
        .init(5508, "REQ-3c", .should, .untested, "the embedded transport checksum is not validated"),
        .init(5508, "REQ-3d", .must, .untested, "ICMP extensions and padding are left out of the embedded checksum"),
        .init(5508, "REQ-4", .must, .measured, "an ICMP error from outside for an active mapping is translated to the inside host (embedded packet reverted, type and code kept)"),
        .init(5508, "REQ-5", .must, .measured, "an ICMP error from the inside for an active mapping is translated outward"),
        .init(5508, "REQ-5c", .must, .measured, "that error leaves from the NAT's public address"),
        .init(5508, "REQ-6", .must, .untested, "an ICMP error about an ICMP query neither refreshes nor deletes its session"),
        .init(5508, "REQ-7", .must, .measured, "hairpinned ICMP errors pass (hairpinned queries too, for Basic NAT)"),
        .init(5508, "REQ-7a", .must, .measured, "a hairpinned ICMP error is addressed to the embedded packet's translated source"),
        .init(5508, "REQ-8", .should, .policy, "a flow refused for lack of resources or by policy gets ICMP admin-prohibited"),
        .init(5508, "REQ-9", .may, .notApplicable, "a policy may stop ICMP messages towards some interfaces"),
        .init(5508, "REQ-10", .must, .untested, "the ICMP message types of RFC 1812 section 4.3 are supported as listed (its items a-f)"),
        .init(5508, "REQ-11", .may, .notApplicable, "non-query, non-error ICMP messages may be dropped"),
    ]

    /// RFC 6888, common requirements for carrier-grade NATs (sections 3-5).
    static let rfc6888: [ConformanceRequirement] = [
        .init(6888, "REQ-1", .must, .derived, "every behavioural requirement of each translated transport (RFC 4787, 5382, 5508) holds"),
        .init(6888, "REQ-2", .must, .measured, "paired IP address pooling by default"),
        .init(6888, "REQ-3", .should, .policy, "no limit on the size or contiguity of the public pool (non-contiguous ranges MUST work)"),
        .init(6888, "REQ-4", .must, .policy, "the number of public ports (ICMP ids) per subscriber can be limited"),
        .init(6888, "REQ-5", .should, .policy, "state per mapping and per subscriber (sessions) can be limited"),
        .init(6888, "REQ-6", .must, .policy, "translation can be turned off for chosen destination addresses or ports"),
        .init(6888, "REQ-7", .should, .measured, "endpoint-independent filtering (address-dependent allowed where it breaks nothing)"),
        .init(6888, "REQ-8", .should, .policy, "a released public port is not given to a new mapping for 120 s"),
        .init(6888, "REQ-9", .must, .policy, "subscribers control their mappings through a protocol (PCP, SHOULD)"),
        .init(6888, "REQ-10", .should, .policy, "the CGN is manageable (standard management RECOMMENDED)"),
        .init(6888, "REQ-11a", .must, .policy, "a packet that cannot get a mapping (quota, resources) is dropped"),
        .init(6888, "REQ-11b", .should, .policy, "its sender gets ICMP host unreachable"),
        .init(6888, "REQ-11c", .should, .policy, "a management system is notified"),
        .init(6888, "REQ-11d", .must, .policy, "existing mappings are never deleted to make room"),
        .init(6888, "REQ-12", .should, .policy, "destination addresses and ports are not logged unless required"),
        .init(6888, "REQ-13", .should, .policy, "the port allocation scheme makes good use of the ports"),
        .init(6888, "REQ-14", .should, .policy, "the port allocation scheme keeps the log small"),
        .init(6888, "REQ-15", .should, .policy, "the port allocation scheme makes ports hard to guess"),
    ]
}
