import Testing
@testable import Netlink

// Reference bytes: what nft 1.0.6 (Debian 12) sent, recorded on this machine with
//   ip netns exec cgt-sets-cap strace -f -e trace=sendmsg -e write=3 nft -f FILE
// in a scratch namespace whose table `inet cgnat` declared the maps empty. One datagram each:
// BATCH_BEGIN | NEWSETELEM ... | BATCH_END. nft numbers a batch's messages its own way (begin 0,
// every request of one command the same) and asks for no ACK; `bytesLikeNft` clears what differs
// on purpose: sequence numbers (ours are distinct, to match acknowledgements) and nothing else,
// since these batches are built with ack: false.

/// Every message's nlmsg_seq zeroed, walking the datagram by nlmsg_len.
func sequencesCleared(_ bytes: [UInt8]) -> [UInt8] {
    var b = bytes
    var i = 0
    while i + 16 <= b.count {
        let len = Int(ByteReader(b[i..<(i + 4)]).u32(0))
        guard len >= 16 else { break }
        for k in 8..<12 { b[i + k] = 0 }
        i += NL.align(len)
    }
    return b
}

@Suite struct NftablesEncodingTests {
    // add element inet cgnat subscriber_ports { 1 . 100.64.0.0 : 198.51.100.1 . 1024-2047, 2 . 100.64.0.1 : 198.51.100.2 . 2048-3071 }
    // add element inet cgnat subscriber_addresses { 1 . 100.64.0.0 : 198.51.100.1, 2 . 100.64.0.1 : 198.51.100.2 }
    static let nftTwoMaps = hex("""
        14000000 1000 0100 00000000 00000000 00 00 000a
        9c000000 0c0a 0104 01000000 00000000 01 00 0000
          0a000100 63676e61 74000000
          15000200 73756273 63726962 65725f70 6f727473 00000000
          08000400 00000001
          5c000380
            2c000180 10000180 0c000100 01000000 64400000
                     18000280 14000100 c6336401 04000000 c6336401 07ff0000
            2c000280 10000180 0c000100 02000000 64400001
                     18000280 14000100 c6336402 08000000 c6336402 0bff0000
        88000000 0c0a 0104 02000000 00000000 01 00 0000
          0a000100 63676e61 74000000
          19000200 73756273 63726962 65725f61 64647265 73736573 00000000
          08000400 00000002
          44000380
            20000180 10000180 0c000100 01000000 64400000 0c000280 08000100 c6336401
            20000280 10000180 0c000100 02000000 64400001 0c000280 08000100 c6336402
        14000000 1100 0100 03000000 00000000 00 00 000a
        """)

    // A map keyed by an interval concatenation, as the lead's inbound maps will be:
    //   map public_marks { type ipv4_addr . inet_service : mark; flags interval }
    //   add element inet cgnat public_marks { 198.51.100.1 . 1024-2047 : 1, 198.51.100.2 . 2048-3071 : 2 }
    // nft ≥ 0.9.4 sends the range's low end as KEY, its high end as KEY_END (type 10).
    static let nftIntervalKey = hex("""
        14000000 1000 0100 00000000 00000000 00 00 000a
        a0000000 0c0a 0104 01000000 00000000 01 00 0000
          0a000100 63676e61 74000000
          11000200 7075626c 69635f6d 61726b73 00000000
          08000400 00000001
          64000380
            30000180 10000180 0c000100 c6336401 04000000
                     10000a80 0c000100 c6336401 07ff0000
                     0c000280 08000100 01000000
            30000280 10000180 0c000100 c6336402 08000000
                     10000a80 0c000100 c6336402 0bff0000
                     0c000280 08000100 02000000
        14000000 1100 0100 02000000 00000000 00 00 000a
        """)

    static let seed1 = [UInt8]([0x01, 0, 0, 0, 100, 64, 0, 0]), seed2 = [UInt8]([0x02, 0, 0, 0, 100, 64, 0, 1])

