import NetAddress

/// The check matrix, computed from the lab model: every example ping of the seed from every
/// client where it applies, what a CGN must also show, and negative rows observed at the target.
public struct CheckMatrix {
    public var probes: [Probe] = []
    public var pairs: [ProbePair] = []
    /// Routes the uplink needs for the negative probes: an upstream that tries to reach inside
    /// via the router's uplink address. Added for the run, removed afterwards.
    public var probeRoutes: [PlannedRoute] = []

    /// `endpoint` maps a context name (and, on the VRF backend, its device) to an open namespace.
    public init(lab: Lab, backend: Backend, endpoint: (String) throws -> ProbeEndpoint, port: () -> UInt16) rethrows {
        let r = lab.router
        func v4(_ h: Host) -> [IPAddress] { h.addresses.filter { $0.family == .v4 }.map(\.address) }
        func v6(_ h: Host) -> IPAddress? { h.addresses.first { $0.family == .v6 }?.address }
        func gateway(_ d: SubscriberDomain, _ f: IPFamily) -> IPAddress? { d.addresses.first { $0.family == f }?.address }
        let routerContext = "\(r.name):\(r.uplink.name)"

        guard let uplink = lab.uplinkHost else { return }
        let up = try endpoint(uplink.name)
        let uplinkPublic = uplink.loopbackAddresses.first { $0.family == .v4 }?.address
        let uplinkV6 = v6(uplink)
        let nat = r.nat.publicAddress
        // The admin-prohibited error's source differs by backend, by design.
        let rejectSourceNote = backend == .netns
            ? "netns: the error comes from \(Conventions.errorSource) (RFC 7600): the router has no IPv4 address on its transfer links"
            : "vrf: the error comes from the domain bridge's own address, the router's address in that VRF"

        func add(_ name: String, _ from: Host, _ dst: IPAddress, _ proto: ProbeProtocol = .icmp, bind: IPAddress? = nil,
                 target: ProbeEndpoint, iface: String?, expect: ProbeExpectation, fromEndpoint: ProbeEndpoint? = nil) throws {
            probes.append(Probe(name: name, from: try fromEndpoint ?? endpoint(from.name), bindAddress: bind,
                                sourcePort: proto == .icmp ? nil : port(), destination: dst, proto: proto,
                                target: target, targetInterface: iface, expect: expect))
        }
        func ping(_ dst: IPAddress, bind: IPAddress? = nil) -> String {
            (bind.map { "ping -I \($0) " } ?? "ping ") + dst.description
        }

        for d in r.subscribers {
            let gwTarget = try endpoint("\(r.name):\(d.name)")
            for h in lab.hosts(in: d.name) {
                let src4 = v4(h).first { r.nat.inside.contains($0) }
                let src6 = v6(h)
                // The gateway, both families.
                if let g = gateway(d, .v4), let s = src4 {
                    try add(ping(g), h, g, target: gwTarget, iface: d.bridge, expect: .reach(source: s))
                }
                if let g = gateway(d, .v6), let s = src6 {
                    try add(ping(g), h, g, target: gwTarget, iface: d.bridge, expect: .reach(source: s))
                }
                // Neighbours on the same bridge.
                for o in lab.hosts(in: d.name) where o != h {
                    let t = try endpoint(o.name)
                    if let a = v4(o).first(where: { r.nat.inside.contains($0) }), let s = src4, a != s {
                        try add(ping(a), h, a, target: t, iface: o.interface, expect: .reach(source: s))
                    }
                    if let a = v6(o), let s = src6 {
                        try add(ping(a), h, a, target: t, iface: o.interface, expect: .reach(source: s))
                    }
                }
                // IPv6 is routed across domains; IPv4 to another domain's routed address is refused.
                for od in r.subscribers where od.name != d.name {
                    for o in lab.hosts(in: od.name) {
                        let t = try endpoint(o.name)
                        if let a = v6(o), let s = src6 {
                            try add(ping(a), h, a, target: t, iface: o.interface, expect: .reach(source: s))
                        }
                        for a in v4(o) where !r.nat.inside.contains(a) && od.routed.contains(where: { $0.contains(a) }) {
                            try add(ping(a), h, a, target: t, iface: o.interface, expect: .blocked)
                            try add("tcp \(a)", h, a, .tcp, target: t, iface: o.interface, expect: .blocked)
                            probes[probes.count - 2].note = rejectSourceNote
                            probes[probes.count - 1].note = rejectSourceNote
                        }
                    }
                }
                // The uplink and the router's uplink address over IPv6: the real source is seen.
                if let a = uplinkV6, let s = src6 {
                    try add(ping(a), h, a, target: up, iface: uplink.interface, expect: .reach(source: s))
                }
                if let a = r.uplink.addresses.first(where: { $0.family == .v6 })?.address, let s = src6 {
                    // Delivered locally in the router: it arrives on the domain's link, not on muplink.
                    try add(ping(a), h, a, target: try endpoint(routerContext), iface: nil, expect: .reach(source: s))
                }
                // IPv4 to the uplink's public address goes through NAT, once.
                if let a = uplinkPublic {
                    try add(ping(a), h, a, target: up, iface: uplink.interface, expect: .reach(source: nat))
                    for a2 in v4(h) where !r.nat.inside.contains(a2) {
                        // A routed public address on the subscriber: no NAT.
                        try add(ping(a, bind: a2), h, a, bind: a2, target: up, iface: uplink.interface, expect: .reach(source: a2))
                    }
                }
            }
        }

        // From the uplink: routed addresses are reached without NAT, IPv6 is routed in, and
        // nothing else inside can be opened over IPv4.
        for d in r.subscribers {
            for h in lab.hosts(in: d.name) {
                let t = try endpoint(h.name)
                for a in v4(h) where d.routed.contains(where: { $0.contains(a) }) {
                    let src = uplink.routes.first { $0.destination.contains(a) }?.source ?? uplinkPublic
                    try add(ping(a), uplink, a, target: t, iface: h.interface, expect: .reach(source: src), fromEndpoint: up)
                }
                if let a = v6(h), let s = uplinkV6 {
                    try add(ping(a), uplink, a, target: t, iface: h.interface, expect: .reach(source: s), fromEndpoint: up)
                }
                // Subscriber addresses that are not the router's own: an upstream routing to them via
                // the router's uplink address must reach nobody.
                let routerOwn = Set(r.uplink.addresses.map(\.address))
                for a in v4(h) where r.nat.inside.contains(a) && !routerOwn.contains(a) {
                    if let gw = r.uplink.addresses.first(where: { $0.family == .v4 })?.address {
                        // From the uplink's public address, as an Internet host would: its link
                        // address (100.127.255.254) is also the subscriber gateway's, so a leaked
                        // packet would die as a martian inside and the row could never fail.
                        let route = PlannedRoute(IPPrefix(a, 32), via: gw, device: uplink.interface, source: uplinkPublic)
                        if !probeRoutes.contains(route) { probeRoutes.append(route) }
                    }
                    for proto in [ProbeProtocol.icmp, .udp, .tcp] {
                        let name = proto == .icmp ? ping(a) : "\(proto) \(a)"
                        try add(name + " (unsolicited)", uplink, a, proto, target: t, iface: h.interface, expect: .blocked, fromEndpoint: up)
                    }
                }
            }
        }

        // The router itself reaches the uplink's gateway (broken in the seed once NAT was on).
        if let gw = r.uplink.gateways.first(where: { $0.family == .v4 }), let own = r.uplink.addresses.first(where: { $0.family == .v4 }) {
            probes.append(Probe(name: ping(gw), from: try endpoint(routerContext), destination: gw, proto: .icmp,
                                target: up, targetInterface: uplink.interface, expect: .reach(source: own.address)))
        }

        // Hosts in different domains sharing an address reach the uplink at the same moment with
        // the same source port: NAT must give them distinct mapped ports.
        if let dst = uplinkPublic {
            let subscribers = lab.hosts.filter { if case .domain = $0.attachment { return true } else { return false } }
            for (i, a) in subscribers.enumerated() {
                for b in subscribers[(i + 1)...] where a.attachment != b.attachment {
                    guard let shared = v4(a).first(where: { v4(b).contains($0) }) else { continue }
                    for proto in [ProbeProtocol.icmp, .udp, .tcp] {
                        let p = proto == .icmp ? nil : port()
                        func probe(_ h: Host) throws -> Probe {
                            Probe(name: "\(proto) \(dst)", from: try endpoint(h.name), sourcePort: p, destination: dst,
                                  proto: proto, target: up, targetInterface: uplink.interface, expect: .reach(source: nat))
                        }
                        pairs.append(ProbePair(name: "\(proto) \(dst) same \(proto == .icmp ? "echo id" : "port"), both from \(shared)",
                                               first: try probe(a), second: try probe(b)))
                    }
                }
            }
        }
    }
}

extension CheckMatrix {
    /// How many rows the matrix of a lab has (probes plus same-port pairs), without opening anything.
    public static func rowCount(_ lab: Lab, backend: Backend = .netns) -> Int {
        let m = CheckMatrix(lab: lab, backend: backend, endpoint: { ProbeEndpoint(context: $0, namespaceFD: -1) }, port: { 1 })
        return m.probes.count + m.pairs.count
    }
}
