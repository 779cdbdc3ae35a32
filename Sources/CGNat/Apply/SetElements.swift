import Netlink

/// Loads map elements by netlink (NFT_MSG_NEWSETELEM) into the calling thread's namespace: every
/// map's elements in one batch, so they arrive together or not at all.
public enum SetElementLoader {
    /// The maps' elements as the kernel takes them (NftMap's wire layout, which is what nft sends).
    public static func batch(table: String, maps: [NftMap], into batch: inout NftBatch) throws {
        for map in maps {
            if let p = map.problems().first { throw UsageError("internal: \(p)") }
            let lengths = map.wireLengths
            map.elements.withUnsafeBufferPointer { elements in
                batch.addSetElements(family: NFT.NFPROTO_INET, table: table, set: map.name, count: elements.count,
                                     keyLength: lengths.key, keyEndLength: lengths.keyEnd, dataLength: lengths.data) { i, part, out in
                    switch part {
                    case .key: map.appendWire(elements[i], .key, to: &out)
                    case .keyEnd: map.appendWire(elements[i], .keyEnd, to: &out)
                    case .data: map.appendWire(elements[i], .data, to: &out)
                    }
                }
            }

        }
    }

    /// Opens an nftables socket here (this thread's namespace), sends the batch and waits for
    /// every acknowledgement.
    public static func load(table: String, maps: [NftMap], step: String = "load map elements") throws {
        let socket = try NftablesSocket()
        defer { socket.close() }
        var b = socket.makeBatch()
        try batch(table: table, maps: maps, into: &b)
        try socket.commit(b, step: step)
    }
}
