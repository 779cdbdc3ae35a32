import Foundation
import Testing
import Netlink
@testable import CGNat

/// Formatting of decoded conntrack entries as NAT mapping log lines (no root).
@Suite struct EventFormatTests {
    let lab = Lab.seed()
    var domains: DomainNames { DomainNames(lab: lab) }
    // 2025-01-02T03:04:05.123456789Z
    let t0: UInt64 = 1_735_787_045_123_456_789

    func a(_ s: String) -> IPAddress { IPAddress(s)! }

    /// blue_c1 or red_c1 (100.64.0.1:40000) to 192.0.2.1:9 over UDP, mapped to `mapped`.
    func udp(zone: UInt16?, mark: UInt32, mapped: UInt16 = 40000, status: UInt32 = 0x8, id: UInt32 = 7) -> ConntrackEntry {
        ConntrackEntry(
            id: id, family: .v4,
            original: ConntrackTuple(source: a("100.64.0.1"), destination: a("192.0.2.1"), protocolNumber: 17, sourcePort: 40000, destinationPort: 9),
            reply: ConntrackTuple(source: a("192.0.2.1"), destination: a("100.64.0.1"), protocolNumber: 17, sourcePort: 9, destinationPort: mapped),
            originalZone: zone, mark: mark, status: status, eventTime: t0)   // a NEW event: event time, no start
    }

    func json(_ r: MappingRecord, destination: Bool = true) throws -> [String: Any] {
        let line = EventFormatter.json(r, destination: destination).serialized()
        #expect(!line.contains("\n"))
        return try #require(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
    }

    @Test func domainComesFromTheOriginalZoneThenTheMark() {
        #expect(EventFormatter.domainID(of: udp(zone: 1, mark: 1)) == 1)
        #expect(EventFormatter.domainID(of: udp(zone: 2, mark: 0)) == 2)
        #expect(EventFormatter.domainID(of: udp(zone: nil, mark: 2)) == 2)
        #expect(EventFormatter.domainID(of: udp(zone: 0, mark: 1)) == 1)
        #expect(EventFormatter.domainID(of: udp(zone: nil, mark: 0)) == 0)
        var both = udp(zone: nil, mark: 0)
        both.zone = 2
        #expect(EventFormatter.domainID(of: both) == 2)
        #expect(domains.name(1) == "blue" && domains.name(2) == "red" && domains.name(0) == "up")
        #expect(domains.name(9) == "domain-9")
    }

    @Test func natIsDetectedFromTheReplyTupleOrStatus() {
        #expect(!EventFormatter.natApplied(udp(zone: 1, mark: 1)))                 // identity mapping
        #expect(EventFormatter.natApplied(udp(zone: 2, mark: 2, mapped: 40291)))   // port changed
        #expect(EventFormatter.natApplied(udp(zone: 1, mark: 1, status: 0x8 | 0x10)))
        var other = udp(zone: 1, mark: 1)
        other.reply.destination = a("198.51.100.7")
        #expect(EventFormatter.natApplied(other))
    }

    @Test func newEventAsJSONIsTheMappingLogLine() throws {
        let r = EventFormatter.record(udp(zone: 2, mark: 2, mapped: 40291), kind: .new, now: 0, domains: domains)
        let o = try json(r)
        #expect(o["event"] as? String == "new")
        #expect(o["time"] as? String == "2025-01-02T03:04:05.123456Z")
        #expect(o["domain"] as? String == "red")
        #expect(o["domain_id"] as? Int == 2 && o["zone"] as? Int == 2 && o["mark"] as? Int == 2)
        #expect(o["protocol"] as? String == "udp")
        #expect(o["inside"] as? String == "100.64.0.1" && o["inside_port"] as? Int == 40000)
        #expect(o["outside"] as? String == "100.64.0.1" && o["outside_port"] as? Int == 40291)
        #expect(o["destination"] as? String == "192.0.2.1" && o["destination_port"] as? Int == 9)
        #expect(o["nat"] as? Bool == true)
        #expect(o["start"] as? String == "2025-01-02T03:04:05.123456Z")
        #expect(o["stop"] is NSNull)
        #expect(o["id"] as? Int == 7)
        #expect(o["resync"] == nil)
    }

