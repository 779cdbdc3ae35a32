import Glibc

/// Runs a program and waits; stdout captured when asked. For user tools (tmux), never for
/// building the lab, which is native.
public enum Spawn {
    public struct Result { public var status: Int32; public var output: String }

    @discardableResult
    public static func run(_ argv: [String], captureOutput: Bool = false, quiet: Bool = false) throws -> Result {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var pipeFDs: [Int32] = [-1, -1]
        if captureOutput {
            guard pipe(&pipeFDs) == 0 else { throw UsageError("pipe failed") }
            posix_spawn_file_actions_adddup2(&actions, pipeFDs[1], 1)
            posix_spawn_file_actions_addclose(&actions, pipeFDs[0])
        } else if quiet {
            posix_spawn_file_actions_addopen(&actions, 1, "/dev/null", O_WRONLY, 0)
        }
        if quiet { posix_spawn_file_actions_addopen(&actions, 2, "/dev/null", O_WRONLY, 0) }
        Output.flush()
        let cargs = argv.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) } }
        // Children start with no blocked signals and default handlers, whatever our parent gave
        // us: a tmux server that inherits a blocked SIGTERM ignores its own kill-server.
        var pid: pid_t = 0
        let rc = withCleanAttributes { posix_spawnp(&pid, argv[0], &actions, &$0, cargs, environ) }
        if captureOutput { close(pipeFDs[1]) }
        guard rc == 0 else {
            if captureOutput { close(pipeFDs[0]) }
            throw UsageError("\(argv[0]) not found: \(String(cString: strerror(rc)))")
        }
        var out: [UInt8] = []
        if captureOutput {
            var buf = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(pipeFDs[0], &buf, buf.count)
                if n <= 0 { break }
                out += buf[0..<n]
            }
            close(pipeFDs[0])
        }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        return Result(status: (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f),
                      output: String(decoding: out, as: UTF8.self))
    }

    /// Spawn attributes for a child that starts with no blocked signals and default handlers;
    /// `ownProcessGroup`: in a process group of its own (a Ctrl-C for us does not reach it).
    public static func withCleanAttributes<T>(ownProcessGroup: Bool = false, _ body: (inout posix_spawnattr_t) -> T) -> T {
        var attr = posix_spawnattr_t()
        posix_spawnattr_init(&attr)
        defer { posix_spawnattr_destroy(&attr) }
        var empty = sigset_t(), all = sigset_t()
        sigemptyset(&empty)
        sigfillset(&all)
        posix_spawnattr_setsigmask(&attr, &empty)
        posix_spawnattr_setsigdefault(&attr, &all)
        var flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
        if ownProcessGroup {
            posix_spawnattr_setpgroup(&attr, 0)
            flags |= POSIX_SPAWN_SETPGROUP
        }
        posix_spawnattr_setflags(&attr, Int16(flags))
        return body(&attr)
    }

    /// Unblocks every signal and restores default handlers, before exec'ing a user's command.
    public static func resetSignals() {
        var empty = sigset_t()
        sigemptyset(&empty)
        sigprocmask(SIG_SETMASK, &empty, nil)
        for sig in [SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGPIPE, SIGCHLD] { signal(sig, SIG_DFL) }
    }

    /// This program's own path, for commands that run cgnat again (tmux windows).
    public static var selfPath: String {
        var buf = [CChar](repeating: 0, count: 4096)
        let n = readlink("/proc/self/exe", &buf, buf.count - 1)
        return n > 0 ? String(cString: buf) : CommandLine.arguments[0]
    }
}
