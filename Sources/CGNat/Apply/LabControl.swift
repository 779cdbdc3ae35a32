import Glibc
import Netlink

/// `up` and `down` as library calls, so tests drive exactly what the command line does.
public enum LabControl {
    public struct UpResult: Sendable {
        public var plan: Plan
        public var milliseconds: Double
    }

    public static func requireRoot(_ what: String) throws {
        guard geteuid() == 0 else {
            throw UsageError("\(what) needs root (it creates network namespaces and changes them over netlink): run it with sudo")
        }
    }

    /// Builds the lab. Either it completes, or everything made so far is removed again and the
    /// error names the step that failed.
    /// Test hooks of `Applier`, reachable from the command line for process-level tests.
    public struct Faults: Sendable {
        public var failBeforeStep: Int?
        public var crashAfterStep: Int?
        public var stepDelayMilliseconds = 0
        public init(failBeforeStep: Int? = nil, crashAfterStep: Int? = nil, stepDelayMilliseconds: Int = 0) {
            self.failBeforeStep = failBeforeStep
            self.crashAfterStep = crashAfterStep
            self.stepDelayMilliseconds = stepDelayMilliseconds
        }
    }

    public static func up(_ lab: Lab, backend: Backend, failBeforeStep: Int? = nil) throws -> UpResult {
        try up(lab, backend: backend, faults: Faults(failBeforeStep: failBeforeStep))
    }

    /// `showProgress`: a bar (or plain lines) on stderr while a large lab comes up.
    public static func up(_ lab: Lab, backend: Backend, faults: Faults, showProgress: Bool = true) throws -> UpResult {
        try requireRoot("cgnat up")
        let start = monotonicMilliseconds()
        let plan = try Planner.plan(lab, backend: backend)
        // Preflight what would otherwise fail half-way: libnftables must load.
        _ = try Nftables.preflight()
        let record = try LabRecord.begin(lab: lab.name, backend: backend)
        let applier = Applier(plan: plan)
        applier.failBeforeStep = faults.failBeforeStep
        applier.crashAfterStep = faults.crashAfterStep
        applier.stepDelayMilliseconds = faults.stepDelayMilliseconds
        let progress = Progress("up \(lab.name)", total: plan.steps.count, large: Progress.isLarge(namespaces: plan.namespaces.count))
        if showProgress { applier.progress = progress.update }
        defer { progress.finish() }
        do {
            try applier.apply(record: record)
        } catch {
            progress.finish()
            let undone = (try? Teardown.down(lab: lab.name))?.removed.count ?? 0
            throw RolledBack(underlying: error, removedNamespaces: undone)
        }
        return UpResult(plan: plan, milliseconds: monotonicMilliseconds() - start)
    }

    public struct RolledBack: Error, CustomStringConvertible {
        public let underlying: Error
        public let removedNamespaces: Int
        public var description: String {
            "up failed at \(underlying); rolled back (removed \(removedNamespaces) namespace\(removedNamespaces == 1 ? "" : "s"))"
        }
    }

    public static func down(lab: String) throws -> Teardown.Report {
        try requireRoot("cgnat down")
        return try Teardown.down(lab: lab)
    }

    /// The backend a lab that is up was built with, or a clear error if it is not up.
    public static func runningBackend(lab: String) throws -> Backend {
        try runningRecord(lab: lab).backend
    }

    /// The record of a lab that is completely up, with its backend, or a clear error.
    static func runningRecord(lab: String) throws -> (record: LabRecord.Contents, backend: Backend) {
        guard let record = LabRecord.load(lab: lab) else {
            throw UsageError("lab '\(lab)' is not up: run `cgnat up --lab \(lab)` first")
        }
        guard record.complete, let backend = record.backend else {
            throw UsageError("lab '\(lab)' is half-built (an `up` crashed or is still running): run `cgnat down --lab \(lab)`")
        }
        return (record, backend)
    }

    /// Resolves a context of a lab that is up, with an open fd on its namespace, after checking
    /// that the namespace is still the one the lab created.
    public static func open(context name: String, lab: Lab) throws -> (Context, Int32) {
        let (record, backend) = try runningRecord(lab: lab.name)
        guard let ctx = lab.context(named: name, backend: backend) else {
            let known = lab.contexts(backend: backend).map(\.name).joined(separator: ", ")
            throw UsageError("unknown context '\(name)': the contexts of lab '\(lab.name)' are \(known)")
        }
        guard let id = record.namespaces.first(where: { $0.name == ctx.namespace })?.identity,
              NetNamespace.identity(of: ctx.namespace) == id else {
            throw UsageError("namespace \(ctx.namespace) of context '\(name)' is gone or was replaced: run `cgnat down --lab \(lab.name)` and `cgnat up` again")
        }
        return (ctx, try NetNamespace.open(ctx.namespace))
    }
}

public func monotonicMilliseconds() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) * 1000 + Double(ts.tv_nsec) / 1_000_000
}

extension Nftables {
    /// Loads libnftables without creating a context, to fail before anything is built.
    public static func preflight() throws -> Bool {
        guard dlopen("libnftables.so.1", RTLD_NOW | RTLD_NOLOAD) != nil || dlopen("libnftables.so.1", RTLD_NOW) != nil else {
            throw Failure(description: "libnftables.so.1 not found: install nftables (apt-get install nftables)")
        }
        return true
    }
}
