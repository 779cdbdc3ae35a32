/// rtnetlink request builders and reply decoders. RouteSocket sends exactly these messages (with
/// its own sequence number), so tests can compare them byte for byte with what iproute2 sends.
public enum RouteMessage {
    // Message types (linux/rtnetlink.h).
    public static let RTM_NEWLINK: UInt16 = 16, RTM_DELLINK: UInt16 = 17, RTM_GETLINK: UInt16 = 18
    public static let RTM_NEWADDR: UInt16 = 20, RTM_DELADDR: UInt16 = 21, RTM_GETADDR: UInt16 = 22
    public static let RTM_NEWROUTE: UInt16 = 24, RTM_DELROUTE: UInt16 = 25, RTM_GETROUTE: UInt16 = 26
    public static let RTM_NEWRULE: UInt16 = 32, RTM_DELRULE: UInt16 = 33, RTM_GETRULE: UInt16 = 34
    public static let RTM_NEWNEIGH: UInt16 = 28
    // IFLA_* (linux/if_link.h)
    static let IFLA_ADDRESS: UInt16 = 1, IFLA_IFNAME: UInt16 = 3, IFLA_MTU: UInt16 = 4, IFLA_MASTER: UInt16 = 10
    static let IFLA_OPERSTATE: UInt16 = 16, IFLA_LINKINFO: UInt16 = 18, IFLA_NET_NS_FD: UInt16 = 28, IFLA_EXT_MASK: UInt16 = 29
    static let IFLA_INFO_KIND: UInt16 = 1, IFLA_INFO_DATA: UInt16 = 2
    static let VETH_INFO_PEER: UInt16 = 1
    static let IFLA_VRF_TABLE: UInt16 = 1
    static let IFLA_AF_SPEC: UInt16 = 26, IFLA_INET6_ADDR_GEN_MODE: UInt16 = 8, IN6_ADDR_GEN_MODE_NONE: UInt8 = 1
    static let AF_INET6: UInt16 = 10
    // NDA_* and NUD_* (linux/neighbour.h)
    static let NDA_DST: UInt16 = 1, NDA_LLADDR: UInt16 = 2
    static let NUD_PERMANENT: UInt16 = 0x80
    static let RTEXT_FILTER_VF: UInt32 = 1, RTEXT_FILTER_SKIP_STATS: UInt32 = 8
    static let IFF_UP: UInt32 = 1
    static let AF_UNSPEC: UInt8 = 0, AF_PACKET: UInt8 = 17
    // IFA_* (linux/if_addr.h)
    static let IFA_ADDRESS: UInt16 = 1, IFA_LOCAL: UInt16 = 2, IFA_FLAGS: UInt16 = 8
    static let IFA_F_NODAD: UInt8 = 0x02
    // RTA_* (linux/rtnetlink.h)
    static let RTA_DST: UInt16 = 1, RTA_OIF: UInt16 = 4, RTA_GATEWAY: UInt16 = 5, RTA_PRIORITY: UInt16 = 6
    static let RTA_PREFSRC: UInt16 = 7, RTA_TABLE: UInt16 = 15, RTA_VIA: UInt16 = 18
    // FRA_* (linux/fib_rules.h)
    static let FRA_PRIORITY: UInt16 = 6, FRA_FWMARK: UInt16 = 10, FRA_TABLE: UInt16 = 15, FRA_FWMASK: UInt16 = 16
    static let FRA_L3MDEV: UInt16 = 19

    static let create = NL.F_REQUEST | NL.F_ACK | NL.F_EXCL | NL.F_CREATE
    static let modify = NL.F_REQUEST | NL.F_ACK

    /// struct ifinfomsg (16 bytes).
    static func ifinfomsg(family: UInt8 = 0, index: Int32 = 0, flags: UInt32 = 0, change: UInt32 = 0) -> [UInt8] {
        var w = ByteWriter()
        w.u8(family); w.u8(0); w.u16(0); w.i32(index); w.u32(flags); w.u32(change)
        return w.bytes
    }

    // MARK: links

