import ArgumentParser
import CGNat
import Glibc

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show what is up, per context: namespace, interfaces, addresses, routes, rules, conntrack (root).")

    @OptionGroup var options: LabOptions
    @Flag(help: "JSON output.") var json = false
    @Flag(help: "Only say whether the lab is up (exit 0) or not (exit 1).") var brief = false
    @Option(help: "Show one context only.") var context: String?

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
        do { report = try LabStatus.read(lab: Lab.seed(name: name), only: context) } catch { fail("\(error)") }
        if json { Output.line(StatusFormat.json(report).serialized()) } else { Output.write(StatusFormat.text(report)) }
        Output.flush()
    }
}
