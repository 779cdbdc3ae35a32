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

    func validate() throws {
        if let count, count <= 0 { throw ValidationError("--count must be positive") }
        if let retention, retention <= 0 { throw ValidationError("--retention \(retention) is not a number of days: give 1 or more") }
        if retention != nil && store == nil { throw ValidationError("--retention applies to a store: give --store FILE too") }
        // NaN compares false with everything: reject what is not a finite, positive, bounded time.
        if let duration, !(duration.isFinite && duration > 0 && duration <= 31_536_000) {
            throw ValidationError("--duration \(duration) is not a duration: give seconds, more than 0 and at most 31536000 (a year)")
        }
    }

    func run() throws {
        let name = try options.validatedName()
        handleInterrupts { _ in eventStreamStopRequested = 1 }
        // A reader that goes away (`| head`) ends us with SIGPIPE, as it does `conntrack -E`.

        let stream: EventStream
        let running: RunningLab
        do {
            try LabControl.requireRoot("cgnat events")
            running = try RunningLab.open(name: name)
            try running.register("events")
            stream = try EventStream.open(running, contexts: contexts)
        } catch { fail("\(error)") }
        let outputs: [EventOutput]
        do { outputs = try storeOutputs(running) } catch { fail("\(error)") }
        // Notice a `down` also without its SIGTERM (it may be slow to come): look at the record
        // every second.
        var nextLook = monotonicMilliseconds() + 1000
        var gone = false
        let stillUp: () -> Bool = {
            if eventStreamStopRequested != 0 { gone = !running.stillUp; return false }
            guard monotonicMilliseconds() >= nextLook else { return true }
            nextLook = monotonicMilliseconds() + 1000
            gone = !running.stillUp
            return !gone
        }
        let destination = !noDestination
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
                }
            }
        } catch {
            outputs.forEach { $0.close(labWentDown: !running.stillUp) }
            fail(running.stillUp ? "\(error)" : "\(running.wentDown)")
        }
        stream.close()
        Output.flush()
        let wentDown = gone || (eventStreamStopRequested != 0 && !running.stillUp)
        for o in outputs {
            o.close(labWentDown: wentDown)
            if o.dropped > 0 { fputs("events: \(o.name): \(o.dropped) records dropped (output too slow), \(o.delivered) delivered\n", stderr) }
        }
        if gone || (eventStreamStopRequested != 0 && !running.stillUp) { fail("\(running.wentDown)") }
        if summary {
            fputs("events: new \(result.new) update \(result.update) destroy \(result.destroy) resync \(result.resyncRecords) overruns \(result.overruns)\n", stderr)
        }
    }

    /// The NAT log store output, when --store asks for one.
    func storeOutputs(_ running: RunningLab) throws -> [EventOutput] {
        guard let store else { return [] }
        return [try StoreOutput(path: store, lab: running.lab, retentionDays: retention, destination: !noDestination)]
    }
}