    @Test func portAndAddressMapsAsNftSendsThem() {
        var b = NftBatch(sequence: 0, ack: false)
        b.addSetElements(family: NFT.NFPROTO_INET, table: "cgnat", set: "subscriber_ports", setID: 1, elements: [
            NftSetElement(key: Self.seed1, data: [198, 51, 100, 1, 0x04, 0x00, 0, 0, 198, 51, 100, 1, 0x07, 0xff, 0, 0]),
            NftSetElement(key: Self.seed2, data: [198, 51, 100, 2, 0x08, 0x00, 0, 0, 198, 51, 100, 2, 0x0b, 0xff, 0, 0]),
        ])
        b.addSetElements(family: NFT.NFPROTO_INET, table: "cgnat", set: "subscriber_addresses", setID: 2, elements: [
            NftSetElement(key: Self.seed1, data: [198, 51, 100, 1]),
            NftSetElement(key: Self.seed2, data: [198, 51, 100, 2]),
        ])
        b.end()
        #expect(sequencesCleared(b.bytes) == sequencesCleared(Self.nftTwoMaps), "\(hexString(b.bytes))")
        #expect(b.requests.map(\.set) == ["subscriber_ports", "subscriber_addresses"])
        #expect(b.requests.map(\.elements) == [0..<2, 0..<2])
    }

    @Test func intervalKeyWithKeyEnd() {
        var b = NftBatch(sequence: 0, ack: false)
        b.addSetElements(family: NFT.NFPROTO_INET, table: "cgnat", set: "public_marks", setID: 1, elements: [
            NftSetElement(key: [198, 51, 100, 1, 0x04, 0x00, 0, 0], keyEnd: [198, 51, 100, 1, 0x07, 0xff, 0, 0], data: [1, 0, 0, 0]),
            NftSetElement(key: [198, 51, 100, 2, 0x08, 0x00, 0, 0], keyEnd: [198, 51, 100, 2, 0x0b, 0xff, 0, 0], data: [2, 0, 0, 0]),
        ])
        b.end()
        #expect(sequencesCleared(b.bytes) == sequencesCleared(Self.nftIntervalKey), "\(hexString(b.bytes))")
    }

    /// With acks (what `up` sends): the same bytes but NLM_F_ACK on each request, and sequence
    /// numbers that tell the requests apart.
    @Test func ackedRequestsHaveDistinctSequences() {
        var b = NftBatch(sequence: 41)
        b.addSetElements(family: NFT.NFPROTO_INET, table: "cgnat", set: "subscriber_addresses", elements: [NftSetElement(key: Self.seed1, data: [1, 2, 3, 4])])
        b.addSetElements(family: NFT.NFPROTO_INET, table: "cgnat", set: "subscriber_ports", elements: [NftSetElement(key: Self.seed2, data: [1, 2, 3, 4])])
        b.end()
        let messages = try! NetlinkMessage.parse(b.bytes)
        #expect(messages.map(\.type) == [NFT.NFNL_MSG_BATCH_BEGIN, 0x0a0c, 0x0a0c, NFT.NFNL_MSG_BATCH_END])
        #expect(messages.map(\.seq) == [41, 42, 43, 44])
        #expect(messages[1].flags == NL.F_REQUEST | NL.F_CREATE | NL.F_ACK)
        #expect(messages[0].flags == NL.F_REQUEST && messages[3].flags == NL.F_REQUEST)
        #expect(b.requests.map(\.seq) == [42, 43])
    }

    /// The offset of an extended ACK (from the request's nlmsghdr) is turned back into words.
    @Test func offsetsNameWhatTheKernelPointedAt() {
        var b = NftBatch(sequence: 1)
        b.addSetElements(family: NFT.NFPROTO_INET, table: "cgnat", set: "nosuch", elements: [
            NftSetElement(key: Self.seed1, data: [1, 2, 3, 4]), NftSetElement(key: Self.seed2, data: [1, 2, 3, 4]),
        ])
        let r = b.requests[0]
        // header 16 + nfgenmsg 4; table "cgnat\0" 12 bytes at 20; set "nosuch\0" 12 at 32; list at 44.
        #expect(b.describe(offset: 20, in: r) == "the table name \"cgnat\"")
        #expect(b.describe(offset: 32, in: r) == "the set name \"nosuch\"")
        #expect(b.describe(offset: 48, in: r) == "element 1 of set \"nosuch\"")
        #expect(b.describe(offset: 48 + 32, in: r) == "element 2 of set \"nosuch\"")
        #expect(b.describe(offset: 4000, in: r) == nil)
    }
}
