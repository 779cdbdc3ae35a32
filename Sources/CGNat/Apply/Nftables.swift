import Glibc

/// libnftables, the nftables project's own library (what `nft` itself uses), loaded at run time.
/// Loading it lazily keeps it and its dependencies off the start-up path of commands that do not
/// need it, and turns a missing library into a clear error instead of a loader failure.
public final class Nftables {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    private typealias CtxNew = @convention(c) (UInt32) -> OpaquePointer?
    private typealias CtxFree = @convention(c) (OpaquePointer?) -> Void
    private typealias CtxInt = @convention(c) (OpaquePointer?) -> Int32
    private typealias CtxBuffer = @convention(c) (OpaquePointer?) -> UnsafePointer<CChar>?
    private typealias RunBuffer = @convention(c) (OpaquePointer?, UnsafePointer<CChar>?) -> Int32

    private struct Library {
        let new: CtxNew, free: CtxFree, bufferOutput: CtxInt, bufferError: CtxInt
        let output: CtxBuffer, error: CtxBuffer, run: RunBuffer
    }

    nonisolated(unsafe) private static var library: Library?

    private static func load() throws -> Library {
        if let lib = library { return lib }
        guard let h = dlopen("libnftables.so.1", RTLD_NOW) else {
            throw Failure(description: "libnftables.so.1 not found: install nftables (apt-get install nftables)")
        }
        func sym<T>(_ name: String, _: T.Type) throws -> T {
            guard let p = dlsym(h, name) else { throw Failure(description: "libnftables lacks \(name): nftables too old?") }
            return unsafeBitCast(p, to: T.self)
        }
        let lib = Library(
            new: try sym("nft_ctx_new", CtxNew.self), free: try sym("nft_ctx_free", CtxFree.self),
            bufferOutput: try sym("nft_ctx_buffer_output", CtxInt.self),
            bufferError: try sym("nft_ctx_buffer_error", CtxInt.self),
            output: try sym("nft_ctx_get_output_buffer", CtxBuffer.self),
            error: try sym("nft_ctx_get_error_buffer", CtxBuffer.self),
            run: try sym("nft_run_cmd_from_buffer", RunBuffer.self))
        library = lib
        return lib
    }

    private let lib: Library
    private let ctx: OpaquePointer

    /// nft_ctx_output_set_flags bits (nftables/libnftables.h).
    public struct OutputFlags: OptionSet, Sendable {
        public let rawValue: UInt32
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// `nft -a`: print each rule's and chain's handle as `# handle N`.
        public static let handle = OutputFlags(rawValue: 1 << 3)
    }

    /// Creates a context. Its netlink socket opens here, in the calling thread's network
    /// namespace: create it on a thread that has entered the target namespace.
    public init() throws {
        lib = try Nftables.load()
        guard let c = lib.new(0) else { throw Failure(description: "nft_ctx_new failed") }
        ctx = c
        _ = lib.bufferOutput(ctx)
        _ = lib.bufferError(ctx)
    }

    /// A context whose listings carry extra output (`handles`: `nft -a list ...`).
    public convenience init(output flags: OutputFlags) throws {
        try self.init()
        guard let p = dlsym(dlopen("libnftables.so.1", RTLD_NOW | RTLD_NOLOAD), "nft_ctx_output_set_flags") else {
            throw Failure(description: "libnftables lacks nft_ctx_output_set_flags: nftables too old?")
        }
        typealias SetFlags = @convention(c) (OpaquePointer?, UInt32) -> Void
        unsafeBitCast(p, to: SetFlags.self)(ctx, flags.rawValue)
    }

    deinit { lib.free(ctx) }

    /// Runs nft commands (a whole ruleset file is one transaction) and returns nft's output.
    @discardableResult
    public func run(_ commands: String) throws -> String {
        let rc = lib.run(ctx, commands)
        let out = lib.output(ctx).map { String(cString: $0) } ?? ""
        if rc != 0 {
            var err = lib.error(ctx).map { String(cString: $0) } ?? ""
            while err.last?.isWhitespace == true { err.removeLast() }
            throw Failure(description: err.isEmpty ? "nft failed (\(rc))" : err)
        }
        return out
    }
}
