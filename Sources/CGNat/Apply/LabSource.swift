import Glibc
import Netlink

/// Where a command's lab comes from: a lab file (read by the `cgnat-lab` helper, which carries
/// the YAML parser so this binary does not), the lab that is up, or the embedded default.
public enum LabSource {
    /// The embedded default lab, for commands given no file and no running lab.
    public static func `default`(name: String) -> Lab { Lab.seed(name: name) }

    /// The lab file was refused: the helper's diagnostics (one per line, FILE:LINE:COL: ...).
    public struct Invalid: Error, CustomStringConvertible, Sendable {
        public let file: String
        public let diagnostics: String
        public var description: String {
            diagnostics.isEmpty ? "\(file) is not a valid lab file" : diagnostics
        }
    }

    /// The helper that turns a file into the resolved lab: $CGNAT_LAB_HELPER, else `cgnat-lab`
    /// next to the running binary.
    public static var helperPath: String {
        if let h = getenv("CGNAT_LAB_HELPER"), h.pointee != 0 { return String(cString: h) }
        let me = Spawn.selfPath
        let dir = me.lastIndex(of: "/").map { String(me[..<$0]) } ?? "."
        return "\(dir)/cgnat-lab"
    }

    /// Runs `cgnat-lab resolve FILE` and decodes the lab it prints.
    public static func resolve(file: String) throws -> Lab {
        let helper = helperPath
        guard access(helper, X_OK) == 0 else {
            throw UsageError("cannot read lab file \(file): the lab file reader \(helper) is missing (it is built and installed next to cgnat; set CGNAT_LAB_HELPER to use another)")
        }
        let r = try capture([helper, "resolve", file])
        guard r.status == 0 else {
            var diag = r.stderr
            while diag.last == "\n" { diag.removeLast() }
            throw Invalid(file: file, diagnostics: diag)
        }
        var lab: Lab
        do { lab = try LabCodec.decode(r.stdout) } catch {
            throw UsageError("\(helper) resolved \(file) into something cgnat cannot read (\(error)): are cgnat and cgnat-lab from the same build?")
        }
        try LabName.validate(lab.name)
        if lab.origin == nil {
            if let abs = realpath(file, nil) { lab.origin = String(cString: abs); free(abs) } else { lab.origin = file }
        }
        return lab
    }

    /// The lab of `up FILE` / `render FILE`: from the file when given (its `name:` names the
    /// lab; a different --lab is an error), else the default under --lab or the default name.
    public static func forBuilding(file: String?, labOption: String?) throws -> Lab {
        if let labOption { try LabName.validate(labOption) }
        guard let file else { return `default`(name: labOption ?? Lab.defaultName) }
        let lab = try resolve(file: file)
        if let labOption, labOption != lab.name {
            throw UsageError("\(file) names its lab '\(lab.name)' but --lab says '\(labOption)': leave --lab out, or change `name:` in the file")
        }
        return lab
    }

    /// The lab `render` shows: the file if given, else the running lab of that name (its stored
    /// model, no root needed), else the default.
    public static func forRendering(file: String?, labOption: String?) throws -> Lab {
        if file != nil { return try forBuilding(file: file, labOption: labOption) }
        let name = labOption ?? Lab.defaultName
        try LabName.validate(name)
        if LabRecord.load(lab: name) != nil, let stored = try? LabRecord.loadLab(name), stored.name == name { return stored }
        if labOption != nil && name != Lab.defaultName {
            // Say so: a user who named a lab that is not up gets the default lab under that name.
            fputs("cgnat: lab '\(name)' is not up: showing the built-in default lab under that name (give a FILE for another lab)\n", stderr)
        }
        return `default`(name: name)
    }

    struct Captured { var status: Int32; var stdout: String; var stderr: String }

    /// Runs a program with stdout and stderr captured (both read as they come: neither pipe fills).
    static func capture(_ argv: [String]) throws -> Captured {
        var out: [Int32] = [-1, -1], err: [Int32] = [-1, -1]
        guard pipe(&out) == 0, pipe(&err) == 0 else { throw SystemError("pipe") }
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_adddup2(&actions, out[1], 1)
        posix_spawn_file_actions_adddup2(&actions, err[1], 2)
        for fd in out + err { posix_spawn_file_actions_addclose(&actions, fd) }
        let cargs = argv.map { strdup($0) } + [nil]
        defer { cargs.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, nil, cargs, environ)
        close(out[1]); close(err[1])
        guard rc == 0 else {
            close(out[0]); close(err[0])
            throw UsageError("cannot run \(argv[0]): \(String(cString: strerror(rc)))")
        }
        var bytes: [Int32: [UInt8]] = [out[0]: [], err[0]: []]
        var open = [out[0], err[0]]
        var buf = [UInt8](repeating: 0, count: 65536)
        while !open.isEmpty {
            var fds = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            if poll(&fds, nfds_t(fds.count), -1) < 0 { if errno == EINTR { continue }; break }
            for f in fds where f.revents != 0 {
                let n = read(f.fd, &buf, buf.count)
                if n > 0 { bytes[f.fd]! += buf[0..<n] } else if n == 0 || errno != EINTR {
                    close(f.fd); open.removeAll { $0 == f.fd }
                }
            }
        }
        open.forEach { close($0) }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
        let code = (status & 0x7f) == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
        return Captured(status: code, stdout: String(decoding: bytes[out[0]]!, as: UTF8.self),
                        stderr: String(decoding: bytes[err[0]]!, as: UTF8.self))
    }
}
