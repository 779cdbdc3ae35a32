import ArgumentParser
import CGNat
import Glibc

struct Validate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check a lab file and report every problem at once; needs no root and touches nothing.",
        discussion: """
            Each problem is one line, FILE:LINE:COLUMN: key.path: what is wrong; what to do. Exits 1 on any \
            problem. The YAML is read by the helper `cgnat-lab` next to this binary (CGNAT_LAB_HELPER overrides \
            its path), so that cgnat itself starts without Foundation.
            """)

    @Argument(help: "The lab file (YAML), e.g. labs/seed.yaml.") var file: String
    @Flag(help: "Print the problems as a JSON array of {file, line, column, path, message, hint}.") var json = false

    func run() throws {
        LabHelper.exec(["validate", file] + (json ? ["--json"] : []))
    }
}

/// The `cgnat-lab` helper: the sibling of the running binary, or $CGNAT_LAB_HELPER.
enum LabHelper {
    static var path: String {
        if let p = getenv("CGNAT_LAB_HELPER"), p.pointee != 0 { return String(cString: p) }
        var buf = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let n = readlink("/proc/self/exe", &buf, Int(PATH_MAX))
        let exe = n > 0 ? String(cString: Array(buf[0..<n]) + [0]) : CommandLine.arguments[0]
        let dir = exe.contains("/") ? String(exe[..<exe.lastIndex(of: "/")!]) : "."
        return "\(dir)/cgnat-lab"
    }

    /// Replaces this process with the helper, so its output and exit status are the command's.
    static func exec(_ arguments: [String]) -> Never {
        let helper = path
        Output.flush()
        let argv = ([helper] + arguments).map { strdup($0) } + [nil]
        execv(helper, argv)
        let err = String(cString: strerror(errno))
        fail("cannot run the lab-file helper \(helper): \(err); build it (swift build --product cgnat-lab) next to cgnat, or set CGNAT_LAB_HELPER to its path")
    }
}
