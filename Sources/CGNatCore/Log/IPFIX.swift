import NetAddress

/// IPFIX (RFC 7011) messages carrying the NAT information elements of RFC 8158. Pure: bytes in
/// memory; the runtime sends them over UDP.
public enum IPFIX {
    public static let version: UInt16 = 10
    public static let messageHeaderLength = 16
    public static let setHeaderLength = 4
    public static let templateSetID: UInt16 = 2

    /// IANA "IPFIX Information Elements" ids used here, with their lengths on the wire.
    public enum IE {
        public static let protocolIdentifier: UInt16 = 4
        public static let sourceTransportPort: UInt16 = 7
        public static let sourceIPv4Address: UInt16 = 8
        public static let destinationTransportPort: UInt16 = 11
        public static let destinationIPv4Address: UInt16 = 12
        public static let postNATSourceIPv4Address: UInt16 = 225
        public static let postNATDestinationIPv4Address: UInt16 = 226
        public static let postNAPTSourceTransportPort: UInt16 = 227
        public static let postNAPTDestinationTransportPort: UInt16 = 228
        public static let natEvent: UInt16 = 230
        public static let ingressVRFID: UInt16 = 234
        public static let natPoolId: UInt16 = 283
        public static let observationTimeMilliseconds: UInt16 = 323
        public static let portRangeStart: UInt16 = 361
        public static let portRangeEnd: UInt16 = 362
        public static let portRangeStepSize: UInt16 = 363
        public static let portRangeNumPorts: UInt16 = 364
        public static let natQuotaExceededEvent: UInt16 = 466
        public static let maxEntriesPerUser: UInt16 = 473
    }

    /// natEvent values (IANA "natEvent" registry, RFC 8158 section 4.1). The values 1 and 2
    /// (historic "NAT translation create/delete") are not what RFC 8158 logs for NAT44 sessions.
    public enum NATEvent {
        public static let addressesExhausted: UInt8 = 3
        public static let nat44SessionCreate: UInt8 = 4
        public static let nat44SessionDelete: UInt8 = 5
        public static let portsExhausted: UInt8 = 12
        public static let quotaExceeded: UInt8 = 13
        public static let portBlockAllocation: UInt8 = 16
        public static let portBlockDeallocation: UInt8 = 17
    }

    /// natQuotaExceededEvent values (RFC 8158 section 4.2).
    public enum QuotaEvent {
        public static let maxSessionEntries: UInt32 = 1
        public static let maxEntriesPerUser: UInt32 = 3
    }

    public struct Field: Equatable, Sendable {
        public var id: UInt16
        public var length: UInt16
        public init(_ id: UInt16, _ length: UInt16) { self.id = id; self.length = length }
    }

    /// One template per event layout, as RFC 8158 section 4 lays them out (timestamp, VRF,
    /// addresses and ports, event); ids fixed so collectors and tests can rely on them.
    public struct Template: Equatable, Sendable {
        public var id: UInt16
        public var fields: [Field]
        public var recordLength: Int { fields.reduce(0) { $0 + Int($1.length) } }

