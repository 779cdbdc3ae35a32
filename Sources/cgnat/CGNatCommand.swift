import ArgumentParser
import CGNat
import Glibc

@main
struct CGNatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cgnat",
        abstract: "Build, verify and explain a carrier-grade NAT router in network namespaces of its own.",
        discussion: """
            Contexts (the names `exec`, `status` and `check` use): uplink, blue_c1, blue_c2, red_c1 (hosts), \
            main (the router), main:up, main:blue, main:red (its routing domains). Each lab lives in \
            namespaces named <lab>-<part>; `cgnat status` shows which namespace is behind each context.
            """,
        subcommands: [Up.self, Down.self, Status.self, Check.self, Exec.self, Shell.self, Tmux.self, Events.self, Render.self, Trace.self, Validate.self, Graph.self])
}

struct LabOptions: ParsableArguments {
    @Option(name: .long, help: "Lab name; prefixes every namespace the lab owns.")
    var lab: String = Lab.defaultName

    func validatedName() throws -> String {
        try LabName.validate(lab)
        return lab
    }
}

/// A context and a command to run in it: `CONTEXT -- CMD ARGS...` (exec, trace).
struct ContextCommand: ParsableArguments {
    @Argument(help: "Context: uplink, blue_c1, blue_c2, red_c1, main, main:up, main:blue, main:red.") var context: String
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (after --).") var command: [String] = []

    /// The command's argv, or a one-line error naming what is missing.
    func argv(verb: String) -> [String] {
        var argv = command
        if argv.first == "--" { argv.removeFirst() }
        guard !argv.isEmpty else { fail("\(verb) needs a command: cgnat \(verb) \(context) -- CMD ARGS...") }
        return argv
    }
}

/// Routes SIGINT/SIGTERM/SIGHUP to `handler`, unblocked even if our parent started us with
/// them blocked (they would otherwise only land after the work is done).
func handleInterrupts(_ handler: @convention(c) (Int32) -> Void) {
    var set = sigset_t()
    sigemptyset(&set)
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        signal(sig, handler)
        sigaddset(&set, sig)
    }
    pthread_sigmask(SIG_UNBLOCK, &set, nil)
}

extension Backend: ExpressibleByArgument {}
extension BackendChoice: ExpressibleByArgument {}

/// Prints a one-line error and exits non-zero: what went wrong and what to do.
func fail(_ message: String, code: Int32 = 1) -> Never {
    Output.flush()
    fputs("cgnat: \(message)\n", stderr)
    exit(code)
}
