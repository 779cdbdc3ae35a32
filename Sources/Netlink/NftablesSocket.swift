import Glibc

/// An nftables netlink socket in the calling thread's network namespace (open it on a thread
/// that has entered the namespace): sends a batch as one transaction and reads every answer.
public final class NftablesSocket {
    public let socket: NetlinkSocket

    public init() throws {
        socket = try NetlinkSocket(protocol: 12 /* NETLINK_NETFILTER */)
    }

    public func close() { socket.close() }

    /// A batch whose sequence numbers start at this socket's next one.
    public func makeBatch() -> NftBatch { NftBatch(sequence: socket.nextSequence()) }

    /// Sends the batch (ended here if it is not yet) in one datagram and waits for an answer to
    /// each request (they carry NLM_F_ACK). The kernel checks every request, then commits all or
    /// none; a refusal throws NetlinkError naming the set, the elements of the request (and the
    /// element the kernel pointed at) and the kernel's extended-ACK message. `step` starts each
    /// error's text.
    public func commit(_ batch: NftBatch, step: String) throws {
        var batch = batch
        if !batch.isFinished { batch.end() }
        guard !batch.requests.isEmpty else { return }
        // One datagram: the send buffer must hold it (the kernel refuses a datagram larger than
        // sk_sndbuf - 32 with EMSGSIZE, and counts double what it is given). Answers are small but
        // each costs an skb of its own in the receive buffer; too many would be dropped (ENOBUFS).
        socket.setSendBuffer(Int32(clamping: batch.bytes.count + 65536))
        socket.setReceiveBuffer(Int32(clamping: max(1 << 18, batch.requests.count * 4096)))
        try socket.send(bytes: batch.bytes, step: "\(step): send batch of \(batch.bytes.count) bytes")

        var pending: [UInt32: Int] = [:]
        for (i, r) in batch.requests.enumerated() { pending[r.seq] = i }
        var failures: [NetlinkError] = []
        func handle(_ reply: NetlinkMessage) {
            guard reply.type == NL.NLMSG_ERROR, let info = reply.errorInfo else { return }
            if reply.seq == batch.beginSequence {
                // Refused as a whole: the batch itself, or the commit after every request passed.
                if info.errno != 0 {
                    failures.append(NetlinkError(step: "\(step): commit", errno: info.errno, kernelMessage: info.message, offset: info.offset))
                }
                pending.removeAll()
                return
            }
            guard let i = pending.removeValue(forKey: reply.seq), info.errno != 0 else { return }
            let r = batch.requests[i]
            var what = "\(step): add elements \(r.elements.lowerBound + 1)-\(r.elements.upperBound) to set \(r.set) of table \(r.table)"
            if let off = info.offset, let pointed = batch.describe(offset: off, in: r) { what += " (the kernel points at \(pointed))" }
            failures.append(NetlinkError(step: what, errno: info.errno, kernelMessage: info.message, offset: info.offset))
        }
        // The kernel handles the batch inside sendmsg: the answers are queued by now, but read
        // blocking until each request has its own, then whatever else came (a commit failure).
        while !pending.isEmpty {
            for reply in try socket.receive(step: "\(step): read acknowledgements")! { handle(reply) }
        }
        while let replies = try socket.receive(step: "\(step): read acknowledgements", dontWait: true) {
            replies.forEach(handle)
        }
        if let first = failures.first { throw first }
    }
}
