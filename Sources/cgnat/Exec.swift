import ArgumentParser
import CGNat
import Glibc
import Netlink

struct Exec: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a command in a context of the lab (root); exits with the command's status.",
        discussion: "Example: cgnat exec --lab LAB CONTEXT -- ping -c1 ADDRESS (`cgnat status` lists the contexts).")

    @OptionGroup var options: LabOptions
    @OptionGroup var target: ContextCommand

    func run() throws {
        let name: String, argv: [String]
        do {
            (name, argv) = try target.resolve(verb: "exec", options: options)
            try LabControl.requireRoot("cgnat exec")
            let running = try RunningLab.open(name: name)
            let (ctx, fd) = try running.open(context: target.context)
            try ContextEntry.enter(ctx, namespaceFD: fd, lab: name)
        } catch {
            fail("\(error)")
        }
        Output.flush()
        let cargs = argv.map { strdup($0) } + [nil]
        Spawn.resetSignals()
        execvp(argv[0], cargs)
        let err = errno
        fail("\(argv[0]): \(String(cString: strerror(err)))", code: err == ENOENT ? 127 : 126)
    }
}
