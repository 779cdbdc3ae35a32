import ArgumentParser
import CGNat
import Glibc
import Netlink

struct Exec: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "exec",
        abstract: "Run a command in a context of the lab (root); exits with the command's status.",
        discussion: "Example: cgnat exec blue_c2 -- ping -I 192.0.2.2 192.0.2.1")

    @OptionGroup var options: LabOptions
    @OptionGroup var target: ContextCommand

    func run() throws {
        let name = try options.validatedName()
        let argv = target.argv(verb: "exec")
        do {
            try LabControl.requireRoot("cgnat exec")
            let (ctx, fd) = try LabControl.open(context: target.context, lab: Lab.seed(name: name))
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
