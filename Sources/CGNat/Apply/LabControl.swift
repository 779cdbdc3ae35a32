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
            let why = what.hasSuffix(" up") || what.hasSuffix(" down")
                ? "it creates or removes network namespaces and configures them over netlink"
                : "it enters the lab's network namespaces"
            throw UsageError("\(what) needs root (\(why)): run it with sudo")
        }
    }

    /// Builds the lab. Either it completes, or everything made so far is removed again and the
    /// error names the step that failed.
    /// Test hooks of `Applier`, reachable from the command line for process-level tests.
    public struct Faults: Sendable {
        public var failBeforeStep: Int?
        public var crashAfterStep: Int?
        public var stepDelayMilliseconds = 0
        public var crashBeforeMount: Int?
        public init(failBeforeStep: Int? = nil, crashAfterStep: Int? = nil, stepDelayMilliseconds: Int = 0, crashBeforeMount: Int? = nil) {
            self.failBeforeStep = failBeforeStep
            self.crashAfterStep = crashAfterStep
            self.stepDelayMilliseconds = stepDelayMilliseconds
            self.crashBeforeMount = crashBeforeMount
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
        // One `up` or `down` of a lab at a time: held until we return (the kernel drops it if we die).
        let lock = try LabLock.acquire(lab: lab.name, .exclusive)
        defer { lock.release() }
        if LabRecord.load(lab: lab.name) != nil { throw LabRecord.alreadyUp(lab.name) }
        // A `down` killed after it removed the record leaves its marker: nothing runs now (we
        // hold the lock), so it is stale.
        unlink(LabRecord.downMarkerPath(lab.name))
        // The resolved lab first, so every later command (and `down`) can read what is built.
        try LabRecord.storeLab(lab)
        let record: LabRecord
        do { record = try LabRecord.begin(lab: lab.name, backend: backend) } catch {
            unlink(LabRecord.labPath(lab.name))
            throw error
        }
        let applier = Applier(plan: plan)
        applier.failBeforeStep = faults.failBeforeStep
        applier.crashAfterStep = faults.crashAfterStep
        applier.stepDelayMilliseconds = faults.stepDelayMilliseconds
        applier.crashBeforeMount = faults.crashBeforeMount
        let progress = Progress("up \(lab.name)", total: plan.steps.count, large: Progress.isLarge(namespaces: plan.namespaces.count))
        if showProgress { applier.progress = progress.update }
        defer { progress.finish() }
        do {
            try applier.apply(record: record)
        } catch {
            progress.finish()
            let undone = (try? Teardown.downLocked(lab: lab.name))?.removed.count ?? 0
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

    public static func down(lab: String, faults: Teardown.Faults = .init()) throws -> Teardown.Report {
        try requireRoot("cgnat down")
        return try Teardown.down(lab: lab, faults: faults)
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
        if access(LabRecord.downMarkerPath(lab), F_OK) == 0 {
            if let lock = try? LabLock.acquire(lab: lab, .shared, waitMilliseconds: 0) {
                lock.release()
                throw UsageError("lab '\(lab)' was half taken down by a `down` that died: run `cgnat down --lab \(lab)` again")
            }
            throw UsageError("lab '\(lab)' is being taken down right now")
        }
        guard record.complete, let backend = record.backend else {
            // Is an `up` still running, or did it die? The lock knows.
            if let lock = try? LabLock.acquire(lab: lab, .shared, waitMilliseconds: 0) {
                lock.release()
                throw UsageError("lab '\(lab)' was left half-built by an `up` that died: run `cgnat down --lab \(lab)`")
            }
            throw UsageError("lab '\(lab)' is being brought up or taken down right now: wait for it and try again")
        }
        return (record, backend)
    }

    /// Resolves a context of a lab that is up, with an open fd on its namespace, after checking
    /// that the namespace is still the one the lab created.
    public static func open(context name: String, lab: Lab) throws -> (Context, Int32) {
        try RunningLab.adopt(lab).open(context: name)
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
