import ArgumentParser
import CGNat
import CNetlinkShim
import Glibc
import Netlink

struct Exec: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a command in a context of the lab (root); exits with the command's status.",
        discussion: "Example: cgnat exec blue_c2 -- ping -I 192.0.2.2 192.0.2.1")

    @OptionGroup var options: LabOptions
    @Argument(help: "Context: uplink, blue_c1, blue_c2, red_c1, main, main:up, main:blue, main:red.") var context: String
    @Argument(parsing: .captureForPassthrough, help: "The command and its arguments (after --).") var command: [String] = []

    func run() throws {
        let name = try options.validatedName()
        var argv = command
        if argv.first == "--" { argv.removeFirst() }
        guard !argv.isEmpty else { fail("exec needs a command: cgnat exec \(context) -- CMD ARGS...") }
        do {
            try LabControl.requireRoot("cgnat exec")
            let (_, fd) = try LabControl.open(context: context, lab: Lab.seed(name: name))
            try ContextEntry.enter(namespaceFD: fd)
        } catch {
            fail("\(error)")
        }
        Output.flush()
        let cargs = argv.map { strdup($0) } + [nil]
        execvp(argv[0], cargs)
        let err = errno
        fail("\(argv[0]): \(String(cString: strerror(err)))", code: err == ENOENT ? 127 : 126)
    }
}

enum ContextEntry {
    /// Moves this thread into the namespace and, as `ip netns exec` does, gives it a private
    /// mount namespace with a fresh /sys so tools reading sysfs see the namespace's devices.
    static func enter(namespaceFD fd: Int32) throws {
        try NetNamespace.enter(fd)
        guard cgn_unshare(cgn_clone_newns()) == 0 else { return }   // best effort: only sysfs views differ
        if mount("", "/", "none", UInt(MS_SLAVE | MS_REC), nil) != 0 { return }
        umount2("/sys", Int32(MNT_DETACH))
        _ = mount("sysfs", "/sys", "sysfs", 0, nil)
    }
}