    /// `ip link add NAME [netns NS] type veth peer name PEER [netns NS2]`.
    /// `index`/`peerIndex` ask for specific ifindexes (0 or nil: the kernel picks). Ends in different
    /// namespaces often get the same index, and a veth whose peer has its own ifindex is not an
    /// "urgent" linkwatch event: its carrier (and IPv6 readiness) then lags up to a second.
    /// `mac`/`peerMAC` set each end's address (`address MAC`); attributes come in iproute2's order:
    /// address, netns, name.
    public static func addVeth(name: String, peerName: String, namespaceFD: Int32? = nil, peerNamespaceFD: Int32? = nil,
                               index: Int32? = nil, peerIndex: Int32? = nil,
                               mac: [UInt8]? = nil, peerMAC: [UInt8]? = nil) -> NetlinkMessage {
        NetlinkMessage(type: RTM_NEWLINK, flags: create, fixed: ifinfomsg(index: index ?? 0)) { a in
            if let m = mac { a.bytes(IFLA_ADDRESS, m) }
            if let fd = namespaceFD { a.u32(IFLA_NET_NS_FD, UInt32(bitPattern: fd)) }
            a.string(IFLA_IFNAME, name)
            a.nested(IFLA_LINKINFO) { li in
                li.unterminatedString(IFLA_INFO_KIND, "veth")
                li.nested(IFLA_INFO_DATA) { d in
                    // VETH_INFO_PEER holds a struct ifinfomsg followed by the peer's own IFLA_* attributes.
                    var peer = AttributeWriter()
                    if let m = peerMAC { peer.bytes(IFLA_ADDRESS, m) }
                    if let fd = peerNamespaceFD { peer.u32(IFLA_NET_NS_FD, UInt32(bitPattern: fd)) }
                    peer.string(IFLA_IFNAME, peerName)
                    d.bytes(VETH_INFO_PEER, ifinfomsg(index: peerIndex ?? 0) + peer.bytes)
                }
            }
        }
    }

    /// `ip link add NAME [index I] [address MAC] [netns NS] type bridge`.
    public static func addBridge(name: String, index: Int32? = nil, mac: [UInt8]? = nil, namespaceFD: Int32? = nil) -> NetlinkMessage {
        NetlinkMessage(type: RTM_NEWLINK, flags: create, fixed: ifinfomsg(index: index ?? 0)) { a in
            if let m = mac { a.bytes(IFLA_ADDRESS, m) }
            if let fd = namespaceFD { a.u32(IFLA_NET_NS_FD, UInt32(bitPattern: fd)) }
            a.string(IFLA_IFNAME, name)
            a.nested(IFLA_LINKINFO) { $0.unterminatedString(IFLA_INFO_KIND, "bridge") }
        }
    }

    /// `ip link add NAME [index I] [netns NS] type vrf table TABLE`.
    public static func addVRF(name: String, table: UInt32, index: Int32? = nil, namespaceFD: Int32? = nil) -> NetlinkMessage {
        NetlinkMessage(type: RTM_NEWLINK, flags: create, fixed: ifinfomsg(index: index ?? 0)) { a in
            if let fd = namespaceFD { a.u32(IFLA_NET_NS_FD, UInt32(bitPattern: fd)) }
            a.string(IFLA_IFNAME, name)
            a.nested(IFLA_LINKINFO) { li in
                li.unterminatedString(IFLA_INFO_KIND, "vrf")
                li.nested(IFLA_INFO_DATA) { $0.u32(IFLA_VRF_TABLE, table) }
            }
        }
    }

    /// `ip link set dev X [up|down] [master M|nomaster]` (master 0 = nomaster).
    public static func setLink(index: Int32, up: Bool? = nil, master: Int32? = nil) -> NetlinkMessage {
        let flags: UInt32 = up == true ? IFF_UP : 0
        let change: UInt32 = up == nil ? 0 : IFF_UP
        return NetlinkMessage(type: RTM_NEWLINK, flags: modify, fixed: ifinfomsg(index: index, flags: flags, change: change)) { a in
            if let m = master { a.u32(IFLA_MASTER, UInt32(bitPattern: m)) }
        }
    }