        public static let sessionWithDestination = Template(id: 256, fields: [
            Field(IE.observationTimeMilliseconds, 8), Field(IE.ingressVRFID, 4),
            Field(IE.sourceIPv4Address, 4), Field(IE.postNATSourceIPv4Address, 4), Field(IE.protocolIdentifier, 1),
            Field(IE.sourceTransportPort, 2), Field(IE.postNAPTSourceTransportPort, 2),
            Field(IE.destinationIPv4Address, 4), Field(IE.postNATDestinationIPv4Address, 4),
            Field(IE.destinationTransportPort, 2), Field(IE.postNAPTDestinationTransportPort, 2),
            Field(IE.natEvent, 1),
        ])
        public static let session = Template(id: 257, fields: [
            Field(IE.observationTimeMilliseconds, 8), Field(IE.ingressVRFID, 4),
            Field(IE.sourceIPv4Address, 4), Field(IE.postNATSourceIPv4Address, 4), Field(IE.protocolIdentifier, 1),
            Field(IE.sourceTransportPort, 2), Field(IE.postNAPTSourceTransportPort, 2),
            Field(IE.natEvent, 1),
        ])
        public static let portBlock = Template(id: 258, fields: [
            Field(IE.observationTimeMilliseconds, 8), Field(IE.ingressVRFID, 4),
            Field(IE.sourceIPv4Address, 4), Field(IE.postNATSourceIPv4Address, 4),
            Field(IE.portRangeStart, 2), Field(IE.portRangeEnd, 2), Field(IE.portRangeStepSize, 2),
            Field(IE.portRangeNumPorts, 2), Field(IE.natEvent, 1),
        ])
        /// Maximum entries per user exceeded, without the user: a counter cannot say who.
        public static let quotaPerUser = Template(id: 259, fields: [
            Field(IE.observationTimeMilliseconds, 8), Field(IE.natEvent, 1),
            Field(IE.natQuotaExceededEvent, 4), Field(IE.maxEntriesPerUser, 4),
        ])
        public static let addressesExhausted = Template(id: 260, fields: [
            Field(IE.observationTimeMilliseconds, 8), Field(IE.natEvent, 1), Field(IE.natPoolId, 4),
        ])

        public static let all: [Template] = [sessionWithDestination, session, portBlock, quotaPerUser, addressesExhausted]

        public static func of(_ e: NATLogEvent) -> Template {
            switch e.kind {
            case .sessionCreate, .sessionDelete: return e.destination != nil ? sessionWithDestination : session
            case .portBlockAllocation, .portBlockDeallocation: return portBlock
            case .quotaExceeded: return quotaPerUser
            case .addressesExhausted: return addressesExhausted
            }
        }
    }

    /// The pool id in addresses-exhausted records: the lab has one pool.
    public static let poolID: UInt32 = 1
}

/// Builds the messages of one exporter and one observation domain: the sequence number of each
/// message is the count of data records sent before it in this domain (RFC 7011 section 3.1),
/// messages stay within `maxMessageSize` (under the path MTU: UDP must not fragment them).
public struct IPFIXEncoder: Sendable {
    public let observationDomain: UInt32
    public let maxMessageSize: Int
    /// Data records encoded so far (mod 2^32, as the header carries it).
    public private(set) var sequence: UInt32 = 0

    public init(observationDomain: UInt32 = 1, maxMessageSize: Int = 1400) {
        self.observationDomain = observationDomain
        self.maxMessageSize = max(maxMessageSize, 256)
    }

    /// Every template in one message (sent at start and again on the template timer).
    public func templateMessage(exportTime: UInt32) -> [UInt8] {
        var m = header(exportTime: exportTime)
        let start = m.count
        put16(&m, IPFIX.templateSetID)
        put16(&m, 0)
        for t in IPFIX.Template.all {
            put16(&m, t.id)
            put16(&m, UInt16(t.fields.count))
            for f in t.fields { put16(&m, f.id); put16(&m, f.length) }
        }
        patch16(&m, at: start + 2, UInt16(m.count - start))
        patch16(&m, at: 2, UInt16(m.count))
        return m
    }

    /// The data messages for `events`, in order: consecutive events of one template share a set,
    /// a message is closed before it would pass maxMessageSize. Returns each message with the
    /// number of records in it.
    public mutating func dataMessages(_ events: [NATLogEvent], exportTime: UInt32) -> [(bytes: [UInt8], records: Int)] {
        var out: [(bytes: [UInt8], records: Int)] = []
        var m: [UInt8] = []
        var records = 0
        var setStart = -1
        var setTemplate: UInt16 = 0
        func closeSet() {
            guard setStart >= 0 else { return }
            patch16(&m, at: setStart + 2, UInt16(m.count - setStart))
            setStart = -1
        }
        func closeMessage() {
            guard records > 0 else { return }
            closeSet()
            patch16(&m, at: 2, UInt16(m.count))
            out.append((m, records))
            sequence &+= UInt32(records)
            records = 0
            m = []
        }
        for e in events {
            let t = IPFIX.Template.of(e)
            let sameSet = setStart >= 0 && setTemplate == t.id
            let need = t.recordLength + (sameSet ? 0 : IPFIX.setHeaderLength)
            if records > 0 && m.count + need > maxMessageSize { closeMessage() }
            if m.isEmpty { m = header(exportTime: exportTime) }
            if !(setStart >= 0 && setTemplate == t.id) {
                closeSet()
                setStart = m.count
                setTemplate = t.id
                put16(&m, t.id)
                put16(&m, 0)
            }
            encode(e, t, into: &m)
            records += 1
        }
        closeMessage()
        return out
    }

