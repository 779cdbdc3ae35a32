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
            nat: NATPolicy(inside: p("100.64.0.0/10"), publicAddress: a("100.64.0.1")))
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
