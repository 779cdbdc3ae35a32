/// One destination of the NAT mapping log beside standard output: an IPFIX collector, syslog,
/// the local store. `cgnat events` hands every item to every output on the netlink reader's
/// thread, so an output never blocks there: it queues (bounded) and sends from a thread of its
/// own, and counts what it had to drop instead of slowing the reader (issue 10).
public protocol EventOutput: AnyObject {
    /// What the summary and the drop report call it, e.g. `ipfix 127.0.0.1:4739`.
    var name: String { get }
    /// Called on the reader's thread for every item, in order. Must not block.
    func submit(_ item: EventStream.Item)
    /// Called after each batch the socket handed over: a chance to send what is queued.
    func flush()
    /// Items this output could not deliver (queue full, send failed), since it started.
    var dropped: UInt64 { get }
    /// Items it delivered.
    var delivered: UInt64 { get }
    /// The stream ended: deliver what is queued (bounded wait), then release everything.
    /// `labWentDown` is true when it ended because the lab went down (the store closes the
    /// sessions still open then, their end marked as the lab going down).
    func close(labWentDown: Bool)
}
