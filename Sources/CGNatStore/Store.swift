import CGNatCore
import GRDB

/// The local NAT log store: one SQLite file of sessions (conntrack flows as NAT mappings), the
/// NAT policy versions with the time each came into force, the logger's runs (from which the
/// gaps in the log follow) and block allocations. `cgnat events --store` feeds it lines through
/// the `cgnat-store append` helper; `cgnat whois --at` asks it through `cgnat-store query`.
public final class NATLogStore {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ d: String) { description = d }
    }

    /// Why a session ended.
    public enum EndReason: String, Sendable {
        /// conntrack's DESTROY (its stop time).
        case destroy
        /// Gone from the table when a resync compared it with the log: ended before that time, unseen.
        case resync
        /// The lab went down while the flow was open.
        case labDown = "lab down"
        /// The logger stopped (or died) while the flow was open; it ended somewhere after.
        case loggerStopped = "logger stopped"
    }

    let db: DatabaseQueue
    public let path: String

    /// Open sessions by flow identity, so that a DESTROY closes the right row and a resync NEW
    /// of an already open flow is no second session.
    struct FlowKey: Hashable {
        var ctID: Int64
        var proto: Int64
        var domainID: Int64
        var inside: String
        var insidePort: Int64
        var outside: String
        var outsidePort: Int64
    }
    private var open: [FlowKey: Int64] = [:]
    /// Open sessions a previous run left; those the new run's first table dump does not show
    /// again are closed when it says it is synced.
    private var inherited: Set<FlowKey> = []
    private var currentRun: Int64?

    public init(path: String, readOnly: Bool = false) throws {
        self.path = path
        var config = Configuration()
        config.readonly = readOnly
        // A query may come while the logger commits: wait for it rather than fail.
        config.busyMode = .timeout(5)
        do {
            db = try DatabaseQueue(path: path, configuration: config)
        } catch {
            throw Failure("cannot open the NAT log store \(path): \(error)")
        }
        if !readOnly {
            try db.writeWithoutTransaction { db in
                // WAL: readers (whois) never block the writer; NORMAL sync is safe with WAL.
                try db.execute(sql: "PRAGMA journal_mode = WAL")
                try db.execute(sql: "PRAGMA synchronous = NORMAL")
                // 64 MiB of page cache (default 2 MB): inserts into a 10-million-row index
                // otherwise read most of its pages back from disk.
                try db.execute(sql: "PRAGMA cache_size = -65536")
            }
            try Self.migrator.migrate(db)
            try db.read { db in
                for row in try Row.fetchAll(db, sql: """
                    SELECT id, ct_id, proto, domain_id, inside, inside_port, outside, outside_port
                    FROM session WHERE end_ms IS NULL
                    """) {
                    open[FlowKey(ctID: row["ct_id"] ?? 0, proto: row["proto"], domainID: row["domain_id"], inside: row["inside"],
                                 insidePort: row["inside_port"] ?? -1, outside: row["outside"], outsidePort: row["outside_port"] ?? -1)] = row["id"]
                }
            }
        } else {
            let known = try db.read { db in try db.tableExists("session") }
            guard known else { throw Failure("\(path) is not a NAT log store (no session table): give the file `cgnat events --store` writes") }
        }
    }

    static var migrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        m.registerMigration("v1") { db in
            try db.execute(sql: """
                CREATE TABLE session (
                    id INTEGER PRIMARY KEY,
                    domain_id INTEGER NOT NULL,
                    domain TEXT NOT NULL,
                    proto INTEGER NOT NULL,
                    inside TEXT NOT NULL,
                    inside_port INTEGER,
                    outside TEXT NOT NULL,
                    outside_port INTEGER,
                    destination TEXT,
                    destination_port INTEGER,
                    start_ms INTEGER NOT NULL,
                    end_ms INTEGER,
                    end_reason TEXT,
                    ct_id INTEGER,
                    run_id INTEGER
                );
                -- The whois question: who held OUTSIDE:PORT (proto) at a time.
                CREATE INDEX session_by_mapping ON session(outside, outside_port, proto, start_ms);
                -- Retention deletes by age.
                CREATE INDEX session_by_end ON session(end_ms);
                CREATE TABLE policy (
                    id INTEGER PRIMARY KEY,
                    since_ms INTEGER NOT NULL,
                    lab TEXT NOT NULL,
                    hash TEXT NOT NULL,
                    policy TEXT NOT NULL
                );
                CREATE INDEX policy_by_since ON policy(since_ms);
                CREATE TABLE run (
                    id INTEGER PRIMARY KEY,
                    start_ms INTEGER NOT NULL,
                    last_ms INTEGER NOT NULL,
                    end_ms INTEGER,
                    end_reason TEXT,
                    pid INTEGER
                );
                CREATE INDEX run_by_start ON run(start_ms);
                CREATE TABLE block (
                    id INTEGER PRIMARY KEY,
                    domain_id INTEGER NOT NULL,
                    domain TEXT NOT NULL,
                    inside TEXT NOT NULL,
                    outside TEXT NOT NULL,
                    first_port INTEGER NOT NULL,
                    last_port INTEGER NOT NULL,
                    start_ms INTEGER NOT NULL,
                    end_ms INTEGER
                );
                CREATE INDEX block_by_mapping ON block(outside, first_port, start_ms);
                CREATE INDEX block_by_owner ON block(domain_id, inside, end_ms);
                """)
        }
        return m
    }

    // MARK: appending

    public struct Counts: Equatable, Sendable {
        public var sessionsOpened = 0, sessionsClosed = 0, duplicates = 0, ignored = 0, policyVersions = 0, bad = 0
        public init() {}
    }

    /// Applies lines (mapping records and control lines) in one transaction.
    @discardableResult
    public func append(lines: [String]) throws -> Counts {
        var c = Counts()
        try db.write { db in
            for line in lines where !line.isEmpty {
                guard let obj = try? JSON.parse(line), let event = obj["event"]?.stringValue else { c.bad += 1; continue }
                try apply(event, obj, db, &c)
            }
            try writeLastSeen(db)
        }
        return c
    }

    func ms(_ v: JSON?) -> Int64? { v?.stringValue.flatMap { try? Timestamp.parse($0) } }

    private func apply(_ event: String, _ o: JSON, _ db: Database, _ c: inout Counts) throws {
        guard let time = ms(o["time"]) else { c.bad += 1; return }
        switch event {
        case "run":
            try writeLastSeen(db)
            lastSeen = nil
            // A new logger run. Open sessions of earlier runs stay open until this run's first
            // dump has shown which of them still exist (`synced`).
            if let r = currentRun { try db.execute(sql: "UPDATE run SET end_ms = COALESCE(end_ms, last_ms) WHERE id = ?", arguments: [r]) }
            try db.execute(sql: "INSERT INTO run (start_ms, last_ms, pid) VALUES (?, ?, ?)", arguments: [time, time, o["pid"]?.intValue])
            currentRun = db.lastInsertedRowID
            inherited = Set(open.keys)
        case "heartbeat":
            try touchRun(time, db)
        case "policy":
            guard let lab = o["lab"]?.stringValue, let text = o["policy"]?.stringValue else { c.bad += 1; return }
            let hash = Self.fnv1a(text)
            // The same policy again (a lab brought up again unchanged) is not a new version.
            let latest = try String.fetchOne(db, sql: "SELECT hash FROM policy WHERE lab = ? ORDER BY since_ms DESC, id DESC LIMIT 1", arguments: [lab])
            if latest != hash {
                try db.execute(sql: "INSERT INTO policy (since_ms, lab, hash, policy) VALUES (?, ?, ?, ?)", arguments: [time, lab, hash, text])
                c.policyVersions += 1
            }
        case "synced":
            for key in inherited {
                guard let id = open.removeValue(forKey: key) else { continue }
                // Ended while no logger ran: say the logger stopped, at its last sign of life.
                let last = try Int64.fetchOne(db, sql: "SELECT last_ms FROM run WHERE id < ? ORDER BY id DESC LIMIT 1", arguments: [currentRun ?? Int64.max])
                try db.execute(sql: "UPDATE session SET end_ms = ?, end_reason = ? WHERE id = ?",
                               arguments: [last ?? time, EndReason.loggerStopped.rawValue, id])
                c.sessionsClosed += 1
            }
            inherited = []
            try touchRun(time, db)
        case "close":
            try writeLastSeen(db)
            let reason = o["reason"]?.stringValue == EndReason.labDown.rawValue ? EndReason.labDown : .loggerStopped
            for (_, id) in open {
                try db.execute(sql: "UPDATE session SET end_ms = ?, end_reason = ? WHERE id = ?", arguments: [time, reason.rawValue, id])
                c.sessionsClosed += 1
            }
            open = [:]
            inherited = []
            // The lab going down releases its deterministic blocks.
            if reason == .labDown {
                try db.execute(sql: "UPDATE block SET end_ms = ? WHERE end_ms IS NULL", arguments: [time])
            }
            if let r = currentRun {
                try db.execute(sql: "UPDATE run SET last_ms = MAX(last_ms, ?), end_ms = ?, end_reason = ? WHERE id = ?", arguments: [time, time, reason.rawValue, r])
            }
            currentRun = nil
        case "block":
            guard let domainID = o["domain_id"]?.intValue, let inside = o["inside"]?.stringValue, let outside = o["outside"]?.stringValue,
                  let first = o["first_port"]?.intValue, let last = o["last_port"]?.intValue else { c.bad += 1; return }
            // A block still open with the same owner and ports is the same allocation (a logger
            // restarted while the lab stayed up): not a second record.
            let same = try Int.fetchOne(db, sql: """
                SELECT COUNT(*) FROM block WHERE domain_id = ? AND inside = ? AND outside = ? AND first_port = ? AND last_port = ? AND end_ms IS NULL
                """, arguments: [domainID, inside, outside, first, last]) ?? 0
            if same == 0 {
                try db.cachedStatement(sql: """
                    INSERT INTO block (domain_id, domain, inside, outside, first_port, last_port, start_ms, end_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """).execute(arguments: [domainID, o["domain"]?.stringValue ?? "", inside, outside, first, last, time, ms(o["end"])])
            }
        case "new", "destroy":
            try session(event == "new", time, o, db, &c)
        default:
            // update, overrun, resync summaries: nothing a mapping log keeps.
            c.ignored += 1
        }
    }

    /// The latest time seen in this batch: the run's last sign of life, written once per batch.
    private var lastSeen: Int64?
    private func touchRun(_ time: Int64, _ db: Database) throws {
        lastSeen = max(lastSeen ?? time, time)
    }
    private func writeLastSeen(_ db: Database) throws {
        guard let r = currentRun, let t = lastSeen else { return }
        try db.execute(sql: "UPDATE run SET last_ms = MAX(last_ms, ?) WHERE id = ?", arguments: [t, r])
        lastSeen = nil
    }

    private func session(_ isNew: Bool, _ time: Int64, _ o: JSON, _ db: Database, _ c: inout Counts) throws {
        guard let domainID = o["domain_id"]?.intValue, let inside = o["inside"]?.stringValue, let outside = o["outside"]?.stringValue,
              let protoName = o["protocol"]?.stringValue else { c.bad += 1; return }
        let proto = Int64(Self.protocolNumber(protoName))
        let key = FlowKey(ctID: o["id"]?.intValue ?? 0, proto: proto, domainID: domainID, inside: inside,
                          insidePort: o["inside_port"]?.intValue ?? -1, outside: outside, outsidePort: o["outside_port"]?.intValue ?? -1)
        let resync = o["resync"]?.boolValue == true
        if isNew {
            if open[key] != nil {
                // Logged already (a resync after an overrun, or a restarted logger's first dump).
                inherited.remove(key)
                c.duplicates += 1
                return
            }
            let start = ms(o["start"]) ?? time
            try insert(o, key, start: start, end: nil, reason: nil, db)
            open[key] = db.lastInsertedRowID
            c.sessionsOpened += 1
        } else {
            let end = ms(o["stop"]) ?? time
            let reason = resync ? EndReason.resync : .destroy
            if let id = open.removeValue(forKey: key) {
                inherited.remove(key)
                try db.cachedStatement(sql: "UPDATE session SET end_ms = ?, end_reason = ? WHERE id = ?").execute(arguments: [end, reason.rawValue, id])
            } else {
                // A flow whose start was not logged (older than the logger): its start from conntrack's timestamp.
                try insert(o, key, start: ms(o["start"]) ?? end, end: end, reason: reason, db)
            }
            c.sessionsClosed += 1
        }
        try touchRun(time, db)
    }

    private func insert(_ o: JSON, _ k: FlowKey, start: Int64, end: Int64?, reason: EndReason?, _ db: Database) throws {
        try db.cachedStatement(sql: """
            INSERT INTO session (domain_id, domain, proto, inside, inside_port, outside, outside_port, destination, destination_port,
                                 start_ms, end_ms, end_reason, ct_id, run_id)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [
                k.domainID, o["domain"]?.stringValue ?? "", k.proto, k.inside, o["inside_port"]?.intValue, k.outside, o["outside_port"]?.intValue,
                o["destination"]?.stringValue, o["destination_port"]?.intValue, start, end, reason?.rawValue, o["id"]?.intValue, currentRun,
            ])
    }

    /// Open sessions the store holds now.
    public var openSessions: Int { open.count }

    /// Deletes what ended before `now - days`: sessions and blocks, logger runs, and policy
    /// versions superseded before then (the one in force at the cut stays).
    @discardableResult
    public func retain(days: Int, now: Int64) throws -> Int {
        let cut = now - Int64(days) * 86_400_000
        return try db.write { db in
            try db.execute(sql: "DELETE FROM session WHERE end_ms IS NOT NULL AND end_ms < ?", arguments: [cut])
            var n = db.changesCount
            try db.execute(sql: "DELETE FROM block WHERE end_ms IS NOT NULL AND end_ms < ?", arguments: [cut])
            n += db.changesCount
            try db.execute(sql: "DELETE FROM run WHERE end_ms IS NOT NULL AND end_ms < ?", arguments: [cut])
            try db.execute(sql: """
                DELETE FROM policy WHERE since_ms < ? AND id NOT IN
                    (SELECT id FROM policy p WHERE p.since_ms = (SELECT MAX(since_ms) FROM policy q WHERE q.lab = p.lab AND q.since_ms < ?))
                """, arguments: [cut, cut])
            return n
        }
    }

    // MARK: queries

    public struct Session: Equatable, Sendable {
        public var domainID: Int64, domain: String, proto: Int64, inside: String
        public var insidePort: Int64?
        public var outside: String
        public var outsidePort: Int64?
        public var destination: String?
        public var destinationPort: Int64?
        public var startMs: Int64
        public var endMs: Int64?
        public var endReason: String?
        public var ctID: Int64?
    }

    public struct Block: Equatable, Sendable {
        public var domainID: Int64, domain: String, inside: String, outside: String, firstPort: Int64, lastPort: Int64
        public var startMs: Int64
        public var endMs: Int64?
    }

    public struct PolicyVersion: Equatable, Sendable {
        public var sinceMs: Int64, lab: String, policy: String
    }

    /// A time the log cannot vouch for: no logger ran (or none was heard from) then.
    public struct Gap: Equatable, Sendable {
        public var fromMs: Int64?
        public var toMs: Int64?
        public var reason: String
    }

    public struct Answer: Equatable, Sendable {
        public var sessions: [Session] = []
        public var blocks: [Block] = []
        public var policy: PolicyVersion?
        public var gap: Gap?
    }

    /// How long a running logger may stay silent before a time after its last heartbeat counts as
    /// not covered (heartbeats come every 2 s).
    public static let heartbeatSlackMs: Int64 = 10_000

    /// Who held `outside:port` (any of `protos`) at `at`, and what the log can say about that time.
    public func query(outside: String, port: Int64, at: Int64, protos: [Int64]) throws -> Answer {
        try db.read { db in
            var a = Answer()
            let protoList = protos.map(String.init).joined(separator: ",")
            // Sessions of that mapping that started by then and had not ended: the index gives the
            // mapping's rows in start order; the newest start at or before `at` come first.
            let rows = try Row.fetchAll(db, sql: """
                SELECT * FROM session WHERE outside = ? AND outside_port = ? AND proto IN (\(protoList)) AND start_ms <= ?
                    AND (end_ms IS NULL OR end_ms >= ?) ORDER BY start_ms DESC LIMIT 16
                """, arguments: [outside, port, at, at])
            a.sessions = rows.map { r in
                Session(domainID: r["domain_id"], domain: r["domain"], proto: r["proto"], inside: r["inside"], insidePort: r["inside_port"],
                        outside: r["outside"], outsidePort: r["outside_port"], destination: r["destination"], destinationPort: r["destination_port"],
                        startMs: r["start_ms"], endMs: r["end_ms"], endReason: r["end_reason"], ctID: r["ct_id"])
            }
            a.blocks = try Row.fetchAll(db, sql: """
                SELECT * FROM block WHERE outside = ? AND first_port <= ? AND last_port >= ? AND start_ms <= ? AND (end_ms IS NULL OR end_ms >= ?)
                ORDER BY start_ms DESC LIMIT 4
                """, arguments: [outside, port, port, at, at]).map { r in
                Block(domainID: r["domain_id"], domain: r["domain"], inside: r["inside"], outside: r["outside"], firstPort: r["first_port"],
                      lastPort: r["last_port"], startMs: r["start_ms"], endMs: r["end_ms"])
            }
            if let p = try Row.fetchOne(db, sql: "SELECT since_ms, lab, policy FROM policy WHERE since_ms <= ? ORDER BY since_ms DESC, id DESC LIMIT 1", arguments: [at]) {
                a.policy = PolicyVersion(sinceMs: p["since_ms"], lab: p["lab"], policy: p["policy"])
            }
            a.gap = try gap(at: at, db)
            return a
        }
    }

    /// The logger's coverage at `at`: nil when a run was logging then.
    func gap(at: Int64, _ db: Database) throws -> Gap? {
        let before = try Row.fetchOne(db, sql: "SELECT * FROM run WHERE start_ms <= ? ORDER BY start_ms DESC, id DESC LIMIT 1", arguments: [at])
        let after = try Int64.fetchOne(db, sql: "SELECT MIN(start_ms) FROM run WHERE start_ms > ?", arguments: [at])
        guard let before else {
            return Gap(fromMs: nil, toMs: after, reason: after == nil ? "the store has no logger run" : "before the store's first logger run")
        }
        let last: Int64 = before["last_ms"]
        let end: Int64? = before["end_ms"]
        if let end {
            if at <= end { return nil }
            let why: String? = before["end_reason"]
            return Gap(fromMs: end, toMs: after, reason: "the logger had stopped (\(why ?? "ended"))")
        }
        if at <= last + Self.heartbeatSlackMs && (after == nil || at <= last) { return nil }
        return Gap(fromMs: last, toMs: after, reason: after == nil ? "the logger has not been heard from since" : "the logger stopped without a close (killed?)")
    }

    // MARK: helpers

    static func protocolNumber(_ name: String) -> Int {
        switch name {
        case "icmp": return 1
        case "tcp": return 6
        case "udp": return 17
        case "icmpv6": return 58
        case "sctp": return 132
        case "udplite": return 136
        default: return name.hasPrefix("proto-") ? Int(name.dropFirst(6)) ?? 0 : 0
        }
    }

    /// FNV-1a 64: enough to tell one policy text from another (the text itself is stored).
    static func fnv1a(_ s: String) -> String {
        var h: UInt64 = 0xcbf2_9ce4_8422_2325
        for b in s.utf8 { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
        return String(h, radix: 16)
    }

    /// Counts of the tables and the file's size, for the benchmark and `cgnat-store stats`.
    public func stats() throws -> (sessions: Int, policies: Int, runs: Int, blocks: Int) {
        try db.read { db in
            (try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM session") ?? 0, try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM policy") ?? 0,
             try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM run") ?? 0, try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM block") ?? 0)
        }
    }

    /// Writes everything from the WAL into the main file (the benchmark measures that size).
    public func checkpoint() throws {
        try db.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
    }

    /// Direct access for the benchmark's bulk fill.
    public func write<T>(_ body: (Database) throws -> T) throws -> T { try db.write(body) }
}

extension NATLogStore.Answer {
    /// The JSON `cgnat-store query` prints and `cgnat whois --at` reads.
    public func json(at: Int64, outside: String, port: Int64) -> JSON {
        func opt(_ v: Int64?) -> JSON { v.map { .int($0) } ?? .null }
        return .object([
            ("at_ms", .int(at)), ("outside", .string(outside)), ("port", .int(port)),
            ("sessions", .array(sessions.map { s in .object([
                ("domain_id", .int(s.domainID)), ("domain", .string(s.domain)), ("proto", .int(s.proto)),
                ("inside", .string(s.inside)), ("inside_port", opt(s.insidePort)),
                ("outside", .string(s.outside)), ("outside_port", opt(s.outsidePort)),
                ("destination", JSON(s.destination)), ("destination_port", opt(s.destinationPort)),
                ("start_ms", .int(s.startMs)), ("end_ms", opt(s.endMs)), ("end_reason", JSON(s.endReason)), ("ct_id", opt(s.ctID)),
            ]) })),
            ("blocks", .array(blocks.map { b in .object([
                ("domain_id", .int(b.domainID)), ("domain", .string(b.domain)), ("inside", .string(b.inside)), ("outside", .string(b.outside)),
                ("first_port", .int(b.firstPort)), ("last_port", .int(b.lastPort)), ("start_ms", .int(b.startMs)), ("end_ms", opt(b.endMs)),
            ]) })),
            ("policy", policy.map { p in .object([("since_ms", .int(p.sinceMs)), ("lab", .string(p.lab)), ("lab_json", .string(p.policy))]) } ?? .null),
            ("uncertain", gap.map { g in .object([("from_ms", opt(g.fromMs)), ("to_ms", opt(g.toMs)), ("reason", .string(g.reason))]) } ?? .null),
        ])
    }
}
