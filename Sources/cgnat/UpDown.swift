import ArgumentParser
import CGNat
import Glibc

struct Up: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Build the lab in namespaces of its own (root).",
        discussion: "Either the whole lab comes up, or everything made so far is removed again. Ctrl-C rolls back too.")

    @OptionGroup var options: LabOptions
    @Option(help: "Backend: auto (VRFs where the kernel has them), netns (one namespace per routing domain) or vrf.")
    var backend: BackendChoice = .auto
    @Option(help: .hidden) var failBeforeStep: Int?
    @Option(help: .hidden) var crashAfterStep: Int?
    @Option(help: .hidden) var stepDelayMs: Int = 0

    func run() throws {
        let name = try options.validatedName()
        // Interrupts roll back like any other failure. Unblock them too: a parent may have
        // started us with them blocked, and then they would only land after `up` finished.
        handleInterrupts { _ in interruptRequested = 1 }
        do {
            try LabControl.requireRoot("cgnat up")
            let (chosen, why) = try backend.resolve()
            let result = try LabControl.up(
                Lab.seed(name: name), backend: chosen,
                faults: .init(failBeforeStep: failBeforeStep, crashAfterStep: crashAfterStep, stepDelayMilliseconds: stepDelayMs))
            let plan = result.plan
            Output.line("lab \(name) is up (\(plan.backend.rawValue) backend: \(why); \(plan.namespaces.count) namespaces, \(plan.steps.count) steps, \(Int(result.milliseconds.rounded())) ms)")
            for c in plan.contexts {
                Output.line("  \(c.name.padding(12)) -> namespace \(c.namespace)" + (c.vrf.map { ", vrf \($0)" } ?? ""))
            }
            Output.line("next: cgnat check --lab \(name); cgnat exec --lab \(name) blue_c1 -- ping 192.0.2.1")
            Output.flush()
        } catch {
            fail("\(error)")
        }
    }
}

struct Down: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "down",
        abstract: "Remove exactly what `up` made (root), also after a crash or a half-done `up`.",
        discussion: "Namespaces are matched by identity, not only by name: one of the same name that the lab did not create is left alone.")

    @OptionGroup var options: LabOptions

    func run() throws {
        let name = try options.validatedName()
        do {
            let report = try LabControl.down(lab: name)
            if report.notUp {
                Output.line("lab \(name) is not up: nothing to remove")
            } else {
                var line = "lab \(name) is down: removed \(report.removed.count) namespaces"
                if !report.killed.isEmpty { line += ", ended \(report.killed.count) processes inside them" }
                Output.line(line)
                for f in report.foreign {
                    Output.line("  left \(f) alone: it is not the namespace this lab created")
                }
            }
            Output.flush()
        } catch {
            fail("\(error)")
        }
    }
}

extension String {
    func padding(_ width: Int) -> String { count >= width ? self : self + String(repeating: " ", count: width - count) }
}