    /// `ip link set dev X addrgenmode none`: IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE } }.
    public static func setAddrGenModeNone(index: Int32) -> NetlinkMessage {
        NetlinkMessage(type: RTM_NEWLINK, flags: modify, fixed: ifinfomsg(index: index)) { a in
            a.nested(IFLA_AF_SPEC) { spec in
                spec.nested(AF_INET6) { $0.u8(IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE) }
            }
        }
    }

    // MARK: neighbours

    /// `ip neigh add ADDR lladdr MAC dev X nud permanent`: struct ndmsg, NDA_DST, NDA_LLADDR.
    public static func addPermanentNeighbour(index: Int32, address: IPAddress, mac: [UInt8]) -> NetlinkMessage {
        var w = ByteWriter()
        w.u8(address.family.rawValue); w.u8(0); w.u16(0)   // family, pad1, pad2
        w.i32(index); w.u16(NUD_PERMANENT); w.u8(0); w.u8(0) // ifindex, state, flags, type
        return NetlinkMessage(type: RTM_NEWNEIGH, flags: create, fixed: w.bytes) { a in
            a.address(NDA_DST, address)
            a.bytes(NDA_LLADDR, mac)
        }
    }

    /// `ip link del dev X`.
    public static func deleteLink(index: Int32) -> NetlinkMessage {
        NetlinkMessage(type: RTM_DELLINK, flags: modify, fixed: ifinfomsg(index: index))
    }

    /// The name lookup iproute2 does before acting on `dev NAME` (RTM_GETLINK by IFLA_IFNAME).
    public static func getLink(name: String) -> NetlinkMessage {
        NetlinkMessage(type: RTM_GETLINK, flags: NL.F_REQUEST, fixed: ifinfomsg()) { a in
            a.u32(IFLA_EXT_MASK, RTEXT_FILTER_VF | RTEXT_FILTER_SKIP_STATS)
            a.string(IFLA_IFNAME, name)
        }
    }

    /// `ip link show` (dump).
    public static func dumpLinks() -> NetlinkMessage {
        NetlinkMessage(type: RTM_GETLINK, flags: NL.F_REQUEST | NL.F_DUMP, fixed: ifinfomsg(family: AF_PACKET)) { a in
            a.u32(IFLA_EXT_MASK, RTEXT_FILTER_VF)
        }
    }

    public static func decodeLink(_ m: NetlinkMessage) -> Link? {
        guard m.type == RTM_NEWLINK, m.payload.count >= 16 else { return nil }
        let r = m.reader
        let attrs = m.attributes(after: 16)
        let flags = r.u32(8)
        let states = ["UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP"]
        let op = Int(attrs[type: IFLA_OPERSTATE]?.u8 ?? 0)
        let master = attrs[type: IFLA_MASTER]?.i32
        return Link(index: r.i32(4),
                    name: attrs[type: IFLA_IFNAME]?.string ?? "",
                    kind: attrs[type: IFLA_LINKINFO]?.nested[type: IFLA_INFO_KIND]?.string,
                    isUp: flags & IFF_UP != 0,
                    operState: op < states.count ? states[op] : "UNKNOWN",
                    mtu: attrs[type: IFLA_MTU]?.u32 ?? 0,
                    master: master == 0 ? nil : master,
                    mac: attrs[type: IFLA_ADDRESS]?.payload ?? [])
    }

    // MARK: addresses

    /// `ip addr add PREFIX dev X [nodad]`: IFA_LOCAL and IFA_ADDRESS both the address.
    public static func addAddress(index: Int32, _ prefix: IPPrefix, noDAD: Bool = true) -> NetlinkMessage {
        var w = ByteWriter()
        w.u8(prefix.family.rawValue); w.u8(UInt8(prefix.length))
        w.u8(prefix.family == .v6 && noDAD ? IFA_F_NODAD : 0)
        w.u8(RouteScope.universe); w.u32(UInt32(bitPattern: index))
        return NetlinkMessage(type: RTM_NEWADDR, flags: create, fixed: w.bytes) { a in
            a.address(IFA_LOCAL, prefix.address)
            a.address(IFA_ADDRESS, prefix.address)
        }
    }

