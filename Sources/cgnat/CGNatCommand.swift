import ArgumentParser
import CGNat
import Glibc

@main
struct CGNatCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cgnat",
        abstract: "Build, verify and explain a carrier-grade NAT router in network namespaces of its own.",
        discussion: """
            Contexts (the names `exec`, `status` and `check` use): the lab's hosts, main (the router) and \
            main:DOMAIN (its routing domains). Each lab lives in namespaces named <lab>-<part>; `cgnat status` \
            shows which namespace is behind each context. `up FILE` builds the lab a file describes; every \
            other command then works on it by its name (--lab).
            """,
        subcommands: [Up.self, Down.self, Status.self, Check.self, ConformanceCommand.self, Exec.self, Shell.self, Tmux.self, Events.self, Render.self, Trace.self, Validate.self, Graph.self, WhoisCommand.self])

    static func main() {
        main(Events.spellOutBareSyslog(Array(CommandLine.arguments.dropFirst())))
    }
}

struct LabOptions: ParsableArguments {
    @Option(name: .long, help: "Lab name; prefixes every namespace the lab owns (default: cgnat, or the lab file's name).")
    var lab: String?

    /// The lab named on the command line, or the default lab's name.
    func validatedName() throws -> String {
        let name = lab ?? Lab.defaultName
        try LabName.validate(name)
        return name
    }
}

/// A context and a command to run in it: `CONTEXT -- CMD ARGS...` (exec, trace).
struct ContextCommand: ParsableArguments {
    @Argument(help: "Context: a host (uplink, blue_c1, ...), main (the router) or main:DOMAIN; `cgnat status` lists them.") var context: String
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (after --).") var command: [String] = []

    /// The lab and the command's argv. Options put between CONTEXT and `--` are read as options
    /// (only --lab is meaningful there), never silently passed on as part of the command.
    func resolve(verb: String, options: LabOptions) throws -> (lab: String, argv: [String]) {
        var lab = options.lab
        var rest = command[...]
        while let first = rest.first, first.hasPrefix("-"), first != "--" {
            if first == "--lab" {
                rest.removeFirst()
                guard let v = rest.popFirst() else { throw UsageError("--lab needs a value: cgnat \(verb) --lab NAME \(context) -- CMD") }
                if let l = lab, l != v { throw UsageError("--lab given twice (\(l) and \(v))") }
                lab = v
            } else if first.hasPrefix("--lab=") {
                let v = String(first.dropFirst(6))
                if let l = lab, l != v { throw UsageError("--lab given twice (\(l) and \(v))") }
                lab = v
                rest.removeFirst()
            } else {
                throw UsageError("unknown option '\(first)' after the context: put options before it (cgnat \(verb) [OPTIONS] \(context) -- CMD ARGS...), or start the command after --")
            }
        }
        if rest.first == "--" { rest.removeFirst() }
        guard !rest.isEmpty else { throw UsageError("\(verb) needs a command: cgnat \(verb) \(context) -- CMD ARGS...") }
        let name = lab ?? Lab.defaultName
        try LabName.validate(name)
        return (name, Array(rest))
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

/// A refused lab file: the helper's diagnostics as they are, one per line, and exit 1.
func failDiagnostics(_ e: LabSource.Invalid) -> Never {
    Output.flush()
    fputs(e.description + "\n", stderr)
    exit(1)
}
