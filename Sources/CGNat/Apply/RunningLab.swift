import Glibc
import Netlink

/// A lab that is up, as every command after `up` sees it: the resolved lab `up` stored next to
/// the record (LAB.lab), the backend it was built with, and the record. Loaded by lab name, so
/// no command needs the lab file again.
public struct RunningLab: Sendable {
    public let lab: Lab
    public let backend: Backend
    public let record: LabRecord.Contents
    /// The record file this was read from: a `down` (and a new `up`) gives another one.
    let recordFile: NetNamespace.Identity?
    /// Contexts and recorded namespace identities by name: commands look up one per context, and
    /// a lab of a thousand subscribers has a thousand of each.
    private let contextIndex: [String: Context]
    private let identities: [String: NetNamespace.Identity]

    init(lab: Lab, backend: Backend, record: LabRecord.Contents, recordFile: NetNamespace.Identity?) {
        self.lab = lab
        self.backend = backend
        self.record = record
        self.recordFile = recordFile
        contextIndex = Dictionary(lab.contexts(backend: backend).map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        identities = Dictionary(record.namespaces.map { ($0.name, $0.identity) }, uniquingKeysWith: { a, _ in a })
    }

    public var name: String { lab.name }

    /// The lab `up` built, by name; a clear error if it is not (completely) up.
    public static func open(name: String) throws -> RunningLab {
        try LabName.validate(name)
        let (record, backend) = try LabControl.runningRecord(lab: name)
        let lab: Lab
        do {
            guard let stored = try LabRecord.loadLab(name) else {
                throw UsageError("lab '\(name)' is up but its resolved lab \(LabRecord.labPath(name)) is missing (an older cgnat built it): run `cgnat down --lab \(name)` and `cgnat up` again")
            }
            lab = stored
        } catch let e as LabCodec.DecodeError {
            throw UsageError("lab '\(name)': \(LabRecord.labPath(name)) cannot be read (\(e)): run `cgnat down --lab \(name)` and `cgnat up` again")
        }
        guard lab.name == name else {
            throw UsageError("lab '\(name)': \(LabRecord.labPath(name)) holds lab '\(lab.name)': run `cgnat down --lab \(name)` and `cgnat up` again")
        }
        return RunningLab(lab: lab, backend: backend, record: record, recordFile: LabRecord.fileIdentity(lab: name))
    }

    /// A lab model the caller already holds (library callers, tests), checked against the record
    /// of the lab of that name that is up.
    public static func adopt(_ lab: Lab) throws -> RunningLab {
        let (record, backend) = try LabControl.runningRecord(lab: lab.name)
        return RunningLab(lab: lab, backend: backend, record: record, recordFile: LabRecord.fileIdentity(lab: lab.name))
    }

    public var contexts: [Context] { lab.contexts(backend: backend) }

    public func context(named name: String) throws -> Context {
        guard let ctx = contextIndex[name] else {
            let known = contexts.map(\.name).joined(separator: ", ")
            throw UsageError("unknown context '\(name)': the contexts of lab '\(lab.name)' are \(known)")
        }
        return ctx
    }

    /// A context with an open fd on its namespace, after checking that the namespace is still
    /// the one the lab created.
    public func open(context name: String) throws -> (Context, Int32) {
        let ctx = try context(named: name)
        guard let id = identities[ctx.namespace],
              NetNamespace.identity(of: ctx.namespace) == id else {
            throw UsageError("namespace \(ctx.namespace) of context '\(name)' is gone or was replaced: run `cgnat down --lab \(lab.name)` and `cgnat up` again")
        }
        return (ctx, try NetNamespace.open(ctx.namespace))
    }

    /// Whether the lab is still the one this was loaded from: not being taken down, not gone,
    /// not replaced by a new `up`.
    public var stillUp: Bool {
        access(LabRecord.downMarkerPath(name), F_OK) != 0 && LabRecord.fileIdentity(lab: name) == recordFile
    }

    /// The message of a command whose lab went away under it.
    public var wentDown: UsageError { UsageError("lab '\(name)' went down") }

    /// Names this process in the record (pid and start time), so `down` ends it. Fails if the lab
    /// went down since it was loaded.
    public func register(_ role: String) throws {
        guard stillUp else { throw wentDown }
        try LabRecord.note(lab: name, "proc \(ProcessStamp.current) \(role)")
        guard stillUp else { throw wentDown }
        LabGoneSignal.arm(lab: name, role: role)
    }
}

/// A SIGTERM handler for commands that cannot stop cooperatively (a check in the middle of its
/// probes): if a `down` of their lab sent it (its marker file exists), say so and exit 1;
/// otherwise exit as an interrupted command does. Only async-signal-safe calls in the handler.
public enum LabGoneSignal {
    nonisolated(unsafe) static var markerPath: UnsafeMutablePointer<CChar>?
    nonisolated(unsafe) static var goneMessage: UnsafeMutablePointer<CChar>?
    nonisolated(unsafe) static var interruptedMessage: UnsafeMutablePointer<CChar>?
    nonisolated(unsafe) public static var armed = false
    nonisolated(unsafe) static var wanted = false

    /// Commands that want the handler (check) call this before registering.
    public static func request() { wanted = true }

    static func arm(lab: String, role: String) {
        guard wanted else { return }
        markerPath = strdup(LabRecord.downMarkerPath(lab))
        goneMessage = strdup("cgnat: lab '\(lab)' went down during \(role): no result\n")
        interruptedMessage = strdup("cgnat: \(role) interrupted: no result\n")
        armed = true
        var set = sigset_t()
        sigemptyset(&set)
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            signal(sig) { sig in
                let gone = LabGoneSignal.markerPath.map { access($0, F_OK) == 0 } ?? false
                if let m = gone ? LabGoneSignal.goneMessage : LabGoneSignal.interruptedMessage { _ = write(2, m, strlen(m)) }
                _exit(gone ? 1 : 128 + sig)
            }
            sigaddset(&set, sig)
        }
        pthread_sigmask(SIG_UNBLOCK, &set, nil)
    }
}
