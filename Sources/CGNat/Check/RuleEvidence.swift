import Glibc
import Netlink

extension Nftables.OutputFlags {
    /// `nft -j`: listings in JSON (nftables/libnftables.h NFT_CTX_OUTPUT_JSON).
    static let json = Nftables.OutputFlags(rawValue: 1 << 4)
}

/// The lab's nftables rules as the kernel holds them, read back with libnftables in JSON
/// (`nft -a -j list table`) in the namespace of each rule's context and matched to the rows'
/// `RuleRef`s by the comment `Ruleset` puts on every rule: their handles, and their packet
/// counters as positive evidence for the rows they drop.
public final class RuleCounters: DropEvidence, @unchecked Sendable {
    public struct Listed: Equatable, Sendable {
        public var chain: String
        public var handle: UInt64
        public var comment: String?
        public var packets: UInt64?
    }

    private var mutex = pthread_mutex_t()
    private var contexts: [String: Nftables] = [:]
    /// Resolved handles; a rule missing from the kernel has none.
    public private(set) var handles: [RuleRef: UInt64] = [:]
    private var baseline: [RuleRef: UInt64] = [:]
    private var current: [RuleRef: UInt64] = [:]
    private var firedCount: [RuleRef: Int] = [:]
    private var coveredUpTo: [RuleRef: Int] = [:]
    private var refs: [RuleRef] = []

    /// Opens a libnftables context in each of `contexts` (`namespaceFD` gives the open namespace
    /// of a context). Do it before a large lab's other fds are open: libnftables waits on its
    /// socket with select(), which aborts the process for an fd above FD_SETSIZE (1024).
    public init(contexts names: [String], namespaceFD: (String) throws -> Int32) throws {
        pthread_mutex_init(&mutex, nil)
        for ctx in Set(names).sorted() {
            let fd = try namespaceFD(ctx)
            // libnftables opens its netlink socket in nft_ctx_new: on a thread in the namespace.
            contexts[ctx] = try NetNamespace.run(in: fd) { try Nftables(output: [.handle, .json]) }
        }
    }

    /// Resolves the rules of the rows to their handles and reads their counters. A rule in a
    /// context without a libnftables context, or missing from the kernel, has no handle.
    public func track(_ refs: Set<RuleRef>) throws {
        self.refs = refs.sorted { $0.description < $1.description }
        for (ref, listed) in try readAll() {
            if let l = listed { handles[ref] = l.handle; baseline[ref] = l.packets ?? 0; current[ref] = l.packets ?? 0 }
        }
    }

    /// Parses `nft -a -j list table` output into its rules.
    public static func rules(fromJSON text: String) throws -> [(table: String, family: String, rule: Listed)] {
        let root = try JSON.parse(text)
        var out: [(String, String, Listed)] = []
        for item in root["nftables"]?.arrayValue ?? [] {
            guard let r = item["rule"], let chain = r["chain"]?.stringValue, let handle = r["handle"]?.intValue else { continue }
            var packets: UInt64?
            for e in r["expr"]?.arrayValue ?? [] {
                if let n = e["counter"]?["packets"]?.intValue { packets = UInt64(max(0, n)) }
            }
            out.append((r["table"]?.stringValue ?? "", r["family"]?.stringValue ?? "",
                        Listed(chain: chain, handle: UInt64(max(0, handle)), comment: r["comment"]?.stringValue, packets: packets)))
        }
        return out
    }

    private func readAll(_ only: [RuleRef]? = nil) throws -> [(RuleRef, Listed?)] {
        var out: [(RuleRef, Listed?)] = []
        var listings: [String: [(table: String, family: String, rule: Listed)]] = [:]
        for ref in only ?? refs {
            // The chain, not the table: a table's listing carries its port-block maps, thousands
            // of elements formatted as JSON on every read (this runs every half millisecond).
            let key = "\(ref.context) \(ref.family) \(ref.table) \(ref.chain)"
            if listings[key] == nil {
                guard let nft = contexts[ref.context] else { continue }
                let text = (try? nft.run("list chain \(ref.family) \(ref.table) \(ref.chain)")) ?? "{}"
                listings[key] = try RuleCounters.rules(fromJSON: text)
            }
            let hit = listings[key]!.first { $0.family == ref.family && $0.table == ref.table && $0.rule.chain == ref.chain && $0.rule.comment == ref.comment }
            out.append((ref, hit?.rule))
        }
        return out
    }

    public func fired(_ rule: RuleRef) -> Int {
        pthread_mutex_lock(&mutex); defer { pthread_mutex_unlock(&mutex) }
        firedCount[rule, default: 0] += 1
        return firedCount[rule]!
    }

    public func covered(_ rule: RuleRef, ticket: Int) -> Bool {
        pthread_mutex_lock(&mutex); defer { pthread_mutex_unlock(&mutex) }
        return ticket <= coveredUpTo[rule, default: 0]
    }

    public func describe(_ rule: RuleRef) -> String {
        pthread_mutex_lock(&mutex); defer { pthread_mutex_unlock(&mutex) }
        guard let h = handles[rule] else { return "\(rule) (not in the kernel's ruleset)" }
        let delta = (current[rule] ?? 0) &- (baseline[rule] ?? 0)
        return "\(rule.context) \(rule.family) \(rule.table) \(rule.chain) handle \(h) (+\(delta) packets for \(firedCount[rule, default: 0]) probes)"
    }

    /// Reads every counter once. Tickets issued before the read are covered when the counter has
    /// risen by at least their number: no probe that was not dropped there can be among them.
    public func refresh() {
        pthread_mutex_lock(&mutex)
        let snapshot = firedCount
        // Only the rules with probes not yet covered: each rule's chain is one listing, and with a
        // bridge table per domain a listing of every chain on every pass starves the probes.
        let pending = refs.filter { snapshot[$0, default: 0] > coveredUpTo[$0, default: 0] }
        pthread_mutex_unlock(&mutex)
        guard !pending.isEmpty, let read = try? readAll(pending) else { return }
        pthread_mutex_lock(&mutex); defer { pthread_mutex_unlock(&mutex) }
        for (ref, listed) in read {
            guard let l = listed, handles[ref] == l.handle, let packets = l.packets else { continue }
            current[ref] = packets
            let fired = snapshot[ref, default: 0]
            if packets &- (baseline[ref] ?? 0) >= UInt64(fired) { coveredUpTo[ref] = max(coveredUpTo[ref, default: 0], fired) }
        }
    }

    /// A new phase: counts start again from the counters as they are now.
    /// `only`: the rules the phase's rows name (nil: all); the others are not fired in it, and
    /// each rule's chain is a listing of its own (one per domain for the bridge tables).
    public func resetBaseline(only: Set<RuleRef>? = nil) {
        let read = (try? readAll(only.map { o in refs.filter { o.contains($0) } })) ?? []
        pthread_mutex_lock(&mutex); defer { pthread_mutex_unlock(&mutex) }
        for (ref, listed) in read {
            if let l = listed, let p = l.packets { baseline[ref] = p; current[ref] = p }
        }
        firedCount = [:]
        coveredUpTo = [:]
    }
}
