/// The formats `cgnat graph` writes: text for a terminal, DOT for Graphviz, and SVG, which is
/// DOT laid out by Graphviz's `dot` (the runtime runs it; the core stays free of processes).
public enum GraphFormat: String, CaseIterable, Sendable {
    case ascii, dot, svg
}

extension Topology {
    /// The topology of `lab`, with the namespaces and VRFs of `backend` when given.
    public static func of(_ lab: Lab, backend: Backend?) throws -> Topology {
        try Topology(lab, plan: backend.map { try Planner.plan(lab, backend: $0) })
    }
}
