// cgnat-lab: lab files (YAML) to the resolved lab. A separate binary because the YAML reader
// needs Foundation, which would cost every `cgnat` exec its start-up (README, "Lab files").
//
//   cgnat-lab resolve FILE            the resolved lab as JSON (LabCodec) on stdout, exit 0;
//                                     otherwise one line per problem on stderr, exit 1
//   cgnat-lab validate FILE [--json]  "FILE: ok (N domains, M hosts)" or every problem, exit 1
import CGNatCore
import CGNatLabFile
import Foundation

func usage() -> Never {
    FileHandle.standardError.write("usage: cgnat-lab resolve FILE | cgnat-lab validate FILE [--json]\n".data(using: .utf8)!)
    exit(2)
}

func printErr(_ s: String) { FileHandle.standardError.write((s + "\n").data(using: .utf8)!) }

var args = Array(CommandLine.arguments.dropFirst())
guard let verb = args.first, verb == "resolve" || verb == "validate" else { usage() }
args.removeFirst()
let json = args.contains("--json")
args.removeAll { $0 == "--json" }
guard args.count == 1, verb == "validate" || !json else { usage() }
let file = args[0]
if let bad = args.first(where: { $0.hasPrefix("--") }) {
    printErr("cgnat-lab: unknown option '\(bad)'")
    usage()
}

let text: String
do {
    text = try String(contentsOfFile: file, encoding: .utf8)
} catch {
    var isDirectory: ObjCBool = false
    let exists = FileManager.default.fileExists(atPath: file, isDirectory: &isDirectory)
    let reason = !exists ? "does not exist" : isDirectory.boolValue ? "is a directory" : "cannot be read as UTF-8 text"
    let d = Diagnostic(path: "", position: nil, message: "the lab file \(reason)", hint: "give the path of a lab file, e.g. labs/seed.yaml")
    if json { print(JSON.array([d.json(file: file)]).serialized()) } else { printErr(d.formatted(file: file)) }
    exit(1)
}

let absolute = URL(fileURLWithPath: file).standardizedFileURL.path
let outcome = LabFile.resolve(yaml: text, file: file, origin: absolute)

switch verb {
case "resolve":
    guard let lab = outcome.lab else {
        for d in outcome.diagnostics { printErr(d.formatted(file: file)) }
        exit(1)
    }
    print(LabCodec.encode(lab))
default:
    if json {
        print(JSON.array(outcome.diagnostics.map { $0.json(file: file) }).serialized())
    } else if let lab = outcome.lab {
        print("\(file): ok (\(lab.router.subscribers.count) domains, \(lab.hosts.count) hosts)")
    } else {
        for d in outcome.diagnostics { printErr(d.formatted(file: file)) }
        printErr("\(file): \(outcome.diagnostics.count) problem\(outcome.diagnostics.count == 1 ? "" : "s")")
    }
    exit(outcome.lab == nil ? 1 : 0)
}
