import NetAddress

extension Lab {
    public static let defaultName = "cgnat"

    /// The lab of the seed demo (DESIGN.md section 1), exactly: names, addresses, routes, policy.
    public static func seed(name: String = Lab.defaultName) -> Lab {
        func p(_ s: String) -> IPPrefix { IPPrefix(s)! }
        func a(_ s: String) -> IPAddress { IPAddress(s)! }
        let router = Router(
            name: "main",
            uplink: UplinkDomain(
                name: "up", interface: "muplink",
                addresses: [p("100.64.0.1/10"), p("2001:db8:a::1/64")],
                gateways: [a("100.127.255.254"), a("2001:db8:a::ffff")]),
            subscribers: [
                SubscriberDomain(
                    name: "blue", id: 1, bridge: "br-blue",
                    addresses: [p("100.127.255.254/10"), p("2001:db8:b:10::ffff/64")],
                    routed: [p("2001:db8:b:10::/64"), p("192.0.2.2/32")]),
                SubscriberDomain(
                    name: "red", id: 2, bridge: "br-red",
                    addresses: [p("100.127.255.254/10"), p("2001:db8:b:20::ffff/64")],
                    routed: [p("2001:db8:b:20::/64")]),
            ],
            // One public address for the domains' first 32 inside addresses each (the seed has
            // three subscribers): 64 subscribers x 1008 ports, endpoint-independent.
            nat: NATPolicy(inside: p("100.64.0.0/10"), publicAddress: a("100.64.0.1"),
                           mapping: .portBlocks(.init(insideRange: p("100.64.0.0/27")))))
        let hosts = [
            Host(name: "uplink", attachment: .uplink, interface: "client1",
                 addresses: [p("100.127.255.254/10"), p("2001:db8:a::ffff/64")],
                 loopbackAddresses: [p("192.0.2.1/32")],
                 routes: [
                    HostRoute(p("2001:db8:b::/48"), via: a("2001:db8:a::1")),
                    // src 192.0.2.1: the other address, 100.127.255.254, is also br-blue's, and
                    // blue would drop it as a martian (DESIGN.md section 3, pitfall 5).
                    HostRoute(p("192.0.2.2/32"), via: a("100.64.0.1"), source: a("192.0.2.1")),
                 ]),
            subscriber("blue_c1", "blue", [p("100.64.0.1/10"), p("2001:db8:b:10::1/64")]),
            subscriber("blue_c2", "blue", [p("100.64.0.2/10"), p("2001:db8:b:10::2/64"), p("192.0.2.2/32")]),
            subscriber("red_c1", "red", [p("100.64.0.1/10"), p("2001:db8:b:20::1/64")]),
        ]
        return Lab(name: name, router: router, hosts: hosts)
    }

    private static func subscriber(_ name: String, _ domain: String, _ addresses: [IPPrefix]) -> Host {
        let v6Gateway = domain == "blue" ? "2001:db8:b:10::ffff" : "2001:db8:b:20::ffff"
        return Host(name: name, attachment: .domain(domain), interface: "cuplink", addresses: addresses,
                    routes: [
                        HostRoute(IPPrefix("0.0.0.0/0")!, via: IPAddress("100.127.255.254")!),
                        HostRoute(IPPrefix("::/0")!, via: IPAddress(v6Gateway)!),
                    ])
    }
}

extension Lab {
    /// The seed's router and uplink with `domains` subscriber domains of `perDomain` subscribers
    /// each, whose IPv4 addresses overlap across domains (all in 100.64.0.0/10, from 100.64.0.1 up),
    /// for measuring at the scale of an access network. `labs/scale-1000.yaml` says the same in a
    /// file (10 x 100); a test proves the two agree.
    public static func seedScaled(name: String = "scale", domains: Int, perDomain: Int) -> Lab {
        precondition((1...255).contains(domains) && (1...1000).contains(perDomain))
        let seed = Lab.seed(name: name)
        let gw4 = IPAddress("100.127.255.254")!
        var subscribers: [SubscriberDomain] = []
        var hosts = seed.hosts.filter { $0.attachment == .uplink }
        // No subscriber holds the seed's routed 192.0.2.2 here: the uplink does not route it.
        hosts[0].routes.removeAll { $0.destination.family == .v4 }
        for d in 1...domains {
            let dn = "d\(twoDigits(d))"
            let net6 = "2001:db8:b:\(String(d * 16, radix: 16))::"
            subscribers.append(SubscriberDomain(
                name: dn, id: UInt32(d), bridge: "br-\(dn)",
                addresses: [IPPrefix(gw4, 10), IPPrefix("\(net6)ffff/64")!],
                routed: [IPPrefix("\(net6)/64")!]))
            for s in 1...perDomain {
                // 100.64.0.1 + s - 1, the same in every domain: the spaces overlap on purpose.
                let v4 = IPAddress(family: .v4, bytes: [100, 64, UInt8((s) >> 8), UInt8((s) & 0xff)])
                hosts.append(Host(
                    name: "\(dn)_c\(threeDigits(s))", attachment: .domain(dn), interface: "cuplink",
                    addresses: [IPPrefix(v4, 10), IPPrefix("\(net6)\(String(s, radix: 16))/64")!],
                    routes: [HostRoute(IPPrefix("0.0.0.0/0")!, via: gw4),
                             HostRoute(IPPrefix("::/0")!, via: IPAddress("\(net6)ffff")!)]))
            }
        }
        var router = seed.router
        router.subscribers = subscribers
        // Blocks cover 100.64.0.0 up to the last subscriber's address (10 x 128 on one address: 50 ports each).
        var length = 32
        while (1 << (32 - length)) <= perDomain { length -= 1 }
        router.nat.mapping = .portBlocks(.init(insideRange: IPPrefix(IPAddress("100.64.0.0")!, length)))
        // The uplink routes every domain's IPv6 prefix to the router (the seed's 2001:db8:b::/48 covers them).
        return Lab(name: name, router: router, hosts: hosts)
    }

    private static func twoDigits(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
    private static func threeDigits(_ n: Int) -> String { n < 10 ? "00\(n)" : n < 100 ? "0\(n)" : "\(n)" }
}
