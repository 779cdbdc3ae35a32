import Glibc

/// `cgnat events --ipfix HOST:PORT`: RFC 8158 NAT events over IPFIX (RFC 7011) on UDP.
public enum IPFIXOutput {
    public struct Options: Sendable {
        public var target: DatagramTarget
        /// NAT44 session create/delete (off for deterministic blocks, where the block log is enough).
        public var sessions = true
        public var destination = true
        /// Templates are sent at start and again every this many seconds (UDP: a collector that
        /// starts later, or lost the first, learns them then).
        public var templateInterval: Double = 60
        public var observationDomain: UInt32 = 1
        /// Under the path MTU of any usual link, so no message is fragmented.
        public var maxMessageSize = 1400
        public var queueCapacity = 1 << 18
        public init(target: DatagramTarget) { self.target = target }
    }

    final class Encoder: NATLogEncoder {
        var ipfix: IPFIXEncoder
        let interval: Double
        var nextTemplates: Double = 0   // at once

        init(_ o: Options) {
            ipfix = IPFIXEncoder(observationDomain: o.observationDomain, maxMessageSize: o.maxMessageSize)
            interval = o.templateInterval * 1000
        }

        func periodic(nowMs: UInt64, monotonicMs: Double) -> [[UInt8]] {
            guard monotonicMs >= nextTemplates else { return [] }
            nextTemplates = monotonicMs + interval
            return [ipfix.templateMessage(exportTime: UInt32(truncatingIfNeeded: nowMs / 1000))]
        }

        func encode(_ events: [NATLogEvent], nowMs: UInt64) -> [(bytes: [UInt8], records: Int)] {
            ipfix.dataMessages(events, exportTime: UInt32(truncatingIfNeeded: nowMs / 1000))
        }
    }

    /// The socket is opened here, on the caller's thread: in the namespace cgnat was started in,
    /// where collectors run (the event stream reads conntrack on a thread inside the lab).
    /// With deterministic port blocks, every block of the policy is logged as allocated first,
    /// and released when the lab goes down.
    public static func make(_ o: Options, lab: Lab) throws -> EventOutput {
        let fd = try o.target.connect(option: "--ipfix")
        return DatagramOutput.natLog(name: "ipfix \(o.target)", fd: fd, encoder: Encoder(o), capacity: o.queueCapacity,
                                     lab: lab, sessions: o.sessions, destination: o.destination)
    }
}

extension DatagramOutput {
    /// An output of the NAT log (IPFIX or syslog, by `encoder`): the policy's deterministic blocks
    /// allocated first and released when the lab goes down, the NAT's counted refusals, and the
    /// sessions unless turned off.
    static func natLog(name: String, fd: Int32, encoder: NATLogEncoder, capacity: Int, lab: Lab,
                       sessions: Bool, destination: Bool) -> DatagramOutput {
        DatagramOutput(
            name: name, fd: fd, encoder: encoder, capacity: capacity,
            preamble: NATLogEvent.portBlocks(of: lab, timeMilliseconds: EventFormatter.realtimeNow() / 1_000_000),
            onLabDown: { NATLogEvent.portBlocks(of: lab, release: true, timeMilliseconds: $0) },
            map: { item in
                if case .natEvent(let e, _) = item { return e }
                guard sessions, case .record(let r) = item else { return nil }
                return NATLogEvent(record: r, destination: destination)
            })
    }
}

/// `cgnat events --syslog [HOST:PORT]`: one RFC 5424 line per event, to the local syslog socket
/// (/dev/log, a unix datagram socket) or a UDP target.
public enum SyslogOutput {
    public static let localSocket = "/dev/log"

    public struct Options: Sendable {
        public var target: DatagramTarget
        public var sessions = true
        public var destination = true
        public var queueCapacity = 1 << 18
        public init(target: DatagramTarget) { self.target = target }
    }

    final class Encoder: NATLogEncoder {
        let header: Syslog.Header
        init(_ h: Syslog.Header) { header = h }
        func periodic(nowMs: UInt64, monotonicMs: Double) -> [[UInt8]] { [] }
        func encode(_ events: [NATLogEvent], nowMs: UInt64) -> [(bytes: [UInt8], records: Int)] {
            events.map { (Array(Syslog.line($0, header: header).utf8), 1) }
        }
    }

    public static func make(_ o: Options, lab: Lab) throws -> EventOutput {
        let fd = try o.target.connect(option: "--syslog")
        var name = [CChar](repeating: 0, count: 256)
        gethostname(&name, name.count - 1)
        let header = Syslog.Header(hostname: String(cString: name), procID: String(getpid()))
        return DatagramOutput.natLog(name: "syslog \(o.target)", fd: fd, encoder: Encoder(header), capacity: o.queueCapacity,
                                     lab: lab, sessions: o.sessions, destination: o.destination)
    }
}
