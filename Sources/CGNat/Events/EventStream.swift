import Glibc
import Netlink

/// Set from a signal handler (Ctrl-C, SIGTERM): the event stream ends at its next wake-up.
nonisolated(unsafe) public var eventStreamStopRequested: sig_atomic_t = 0

/// Live conntrack events of the router's namespace as NAT mapping records, over a native
/// ctnetlink subscription. When the kernel drops events (ENOBUFS) the stream says so and
/// resynchronises from a table dump taken on a second socket in the same namespace.
public final class EventStream {
    public enum Item: Sendable {
        case record(MappingRecord)
        case overrun(time: UInt64, overruns: Int)
        case resync(ResyncSummary)
        /// A refusal the NAT counted (quota exceeded, addresses exhausted): `refused` flows since
        /// the last one (`NATLimitWatcher`); not from conntrack.
        case natEvent(NATLogEvent, refused: UInt64)
    }

    public struct Summary: Equatable, Sendable {
        public var new = 0, update = 0, destroy = 0
        /// Records that came from resynchronisations (both NEW and DESTROY).
        public var resyncRecords = 0
        public var overruns = 0
        public var emitted: Int { new + update + destroy + resyncRecords }
    }

    /// 64 MiB (SO_RCVBUFFORCE as root): about 100k events of slack before the kernel drops any.
    public static let defaultReceiveBuffer: Int32 = 64 << 20

    let events: ConntrackSocket
    let dumper: ConntrackSocket
    public let log: MappingLog
    public private(set) var summary = Summary()
    /// The event socket's drop counter at the last resync.
    private var dropsSeen: UInt32 = 0

    /// Opens both sockets on a thread inside the namespace behind `namespaceFD`; the subscription
    /// is live when this returns.
    public init(namespaceFD: Int32, domains: DomainNames, filter: EventFilter = EventFilter(),
                groups: UInt32 = ConntrackSocket.newEvents | ConntrackSocket.updateEvents | ConntrackSocket.destroyEvents,
                receiveBuffer: Int32 = EventStream.defaultReceiveBuffer) throws {
        let (ev, dump) = try NetNamespace.run(in: namespaceFD) { () throws -> (ConntrackSocket, ConntrackSocket) in
            let ev = try ConntrackSocket(groups: groups)
            ev.socket.setReceiveBuffer(receiveBuffer)
            return (ev, try ConntrackSocket())
        }
        events = ev
        dumper = dump
        log = MappingLog(domains: domains, filter: filter)
    }

    /// The stream of a lab that is up: the router's (`main`) namespace on either backend.
    public static func open(lab: Lab, contexts: [String] = [], receiveBuffer: Int32 = EventStream.defaultReceiveBuffer) throws -> EventStream {
        try LabControl.requireRoot("cgnat events")
        return try open(RunningLab.adopt(lab), contexts: contexts, receiveBuffer: receiveBuffer)
    }

    public static func open(_ running: RunningLab, contexts: [String] = [], receiveBuffer: Int32 = EventStream.defaultReceiveBuffer) throws -> EventStream {
        try LabControl.requireRoot("cgnat events")
        let lab = running.lab
        let filter = try EventFilter(lab: lab, contexts: contexts, backend: running.backend)
        let (_, fd) = try running.open(context: lab.router.name)
        defer { Glibc.close(fd) }
        return try EventStream(namespaceFD: fd, domains: DomainNames(lab: lab), filter: filter, receiveBuffer: receiveBuffer)
    }

    /// The event socket's drop counter (SO_MEMINFO, SK_MEMINFO_DROPS): events the kernel could
    /// not queue. nil where the kernel does not report it.
    func socketDrops() -> UInt32? {
        var info = [UInt32](repeating: 0, count: 16)
        var len = socklen_t(info.count * 4)
        let SO_MEMINFO: Int32 = 55, SK_MEMINFO_DROPS = 8
        guard getsockopt(events.socket.fd, SOL_SOCKET, SO_MEMINFO, &info, &len) == 0, Int(len) / 4 > SK_MEMINFO_DROPS else { return nil }
        return info[SK_MEMINFO_DROPS]
    }

    public func close() {
        events.close()
        dumper.close()
    }

    deinit { close() }

