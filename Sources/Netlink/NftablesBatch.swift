/// nftables over netlink (NETLINK_NETFILTER, subsystem NFNL_SUBSYS_NFTABLES): the batch that adds
/// set elements. A batch is NFNL_MSG_BATCH_BEGIN, the requests, NFNL_MSG_BATCH_END, sent in one
/// datagram; the kernel applies it as one transaction (all or nothing). Layout from the kernel's
/// nf_tables_api.c / nfnetlink.c and checked byte for byte against what nft 1.0.6 sends
/// (Tests/NetlinkTests/NftablesEncodingTests.swift).

/// Numbers from linux/netfilter/nfnetlink.h and nf_tables.h.
public enum NFT {
    public static let NFNL_SUBSYS_NFTABLES: UInt16 = 10
    public static let NFNL_MSG_BATCH_BEGIN: UInt16 = 16   // NLMSG_MIN_TYPE
    public static let NFNL_MSG_BATCH_END: UInt16 = 17
    public static let NFT_MSG_NEWSETELEM: UInt16 = 12

    public static let NFTA_SET_ELEM_LIST_TABLE: UInt16 = 1
    public static let NFTA_SET_ELEM_LIST_SET: UInt16 = 2
    public static let NFTA_SET_ELEM_LIST_ELEMENTS: UInt16 = 3
    public static let NFTA_SET_ELEM_LIST_SET_ID: UInt16 = 4
    public static let NFTA_LIST_ELEM: UInt16 = 1
    public static let NFTA_SET_ELEM_KEY: UInt16 = 1
    public static let NFTA_SET_ELEM_DATA: UInt16 = 2
    public static let NFTA_SET_ELEM_KEY_END: UInt16 = 10
    public static let NFTA_DATA_VALUE: UInt16 = 1

    /// nfgen_family of the table (NFPROTO_*).
    public static let NFPROTO_INET: UInt8 = 1
    public static let NFPROTO_IPV4: UInt8 = 2
}

/// One element as the kernel takes it: the key (a concatenation, components padded to 4 bytes),
/// the key's upper end for interval concatenations (NFTA_SET_ELEM_KEY_END), and the map's data.
public struct NftSetElement: Equatable, Sendable {
    public var key: [UInt8]
    public var keyEnd: [UInt8]?
    public var data: [UInt8]?
    public init(key: [UInt8], keyEnd: [UInt8]? = nil, data: [UInt8]? = nil) {
        self.key = key; self.keyEnd = keyEnd; self.data = data
    }
}

/// The bytes of one batch, and which request carries which elements (to name them in errors).
public struct NftBatch {
    public struct Request: Equatable, Sendable {
        public var seq: UInt32
        public var family: UInt8
        public var table: String
        public var set: String
        /// Indexes of the elements (in the list given for this set) that this request carries.
        public var elements: Range<Int>
        /// Where the request starts in `bytes`.
        public var offset: Int
    }

    public private(set) var bytes: [UInt8] = []
    public private(set) var requests: [Request] = []
    public let beginSequence: UInt32
    private var seq: UInt32
    private let flags: UInt16
    private var finished = false

    /// The element attribute (NFTA_SET_ELEM_LIST_ELEMENTS) has a 16-bit length: a request holds as
    /// many elements as fit in 65,535 bytes, then the next one goes on (as libnftnl splits).
    public static let maxNestLength = Int(UInt16.max)

    /// - Parameters:
    ///   - sequence: of the BATCH_BEGIN message; every request takes the next one.
    ///   - ack: NLM_F_ACK on each request, so that every request is answered (nft sends none and
    ///     hears only of errors; with acks, a reply that never comes is noticed too).
    public init(sequence: UInt32, ack: Bool = true) {
        beginSequence = sequence
        seq = sequence
        flags = NL.F_REQUEST | NL.F_CREATE | (ack ? NL.F_ACK : 0)
        bytes.reserveCapacity(4096)
        batchMessage(NFT.NFNL_MSG_BATCH_BEGIN)
    }

    private mutating func nextSeq() -> UInt32 {
        seq &+= 1
        if seq == 0 { seq = 1 }
        return seq
    }

    // MARK: raw writing into `bytes`, lengths patched when known

