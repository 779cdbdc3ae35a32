import Glibc

/// The lab as a tmux session, like the seed's demo: a window per context, a window for conntrack
/// events, one for traces. A lab with more than `LabScale.detailLimit` subscribers gets windows for
/// its router contexts and uplink hosts only, and a `subscribers` window with a chooser that opens a
/// subscriber's shell in a window of its own (a thousand windows help nobody). A tmux server of
/// its own (`tmux -L cgnat-LAB`), so the ctrl-a prefix and the `d` binding never touch the user's
/// other tmux sessions.
public struct TmuxSession {
    public let lab: String
    /// Contexts with a window of their own from the start.
    public let contexts: [Context]
    /// Subscriber contexts reached through the chooser; empty for a small lab.
    public let chosen: [String]
    public let cgnat: String
    /// What the trace window suggests: `CONTEXT -- ping -c1 ADDRESS`.
    public let traceExample: String

    public init(lab: String, contexts: [Context], cgnat: String) {
        self.lab = lab
        self.contexts = contexts
        self.chosen = []
        self.cgnat = cgnat
        traceExample = "\(contexts.first { $0.kind == .host }?.name ?? "CONTEXT") -- ping -c1 ADDRESS"
    }

    /// The session of a lab on a backend: every context a window, or at scale the chooser.
    public init(lab: Lab, backend: Backend, cgnat: String) {
        let all = lab.contexts(backend: backend)
        let subscribers = Set(lab.subscriberHosts.map(\.name))
        self.lab = lab.name
        self.cgnat = cgnat
        if subscribers.count > LabScale.detailLimit {
            contexts = all.filter { !subscribers.contains($0.name) }
            chosen = all.filter { subscribers.contains($0.name) }.map(\.name)
        } else {
            contexts = all
            chosen = []
        }
        // A subscriber pinging the uplink host's public address: through the NAT.
        let from = lab.subscriberHosts.first?.name ?? all[0].name
        let to = lab.uplinkHost.flatMap { ($0.loopbackAddresses + $0.addresses).first { $0.family == .v4 }?.address }
        traceExample = "\(from) -- ping -c1 \(to?.description ?? "ADDRESS")"
    }

    public var socketName: String { TmuxSession.socketName(lab: lab) }
    public static func socketName(lab: String) -> String { "cgnat-\(lab)" }
    public var sessionName: String { lab }
    public static let chooserWindow = "subscribers"

    /// tmux reads `:` in a target as session:window, so `main:up` becomes the window `main/up`.
    public static func windowName(_ context: String) -> String { String(context.map { $0 == ":" ? "/" : $0 }) }

    func tmux(_ args: [String]) -> [String] { ["tmux", "-L", socketName] + args }

    public struct Window: Equatable, Sendable {
        public var name: String
        /// The shell command the window runs.
        public var command: String
    }

    /// The session's windows, in order (data, so tests can read the layout without tmux).
    public func windows() -> [Window] {
        let labArg = "--lab \(lab)"
        var out = contexts.map { Window(name: TmuxSession.windowName($0.name), command: shellCommand($0.name)) }
        if !chosen.isEmpty {
            out.append(Window(name: TmuxSession.chooserWindow, command: "\(cgnat) tmux \(labArg) --chooser"))
        }
        out.append(Window(name: "events", command: "\(cgnat) events \(labArg); exec sh"))
        out.append(Window(name: "trace", command:
            "echo 'trace a packet through the router, e.g.:'; echo '  \(cgnat) trace \(labArg) \(traceExample)'; exec sh"))
        return out
    }

    func shellCommand(_ context: String) -> String { "\(cgnat) shell --lab \(lab) \(context)" }