    /// A flow let in from outside (endpoint-independent filtering) is logged as the subscriber's:
    /// inside = the DNAT target, outside = the public mapping, destination = the remote.
    @Test func anInboundFlowIsLoggedAsTheSubscribersMapping() throws {
        let e = ConntrackEntry(
            id: 9, family: .v4,
            original: ConntrackTuple(source: a("192.0.2.1"), destination: a("198.51.100.8"), protocolNumber: 17, sourcePort: 4000, destinationPort: 5000),
            reply: ConntrackTuple(source: a("100.64.0.1"), destination: a("192.0.2.1"), protocolNumber: 17, sourcePort: 5000, destinationPort: 4000),
            mark: 2, status: 0x8 | 0x20, eventTime: t0)
        let o = try json(EventFormatter.record(e, kind: .new, now: 0, domains: domains))
        #expect(o["inside"] as? String == "100.64.0.1" && o["inside_port"] as? Int == 5000)
        #expect(o["outside"] as? String == "198.51.100.8" && o["outside_port"] as? Int == 5000)
        #expect(o["destination"] as? String == "192.0.2.1" && o["destination_port"] as? Int == 4000)
        #expect(o["domain"] as? String == "red" && o["nat"] as? Bool == true)
    }

    @Test func destroyCarriesStartAndStop() throws {
        var e = udp(zone: 1, mark: 1)
        e.eventTime = nil
        e.start = t0
        e.stop = t0 + 2_500_000_000
        let r = EventFormatter.record(e, kind: .destroy, now: 0, domains: domains)
        let o = try json(r)
        #expect(o["event"] as? String == "destroy")
        #expect(o["start"] as? String == "2025-01-02T03:04:05.123456Z")
        #expect(o["stop"] as? String == "2025-01-02T03:04:07.623456Z")
        #expect(o["time"] as? String == o["stop"] as? String)
        #expect(o["nat"] as? Bool == false)
    }

    @Test func noDestinationLeavesItOut() throws {
        let r = EventFormatter.record(udp(zone: 1, mark: 1), kind: .new, now: 0, domains: domains)
        let o = try json(r, destination: false)
        #expect(o["destination"] == nil && o["destination_port"] == nil)
        #expect(o["inside"] != nil && o["outside"] != nil)
        #expect(!EventFormatter.text(r, destination: false, utc: true).contains("192.0.2.1"))
        #expect(EventFormatter.text(r, destination: true, utc: true).contains("192.0.2.1:9"))
        #expect(!EventFormatter.textHeader(destination: false).contains("DESTINATION"))
    }

    @Test func textLinesAreAligned() {
        let blue = EventFormatter.record(udp(zone: 1, mark: 1), kind: .new, now: 0, domains: domains)
        let red = EventFormatter.record(udp(zone: 2, mark: 2, mapped: 40291), kind: .destroy, now: 0, domains: domains)
        let header = EventFormatter.textHeader()
        let lines = [header, EventFormatter.text(blue, utc: true), EventFormatter.text(red, utc: true)]
        #expect(lines[1] == "03:04:05.123456 NEW     blue      1 udp    100.64.0.1:40000       100.64.0.1:40000       192.0.2.1:9            -")
        #expect(lines[2].hasPrefix("03:04:05.123456 DESTROY red       2 udp    100.64.0.1:40000       100.64.0.1:40291       192.0.2.1:9            nat"))
        for column in ["INSIDE", "OUTSIDE", "DESTINATION", "NAT"] {
            let at = header.range(of: column, options: .backwards)!.lowerBound.utf16Offset(in: header)
            #expect(lines[1].utf16.count > at && lines[2].utf16.count > at)
            #expect(Array(lines[1].utf16)[at - 1] == 32 && Array(lines[2].utf16)[at - 1] == 32)
        }
    }

    @Test func icmpUsesTheEchoIDAndIPv6IsBracketed() throws {
        let e = ConntrackEntry(
            id: 1, family: .v6,
            original: ConntrackTuple(source: a("2001:db8:b:10::1"), destination: a("2001:db8:a::ffff"), protocolNumber: 58, icmpID: 99, icmpType: 128, icmpCode: 0),
            reply: ConntrackTuple(source: a("2001:db8:a::ffff"), destination: a("2001:db8:b:10::1"), protocolNumber: 58, icmpID: 99, icmpType: 129, icmpCode: 0),
            originalZone: 1, mark: 1)
        let r = EventFormatter.record(e, kind: .new, now: t0, domains: domains)
        #expect(r.insidePort == 99 && r.outsidePort == 99 && r.destinationPort == nil && !r.nat)
        #expect(r.time == t0)   // no kernel time: when we read it
        #expect(EventFormatter.text(r, utc: true).contains("[2001:db8:b:10::1]:99"))
        #expect(try json(r)["protocol"] as? String == "icmpv6")
    }

