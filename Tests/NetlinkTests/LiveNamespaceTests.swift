import Glibc
import Testing
@testable import Netlink

/// Root only: everything happens in two namespaces made here (nltest-<pid>-a/-b) and removed
/// again whatever happens; no socket is ever opened in the host's namespace.
@Suite struct LiveNamespaceTests {
    @Test(.enabled(if: geteuid() == 0, "needs root (creates network namespaces nltest-*); skipped"))
    func routeSocketInsideNamespaces() throws {
        let a = "nltest-\(getpid())-a", b = "nltest-\(getpid())-b"
        var fds: [Int32] = []
        var sockets: [RouteSocket] = []
        defer {
            sockets.forEach { $0.close() }
            fds.forEach { _ = Glibc.close($0) }
            try? NetNamespace.delete(a)
            try? NetNamespace.delete(b)
        }
        let fdB = try NetNamespace.create(b)
        fds.append(fdB)
        var opened: RouteSocket?
        let fdA = try NetNamespace.create(a) { _ in opened = try RouteSocket() }
        fds.append(fdA)
        let rt = try #require(opened)
        sockets.append(rt)
        let rtB = try NetNamespace.run(in: fdB) { try RouteSocket() }
        sockets.append(rtB)

        // The socket lives in namespace a, not in b (and so not in the host's).
        let cookieA = try NetNamespace.run(in: fdA) { () -> UInt64? in
            let s = try NetlinkSocket(protocol: 0); defer { s.close() }
            return NetNamespace.cookie(ofSocket: s.fd)
        }
        #expect(cookieA != nil && NetNamespace.cookie(ofSocket: rt.socket.fd) == cookieA)
        #expect(NetNamespace.cookie(ofSocket: rtB.socket.fd) != cookieA)

        // Links: a veth whose peer is created directly in b, a local pair, a bridge.
        let lo = try rt.linkIndex("lo")
        try rt.setLink(index: lo, up: true)
        try rt.addVeth(name: "t-up", peerName: "t-blue", peerNamespaceFD: fdB)
        let tUp = try rt.linkIndex("t-up")
        let tBlue = try rtB.linkIndex("t-blue")
        #expect(tBlue > 0)
        #expect(throws: NetlinkError.self) { try rt.linkIndex("t-blue") }
        do {
            _ = try rt.linkIndex("nope0")
            Issue.record("linkIndex of a missing link succeeded")
        } catch let e as NetlinkError {
            #expect(e.errno == ENODEV)
        }
        try rt.setLink(index: tUp, up: true)
        try rtB.setLink(index: tBlue, up: true)
        try rt.addVeth(name: "v0", peerName: "v1")
        try rt.addBridge(name: "br0")
        let br = try rt.linkIndex("br0"), v0 = try rt.linkIndex("v0")
        try rt.setLink(index: v0, up: true, master: br)
        var links = try rt.links()
        #expect(links.first { $0.name == "v0" }?.master == br)
        #expect(links.first { $0.name == "v0" }?.isUp == true)
        #expect(links.first { $0.name == "br0" }?.kind == "bridge")
        #expect(links.first { $0.name == "t-up" }?.kind == "veth")
        #expect(links.first { $0.name == "t-up" }?.mac.count == 6)
        try rt.setLink(index: v0, master: 0)
        links = try rt.links()
        #expect(links.first { $0.name == "v0" }?.master == nil)
        try rt.deleteLink(index: try rt.linkIndex("v1"))
        #expect(try rt.links().contains { $0.name == "v0" } == false)

        // A VRF needs CONFIG_NET_VRF; without it the kernel's refusal must come back as a NetlinkError.
        do {
            try rt.addVRF(name: "vrf-x", table: 10)
            #expect(try rt.links().first { $0.name == "vrf-x" }?.kind == "vrf")
        } catch let e as NetlinkError {
            #expect(e.step == "add vrf vrf-x table 10")
        }

        // Addresses.
        try rt.addAddress(index: tUp, pfx("100.64.0.1/10"))
        try rt.addAddress(index: tUp, pfx("2001:db8:a::1/64"))
        try rt.addAddress(index: lo, pfx("192.0.0.8/32"))
        let addrs = try rt.addresses()
        #expect(addrs.contains(InterfaceAddress(index: tUp, prefix: pfx("100.64.0.1/10"), scope: 0)))
        #expect(addrs.contains(InterfaceAddress(index: tUp, prefix: pfx("2001:db8:a::1/64"), scope: 0)))
        #expect(try rt.addresses(family: .v6).allSatisfy { $0.prefix.family == .v6 })

        // The same address twice: EEXIST with the kernel's explanation in the description.
        do {
            try rt.addAddress(index: tUp, pfx("100.64.0.1/10"))
            Issue.record("adding an address twice succeeded")
        } catch let e as NetlinkError {
            #expect(e.errno == EEXIST)
            #expect(e.kernelMessage != nil)
            #expect(e.description.hasPrefix("add address 100.64.0.1/10 to link \(tUp): File exists (kernel: "))
            #expect(e.description.contains(e.kernelMessage ?? "<none>"))
        }

        // Routes: an IPv4 default via an IPv6 link-local next hop (RTA_VIA), a table-101 route with
        // a preferred source, an IPv6 route via a global gateway.
        let dflt = Route(family: .v4, destination: Route.defaultDestination(.v4), gateway: ip("fe80::2"), outputInterface: tUp)
        try rt.addRoute(dflt)
        let back = Route(destination: pfx("100.64.0.0/10"), gateway: ip("fe80::2"), outputInterface: tUp,
                         preferredSource: ip("192.0.0.8"), table: 101)
        try rt.addRoute(back)
        let big = Route(destination: pfx("198.51.100.0/24"), outputInterface: tUp, table: 1000, scope: RouteScope.link, metric: 7)
        try rt.addRoute(big)
        let v6 = Route(destination: pfx("2001:db8:b::/48"), gateway: ip("2001:db8:a::2"), outputInterface: tUp)
        try rt.addRoute(v6)
        #expect(try rt.routes(family: .v4, table: RouteTable.main).contains(dflt))
        #expect(try rt.routes(family: .v4, table: 101) == [back])
        #expect(try rt.routes(family: .v4, table: 1000) == [big])
        #expect(try rt.routes(family: .v6, table: RouteTable.main).contains { $0.destination == pfx("2001:db8:b::/48") && $0.gateway == ip("2001:db8:a::2") })

        // A route via a gateway that is not on any link: the kernel explains in its extended ACK.
        do {
            try rt.addRoute(Route(destination: pfx("10.0.0.0/8"), gateway: ip("1.2.3.4")))
            Issue.record("route via an unreachable gateway succeeded")
        } catch let e as NetlinkError {
            #expect(e.errno == ENETUNREACH)
            #expect(e.kernelMessage == "Nexthop has invalid gateway")
            #expect(e.description.contains("(kernel: Nexthop has invalid gateway)"))
        }
        // A route via a device that does not exist.
        #expect(throws: NetlinkError.self) { try rt.addRoute(Route(destination: pfx("10.0.0.0/8"), outputInterface: 9999)) }

        // Rules.
        let r1 = Rule(family: .v4, priority: 100, table: 101, fwmark: 1)
        let r2 = Rule(family: .v4, priority: 101, table: 102, fwmark: 2, fwmask: 0xff)
        let r3 = Rule(family: .v6, priority: 100, table: 1000, fwmark: 1)
        try rt.addRule(r1)
        try rt.addRule(r2)
        try rt.addRule(r3)
        var rules = try rt.rules(family: .v4)
        #expect(rules.contains(r1) && rules.contains(r2))
        #expect(rules.contains(Rule(family: .v4, priority: 32766, table: RouteTable.main)))
        #expect(try rt.rules(family: .v6).contains(r3))
        do {
            try rt.addRule(r1)
            Issue.record("adding a rule twice succeeded")
        } catch let e as NetlinkError {
            #expect(e.errno == EEXIST)
        }
        try rt.deleteRule(r1)
        rules = try rt.rules(family: .v4)
        #expect(!rules.contains(r1) && rules.contains(r2))
        // l3mdev rules need CONFIG_NET_L3_MASTER_DEV.
        let l3 = Rule(family: .v4, priority: 2000, l3mdev: true, action: .unreachable)
        do {
            try rt.addRule(l3)
            #expect(try rt.rules(family: .v4).contains(l3))
        } catch let e as NetlinkError {
            #expect(e.step.hasPrefix("add rule ipv4 pref 2000"))
        }

        // conntrack: a dump and an (idle) event socket inside namespace a.
        let ct = try NetNamespace.run(in: fdA) { try ConntrackSocket() }
        defer { ct.close() }
        #expect(try ct.dump().isEmpty)
        let events = try NetNamespace.run(in: fdA) {
            try ConntrackSocket(groups: ConntrackSocket.newEvents | ConntrackSocket.destroyEvents)
        }
        defer { events.close() }
        #expect(try events.receiveEvents(timeoutMilliseconds: 10).isEmpty)
    }
}
