import Glibc

/// An rtnetlink (NETLINK_ROUTE) socket in the network namespace of the thread that opened it.
/// Every failure is a NetlinkError whose step names the object ("add veth t-blue/t-up").
public final class RouteSocket {
    public let socket: NetlinkSocket

    public init() throws {
        socket = try NetlinkSocket(protocol: 0)  // NETLINK_ROUTE
    }

    public func close() { socket.close() }

    // MARK: links

    /// A veth pair; each end may be created directly in another namespace (an fd of it).
    public func addVeth(name: String, peerName: String, namespaceFD: Int32? = nil, peerNamespaceFD: Int32? = nil,
                        index: Int32? = nil, peerIndex: Int32? = nil) throws {
        try socket.request(RouteMessage.addVeth(name: name, peerName: peerName, namespaceFD: namespaceFD,
                                                peerNamespaceFD: peerNamespaceFD, index: index, peerIndex: peerIndex),
                           step: "add veth \(name)/\(peerName)")
    }

    public func addBridge(name: String) throws {
        try socket.request(RouteMessage.addBridge(name: name), step: "add bridge \(name)")
    }

    public func addVRF(name: String, table: UInt32) throws {
        try socket.request(RouteMessage.addVRF(name: name, table: table), step: "add vrf \(name) table \(table)")
    }

    /// The ifindex of a link by name; NetlinkError with ENODEV if there is none.
    public func linkIndex(_ name: String) throws -> Int32 {
        try link(named: name).index
    }

    /// One link by name; NetlinkError with ENODEV if there is none.
    public func link(named name: String) throws -> Link {
        let step = "find link \(name)"
        let reply = try socket.get(RouteMessage.getLink(name: name), step: step)
        guard let link = RouteMessage.decodeLink(reply) else { throw NetlinkError(step: step, errno: EBADMSG_) }
        return link
    }

    /// Sets the administrative state and/or the master (0 = no master).
    public func setLink(index: Int32, up: Bool? = nil, master: Int32? = nil) throws {
        var what: [String] = []
        if let up { what.append(up ? "up" : "down") }
        if let master { what.append(master == 0 ? "nomaster" : "master \(master)") }
        try socket.request(RouteMessage.setLink(index: index, up: up, master: master),
                           step: "set link \(index) \(what.joined(separator: " "))")
    }

    public func deleteLink(index: Int32) throws {
        try socket.request(RouteMessage.deleteLink(index: index), step: "delete link \(index)")
    }

    public func links() throws -> [Link] {
        try socket.dump(RouteMessage.dumpLinks(), step: "list links").compactMap(RouteMessage.decodeLink)
    }

    // MARK: addresses

    /// IFA_LOCAL + IFA_ADDRESS; IFA_F_NODAD for IPv6 when `noDAD`.
    public func addAddress(index: Int32, _ prefix: IPPrefix, noDAD: Bool = true) throws {
        try socket.request(RouteMessage.addAddress(index: index, prefix, noDAD: noDAD), step: "add address \(prefix) to link \(index)")
    }

    public func deleteAddress(index: Int32, _ prefix: IPPrefix) throws {
        try socket.request(RouteMessage.deleteAddress(index: index, prefix), step: "delete address \(prefix) from link \(index)")
    }

    public func addresses(family: IPFamily? = nil) throws -> [InterfaceAddress] {
        try socket.dump(RouteMessage.dumpAddresses(family: family), step: "list addresses")
            .compactMap(RouteMessage.decodeAddress)
            .filter { family == nil || $0.prefix.family == family }
    }

    // MARK: routes

    public func addRoute(_ route: Route) throws {
        try socket.request(RouteMessage.addRoute(route), step: "add route \(Self.describe(route))")
    }

    public func deleteRoute(_ route: Route) throws {
        try socket.request(RouteMessage.deleteRoute(route), step: "delete route \(Self.describe(route))")
    }

    /// Routes of a family, of one table or of all tables. Multicast/anycast/throw/nat routes are skipped.
    public func routes(family: IPFamily, table: UInt32? = nil) throws -> [Route] {
        try socket.dump(RouteMessage.dumpRoutes(family: family), step: "list \(family) routes")
            .compactMap(RouteMessage.decodeRoute)
            .filter { $0.family == family && (table == nil || $0.table == table) }
    }

    static func describe(_ r: Route) -> String {
        var s = "\(r.family) \(r.destination)"
        if r.kind != .unicast { s = "\(r.kind) " + s }
        if let g = r.gateway { s += " via \(g)" }
        if let o = r.outputInterface { s += " dev \(o)" }
        if let p = r.preferredSource { s += " src \(p)" }
        if r.table != RouteTable.main { s += " table \(r.table)" }
        if let m = r.metric { s += " metric \(m)" }
        return s
    }

    // MARK: rules

    public func addRule(_ rule: Rule) throws {
        try socket.request(RouteMessage.addRule(rule), step: "add rule \(Self.describe(rule))")
    }

    public func deleteRule(_ rule: Rule) throws {
        try socket.request(RouteMessage.deleteRule(rule), step: "delete rule \(Self.describe(rule))")
    }

    public func rules(family: IPFamily) throws -> [Rule] {
        try socket.dump(RouteMessage.dumpRules(family: family), step: "list \(family) rules")
            .compactMap(RouteMessage.decodeRule)
            .filter { $0.family == family }
    }

    static func describe(_ r: Rule) -> String {
        var s = "\(r.family) pref \(r.priority)"
        if let m = r.fwmark { s += " fwmark \(m)" + (r.fwmask.map { "/\($0)" } ?? "") }
        if r.l3mdev { s += " l3mdev" }
        if let t = r.table { s += " table \(t)" }
        if r.action != .toTable { s += " \(r.action)" }
        return s
    }
}
