import ArgumentParser
import CGNat
import Glibc

struct ConformanceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "conformance",
        abstract: "One row per numbered requirement of RFC 4787, 5382, 5508 and 6888, measured through the running lab (root).",
        discussion: """
            RFC 5780-style probes from the lab's own subscribers (two sharing an inside address, for the \
            collision case) to receivers on two addresses and two ports of the uplink host: mapping, \
            filtering, port preservation and parity, pooling, hairpinning, TCP, ICMP echo and errors, the \
            unsolicited inbound SYN. Timers are read from the router's conntrack settings, not waited for; \
            policy rows come from the lab's NAT policy and the router's live ruleset. Verdicts: PASS, FAIL, \
            N/A (with why) and UNTESTED (no probe yet). Exits 1 when a MUST fails.
            """)

    @OptionGroup var options: LabOptions
    @Flag(help: "One JSON object with every row.") var json = false

    func run() throws {
        let name = try options.validatedName()
        let result: ConformanceRun.Result
        do {
            try LabControl.requireRoot("cgnat conformance")
            let running = try RunningLab.open(name: name)
            LabGoneSignal.request()
            try running.register("conformance")
            result = try ConformanceRun.run(running)
        } catch {
            fail("\(error)")
        }
        let receivers = result.receivers.map(\.description).joined(separator: ", ")
        if json {
            Output.line(ConformanceFormat.json(result.report, extra: [
                ("lab", .string(name)),
                ("subscribers", .array(result.subscribers.map { .string($0) })),
                ("receivers", .array(result.receivers.map { .string($0.description) })),
                ("milliseconds", .number(result.wallMilliseconds.rounded())),
            ]).serialized())
        } else {
            Output.write(ConformanceFormat.table(result.report,
                header: "lab \(name): probes from \(result.subscribers.joined(separator: ", ")) to \(receivers)",
                footer: "took \(Int(result.wallMilliseconds.rounded())) ms"))
        }
        Output.flush()
        if !result.report.passed { throw ExitCode(1) }
    }
}
