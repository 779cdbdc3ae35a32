import Testing
import Netlink
@testable import CGNat

/// IPFIX (RFC 7011 / RFC 8158) and RFC 5424 encodings of the NAT log, byte by byte (no root).
@Suite struct NATLogTests {
    func a(_ s: String) -> IPAddress { IPAddress(s)! }
    func u16(_ b: [UInt8], _ i: Int) -> Int { Int(b[i]) << 8 | Int(b[i + 1]) }
    func u32(_ b: [UInt8], _ i: Int) -> UInt32 { UInt32(u16(b, i)) << 16 | UInt32(u16(b, i + 2)) }
    func u64(_ b: [UInt8], _ i: Int) -> UInt64 { UInt64(u32(b, i)) << 32 | UInt64(u32(b, i + 4)) }

    // 2026-12-01T13:00:28.045Z
    let ms: UInt64 = 1_796_130_028_045

    func session(_ kind: NATLogEvent.Kind = .sessionCreate, destination: Bool = true, proto: UInt8 = 17) -> NATLogEvent {
        NATLogEvent(kind: kind, timeMilliseconds: ms, vrfID: 2, protocolNumber: proto,
                    inside: a("100.64.0.1"), insidePort: 51557, outside: a("198.51.100.8"), outsidePort: 4461,
                    destination: destination ? a("192.0.2.1") : nil, destinationPort: destination ? 9 : 0, domain: "red")
    }

    func block(_ i: Int) -> NATLogEvent {
        NATLogEvent(kind: .portBlockAllocation, timeMilliseconds: ms, vrfID: 1, inside: a("100.64.0.0").advanced(by: UInt64(i)),
                    outside: a("198.51.100.0"), ports: 1024...3039)
    }

    @Test func natEventValuesAreIANAs() {
        // IANA natEvent registry (RFC 8158): not the historic 1/2 "translation create/delete".
        #expect(session(.sessionCreate).natEvent == 4)
        #expect(session(.sessionDelete).natEvent == 5)
        #expect(block(0).natEvent == 16)
        var b = block(0); b.kind = .portBlockDeallocation
        #expect(b.natEvent == 17)
        #expect(NATLogEvent(kind: .quotaExceeded(limit: 4000), timeMilliseconds: ms).natEvent == 13)
        #expect(NATLogEvent(kind: .addressesExhausted, timeMilliseconds: ms).natEvent == 3)
    }