    /// `ip addr del PREFIX dev X`.
    public static func deleteAddress(index: Int32, _ prefix: IPPrefix) -> NetlinkMessage {
        var w = ByteWriter()
        w.u8(prefix.family.rawValue); w.u8(UInt8(prefix.length)); w.u8(0); w.u8(0); w.u32(UInt32(bitPattern: index))
        return NetlinkMessage(type: RTM_DELADDR, flags: modify, fixed: w.bytes) { a in
            a.address(IFA_LOCAL, prefix.address)
            a.address(IFA_ADDRESS, prefix.address)
        }
    }

    public static func dumpAddresses(family: IPFamily?) -> NetlinkMessage {
        NetlinkMessage(type: RTM_GETADDR, flags: NL.F_REQUEST | NL.F_DUMP,
                       fixed: [family?.rawValue ?? 0, 0, 0, 0, 0, 0, 0, 0])
    }

    public static func decodeAddress(_ m: NetlinkMessage) -> InterfaceAddress? {
        guard m.type == RTM_NEWADDR, m.payload.count >= 8, let fam = IPFamily(rawValue: m.payload[0]) else { return nil }
        let r = m.reader
        let attrs = m.attributes(after: 8)
        guard let addr = (attrs[type: IFA_LOCAL] ?? attrs[type: IFA_ADDRESS])?.address(fam),
              Int(r.u8(1)) <= fam.bitLength else { return nil }
        return InterfaceAddress(index: Int32(bitPattern: r.u32(4)), prefix: IPPrefix(addr, Int(r.u8(1))), scope: r.u8(3))
    }

    // MARK: routes

    /// `ip [-4|-6] route add DST [table T] [metric M] [via [inet6] GW] [src S] [dev D]`.
    public static func addRoute(_ route: Route) -> NetlinkMessage { routeMessage(route, type: RTM_NEWROUTE, flags: create) }
    public static func deleteRoute(_ route: Route) -> NetlinkMessage { routeMessage(route, type: RTM_DELROUTE, flags: modify) }

    static func routeMessage(_ route: Route, type: UInt16, flags: UInt16) -> NetlinkMessage {
        var w = ByteWriter()
        w.u8(route.family.rawValue); w.u8(UInt8(route.destination.length)); w.u8(0); w.u8(0)  // src_len, tos
        w.u8(route.table < 256 ? UInt8(route.table) : 0)
        w.u8(route.protocolID); w.u8(route.scope); w.u8(route.kind.rawValue)
        w.u32(0)  // rtm_flags
        return NetlinkMessage(type: type, flags: flags, fixed: w.bytes) { a in
            a.address(RTA_DST, route.destination.address)
            if route.table >= 256 { a.u32(RTA_TABLE, route.table) }
            if let m = route.metric { a.u32(RTA_PRIORITY, m) }
            if let gw = route.gateway {
                if gw.family == route.family {
                    a.address(RTA_GATEWAY, gw)
                } else {
                    // struct rtvia: a 16-bit address family, then the address.
                    var v = ByteWriter()
                    v.u16(UInt16(gw.family.rawValue)); v.append(gw.bytes)
                    a.bytes(RTA_VIA, v.bytes)
                }
            }
            if let src = route.preferredSource { a.address(RTA_PREFSRC, src) }
            if let oif = route.outputInterface { a.u32(RTA_OIF, UInt32(bitPattern: oif)) }
        }
    }

    /// `ip -4 route show table all` (dump; the table is filtered by the caller).
    public static func dumpRoutes(family: IPFamily) -> NetlinkMessage {
        NetlinkMessage(type: RTM_GETROUTE, flags: NL.F_REQUEST | NL.F_DUMP, fixed: [family.rawValue] + [UInt8](repeating: 0, count: 11))
    }