    private func header(exportTime: UInt32) -> [UInt8] {
        var m: [UInt8] = []
        m.reserveCapacity(maxMessageSize)
        put16(&m, IPFIX.version)
        put16(&m, 0)   // length, patched when the message is complete
        put32(&m, exportTime)
        put32(&m, sequence)
        put32(&m, observationDomain)
        return m
    }

    private func encode(_ e: NATLogEvent, _ t: IPFIX.Template, into m: inout [UInt8]) {
        for f in t.fields {
            switch f.id {
            case IPFIX.IE.observationTimeMilliseconds: put64(&m, e.timeMilliseconds)
            case IPFIX.IE.ingressVRFID: put32(&m, e.vrfID)
            case IPFIX.IE.sourceIPv4Address: putV4(&m, e.inside)
            case IPFIX.IE.postNATSourceIPv4Address: putV4(&m, e.outside)
            case IPFIX.IE.protocolIdentifier: m.append(e.protocolNumber)
            case IPFIX.IE.sourceTransportPort: put16(&m, e.insidePort)
            case IPFIX.IE.postNAPTSourceTransportPort: put16(&m, e.outsidePort)
            // No destination NAT here: the post-NAT destination is the destination.
            case IPFIX.IE.destinationIPv4Address, IPFIX.IE.postNATDestinationIPv4Address: putV4(&m, e.destination)
            case IPFIX.IE.destinationTransportPort, IPFIX.IE.postNAPTDestinationTransportPort: put16(&m, e.destinationPort)
            case IPFIX.IE.portRangeStart: put16(&m, e.ports?.lowerBound ?? 0)
            case IPFIX.IE.portRangeEnd: put16(&m, e.ports?.upperBound ?? 0)
            case IPFIX.IE.portRangeStepSize: put16(&m, 1)
            case IPFIX.IE.portRangeNumPorts: put16(&m, UInt16(truncatingIfNeeded: e.ports?.count ?? 0))
            case IPFIX.IE.natEvent: m.append(e.natEvent)
            case IPFIX.IE.natQuotaExceededEvent: put32(&m, IPFIX.QuotaEvent.maxEntriesPerUser)
            case IPFIX.IE.maxEntriesPerUser:
                if case .quotaExceeded(let limit) = e.kind { put32(&m, limit) } else { put32(&m, 0) }
            case IPFIX.IE.natPoolId: put32(&m, IPFIX.poolID)
            default: m.append(contentsOf: [UInt8](repeating: 0, count: Int(f.length)))
            }
        }
    }
}

@inline(__always) private func put16(_ m: inout [UInt8], _ v: UInt16) { m.append(UInt8(v >> 8)); m.append(UInt8(v & 0xff)) }
@inline(__always) private func put32(_ m: inout [UInt8], _ v: UInt32) { put16(&m, UInt16(v >> 16)); put16(&m, UInt16(v & 0xffff)) }
@inline(__always) private func put64(_ m: inout [UInt8], _ v: UInt64) { put32(&m, UInt32(v >> 32)); put32(&m, UInt32(v & 0xffff_ffff)) }
private func patch16(_ m: inout [UInt8], at i: Int, _ v: UInt16) { m[i] = UInt8(v >> 8); m[i + 1] = UInt8(v & 0xff) }
private func putV4(_ m: inout [UInt8], _ a: IPAddress?) {
    if let a, a.family == .v4 { m.append(contentsOf: a.bytes) } else { m.append(contentsOf: [0, 0, 0, 0]) }
}
