import ArgumentParser
import CGNat
import Glibc

struct Up: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Build the lab in namespaces of its own (root).",
        discussion: """
            FILE: a lab file (YAML, read by cgnat-lab next to cgnat); its `name:` names the lab. Without \
            FILE: the built-in default lab, named by --lab. Either the whole lab comes up, or everything made \
            so far is removed again; Ctrl-C rolls back too. One `up` or `down` of a lab runs at a time: \
            another waits a few seconds for it, then fails naming the process that holds the lab.
            """)

    @Argument(help: "A lab file (YAML).") var file: String?
    @OptionGroup var options: LabOptions
    @Option(help: "Backend: auto (VRFs where the kernel has them), netns (one namespace per routing domain) or vrf.")
    var backend: BackendChoice = .auto
    @Option(help: .hidden) var failBeforeStep: Int?
    @Option(help: .hidden) var crashAfterStep: Int?
    @Option(help: .hidden) var stepDelayMs: Int = 0
    @Option(help: .hidden) var crashBeforeMount: Int?

    func validate() throws {
        if let f = failBeforeStep, f < 0 { throw ValidationError("--fail-before-step must be 0 or more") }
        if let c = crashAfterStep, c < 0 { throw ValidationError("--crash-after-step must be 0 or more") }
        guard (0...10_000).contains(stepDelayMs) else { throw ValidationError("--step-delay-ms must be 0...10000") }
    }

    func run() throws {
        // Interrupts roll back like any other failure. Unblock them too: a parent may have
        // started us with them blocked, and then they would only land after `up` finished.
        handleInterrupts { _ in interruptRequested = 1 }
        do {
            let lab = try LabSource.forBuilding(file: file, labOption: options.lab)
            let name = lab.name
            try LabControl.requireRoot("cgnat up")
            let (chosen, why) = try backend.resolve()
            let result = try LabControl.up(
                lab, backend: chosen,
                faults: .init(failBeforeStep: failBeforeStep, crashAfterStep: crashAfterStep, stepDelayMilliseconds: stepDelayMs,
                               crashBeforeMount: crashBeforeMount))
            let plan = result.plan
            Output.line("lab \(name) is up (\(plan.backend.rawValue) backend: \(why); \(plan.namespaces.count) namespaces, \(plan.steps.count) steps, \(Int(result.milliseconds.rounded())) ms)")
            for c in plan.contexts {
                Output.line("  \(c.name.padding(12)) -> namespace \(c.namespace)" + (c.vrf.map { ", vrf \($0)" } ?? ""))
            }
            let example = lab.hosts.first { $0.attachment != .uplink }.map { h in
                lab.uplinkHost.flatMap { u in (u.loopbackAddresses + u.addresses).first { $0.family == .v4 } }.map { "cgnat exec --lab \(name) \(h.name) -- ping -c1 \($0.address)" }
            } ?? nil
            Output.line("next: cgnat check --lab \(name)" + (example.map { "; \($0)" } ?? ""))
            Output.flush()
        } catch let e as LabSource.Invalid {
            failDiagnostics(e)
        } catch {
            fail("\(error)")
        }
    }
}

struct Down: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "down",
        abstract: "Remove exactly what `up` made (root), also after a crash or a half-done `up` or `down`.",
        discussion: """
            Ends the lab's own commands first (check, events, trace, shell, tmux: they exit non-zero saying \
            the lab went down), then removes its namespaces. Namespaces are matched by identity, not only by \
            name: one of the same name that the lab did not create is left alone and reported. Safe to run \
            again at any point; the record goes only when nothing of the lab is left.
            """)

    @OptionGroup var options: LabOptions
    @Option(help: .hidden) var crashAfterStep: Int?

    func run() throws {
        let name = try options.validatedName()
        do {
            let report = try LabControl.down(lab: name, faults: .init(crashAfterStep: crashAfterStep))
            if report.notUp {
                Output.line("lab \(name) is not up: nothing to remove")
            } else {
                var line = "lab \(name) is down: removed \(report.removed.count) namespaces"
                if !report.leftoverFiles.isEmpty { line += " and \(report.leftoverFiles.count) files left by a crash" }
                if !report.ended.isEmpty {
                    line += ", ended " + report.ended.map { "\($0.role) \($0.process.pid)" }.joined(separator: ", ")
                }
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
