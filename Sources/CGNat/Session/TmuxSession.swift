import Glibc

/// The lab as a tmux session, like the seed's demo: a window per context, a window for conntrack
/// events, one for traces. A tmux server of its own (`tmux -L cgnat-LAB`), so the ctrl-a prefix
/// and the `d` binding never touch the user's other tmux sessions.
public struct TmuxSession {
    public let lab: String
    public let contexts: [Context]
    public let cgnat: String

    public init(lab: String, contexts: [Context], cgnat: String) {
        self.lab = lab
        self.contexts = contexts
        self.cgnat = cgnat
    }

    public var socketName: String { TmuxSession.socketName(lab: lab) }
    public static func socketName(lab: String) -> String { "cgnat-\(lab)" }
    public var sessionName: String { lab }

    /// tmux reads `:` in a target as session:window, so `main:up` becomes the window `main/up`.
    public static func windowName(_ context: String) -> String { String(context.map { $0 == ":" ? "/" : $0 }) }

    func tmux(_ args: [String]) -> [String] { ["tmux", "-L", socketName] + args }

    /// The tmux commands that create the session, in order (data, so tests can read them).
    public func creationCommands() -> [[String]] {
        let labArg = "--lab \(lab)"
        var cmds: [[String]] = []
        let first = contexts[0]
        cmds.append(tmux(["new-session", "-d", "-s", sessionName, "-x", "200", "-y", "50",
                          "-n", TmuxSession.windowName(first.name), "\(cgnat) shell \(labArg) \(first.name)"]))
        for c in contexts.dropFirst() {
            cmds.append(tmux(["new-window", "-d", "-t", "\(sessionName):", "-n", TmuxSession.windowName(c.name),
                              "\(cgnat) shell \(labArg) \(c.name)"]))
        }
        cmds.append(tmux(["new-window", "-d", "-t", "\(sessionName):", "-n", "events", "\(cgnat) events \(labArg); exec sh"]))
        cmds.append(tmux(["new-window", "-d", "-t", "\(sessionName):", "-n", "trace",
                          "echo 'trace a packet through the router, e.g.:'; echo '  \(cgnat) trace \(labArg) blue_c2 -- ping -c1 192.0.2.1'; exec sh"]))
        let destroy = "run-shell '\(cgnat) down \(labArg)' ; kill-server"
        let settings: [[String]] = [
            ["set-option", "-g", "prefix", "C-a"],
            ["unbind-key", "C-b"],
            ["bind-key", "C-a", "send-prefix"],
            // ctrl-a d asks before destroying the lab; ctrl-a D detaches.
            ["bind-key", "d", "confirm-before", "-p", "destroy lab \(lab)? (y/n)", destroy],
            ["bind-key", "D", "detach-client"],
            ["set-option", "-g", "status-right", " C-a D detach | C-a d destroy lab \(lab) "],
            ["set-option", "-g", "status-right-length", "60"],
        ]
        cmds += settings.map { tmux($0) }
        return cmds
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