    /// Reads events until `count` records were emitted, `durationSeconds` passed, `shouldStop`
    /// says so, or eventStreamStopRequested is set. Items go to `emit` in order; `afterBatch` runs
    /// after each batch read from the socket (up to 64 events read in one call), and before the
    /// stream waits again: flush output there.
    @discardableResult
    /// With `existing`, the mappings that exist when the stream starts are logged first, from a
    /// table dump taken after the event subscription (so nothing falls between the two); they are
    /// marked `resync` like any record that came from a dump.
    public func run(count: Int? = nil, durationSeconds: Double? = nil, existing: Bool = false,
                    shouldStop: () -> Bool = { false },
                    afterBatch: () -> Void = {}, emit: (Item) -> Void) throws -> Summary {
        let receiver = EventReceiver(fd: events.socket.fd)
        let deadline = durationSeconds.map { monotonicMilliseconds() + $0 * 1000 }
        let step = "receive conntrack events"
        var done = false
        @discardableResult
        func emitRecord(_ r: MappingRecord) -> Bool {
            guard !done else { return false }
            if r.resync { summary.resyncRecords += 1 } else {
                switch r.kind { case .new: summary.new += 1; case .update: summary.update += 1; case .destroy: summary.destroy += 1 }
            }
            emit(.record(r))
            if let count, summary.emitted >= count { done = true }
            return true
        }
        /// Emits a resync's records and its summary, which counts only what was really logged.
        func emitResync(_ records: [MappingRecord], _ summary: ResyncSummary, always: Bool) {
            var s = summary
            let shown = records.filter { emitRecord($0) }
            s.closed = shown.filter { $0.kind == .destroy }.count
            s.logged = shown.count - s.closed
            s.notEmitted = records.count - shown.count
            if !always && records.isEmpty { return }
            emit(.resync(s))
        }
        /// One datagram's messages. Returns true when the kernel reported an overrun in-band.
        func process(_ batch: [NetlinkMessage]) -> Bool {
            var overrun = false
            let now = EventFormatter.realtimeNow()
            for m in batch {
                if m.type == NL.NLMSG_OVERRUN { overrun = true; continue }
                if let ev = ConntrackMessage.decodeEvent(m), let r = log.handle(ev, now: now) { emitRecord(r) }
            }
            return overrun
        }
        func resynchronise() throws {
            summary.overruns += 1
            emit(.overrun(time: EventFormatter.realtimeNow(), overruns: summary.overruns))
            afterBatch()
            // What is still queued is older than the dump: log it first (bounded, the load may go on).
            var drained = 0
            drain: while drained < 100_000 && !done {
                switch try receiver.receive() {
                case .empty: break drain
                case .overrun: summary.overruns += 1
                case .messages(let datagrams):
                    for batch in datagrams {
                        drained += batch.count
                        if process(batch) { summary.overruns += 1 }
                    }
                    afterBatch()
                }
            }
            let table = try dumper.dump()
            var (records, s) = log.resync(table, now: EventFormatter.realtimeNow())
            if let drops = socketDrops() {
                s.droppedEvents = Int(drops &- dropsSeen)
                dropsSeen = drops   // the socket is new at open: its counter starts at 0
            }
            emitResync(records, s, always: true)
            afterBatch()
        }

        if existing {
            let (records, s) = log.resync(try dumper.dump(), now: EventFormatter.realtimeNow())
            emitResync(records, s, always: false)   // an empty table at start is nothing to report
            afterBatch()
        }

        while !done {
            if eventStreamStopRequested != 0 || shouldStop() { break }
            var wait: Int32 = 200
            if let deadline {
                let left = deadline - monotonicMilliseconds()
                if left <= 0 { break }
                wait = Int32(min(200, max(1, left.rounded(.up))))
            }
            var pfd = pollfd(fd: events.socket.fd, events: Int16(POLLIN), revents: 0)
            let rc = poll(&pfd, 1, wait)
            if rc < 0 {
                if errno == EINTR { continue }
                throw NetlinkError(step: step, errno: errno)
            }
            if rc == 0 { continue }
            // Drain what is queued, many datagrams per call, handing each batch on at once.
            drain: while !done {
                switch try receiver.receive() {
                case .empty: break drain
                case .overrun: try resynchronise()
                case .messages(let datagrams):
                    var overrun = false
                    for batch in datagrams where !done {
                        if process(batch) { overrun = true }
                    }
                    afterBatch()
                    if overrun { try resynchronise() }
                }
                if eventStreamStopRequested != 0 { break }
            }
        }
        afterBatch()
        return summary
    }
}
