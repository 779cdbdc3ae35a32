import CGNatCore
import Yams

/// A lab file read from YAML: Yams composes the node tree with marks (line, column), which becomes
/// the core's `SpecNode`; decoding, expansion and validation happen in the pure core.
public enum LabFile {
    public struct Outcome {
        public var lab: Lab?
        public var diagnostics: [Diagnostic]
    }

    /// `file` is the name diagnostics and expectation locations carry; `origin` goes into the lab.
    public static func resolve(yaml: String, file: String, origin: String? = nil) -> Outcome {
        let root: SpecNode
        switch node(yaml: yaml) {
        case .failure(let d): return Outcome(lab: nil, diagnostics: [d])
        case .success(let n): root = n
        }
        let (lab, diagnostics) = LabExpansion.resolve(root, file: file, origin: origin)
        return Outcome(lab: lab, diagnostics: diagnostics)
    }

    /// The YAML text as a document tree, or the syntax error at its position.
    public static func node(yaml: String) -> Result<SpecNode, Diagnostic> {
        do {
            guard let n = try Yams.compose(yaml: yaml) else {
                return .failure(Diagnostic(path: "", position: Position(line: 1, column: 1), message: "the file holds no YAML document",
                                           hint: "start from labs/seed.yaml"))
            }
            var budget = maxNodes
            guard let tree = convert(n, budget: &budget) else {
                return .failure(Diagnostic(path: "", position: Position(line: 1, column: 1),
                                           message: "the document has more than \(maxNodes) nodes once its aliases are expanded (an alias bomb?)",
                                           hint: "write the lab without nested aliases; templates (count:) generate many hosts from a few lines"))
            }
            return .success(tree)
        } catch let e as YamlError {
            return .failure(syntax(e))
        } catch {
            return .failure(Diagnostic(path: "", position: nil, message: "cannot read YAML: \(error)", hint: "check the file's syntax"))
        }
    }

    /// A thousand hosts written out in full are about 20,000 nodes (templates need far fewer);
    /// aliases that expand past a million are refused before they exhaust memory.
    static let maxNodes = 1_000_000

    static func convert(_ n: Node, budget: inout Int) -> SpecNode? {
        budget -= 1
        guard budget >= 0 else { return nil }
        let pos = n.mark.map { Position(line: $0.line, column: $0.column) }
        switch n {
        case .scalar(let s):
            let kind: SpecNode.ScalarKind
            switch n.tag.description {
            case Tag.Name.int.rawValue: kind = .int
            case Tag.Name.float.rawValue: kind = .float
            case Tag.Name.bool.rawValue: kind = .bool
            case Tag.Name.null.rawValue: kind = .null
            default: kind = .string
            }
            return .scalar(s.string, kind, pos)
        case .mapping(let m):
            var pairs: [(key: String, keyPosition: Position?, value: SpecNode)] = []
            for pair in m {
                let key: String
                if case .scalar(let k) = pair.key { key = k.string } else { key = "<\(SpecNode.kindNameOf(pair.key))>" }
                guard let v = convert(pair.value, budget: &budget) else { return nil }
                pairs.append((key: key, keyPosition: pair.key.mark.map { Position(line: $0.line, column: $0.column) }, value: v))
            }
            return .mapping(pairs, pos)
        case .sequence(let items):
            var out: [SpecNode] = []
            for i in items {
                guard let v = convert(i, budget: &budget) else { return nil }
                out.append(v)
            }
            return .sequence(out, pos)
        }
    }

    static func syntax(_ e: YamlError) -> Diagnostic {
        func d(_ problem: String, _ context: YamlError.Context?, _ mark: Mark) -> Diagnostic {
            let ctx = context.map { " (\($0.text))" } ?? ""
            return Diagnostic(path: "", position: Position(line: mark.line, column: mark.column),
                              message: "YAML syntax: \(problem)\(ctx)", hint: "fix the YAML at this position (indentation, a missing ':' or quote)")
        }
        switch e {
        case let .scanner(context, problem, mark, _), let .parser(context, problem, mark, _), let .composer(context, problem, mark, _):
            return d(problem, context, mark)
        default:
            return Diagnostic(path: "", position: nil, message: "YAML: \(e)", hint: "check that the file is UTF-8 YAML")
        }
    }
}

extension SpecNode {
    static func kindNameOf(_ n: Node) -> String {
        switch n {
        case .scalar: return "scalar"
        case .mapping: return "mapping"
        case .sequence: return "list"
        }
    }
}
