import ArgumentParser
import CGNat
import CNetlinkShim
import Glibc

struct Shell: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "shell",
        abstract: "An interactive shell in one context; prompt and hostname say where it is (root).")

    @OptionGroup var options: LabOptions
    @Argument(help: "Context: a host, main (the router) or main:DOMAIN; `cgnat status` lists them.") var context: String

    func run() throws {
        let name = try options.validatedName()
        let shell = access("/bin/bash", X_OK) == 0 ? "/bin/bash" : "/bin/sh"
        do {
            try LabControl.requireRoot("cgnat shell")
            let running = try RunningLab.open(name: name)
            let (ctx, fd) = try running.open(context: context)
            // The shell keeps this pid (exec): `down` ends it with the lab.
            try running.register("shell")
            try ContextEntry.enter(ctx, namespaceFD: fd, lab: name)
            // Own UTS namespace: the hostname names the context, without touching the host's.
            if cgn_unshare(cgn_clone_newuts()) == 0 { _ = sethostname(ctx.name, ctx.name.utf8.count) }
            setenv("CGNAT_LAB", name, 1)
            setenv("CGNAT_CONTEXT", ctx.name, 1)
            let prompt = "[\(name) \(ctx.name)] \\w \\$ "
            setenv("PS1", prompt, 1)
            if shell == "/bin/bash" {
                // The user's bashrc first, then our prompt on top. One file for every shell of
                // the lab, the same bytes for all, replaced atomically: shells start in parallel.
                let rc = "\(LabRecord.directory)/\(name).bashrc"
                let text = "[ -f ~/.bashrc ] && . ~/.bashrc\nPS1='[$CGNAT_LAB $CGNAT_CONTEXT] \\w \\$ '\n"
                let tmp = "\(rc).\(getpid())"
                let f = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
                if f >= 0 {
                    _ = text.withCString { write(f, $0, strlen($0)) }
                    close(f)
                    rename(tmp, rc)
                }
                Output.flush()
                let words: [String] = [shell, "--rcfile", rc, "-i"]
                let argv = words.map { strdup($0) } + [nil]
                Spawn.resetSignals()
                execv(shell, argv)
            } else {
                Output.flush()
                let words: [String] = [shell, "-i"]
                let argv = words.map { strdup($0) } + [nil]
                Spawn.resetSignals()
                execv(shell, argv)
            }
            fail("\(shell): \(String(cString: strerror(errno)))")
        } catch {
            fail("\(error)")
        }
    }
}

struct Tmux: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "tmux",
        abstract: "Open (or re-attach to) a tmux session with a shell per context, events and traces (root).",
        discussion: """
            Brings the lab up first if it is not. A lab with more than \(LabScale.detailLimit) subscribers gets \
            windows for the router contexts and the uplink, and a `subscribers` window (ctrl-a s) whose menu \
            opens a subscriber's shell in a window of its own. Prefix ctrl-a; ctrl-a d asks whether to destroy the lab \
            (yes: the session ends and the lab goes down); ctrl-a D detaches. The session runs on a tmux \
            server of its own: tmux -L cgnat-LAB attach.
            """)

    @OptionGroup var options: LabOptions
    @Flag(help: "Create the session without attaching (for scripts).") var detached = false
    /// The menu of the `subscribers` window (a large lab's session runs it there).
    @Flag(help: .hidden) var chooser = false

    func run() throws {
        let name = try options.validatedName()
        if chooser {
            let running: RunningLab
            do { running = try RunningLab.open(name: name) } catch { fail("\(error)") }
            SubscriberChooser(lab: running.lab, backend: running.backend)
                .run(session: TmuxSession(lab: running.lab, backend: running.backend, cgnat: Spawn.selfPath))
            return
        }
        do {
            try LabControl.requireRoot("cgnat tmux")
            guard access("/usr/bin/tmux", X_OK) == 0 || access("/bin/tmux", X_OK) == 0 else {
                throw UsageError("tmux is not installed: apt-get install tmux")
            }
            if LabRecord.load(lab: name) == nil {
                // Not up (no record at all): bring up the default lab of that name.
                let (chosen, why) = try BackendChoice.auto.resolve()
                let r = try LabControl.up(LabSource.default(name: name), backend: chosen)
                Output.line("lab \(name) is up (\(r.plan.backend.rawValue) backend: \(why))")
            }
            let running = try RunningLab.open(name: name)
            let session = TmuxSession(lab: running.lab, backend: running.backend, cgnat: Spawn.selfPath)
            if !session.exists() { try session.create() }
            if detached {
                Output.line("tmux session \(session.sessionName) is ready: tmux -L \(session.socketName) attach")
                Output.flush()
                return
            }
            Output.flush()
            let argv = session.attachCommand.map { strdup($0) } + [nil]
            Spawn.resetSignals()
            execvp("tmux", argv)
            throw UsageError("could not run tmux: \(String(cString: strerror(errno)))")
        } catch {
            fail("\(error)")
        }
    }
}
