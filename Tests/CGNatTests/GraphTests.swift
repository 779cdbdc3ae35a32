import Foundation
import Testing
import CGNatCore
import NetAddress

/// `cgnat graph` without root: golden files for the seed lab, a summarised drawing at scale, and
/// the DOT laid out by Graphviz into well-formed SVG.
///
/// The golden files live in Tests/Golden/graph/. After a deliberate change to the drawing,
/// regenerate them and review the diff before committing:
///
///     CGNAT_UPDATE_GOLDEN=1 swift test --filter GraphTests
@Suite struct GraphTests {
    static let goldenDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .deletingLastPathComponent().appendingPathComponent("Golden/graph")

    func golden(_ name: String, _ actual: String) throws {
        let url = GraphTests.goldenDirectory.appendingPathComponent(name)
        if ProcessInfo.processInfo.environment["CGNAT_UPDATE_GOLDEN"] == "1" {
            try actual.write(to: url, atomically: true, encoding: .utf8)
            return
        }
        let expected = try String(contentsOf: url, encoding: .utf8)
        if actual != expected {
            let a = actual.split(separator: "\n", omittingEmptySubsequences: false)
            let e = expected.split(separator: "\n", omittingEmptySubsequences: false)
            let first = zip(a, e).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? min(a.count, e.count)
            Issue.record("""
                \(name) differs from the golden file at line \(first + 1) \
                (CGNAT_UPDATE_GOLDEN=1 regenerates it):
                expected: \(first < e.count ? String(e[first]) : "<end>")
                actual:   \(first < a.count ? String(a[first]) : "<end>")
                """)
        }
    }

    func ascii(_ lab: Lab, backend: Backend? = nil, width: Int = 100) throws -> String {
        AsciiGraph.render(try Topology.of(lab, backend: backend), width: width)
    }

    @Test func seedASCIIMatchesGolden() throws {
        try golden("seed.txt", try ascii(Lab.seed()))
        try golden("seed-netns.txt", try ascii(Lab.seed(), backend: .netns))
        try golden("seed-vrf.txt", try ascii(Lab.seed(), backend: .vrf))
        try golden("scaled-3x20-netns.txt", try ascii(Lab.seedScaled(domains: 3, perDomain: 20), backend: .netns))
    }

    @Test func seedDOTMatchesGolden() throws {
        try golden("seed.dot", DotGraph.render(try Topology.of(Lab.seed(), backend: nil)))
    }

    @Test func drawingsFitTheirWidth() throws {
        for (lab, backend) in [(Lab.seed(), nil), (Lab.seed(), .netns), (Lab.seed(), .vrf),
                               (Lab.seedScaled(domains: 10, perDomain: 100), Backend?.none),
                               (Lab.seedScaled(domains: 3, perDomain: 20), .netns)] as [(Lab, Backend?)] {
            for width in lab.name == "scale" ? [100] : [100, 90] {
                let text = try ascii(lab, backend: backend, width: width)
                let widest = text.split(separator: "\n").map(\.count).max() ?? 0
                #expect(widest <= width, "\(lab.name) \(backend?.rawValue ?? "-") at \(width): \(widest) columns")
            }
        }
    }

