import ArgumentParser
import CGNat
import Glibc

struct Check: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Prove every path of the lab: one row per probe, run on a fixed pool of workers (root).",
        discussion: """
            Rows: pings from every subscriber where they apply (gateway, neighbours, other \
            domains, the uplink); NAT seen from the far side (the NAT address upstream; real IPv6 sources); \
            subscribers of different domains sharing an address and one source port, mapped to distinct \
            ports; negative rows that look for the packet at the target and conclude from positive evidence \
            (the router's reject, or the counter of the rule that drops them; `--json` names that rule by \
            handle as blocked_by); the lab's own expectations. Large labs: neighbour and cross-domain rows \
            are sampled (the sample size is printed) and the text output shows failing rows and a summary \
            per row kind. Exits 1 if any row fails, also if the lab goes down during the check.
            """)

    @OptionGroup var options: LabOptions
    @Flag(help: "One JSON object with every row.") var json = false
    @Flag(help: "Show every row in the table, also in large labs.") var all = false
    @Option(help: "How long a probe waits for an answer, in milliseconds (1-60000).") var timeout: Int = 400
    /// Test hook: wait this long after registering, before probing (a check `down` can interrupt).
    @Option(help: .hidden) var startDelayMs: Int = 0

    func validate() throws {
        guard CheckRun.timeoutRange.contains(timeout) else {
            throw ValidationError("--timeout \(timeout) is out of range: give \(CheckRun.timeoutRange.lowerBound) to \(CheckRun.timeoutRange.upperBound) milliseconds")
        }
        guard (0...60_000).contains(startDelayMs) else { throw ValidationError("--start-delay-ms must be 0...60000") }
    }

    func run() throws {
        let name = try options.validatedName()
        let report: CheckRun.Report
        do {
            try LabControl.requireRoot("cgnat check")
            let running = try RunningLab.open(name: name)
            // `down` ends us (SIGTERM): say the lab went down, never report a result.
            LabGoneSignal.request()
            try running.register("check")
            if startDelayMs > 0 { usleep(useconds_t(startDelayMs) * 1000) }
            report = try CheckRun.run(running, timeoutMilliseconds: timeout)
        } catch {
            fail("\(error)")
        }
        if json {
            Output.line(CheckFormat.json(report).serialized())
        } else {
            Output.write(CheckFormat.table(report, allRows: all))
        }
        Output.flush()
        if !report.passed { throw ExitCode(1) }
    }
}