    @Test func templateMessageCarriesEveryTemplateWithItsFields() {
        let m = IPFIXEncoder(observationDomain: 7).templateMessage(exportTime: 1_796_130_028)
        #expect(u16(m, 0) == 10 && u16(m, 2) == m.count)
        #expect(u32(m, 4) == 1_796_130_028 && u32(m, 8) == 0 && u32(m, 12) == 7)
        #expect(u16(m, 16) == 2 && u16(m, 18) == m.count - 16)   // one template set, to the end
        var i = 20
        var seen: [Int: [Int]] = [:]
        while i < m.count {
            let id = u16(m, i), n = u16(m, i + 2)
            seen[id] = (0..<n).map { u16(m, i + 4 + $0 * 4) }
            for f in 0..<n { #expect(u16(m, i + 6 + f * 4) > 0) }   // every field has a length
            i += 4 + 4 * n
        }
        #expect(i == m.count)
        #expect(seen[256] == [323, 234, 8, 225, 4, 7, 227, 12, 226, 11, 228, 230])
        #expect(seen[257] == [323, 234, 8, 225, 4, 7, 227, 230])
        #expect(seen[258] == [323, 234, 8, 225, 361, 362, 363, 364, 230])
        #expect(seen[259] == [323, 230, 466, 473])
        #expect(seen[260] == [323, 230, 283])
    }

    @Test func sessionRecordFieldsSitAtTheirOffsets() {
        var enc = IPFIXEncoder(observationDomain: 1)
        let msgs = enc.dataMessages([session()], exportTime: 100)
        #expect(msgs.count == 1 && msgs[0].records == 1)
        let m = msgs[0].bytes
        #expect(m.count == 16 + 4 + 38 && u16(m, 2) == m.count)
        #expect(u32(m, 4) == 100 && u32(m, 8) == 0 && u32(m, 12) == 1)
        #expect(u16(m, 16) == 256 && u16(m, 18) == 42)
        #expect(u64(m, 20) == ms)
        #expect(u32(m, 28) == 2)                                   // ingressVRFID: the domain
        #expect(Array(m[32..<36]) == [100, 64, 0, 1])              // sourceIPv4Address
        #expect(Array(m[36..<40]) == [198, 51, 100, 8])            // postNATSourceIPv4Address
        #expect(m[40] == 17)
        #expect(u16(m, 41) == 51557 && u16(m, 43) == 4461)
        #expect(Array(m[45..<49]) == [192, 0, 2, 1] && Array(m[49..<53]) == [192, 0, 2, 1])
        #expect(u16(m, 53) == 9 && u16(m, 55) == 9)
        #expect(m[57] == 4)
    }

    @Test func withoutDestinationTheShortTemplateIsUsed() {
        var enc = IPFIXEncoder()
        let m = enc.dataMessages([session(.sessionDelete, destination: false)], exportTime: 0)[0].bytes
        #expect(u16(m, 16) == 257 && u16(m, 18) == 4 + 26 && m.count == 16 + 30)
        #expect(m[m.count - 1] == 5)
    }

    @Test func portBlockRecordCarriesTheRange() {
        var enc = IPFIXEncoder()
        let m = enc.dataMessages([block(3)], exportTime: 0)[0].bytes
        #expect(u16(m, 16) == 258 && u16(m, 18) == 4 + 29)
        #expect(Array(m[32..<36]) == [100, 64, 0, 3] && Array(m[36..<40]) == [198, 51, 100, 0])
        #expect(u16(m, 40) == 1024 && u16(m, 42) == 3039 && u16(m, 44) == 1 && u16(m, 46) == 2016)
        #expect(m[48] == 16)
    }

    @Test func sequenceNumbersCountRecordsAndMessagesStayUnderTheLimit() {
        var enc = IPFIXEncoder(maxMessageSize: 400)
        let first = enc.dataMessages([session(), session(), session()], exportTime: 0)
        #expect(first.count == 1 && u32(first[0].bytes, 8) == 0)
        let many = enc.dataMessages((0..<100).map(block) + [session()], exportTime: 0)
        #expect(many.count > 1)
        #expect(many.allSatisfy { $0.bytes.count <= 400 && u16($0.bytes, 2) == $0.bytes.count })
        #expect(many.reduce(0) { $0 + $1.records } == 101)
        var expected: UInt32 = 3
        for msg in many {
            #expect(u32(msg.bytes, 8) == expected)
            expected += UInt32(msg.records)
            // The sets fill the message exactly, each a known template.
            var i = 16
            while i < msg.bytes.count {
                #expect([256, 258].contains(u16(msg.bytes, i)))
                i += u16(msg.bytes, i + 2)
            }
            #expect(i == msg.bytes.count)
        }
        #expect(enc.sequence == 104)
        // Templates do not count as data records.
        #expect(u32(enc.templateMessage(exportTime: 0), 8) == 104)
    }

    @Test func mixedEventsShareAMessageInSetsOfTheirTemplates() {
        var enc = IPFIXEncoder()
        let m = enc.dataMessages([session(), session(), block(0), session(destination: false)], exportTime: 0)
        #expect(m.count == 1 && m[0].records == 4)
        let b = m[0].bytes
        #expect(u16(b, 16) == 256 && u16(b, 18) == 4 + 2 * 38)
        let second = 16 + 4 + 76
        #expect(u16(b, second) == 258 && u16(b, second + 2) == 4 + 29)
        #expect(u16(b, second + 33) == 257)
    }

    @Test func everySubscriberThePolicyCoversGetsItsBlock() throws {
        let lab = Lab.seed()
        let policy = try #require(lab.portBlockPolicy)
        let events = NATLogEvent.portBlocks(of: lab, timeMilliseconds: ms)
        #expect(events.count == lab.router.subscribers.count * policy.insideCount)
        for e in events {
            let alloc = policy.allocation(domainID: e.vrfID, inside: try #require(e.inside))
            #expect(alloc?.publicAddress == e.outside && alloc?.ports == e.ports && e.kind == .portBlockAllocation)
        }
        // The seed's hosts are among them.
        for h in lab.hosts {
            guard let block = lab.portBlock(of: h) else { continue }
            #expect(events.contains { $0.outside == block.publicAddress && $0.ports == block.ports })
        }
        #expect(NATLogEvent.portBlocks(of: lab, release: true, timeMilliseconds: ms).allSatisfy { $0.kind == .portBlockDeallocation })
        var random = lab
        random.router.nat.mapping = .random
        #expect(NATLogEvent.portBlocks(of: random, timeMilliseconds: ms).isEmpty)
    }

    @Test func syslogLineIsRFC5424WithEscapedStructuredData() {
        let h = Syslog.Header(hostname: "cgn 1", procID: "42")
        var e = session()
        e.domain = "a\"b]c\\d"
        let line = Syslog.line(e, header: h)
        #expect(line.hasPrefix("<134>1 2026-12-01T13:00:28.045Z cgn1 cgnat 42 SESSION_CREATE [nat@32473 "))
        #expect(line.contains(#" domain="a\"b\]c\\d""#))
        #expect(line.contains(#"event="4" vrf="2""#))
        #expect(line.contains(#"inside="100.64.0.1" insidePort="51557" outside="198.51.100.8" outsidePort="4461" destination="192.0.2.1" destinationPort="9"]"#))
        #expect(line.hasSuffix("] session create proto 17 100.64.0.1:51557 -> 198.51.100.8:4461 to 192.0.2.1:9"))
        #expect(!line.contains("\n"))
        let icmp = Syslog.line(session(proto: 1), header: Syslog.Header(hostname: "", procID: "1"))
        #expect(icmp.contains(" - cgnat 1 SESSION_CREATE "))   // an empty hostname is NILVALUE
        #expect(!icmp.contains("destinationPort") && icmp.hasSuffix(" to 192.0.2.1"))
        let b = Syslog.line(block(1), header: h)
        #expect(b.contains(" BLOCK_ALLOC [nat@32473 event=\"16\" vrf=\"1\" inside=\"100.64.0.1\" outside=\"198.51.100.0\" portStart=\"1024\" portEnd=\"3039\"]"))
    }

    @Test func syslogTimestampsAreUTCCalendarDates() {
        #expect(Syslog.timestamp(0) == "1970-01-01T00:00:00.000Z")
        #expect(Syslog.timestamp(951_782_400_007) == "2000-02-29T00:00:00.007Z")
        #expect(Syslog.timestamp(1_735_787_045_123) == "2025-01-02T03:04:05.123Z")
        #expect(Syslog.timestamp(4_102_444_799_999) == "2099-12-31T23:59:59.999Z")
    }

    @Test func targetsParseOrSayWhatIsWrong() throws {
        #expect(try DatagramTarget.parse("127.0.0.1:4739", option: "--ipfix") == .udp(host: "127.0.0.1", port: 4739))
        #expect(try DatagramTarget.parse("[::1]:514", option: "--syslog") == .udp(host: "::1", port: 514))
        #expect(try DatagramTarget.parse("collector.example:2055", option: "--ipfix") == .udp(host: "collector.example", port: 2055))
        #expect(try DatagramTarget.parse("/dev/log", option: "--syslog") == .unix(path: "/dev/log"))
        for bad in ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:99999", ":4739", "::1:4739", "[::1]"] {
            #expect(throws: UsageError.self, "\(bad)") { try DatagramTarget.parse(bad, option: "--ipfix") }
        }
    }

    @Test func onlySubscriberIPv4CreatesAndDeletesAreSessions() {
        let r = MappingRecord(kind: .new, resync: false, time: ms * 1_000_000 + 999_999, domainID: 2, domain: "red", zone: 2, mark: 2,
                              protocolNumber: 6, inside: a("100.64.0.1"), insidePort: 1, outside: a("198.51.100.8"), outsidePort: 2,
                              destination: a("192.0.2.1"), destinationPort: 80, nat: true)
        let e = NATLogEvent(record: r, destination: true)
        #expect(e?.kind == .sessionCreate && e?.timeMilliseconds == ms && e?.vrfID == 2 && e?.destinationPort == 80)
        #expect(NATLogEvent(record: r, destination: false)?.destination == nil)
        var d = r; d.kind = .destroy
        #expect(NATLogEvent(record: d, destination: true)?.kind == .sessionDelete)
        var u = r; u.kind = .update
        #expect(NATLogEvent(record: u, destination: true) == nil)
        var own = r; own.domainID = 0
        #expect(NATLogEvent(record: own, destination: true) == nil)
        var v6 = r; v6.inside = a("2001:db8:b:10::1")
        #expect(NATLogEvent(record: v6, destination: true) == nil)
    }
}
