import ArgumentParser
import CGNat
import Glibc

struct Graph: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "graph",
        abstract: "Draw the lab's topology: contexts, domains, links, addresses, NAT, routed prefixes; needs no root.",
        discussion: """
            ascii (the default) is for a terminal; dot is Graphviz's language; svg is the dot output laid \
            out by Graphviz's `dot` (Debian's graphviz package). Domains with more than \
            \(LabScale.detailLimit) subscribers are drawn as one group with counts and address ranges. \
            --backend adds where each context lives on that backend (namespaces, VRFs, transfer links).
            """)

    @Argument(help: "A lab file (YAML); else the lab of that name if it is up, else the built-in default.") var file: String?
    @OptionGroup var options: LabOptions
    @Option(help: "Output format: ascii, dot or svg.") var format: GraphFormat = .ascii
    @Option(help: "Also show the namespaces and VRFs of this backend (netns or vrf).") var backend: Backend?
    @Option(help: "Width of the ascii drawing in columns.") var width: Int = 100

    func validate() throws {
        guard (40...1000).contains(width) else { throw ValidationError("--width must be 40 to 1000 columns") }
    }

    /// The lab this command draws; the only place that chooses it.
    func selectedLab() throws -> Lab { try LabSource.forRendering(file: file, labOption: options.lab) }

    func run() throws {
        do {
            Output.write(try Graph.render(try selectedLab(), format: format, backend: backend, width: width))
            Output.flush()
        } catch let e as LabSource.Invalid {
            failDiagnostics(e)
        } catch {
            fail("\(error)")
        }
    }

    static func render(_ lab: Lab, format: GraphFormat, backend: Backend?, width: Int) throws -> String {
        let topology = try Topology.of(lab, backend: backend)
        switch format {
        case .ascii: return AsciiGraph.render(topology, width: width)
        case .dot: return DotGraph.render(topology)
        case .svg: return try svg(DotGraph.render(topology))
        }
    }

    /// Lays the DOT out with Graphviz's `dot`, through a file of our own (Spawn feeds no stdin).
    static func svg(_ dot: String) throws -> String {
        guard let tool = findInPath("dot") else {
            throw UsageError("--format svg needs Graphviz's `dot`, which is not installed: apt-get install graphviz (or scripts/deps); --format dot prints the graph without it")
        }
        var template = Array("/tmp/cgnat-graph-XXXXXX.dot".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemps($0.baseAddress!, 4) }
        guard fd >= 0 else { throw UsageError("cannot create a temporary file in /tmp: \(String(cString: strerror(errno)))") }
        let path = String(cString: template)
        defer { unlink(path) }
        let bytes = Array(dot.utf8)
        var off = 0
        while off < bytes.count {
            let n = bytes[off...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            guard n > 0 else { close(fd); throw UsageError("cannot write \(path): \(String(cString: strerror(errno)))") }
            off += n
        }
        close(fd)
        let r = try Spawn.run([tool, "-Tsvg", path], captureOutput: true)
        guard r.status == 0 else { throw UsageError("\(tool) -Tsvg failed with status \(r.status) (its message is above)") }
        return r.output
    }

    static func findInPath(_ name: String) -> String? {
        let path = getenv("PATH").map { String(cString: $0) } ?? "/usr/bin:/bin"
        for dir in path.split(separator: ":") where access("\(dir)/\(name)", X_OK) == 0 { return "\(dir)/\(name)" }
        return nil
    }
}

extension GraphFormat: ExpressibleByArgument {}