    /// Every fact of the seed lab is on the page: each host, interface and address, NAT, routes.
    @Test func seedASCIIShowsTheWholeModel() throws {
        let lab = Lab.seed()
        let text = try ascii(lab)
        for h in lab.hosts {
            #expect(text.contains("- \(h.name) "), "a box for \(h.name)")
            #expect(text.contains(h.interface))
            for a in h.addresses + h.loopbackAddresses { #expect(text.contains(a.description), "\(h.name) \(a)") }
        }
        for d in lab.router.subscribers {
            #expect(text.contains("main:\(d.name)  subscriber domain \(d.id)"))
            #expect(text.contains("\(d.bridge) (bridge)"))
            for p in d.routed { #expect(text.contains(p.description)) }
            for h in lab.hosts(in: d.name) { #expect(text.contains("port \(h.name)")) }
        }
        #expect(text.contains("NAT (IPv4) out muplink:"))
        #expect(text.contains("100.64.0.0/10 -> 100.64.0.1"))
        // Each link is one line from the interface on one end to the interface on the other.
        let lines = text.split(separator: "\n")
        #expect(lines.contains { $0.contains("| client1 ") && $0.contains("|-----|   muplink") })
        for name in ["blue_c1", "blue_c2", "red_c1"] {
            #expect(lines.contains { $0.contains("port \(name) ") && $0.contains("|-----| cuplink") },
                    "the link of \(name) runs from its bridge port to its cuplink")
        }
    }

    @Test func scaledLabIsDrawnByDomain() throws {
        let lab = Lab.seedScaled(domains: 10, perDomain: 100)
        let text = try ascii(lab)
        let lines = text.split(separator: "\n")
        #expect(!text.contains("d01_c050"), "no line per host")
        #expect(text.contains("100 subscribers"))
        #expect(lines.contains { $0.contains("100 ports") && $0.contains("|=====| cuplink") })
        #expect(text.contains("d01_c001..d01_c100"))
        #expect(text.contains("| d01_c001..d01_c100"))
        #expect(text.contains("100.64.0.1-100.64.0.100"))
        #expect(text.contains("from d01..d10 (10 domains)"))
        #expect(lines.count < 150, "\(lines.count) lines for 1000 subscribers")
        for d in 1...10 { #expect(text.contains("main:d\(d < 10 ? "0" : "")\(d)  subscriber domain \(d)")) }

        let dot = DotGraph.render(try Topology.of(lab, backend: .netns))
        #expect(!dot.contains("d01_c050"))
        #expect(dot.contains("100 links"))
        #expect(dot.contains("netns scale-&lt;name&gt; each"))
        // CGNAT_GRAPH_DUMP=/tmp/x writes both drawings, to look at them (x, x.dot).
        if let dump = ProcessInfo.processInfo.environment["CGNAT_GRAPH_DUMP"] {
            try text.write(toFile: dump, atomically: true, encoding: .utf8)
            try dot.write(toFile: dump + ".dot", atomically: true, encoding: .utf8)
        }
    }

    /// Eight subscribers in a domain are still drawn one by one; the ninth makes it a group.
    @Test func summaryThreshold() throws {
        let eight = try ascii(Lab.seedScaled(domains: 1, perDomain: 8))
        #expect(eight.contains("port d01_c008") && !eight.contains("subscribers d01"))
        let nine = try ascii(Lab.seedScaled(domains: 1, perDomain: 9))
        #expect(!nine.contains("port d01_c001") && nine.contains("9 subscribers"))
    }

    @Test func addressRanges() {
        func a(_ s: String) -> IPAddress { IPAddress(s)! }
        #expect(AddressRange([a("100.64.0.255"), a("100.64.1.0")], length: 10, hosts: 2).description == "100.64.0.255-100.64.1.0 (/10)")
        #expect(AddressRange([a("100.64.0.1"), a("100.64.0.3")], length: 10, hosts: 2).description == "100.64.0.1..100.64.0.3 (/10)")
        #expect(AddressRange([a("192.0.2.2")], length: 32, hosts: 5).description == "192.0.2.2 (/32, 1 address)")
        #expect(AddressRange([a("2001:db8::9"), a("2001:db8::a")], length: 64, hosts: 2).span == "2001:db8::9-2001:db8::a")
    }

    /// The DOT parses: Graphviz lays it out into SVG that is well-formed XML.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/dot"), "needs graphviz (scripts/deps)"))
    func dotLaysOutAsWellFormedSVG() throws {
        for lab in [Lab.seed(), Lab.seedScaled(domains: 10, perDomain: 100)] {
            for backend in [nil, Backend.netns, .vrf] {
                let dot = DotGraph.render(try Topology.of(lab, backend: backend))
                let svg = try run("/usr/bin/dot", ["-Tsvg"], input: dot)
                #expect(svg.status == 0, "dot: \(svg.stderr)")
                #expect(svg.stderr.isEmpty, "dot warns: \(svg.stderr)")
                #expect(svg.stdout.contains("<svg"))
                let xml = try run("/usr/bin/python3", ["-c", "import xml.dom.minidom,sys; xml.dom.minidom.parse(sys.stdin)"], input: svg.stdout)
                #expect(xml.status == 0, "not well-formed XML: \(xml.stderr)")
            }
        }
    }

    func run(_ tool: String, _ args: [String], input: String) throws -> (status: Int32, stdout: String, stderr: String) {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: tool)
        p.arguments = args
        let i = Pipe(), o = Pipe(), e = Pipe()
        p.standardInput = i
        p.standardOutput = o
        p.standardError = e
        try p.run()
        // Write and read concurrently: a large SVG fills the pipe before dot has read all input.
        let group = DispatchGroup()
        nonisolated(unsafe) var errData = Data()
        DispatchQueue.global().async(group: group) { i.fileHandleForWriting.write(Data(input.utf8)); try? i.fileHandleForWriting.close() }
        DispatchQueue.global().async(group: group) { errData = e.fileHandleForReading.readDataToEndOfFile() }
        let out = o.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        p.waitUntilExit()
        return (p.terminationStatus, String(decoding: out, as: UTF8.self), String(decoding: errData, as: UTF8.self))
    }
}
