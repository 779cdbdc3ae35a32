import ArgumentParser
import CGNat
import Glibc
import NetAddress

struct WhoisCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "whois",
        abstract: "Who holds a public address and port: the subscriber from the port-block policy, and the live flows.",
        discussion: """
            The policy answers without root and with the lab down (FILE, else the lab of that name if it is up, \
            else the built-in default): deterministic port blocks (RFC 7422) map each public port to one \
            (domain, inside address). When the lab is up and cgnat runs as root, the live flows that hold the \
            mapping now are listed too. Without --proto, the answer covers udp, tcp and icmp (ids).
            """)

    @Argument(help: "The public ADDRESS:PORT (an ICMP id for icmp).") var target: String
    @Argument(help: "A lab file (YAML).") var file: String?
    @OptionGroup var options: LabOptions
    @Option(help: "udp, tcp or icmp (default: all three).") var proto: String?
    @Flag(help: "JSON output.") var json = false
    @Option(help: ArgumentHelp("Who held it at this moment, from the NAT log store: RFC 3339 with milliseconds, e.g. 2026-12-01T09:23:19.412Z or ...+01:00.", valueName: "TIME"))
    var at: String?
    @Option(help: ArgumentHelp("With --at: the NAT log store `events --store` wrote (default /var/lib/cgnat/LAB.db).", valueName: "FILE"))
    var store: String?

    func run() throws {
        do {
            let (address, port) = try Whois.parseTarget(target)
            var protos = Whois.Proto.allCases
            if let p = proto {
                guard let one = Whois.Proto(rawValue: p) else { throw UsageError("--proto takes udp, tcp or icmp, not '\(p)'") }
                protos = [one]
            }
            if let at {
                if file != nil { throw UsageError("with --at the policy comes from the store (the version in force at that time): leave out the lab FILE") }
                try Self.runAt(address: address, port: port, time: try Timestamp.parse(at), protos: protos,
                                store: store ?? StoreOutput.defaultPath(lab: options.lab ?? Lab.defaultName), json: json)
                return
            }
            if store != nil { throw UsageError("--store is read by whois --at TIME: give --at too") }
            // An answer about someone else's lab would be confidently wrong: a lab named with --lab
            // must be up (its stored model is the policy in force), else give its FILE.
            if file == nil, let named = options.lab, named != Lab.defaultName, LabRecord.load(lab: named)?.complete != true {
                throw UsageError("lab '\(named)' is not up, so its policy is not known here: give its lab FILE (cgnat whois \(target) FILE), or bring it up")
            }
            let lab = try LabSource.forRendering(file: file, labOption: options.lab)
            let answer = try Whois.lookup(lab, address: address, port: port)
            var live: [WhoisLive.Flow]?
            var liveNote: String?
            if file == nil, LabRecord.load(lab: lab.name)?.complete == true {
                if geteuid() == 0 {
                    live = try WhoisLive.flows(RunningLab.open(name: lab.name), address: address, port: port, protos: protos)
                } else {
                    liveNote = "live flows need root (conntrack of the router)"
                }
            }
            if json { Output.line(Self.json(answer, protos: protos, live: live, lab: lab).serialized()) }
            else { Output.write(Self.text(answer, protos: protos, live: live, liveNote: liveNote, lab: lab)) }
            Output.flush()
            if answer.domain == nil && (live ?? []).isEmpty { throw ExitCode(1) }
        } catch let e as LabSource.Invalid {
            failDiagnostics(e)
        } catch let e as ExitCode {
            throw e
        } catch {
            fail("\(error)")
        }
    }

    /// `whois --at`: the store's answer about that moment; exit 1 when nobody held it.
    static func runAt(address: IPAddress, port: UInt16, time: Int64, protos: [Whois.Proto], store: String, json: Bool) throws {
        let reply = try StoreQuery.run(path: store, outside: address, port: port, atMilliseconds: time, protos: protos.map(\.number))
        let answer = try WhoisAt.answer(store: reply, address: address, port: port, atMs: time, protocols: protos)
        if json { Output.line(WhoisAt.json(answer).serialized()) } else { Output.write(WhoisAt.text(answer)) }
        Output.flush()
        if !answer.found { throw ExitCode(1) }
    }

    static func text(_ a: Whois.Answer, protos: [Whois.Proto], live: [WhoisLive.Flow]?, liveNote: String?, lab: Lab) -> String {
        let what = "\(a.publicAddress):\(a.port) (\(protos.map(\.rawValue).joined(separator: ", ")))"
        var out: String
        if let d = a.domain, let inside = a.inside, let b = a.block {
            out = "\(what): domain \(d) (id \(a.domainID!)), inside \(inside)"
            out += a.host.map { " (host \($0))" } ?? " (no host of the lab has it)"
            out += "; block \(b.ports.lowerBound)-\(b.ports.upperBound) of \(b.publicAddress); evidence: policy\n"
        } else {
            out = "\(what): nobody by the policy: \(a.reason ?? "no block")\n"
        }
        if let live {
            if live.isEmpty { out += "  no live flow holds it now (lab \(lab.name) is up)\n" }
            for f in live {
                out += "  live \(f.proto.rawValue): \(f.domain ?? "?") \(f.inside)\(f.insidePort.map { ":\($0)" } ?? "") -> \(f.remote)\(f.remotePort.map { ":\($0)" } ?? "")"
                out += f.id.map { " (conntrack id \($0))" } ?? ""
                out += "\n"
            }
        } else if let liveNote {
            out += "  (\(liveNote))\n"
        }
        return out
    }

    static func json(_ a: Whois.Answer, protos: [Whois.Proto], live: [WhoisLive.Flow]?, lab: Lab) -> JSON {
        var evidence: [JSON] = a.domain != nil ? [.string("policy")] : []
        if let live, !live.isEmpty { evidence.append(.string("live")) }
        return .object([
            ("lab", .string(lab.name)),
            ("address", .string(a.publicAddress.description)), ("port", .int(Int64(a.port))),
            ("protocols", .array(protos.map { .string($0.rawValue) })),
            ("domain", JSON(a.domain)), ("domain_id", a.domainID.map { .int(Int64($0)) } ?? .null),
            ("inside", JSON(a.inside?.description)), ("host", JSON(a.host)),
            ("block", a.block.map { b in .object([("public", .string(b.publicAddress.description)),
                                                  ("first", .int(Int64(b.ports.lowerBound))), ("last", .int(Int64(b.ports.upperBound)))]) } ?? .null),
            ("reason", JSON(a.reason)),
            ("evidence", .array(evidence)),
            ("live", live.map { l in .array(l.map { f in .object([
                ("proto", .string(f.proto.rawValue)), ("domain", JSON(f.domain)), ("inside", .string(f.inside.description)),
                ("inside_port", f.insidePort.map { .int(Int64($0)) } ?? .null), ("remote", .string(f.remote.description)),
                ("remote_port", f.remotePort.map { .int(Int64($0)) } ?? .null), ("conntrack_id", f.id.map { .int(Int64($0)) } ?? .null),
            ]) }) } ?? .null),
        ])
    }
}