    public static func decodeRoute(_ m: NetlinkMessage) -> Route? {
        guard m.type == RTM_NEWROUTE, m.payload.count >= 12, let fam = IPFamily(rawValue: m.payload[0]),
              let kind = Route.Kind(rawValue: m.payload[7]) else { return nil }
        let p = m.payload
        let attrs = m.attributes(after: 12)
        let dstLen = Int(p[1])
        guard dstLen <= fam.bitLength else { return nil }
        let dst = attrs[type: RTA_DST]?.address(fam) ?? .any(fam)
        var gateway = attrs[type: RTA_GATEWAY]?.address(fam)
        if gateway == nil, let via = attrs[type: RTA_VIA], via.payload.count >= 2,
           let vf = IPFamily(rawValue: UInt8(truncatingIfNeeded: ByteReader(via.payload).u16(0))),
           via.payload.count == 2 + vf.addressLength {
            gateway = IPAddress(family: vf, bytes: Array(via.payload[2...]))
        }
        return Route(family: fam, destination: IPPrefix(dst, dstLen), gateway: gateway,
                     outputInterface: attrs[type: RTA_OIF]?.i32,
                     preferredSource: attrs[type: RTA_PREFSRC]?.address(fam),
                     table: attrs[type: RTA_TABLE]?.u32 ?? UInt32(p[4]),
                     scope: p[6], kind: kind, metric: attrs[type: RTA_PRIORITY]?.u32, protocolID: p[5])
    }

    // MARK: rules

    /// `ip [-6] rule add pref P [fwmark M[/MASK]] [l3mdev] [table T] [ACTION]`.
    public static func addRule(_ rule: Rule) -> NetlinkMessage { ruleMessage(rule, type: RTM_NEWRULE, flags: create) }
    /// `ip rule del ...` with the same selectors (the action is sent as given).
    public static func deleteRule(_ rule: Rule) -> NetlinkMessage { ruleMessage(rule, type: RTM_DELRULE, flags: modify) }

    static func ruleMessage(_ rule: Rule, type: UInt16, flags: UInt16) -> NetlinkMessage {
        var w = ByteWriter()
        let table = rule.table ?? 0
        w.u8(rule.family.rawValue); w.u8(0); w.u8(0); w.u8(0)  // dst_len, src_len, tos
        w.u8(table < 256 ? UInt8(table) : 0)
        w.u8(0); w.u8(0)  // res1, res2
        w.u8(rule.action.rawValue)
        w.u32(0)  // flags
        return NetlinkMessage(type: type, flags: flags, fixed: w.bytes) { a in
            a.u32(FRA_PRIORITY, rule.priority)
            if let m = rule.fwmark { a.u32(FRA_FWMARK, m) }
            if let m = rule.fwmask { a.u32(FRA_FWMASK, m) }
            if rule.l3mdev { a.u8(FRA_L3MDEV, 1) }
            if table >= 256 { a.u32(FRA_TABLE, table) }
        }
    }

    public static func dumpRules(family: IPFamily) -> NetlinkMessage {
        NetlinkMessage(type: RTM_GETRULE, flags: NL.F_REQUEST | NL.F_DUMP, fixed: [family.rawValue] + [UInt8](repeating: 0, count: 11))
    }

    public static func decodeRule(_ m: NetlinkMessage) -> Rule? {
        guard m.type == RTM_NEWRULE, m.payload.count >= 12, let fam = IPFamily(rawValue: m.payload[0]),
              let action = Rule.Action(rawValue: m.payload[7]) else { return nil }
        let attrs = m.attributes(after: 12)
        let table = attrs[type: FRA_TABLE]?.u32 ?? UInt32(m.payload[4])
        let mark = attrs[type: FRA_FWMARK]?.u32
        var mask = attrs[type: FRA_FWMASK]?.u32
        if mask == 0xffff_ffff { mask = nil }
        return Rule(family: fam, priority: attrs[type: FRA_PRIORITY]?.u32 ?? 0, table: table == 0 ? nil : table,
                    fwmark: mark == 0 && mask == nil ? nil : mark, fwmask: mask,
                    l3mdev: (attrs[type: FRA_L3MDEV]?.u8 ?? 0) != 0, action: action)
    }
}