    /// The tmux commands that create the session, in order.
    public func creationCommands() -> [[String]] {
        let windows = windows()
        var cmds: [[String]] = []
        cmds.append(tmux(["new-session", "-d", "-s", sessionName, "-x", "200", "-y", "50",
                          "-n", windows[0].name, windows[0].command]))
        for w in windows.dropFirst() {
            cmds.append(tmux(["new-window", "-d", "-t", "\(sessionName):", "-n", w.name, w.command]))
        }
        let destroy = "run-shell '\(cgnat) down --lab \(lab)' ; kill-server"
        var status = " C-a D detach | C-a d destroy lab \(lab) "
        var settings: [[String]] = [
            ["set-option", "-g", "prefix", "C-a"],
            ["unbind-key", "C-b"],
            ["bind-key", "C-a", "send-prefix"],
            // ctrl-a d asks before destroying the lab; ctrl-a D detaches.
            ["bind-key", "d", "confirm-before", "-p", "destroy lab \(lab)? (y/n)", destroy],
            ["bind-key", "D", "detach-client"],
        ]
        if !chosen.isEmpty {
            // ctrl-a s (tmux's session tree, of no use on a server with one session) goes to the chooser.
            settings.append(["bind-key", "s", "select-window", "-t", "\(sessionName):\(TmuxSession.chooserWindow)"])
            status = " C-a s subscribers |" + status
        }
        settings += [
            ["set-option", "-g", "status-right", status],
            ["set-option", "-g", "status-right-length", "80"],
        ]
        cmds += settings.map { tmux($0) }
        return cmds
    }

    /// Commands that bring up a context's shell: its window if it has one, otherwise a new one.
    public func openCommands(_ context: String, existing: [String]) -> [[String]] {
        let name = TmuxSession.windowName(context)
        if existing.contains(name) { return [tmux(["select-window", "-t", "\(sessionName):\(name)"])] }
        return [tmux(["new-window", "-t", "\(sessionName):", "-n", name, shellCommand(context)])]
    }

    /// Opens (or selects) the window of `context` in the running session.
    public func open(_ context: String) throws {
        let list = try Spawn.run(tmux(["list-windows", "-t", sessionName, "-F", "#{window_name}"]), captureOutput: true, quiet: true)
        guard list.status == 0 else { throw UsageError("the tmux session \(sessionName) is not running: cgnat tmux --lab \(lab)") }
        for c in openCommands(context, existing: list.output.split(separator: "\n").map(String.init)) {
            let r = try Spawn.run(c, quiet: true)
            if r.status != 0 { throw UsageError("tmux failed: \(c.joined(separator: " "))") }
        }
    }

    public func exists() -> Bool {
        (try? Spawn.run(tmux(["has-session", "-t", sessionName]), quiet: true).status) == 0
    }

    /// Creates the session; the server is named in the lab's record first, so `down` ends it.
    public func create() throws {
        try LabRecord.note(lab: lab, "tmux \(socketName)")
        try LabRecord.note(lab: lab, "file \(TmuxSession.socketPath(socket: socketName))")
        for c in creationCommands() {
            let r = try Spawn.run(c, quiet: true)
            if r.status != 0 {
                kill()
                throw UsageError("tmux failed: \(c.joined(separator: " "))")
            }
        }
    }

    /// Where tmux puts a server's socket ($TMUX_TMPDIR or /tmp).
    public static func socketPath(socket: String) -> String {
        let dir = getenv("TMUX_TMPDIR").map { String(cString: $0) } ?? "/tmp"
        return "\(dir)/tmux-\(getuid())/\(socket)"
    }

    /// Whether the lab's tmux server socket exists.
    public static func serverExists(lab: String) -> Bool { serverExists(socket: socketName(lab: lab)) }
    public static func serverExists(socket: String) -> Bool { access(socketPath(socket: socket), F_OK) == 0 }

    /// Ends a tmux server by socket name and removes its socket (tmux leaves it behind when the
    /// server is killed).
    public static func killServer(socket: String) {
        for _ in 0..<40 {
            guard (try? Spawn.run(["tmux", "-L", socket, "list-sessions"], quiet: true).status) == 0 else { break }
            _ = try? Spawn.run(["tmux", "-L", socket, "kill-server"], quiet: true)
            usleep(50_000)
        }
        unlink(socketPath(socket: socket))
    }

    public var attachCommand: [String] { tmux(["attach-session", "-t", sessionName]) }

    /// Ends the lab's tmux server and waits (up to 2 s) until it no longer answers.
    public func kill() { TmuxSession.killServer(socket: socketName) }
}
