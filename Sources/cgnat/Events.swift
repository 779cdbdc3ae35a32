import ArgumentParser
import CGNat
import Glibc

struct Events: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "Live conntrack events of the router: the NAT mapping log (root).",
        discussion: """
            One line per NEW, UPDATE or DESTROY event in the router's (main) namespace, read over a native \
            ctnetlink subscription: time, subscriber domain (from the original-direction zone or ct mark; \
            `up` = the uplink or the router itself), protocol, inside address:port (original source), \
            outside address:port (reply destination, what the far side sees), destination, and whether NAT \
            changed the connection. With --json, one object per line: the mapping log a CGN keeps \
            (RFC 6888, RFC 7422) with start and stop times from conntrack timestamps.

            If the kernel drops events (ENOBUFS) the stream says so (an `overrun` line), dumps the table and \
            logs every current mapping not logged yet (`"resync": true`). Ctrl-C or SIGTERM ends it.

            Beside standard output, any number of NAT-log outputs at once: --ipfix HOST:PORT (RFC 8158 \
            NAT events over IPFIX/UDP to a collector) and --syslog [HOST:PORT|PATH] (one RFC 5424 line per \
            event; default the local socket /dev/log). Their sockets live in the namespace cgnat was \
            started in, where collectors run. They send from threads of their own: a slow collector never \
            holds the stream back; what an output cannot deliver is dropped and counted, and each output's \
            delivered and dropped events are printed on stderr at the end.
            """)

    @OptionGroup var options: LabOptions
    @Flag(help: "One JSON object per line.") var json = false
    @Option(name: .customLong("context"), help: "Only events of this subscriber context (host such as blue_c1, or domain such as main:blue); repeatable.")
    var contexts: [String] = []
    @Flag(help: "Leave the destination out of the log (RFC 6888 REQ-12 lets a CGN omit it).") var noDestination = false
    @Option(help: "End after this many events.") var count: Int?
    @Option(help: "End after this many seconds.") var duration: Double?
    @Flag(inversion: .prefixedNo, help: "Log the mappings that already exist when events starts (from a table dump, marked resync), so that none is missing from the log.")
    var existing = true
    @Flag(help: .hidden) var summary = false
    @Option(help: ArgumentHelp("Also write the log to this SQLite NAT log store; /var/lib/cgnat/LAB.db is where whois --at looks by default.", valueName: "FILE"))
    var store: String?
    @Option(help: ArgumentHelp("With --store: delete sessions that ended more than this many days ago (at start, then hourly).", valueName: "DAYS"))
    var retention: Int?

    @Option(name: .customLong("ipfix"), help: ArgumentHelp("Also send RFC 8158 NAT events over IPFIX (UDP) to this collector; repeatable.", valueName: "host:port"))
    var ipfix: [String] = []
    @Option(name: .customLong("syslog"), help: ArgumentHelp("Also send one RFC 5424 line per NAT event: to the local socket (/dev/log) when given alone, to HOST:PORT over UDP, or to a unix datagram socket PATH; repeatable.", valueName: "host:port"))
    var syslog: [String] = []
    @Flag(help: "No NAT44 session create/delete events on --ipfix/--syslog (deterministic blocks: the block log says who had which port).")
    var noSessions = false
    @Option(help: ArgumentHelp("Resend the IPFIX templates every this many seconds (UDP collectors expect it).", valueName: "seconds"))
    var templateInterval: Double = 60
    @Option(help: "IPFIX observation domain id of the messages.") var observationDomain: UInt32 = 1

    /// `--syslog` alone means the local socket: ArgumentParser has no option with an optional
    /// value, so a bare `--syslog` (last, or before another option) is spelled out before parsing.
    static func spellOutBareSyslog(_ args: [String]) -> [String] {
        guard args.first == "events" else { return args }
        var out: [String] = []
        for (i, a) in args.enumerated() {
            if a == "--syslog" && (i + 1 == args.count || args[i + 1].hasPrefix("-")) {
                out.append("--syslog=\(SyslogOutput.localSocket)")
            } else {
                out.append(a)
            }
        }
        return out
    }

    /// The outputs the options ask for, each with its socket open (in this thread's namespace: the
    /// one cgnat was started in). A new kind of output is one more line here.
    func makeOutputs(lab: Lab) throws -> [EventOutput] {
        var outputs: [EventOutput] = []
        for t in ipfix {
            var o = IPFIXOutput.Options(target: try DatagramTarget.parse(t, option: "--ipfix"))
            o.sessions = !noSessions
            o.destination = !noDestination
            o.templateInterval = templateInterval
            o.observationDomain = observationDomain
            outputs.append(try IPFIXOutput.make(o, lab: lab))
        }
        for t in syslog {
            var o = SyslogOutput.Options(target: try DatagramTarget.parse(t, option: "--syslog"))
            o.sessions = !noSessions
            o.destination = !noDestination
            outputs.append(try SyslogOutput.make(o, lab: lab))
        }
        return outputs
    }

    func validate() throws {
        if let count, count <= 0 { throw ValidationError("--count must be positive") }
        if let retention, retention <= 0 { throw ValidationError("--retention \(retention) is not a number of days: give 1 or more") }
        if retention != nil && store == nil { throw ValidationError("--retention applies to a store: give --store FILE too") }
        // NaN compares false with everything: reject what is not a finite, positive, bounded time.
        if let duration, !(duration.isFinite && duration > 0 && duration <= 31_536_000) {
            throw ValidationError("--duration \(duration) is not a duration: give seconds, more than 0 and at most 31536000 (a year)")
        }
        if !(templateInterval.isFinite && templateInterval >= 1 && templateInterval <= 86400) {
            throw ValidationError("--template-interval \(templateInterval): give seconds, from 1 to 86400")
        }
        for t in ipfix {
            do { if case .unix = try DatagramTarget.parse(t, option: "--ipfix") { throw ValidationError("--ipfix '\(t)': give HOST:PORT (IPFIX goes over UDP)") } }
            catch let e as UsageError { throw ValidationError(e.description) }
        }
        for t in syslog {
            do { _ = try DatagramTarget.parse(t, option: "--syslog") } catch let e as UsageError { throw ValidationError(e.description) }
        }
    }

    func run() throws {
        let name = try options.validatedName()
        handleInterrupts { _ in eventStreamStopRequested = 1 }
        // A reader that goes away (`| head`) ends us with SIGPIPE, as it does `conntrack -E`.

        let stream: EventStream
        let running: RunningLab
        let outputs: [EventOutput]
        do {
            try LabControl.requireRoot("cgnat events")
            running = try RunningLab.open(name: name)
            try running.register("events")
            stream = try EventStream.open(running, contexts: contexts)
            outputs = try makeOutputs(lab: running.lab) + storeOutputs(running)
        } catch { fail("\(error)") }
        // Notice a `down` also without its SIGTERM (it may be slow to come): look at the record
        // every second.
        var nextLook = monotonicMilliseconds() + 1000
        var gone = false
        let destination = !noDestination
        // Refusals the NAT counts (quota exceeded, addresses exhausted): read once a second.
        let watcher: NATLimitWatcher? = {
            guard let (_, fd) = try? running.open(context: running.lab.router.name) else { return nil }
            defer { close(fd) }
            return try? NATLimitWatcher(namespaceFD: fd, lab: running.lab)
        }()
        let stillUp: () -> Bool = {
            if eventStreamStopRequested != 0 { gone = !running.stillUp; return false }
            guard monotonicMilliseconds() >= nextLook else { return true }
            nextLook = monotonicMilliseconds() + 1000
            gone = !running.stillUp
            if !gone, let watcher {
                for (e, n) in watcher.poll(nowMilliseconds: EventFormatter.realtimeNow() / 1_000_000) {
                    for o in outputs { o.submit(.natEvent(e, refused: n)) }
                    Output.line(json ? Self.refusalJSON(e, refused: n) : Self.refusalText(e, refused: n))
                }
            }
            return !gone
        }
        if !json {
            Output.line(EventFormatter.textHeader(destination: destination))
            Output.flush()
        }
        let result: EventStream.Summary
        do {
            // Flushed after every batch the socket hands over (and before each wait), so a pipe or
            // tmux sees each event as soon as it was read.
            result = try stream.run(count: count, durationSeconds: duration, existing: existing,
                                    shouldStop: { !stillUp() }, afterBatch: { Output.flush(); outputs.forEach { $0.flush() } }) { item in
                for o in outputs { o.submit(item) }
                switch item {
                case .record(let r):
                    Output.line(json ? EventFormatter.jsonLine(r, destination: destination)
                                     : EventFormatter.text(r, destination: destination))
                case .overrun(let t, let n):
                    Output.line(json ? EventFormatter.overrunJSON(time: t, overruns: n).serialized()
                                     : EventFormatter.overrunText(time: t, overruns: n))
                case .resync(let s):
                    Output.line(json ? EventFormatter.resyncJSON(s).serialized() : EventFormatter.resyncText(s))
                case .natEvent(let e, let n):
                    Output.line(json ? Self.refusalJSON(e, refused: n) : Self.refusalText(e, refused: n))
                }
            }
        } catch {
            outputs.forEach { $0.close(labWentDown: !running.stillUp) }
            reportOutputs(outputs)
            fail(running.stillUp ? "\(error)" : "\(running.wentDown)")
        }
        stream.close()
        Output.flush()
        let wentDown = gone || (eventStreamStopRequested != 0 && !running.stillUp)
        outputs.forEach { $0.close(labWentDown: wentDown) }
        reportOutputs(outputs)
        if wentDown { fail("\(running.wentDown)") }
        if summary {
            let per = outputs.map { " \($0.name.split(separator: " ").first ?? "") delivered \($0.delivered) dropped \($0.dropped)" }.joined()
            fputs("events: new \(result.new) update \(result.update) destroy \(result.destroy) resync \(result.resyncRecords) overruns \(result.overruns)\(per)\n", stderr)
        }
    }

    static func refusalName(_ e: NATLogEvent) -> (name: String, why: String) {
        if case .quotaExceeded(let limit) = e.kind {
            return ("quota_exceeded", "over the session limit per subscriber (\(limit))")
        }
        return ("addresses_exhausted", "from an inside address the pool gives no address or port block")
    }

    static func refusalText(_ e: NATLogEvent, refused: UInt64) -> String {
        let (name, why) = refusalName(e)
        return "\(EventFormatter.clockTime(e.timeMilliseconds * 1_000_000))  \(name)  \(refused) new flow(s) refused \(why) (the NAT's counter: no subscriber named)"
    }

    static func refusalJSON(_ e: NATLogEvent, refused: UInt64) -> String {
        var fields: [(String, JSON)] = [("event", .string(refusalName(e).name)),
                                        ("time", .string(EventFormatter.isoTime(e.timeMilliseconds * 1_000_000))),
                                        ("refused", .int(Int64(refused)))]
        if case .quotaExceeded(let limit) = e.kind { fields.append(("limit", .int(Int64(limit)))) }
        return JSON.object(fields).serialized()
    }

    /// The NAT log store output, when --store asks for one.
    func storeOutputs(_ running: RunningLab) throws -> [EventOutput] {
        guard let store else { return [] }
        return [try StoreOutput(path: store, lab: running.lab, retentionDays: retention, destination: !noDestination)]
    }
}

/// One line per output on stderr: what it delivered and what it had to drop.
private func reportOutputs(_ outputs: [EventOutput]) {
    for o in outputs {
        fputs("cgnat events: \(o.name): delivered \(o.delivered) events, dropped \(o.dropped)\n", stderr)
    }
}
