import ArgumentParser
import CGNat
import Glibc

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show what is up, per context: namespace, interfaces, addresses, routes, rules, conntrack (root).",
        discussion: "A lab with more than \(LabScale.detailLimit) subscribers in a domain is summarised per domain (hosts, links up, addresses, conntrack entries, and the hosts that fall short by name); --context, --full and --json show everything.")

    @OptionGroup var options: LabOptions
    @Flag(help: "JSON output.") var json = false
    @Flag(help: "Only say whether the lab is up (exit 0) or not (exit 1).") var brief = false
    @Option(help: "Show one context only.") var context: String?
    @Flag(help: "Every context in full, also for a lab whose subscribers are otherwise summarised per domain.") var full = false

    func run() throws {
        let name = try options.validatedName()
        if brief {
            guard let backend = try? LabControl.runningBackend(lab: name) else {
                Output.line("lab \(name) is not up"); Output.flush(); throw ExitCode(1)
            }
            Output.line("lab \(name) is up (\(backend.rawValue) backend)"); Output.flush()
            return
        }
        let report: LabStatus.Report
        do {
            try LabControl.requireRoot("cgnat status")
            let running = try RunningLab.open(name: name)
            report = try LabStatus.read(running, only: context)
            if json { Output.line(StatusFormat.json(report).serialized()) } else { Output.write(StatusFormat.text(report, lab: running.lab, full: full)) }
        } catch { fail("\(error)") }
        Output.flush()
    }
}