    // Host byte order, as netlink's own headers and lengths are.
    private mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v) { bytes.append(contentsOf: $0) } }
    private mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v) { bytes.append(contentsOf: $0) } }
    private mutating func patch16(_ at: Int, _ v: Int) { withUnsafeBytes(of: UInt16(v)) { bytes[at] = $0[0]; bytes[at + 1] = $0[1] } }
    private mutating func patch32(_ at: Int, _ v: Int) { withUnsafeBytes(of: UInt32(v)) { for i in 0..<4 { bytes[at + i] = $0[i] } } }
    private mutating func pad() { while bytes.count % 4 != 0 { bytes.append(0) } }

    private mutating func header(type: UInt16, flags: UInt16, seq: UInt32, family: UInt8, resID: UInt16) -> Int {
        let start = bytes.count
        u32(0); u16(type); u16(flags); u32(seq); u32(0)
        // nfgenmsg: family, version NFNETLINK_V0, res_id in network order.
        bytes.append(family); bytes.append(0); bytes.append(UInt8(resID >> 8)); bytes.append(UInt8(resID & 0xff))
        return start
    }

    private mutating func batchMessage(_ type: UInt16) {
        let seq = type == NFT.NFNL_MSG_BATCH_BEGIN ? beginSequence : nextSeq()
        let start = header(type: type, flags: NL.F_REQUEST, seq: seq, family: 0, resID: NFT.NFNL_SUBSYS_NFTABLES)
        patch32(start, bytes.count - start)
    }

    private mutating func attribute(_ type: UInt16, _ payload: [UInt8]) {
        u16(UInt16(4 + payload.count)); u16(type); bytes.append(contentsOf: payload); pad()
    }

    /// Opens a nested attribute (NLA_F_NESTED set, as nfnetlink wants); `close` writes its length.
    private mutating func open(_ type: UInt16) -> Int {
        let at = bytes.count
        u16(0); u16(type | NL.NLA_F_NESTED)
        return at
    }
    private mutating func close(_ at: Int) { patch16(at, bytes.count - at) }

    /// `number`: the list attribute's type. The kernel reads the list without looking at it;
    /// libnftnl numbers the elements of a command from 1 (counting one more at each split, the
    /// element it built and took back), and so do we, so that our bytes are nft's.
    private mutating func element(_ e: NftSetElement, number: Int) {
        let el = open(UInt16(truncatingIfNeeded: number))
        let k = open(NFT.NFTA_SET_ELEM_KEY); attribute(NFT.NFTA_DATA_VALUE, e.key); close(k)
        if let end = e.keyEnd { let k = open(NFT.NFTA_SET_ELEM_KEY_END); attribute(NFT.NFTA_DATA_VALUE, end); close(k) }
        if let d = e.data { let n = open(NFT.NFTA_SET_ELEM_DATA); attribute(NFT.NFTA_DATA_VALUE, d); close(n) }
        close(el)
    }

    private static func elementLength(_ e: NftSetElement) -> Int {
        func value(_ b: [UInt8]) -> Int { 4 + 4 + NL.align(b.count) }   // nest header + NFTA_DATA_VALUE
        return 4 + value(e.key) + (e.keyEnd.map(value) ?? 0) + (e.data.map(value) ?? 0)
    }

    /// NFT_MSG_NEWSETELEM requests adding `elements` to the set `set` of table `table`, split into
    /// as many requests as their size needs. `setID` (NFTA_SET_ELEM_LIST_SET_ID) names a set made
    /// in the same batch; nft sends its own numbering always, the kernel uses it only when no set
    /// has the name.
    public mutating func addSetElements(family: UInt8, table: String, set: String, setID: UInt32? = nil,
                                        elements: [NftSetElement]) {
        addElements(family: family, table: table, set: set, setID: setID, count: elements.count,
                    length: { NftBatch.elementLength(elements[$0]) },
                    element: { b, i, number in b.element(elements[i], number: number) })
    }

    /// Which value of an element `write` is asked for.
    public enum Part: Sendable { case key, keyEnd, data }

    /// The same request for elements of one fixed layout, written straight into the batch: `write`
    /// appends exactly the part's length in bytes (a map's concatenations have fixed lengths), so
    /// no element needs arrays of its own (a /16 per domain is 262,144 elements).
    public mutating func addSetElements(family: UInt8, table: String, set: String, setID: UInt32? = nil, count: Int,
                                        keyLength: Int, keyEndLength: Int?, dataLength: Int?,
                                        write: (_ index: Int, _ part: Part, _ out: inout [UInt8]) -> Void) {
        func value(_ n: Int) -> Int { 8 + NL.align(n) }
        let length = 4 + value(keyLength) + (keyEndLength.map(value) ?? 0) + (dataLength.map(value) ?? 0)
        addElements(family: family, table: table, set: set, setID: setID, count: count, length: { _ in length }) { b, i, number in
            func part(_ nest: UInt16, _ p: Part, _ n: Int) {
                let outer = b.open(nest)
                b.u16(UInt16(4 + n)); b.u16(NFT.NFTA_DATA_VALUE)
                let before = b.bytes.count
                write(i, p, &b.bytes)
                precondition(b.bytes.count - before == n, "element \(i) of \(set): \(p) has \(b.bytes.count - before) bytes, not \(n)")
                b.pad()
                b.close(outer)
            }
            let el = b.open(UInt16(truncatingIfNeeded: number))
            part(NFT.NFTA_SET_ELEM_KEY, .key, keyLength)
            if let n = keyEndLength { part(NFT.NFTA_SET_ELEM_KEY_END, .keyEnd, n) }
            if let n = dataLength { part(NFT.NFTA_SET_ELEM_DATA, .data, n) }
            b.close(el)
        }
    }

    /// Requests of as many elements as fit each (libnftnl's split), elements numbered as nft does.
    private mutating func addElements(family: UInt8, table: String, set: String, setID: UInt32?, count: Int,
                                      length: (Int) -> Int, element: (inout NftBatch, Int, Int) -> Void) {
        precondition(!finished, "batch already ended")
        if count > 0 {
            // One growth for the whole set rather than doubling through megabytes.
            bytes.reserveCapacity(bytes.count + count * length(0) + (count / 1000 + 1) * 128)
        }
        var i = 0
        var number = 0
        repeat {
            let first = i
            let start = header(type: (NFT.NFNL_SUBSYS_NFTABLES << 8) | NFT.NFT_MSG_NEWSETELEM, flags: flags,
                               seq: nextSeq(), family: family, resID: 0)
            attribute(NFT.NFTA_SET_ELEM_LIST_TABLE, Array(table.utf8) + [0])
            attribute(NFT.NFTA_SET_ELEM_LIST_SET, Array(set.utf8) + [0])
            if let id = setID { attribute(NFT.NFTA_SET_ELEM_LIST_SET_ID, withUnsafeBytes(of: id.bigEndian) { Array($0) }) }
            let nest = open(NFT.NFTA_SET_ELEM_LIST_ELEMENTS)
            var used = 4
            while i < count {
                let n = length(i)
                number += 1
                if used + n > NftBatch.maxNestLength { break }
                element(&self, i, number)
                used += n
                i += 1
            }
            precondition(i > first || count == 0, "a set element larger than a netlink attribute")
            close(nest)
            patch32(start, bytes.count - start)
            requests.append(Request(seq: seq, family: family, table: table, set: set, elements: first..<i, offset: start))
        } while i < count
    }

    /// Appends BATCH_END; the bytes are then complete.
    public mutating func end() {
        precondition(!finished, "batch already ended")
        batchMessage(NFT.NFNL_MSG_BATCH_END)
        finished = true
    }

    public var isFinished: Bool { finished }

    /// What the attribute at `offset` (NLMSGERR_ATTR_OFFS: from the start of the request's
    /// nlmsghdr) of a request is, in words: the table, the set, or which element.
    public func describe(offset: UInt32, in request: Request) -> String? {
        let msgLen = Int(ByteReader(bytes[request.offset..<(request.offset + 4)]).u32(0))
        let msg = bytes[request.offset..<(request.offset + msgLen)]
        let off = Int(offset)
        var at = msg.startIndex + NL.headerLength + 4
        while at + 4 <= msg.endIndex {
            let len = Int(ByteReader(msg[at..<(at + 4)]).u16(0)), type = ByteReader(msg[at..<(at + 4)]).u16(2) & NL.NLA_TYPE_MASK
            guard len >= 4 else { return nil }
            let rel = at - msg.startIndex
            if off >= rel && off < rel + len {
                switch type {
                case NFT.NFTA_SET_ELEM_LIST_TABLE: return "the table name \"\(request.table)\""
                case NFT.NFTA_SET_ELEM_LIST_SET: return "the set name \"\(request.set)\""
                case NFT.NFTA_SET_ELEM_LIST_ELEMENTS:
                    var e = at + 4, k = 0
                    while e + 4 <= at + len {
                        let elen = Int(ByteReader(msg[e..<(e + 4)]).u16(0))
                        guard elen >= 4 else { return nil }
                        let erel = e - msg.startIndex
                        if off >= erel && off < erel + elen { return "element \(request.elements.lowerBound + k + 1) of set \"\(request.set)\"" }
                        e += NL.align(elen); k += 1
                    }
                    return "the element list"
                default: return nil
                }
            }
            at += NL.align(len)
        }
        return nil
    }
}
