/// Errors a user can fix, each saying what to do.
public struct UsageError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}

public enum LabName {
    /// Lab names become namespace-name prefixes (`<lab>-main`): keep them short and plain.
    public static func validate(_ name: String) throws {
        let ok = !name.isEmpty && name.count <= 32
            && name.utf8.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 95 || $0 == 45 }
            && name.first != "-"
        guard ok else {
            throw UsageError("invalid lab name '\(name)': use 1-32 characters of a-z, 0-9, '_' or '-', not starting with '-'")
        }
    }
}

public enum Planner {
    public static func plan(_ lab: Lab, backend: Backend) throws -> Plan {
        try lab.validate()
        switch backend {
        case .netns: return Plan.netns(lab)
        case .vrf: return Plan.vrf(lab)
        }
    }
}
