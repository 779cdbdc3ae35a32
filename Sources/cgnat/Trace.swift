import ArgumentParser
import CGNat
import Glibc

struct Trace: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "trace",
        abstract: "Run a command in a context and show each of its packets' path through the router (root).",
        discussion: """
            Example: cgnat trace CONTEXT -- ping -c1 ADDRESS
            Adds a temporary table `inet cgnat_trace` to every router namespace that switches nftables \
            tracing on for the command's packets (chosen by headers: the context's addresses and the \
            addresses in the command, both ways, and ICMP errors back to the context), runs the command \
            as `cgnat exec` would, and prints per packet: hook, chain, rule, verdict, devices, addresses \
            (after NAT), conntrack state, zones and NAT. The last line says whether the packet was \
            delivered or where it was dropped. The table is removed again on every path, also on Ctrl-C. \
            Exits with the command's status.
            """)

    @OptionGroup var options: LabOptions
    @Flag(help: "One JSON object: every packet with its hops and verdict (the command's output goes to stderr).") var json = false
    @Option(help: "How long to keep listening after the command ended, in milliseconds (0-60000).") var grace: Int = 300
    @OptionGroup var target: ContextCommand

    func validate() throws {
        guard (0...60_000).contains(grace) else { throw ValidationError("--grace \(grace) is out of range: give 0 to 60000 milliseconds") }
    }

    func run() throws {
        let name: String, argv: [String]
        do { (name, argv) = try target.resolve(verb: "trace", options: options) } catch { fail("\(error)") }
        let context = target.context
        // Ctrl-C goes to the command (it shares our process group); the trace tables still come out.
        handleInterrupts { s in TraceSession.forwardSignal(s) }

        let running: RunningLab
        do {
            try LabControl.requireRoot("cgnat trace")
            running = try RunningLab.open(name: name)
            try running.register("trace")
        } catch { fail("\(error)") }
        var req = TraceSession.Request(lab: running.lab, context: context, command: argv,
                                       launcher: [Spawn.selfPath, "exec", "--lab", name, context, "--"])
        req.childOutput = json ? .stderr : .inherit
        req.graceMilliseconds = Int32(grace)
        let result: TraceSession.Result
        do {
            result = try TraceSession.run(req)
        } catch {
            fail(running.stillUp ? "\(error)" : "\(running.wentDown)")
        }
        guard running.stillUp else { fail("\(running.wentDown) during the trace: no result") }
        if json {
            Output.line(TraceFormat.json(result.packets, command: argv, context: context, exitStatus: result.exitStatus).serialized())
        } else {
            Output.write(TraceFormat.text(result.packets))
            if result.lostEvents { Output.line("warning: the kernel dropped trace events (ENOBUFS): the trace is incomplete") }
        }
        Output.flush()
        if result.exitStatus != 0 { throw ExitCode(result.exitStatus) }
    }
}