    @Test func contextFilterPicksDomainAndAddress() throws {
        let blueC1 = try EventFilter(lab: lab, contexts: ["blue_c1"])
        let blue = EventFormatter.record(udp(zone: 1, mark: 1), kind: .new, now: 0, domains: domains)
        let red = EventFormatter.record(udp(zone: 2, mark: 2), kind: .new, now: 0, domains: domains)
        #expect(blueC1.matches(blue) && !blueC1.matches(red))
        var c2 = blue
        c2.inside = a("100.64.0.2")
        #expect(!blueC1.matches(c2))
        #expect(try EventFilter(lab: lab, contexts: ["blue_c2"]).matches(c2))
        #expect(try EventFilter(lab: lab, contexts: ["main:blue"]).matches(c2))
        let both = try EventFilter(lab: lab, contexts: ["blue_c1", "red_c1"])
        #expect(both.matches(blue) && both.matches(red) && !both.matches(c2))
        #expect(EventFilter().matches(c2))
        #expect(throws: UsageError.self) { try EventFilter(lab: lab, contexts: ["green_c1"]) }
    }

    @Test func overrunIsALineOfItsOwn() throws {
        let line = EventFormatter.overrunJSON(time: t0, overruns: 3).serialized()
        let o = try #require(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        #expect(o["event"] as? String == "overrun" && o["overruns"] as? Int == 3)
        #expect(EventFormatter.overrunText(time: t0, overruns: 1, utc: true).contains("OVERRUN"))
    }

    @Test func resyncLogsWhatWasNotLoggedAndClosesWhatIsGone() {
        let log = MappingLog(domains: domains)
        let seen = udp(zone: 1, mark: 1, id: 1)
        var gone = udp(zone: 2, mark: 2, mapped: 40291, id: 2)
        gone.original.sourcePort = 40001
        var unseen = udp(zone: 1, mark: 1, id: 3)
        unseen.original.sourcePort = 40002
        #expect(log.handle(ConntrackEvent(kind: .new, entry: seen), now: t0) != nil)
        #expect(log.handle(ConntrackEvent(kind: .new, entry: gone), now: t0) != nil)
        #expect(log.openCount == 2)
        let (records, summary) = log.resync([seen, unseen], now: t0 + 5)
        #expect(summary.tableEntries == 2 && summary.logged == 1 && summary.closed == 1)
        #expect(records.count == 2)
        #expect(records[0].kind == .destroy && records[0].resync && records[0].id == 2 && records[0].stop == nil)
        #expect(records[1].kind == .new && records[1].resync && records[1].id == 3 && records[1].insidePort == 40002)
        // The NEW event of a mapping already logged by the resync is not logged twice...
        #expect(log.handle(ConntrackEvent(kind: .new, entry: unseen), now: t0) == nil)
        // ...but its DESTROY is.
        #expect(log.handle(ConntrackEvent(kind: .destroy, entry: unseen), now: t0)?.kind == .destroy)
        #expect(log.openCount == 1)
    }

    @Test func fastJSONLineIsTheSameAsTheJSONValue() {
        var records = [
            EventFormatter.record(udp(zone: 2, mark: 2, mapped: 40291), kind: .new, now: 0, domains: domains),
            EventFormatter.record(udp(zone: nil, mark: 0), kind: .update, now: t0, domains: domains),
        ]
        var d = EventFormatter.record(udp(zone: 1, mark: 1), kind: .destroy, now: t0, domains: domains)
        d.resync = true; d.id = nil; d.insidePort = nil; d.domain = "we\"ird"
        records.append(d)
        for r in records {
            for dst in [true, false] {
                #expect(EventFormatter.jsonLine(r, destination: dst) == EventFormatter.json(r, destination: dst).serialized())
            }
        }
    }

    @Test func isoTimeIsUTC() {
        #expect(EventFormatter.isoTime(0) == "1970-01-01T00:00:00.000000Z")
        #expect(EventFormatter.isoTime(t0) == "2025-01-02T03:04:05.123456Z")
        #expect(EventFormatter.clockTime(t0, utc: true) == "03:04:05.123456")
    }
}
