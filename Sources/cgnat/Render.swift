import ArgumentParser
import CGNat

struct Render: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "render",
        abstract: "Print the lab as the equivalent shell script (ip, sysctl, nft); needs no root.",
        discussion: """
            The lab: FILE if given (read by cgnat-lab), else the lab of that name if it is up, else the \
            built-in default. The ruleset in the script is the one `up` loads. Run the script as root to build \
            the same lab by hand.
            """)

    @Argument(help: "A lab file (YAML).") var file: String?
    @OptionGroup var options: LabOptions
    @Option(help: "Backend to render (netns or vrf).") var backend: Backend = .netns
    @Flag(help: "Print the teardown instead.") var down = false
    @Flag(help: "Print only the nftables ruleset.") var ruleset = false
    @Flag(help: "Print ip -batch files (one ip process per namespace, not per command): the fastest plain shell for large labs.")
    var batch = false

    func run() throws {
        let plan: Plan
        do {
            plan = try Planner.plan(LabSource.forRendering(file: file, labOption: options.lab), backend: backend)
        } catch let e as LabSource.Invalid {
            failDiagnostics(e)
        } catch {
            fail("\(error)")
        }
        if ruleset { Output.write(plan.ruleset.fullText) }
        else if batch { Output.write(down ? ShellRenderer.renderDownBatched(plan) : ShellRenderer.renderBatched(plan)) }
        else { Output.write(down ? ShellRenderer.renderDown(plan) : ShellRenderer.render(plan)) }
        Output.flush()
    }
}
