import Glibc
import Netlink

/// The live flows that hold a public address and port now: conntrack entries of the router whose
/// reply goes to it (the reply's destination is the mapping), with the domain from the ct mark.
public enum WhoisLive {
    public struct Flow: Sendable {
        public var proto: Whois.Proto
        public var domain: String?
        public var inside: IPAddress
        public var insidePort: UInt16?
        public var remote: IPAddress
        public var remotePort: UInt16?
        public var id: UInt32?
    }

    public static func flows(_ running: RunningLab, address: IPAddress, port: UInt16, protos: [Whois.Proto]) throws -> [Flow] {
        let lab = running.lab
        let (_, fd) = try running.open(context: lab.router.name)
        defer { close(fd) }
        let entries = try NetNamespace.run(in: fd) { () -> [ConntrackEntry] in
            let s = try ConntrackSocket()
            defer { s.close() }
            return try s.dump()
        }
        let byID = Dictionary(lab.router.subscribers.map { ($0.id, $0.name) }, uniquingKeysWith: { a, _ in a })
        return entries.compactMap { e -> Flow? in
            guard let proto = protos.first(where: { $0.number == e.reply.protocolNumber }),
                  e.reply.destination == address,
                  // Outbound flows only: an inbound one (endpoint-independent filtering, the second
                  // leg of a hairpin) has the remote side's mapping as its source, not a holder's.
                  lab.router.nat.inside.contains(e.original.source) else { return nil }
            let mapped = proto == .icmp ? e.reply.icmpID : e.reply.destinationPort
            guard mapped == port else { return nil }
            return Flow(proto: proto, domain: byID[e.mark], inside: e.original.source,
                        insidePort: proto == .icmp ? e.original.icmpID : e.original.sourcePort,
                        remote: e.original.destination, remotePort: e.original.destinationPort, id: e.id)
        }
    }
}
