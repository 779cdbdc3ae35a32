import Glibc

/// A plain OS thread that runs one closure. Namespace work needs its own thread: `setns` and
/// `unshare(CLONE_NEWNET)` change only the calling thread, and a thread that dies takes its
/// namespace membership with it, so nothing has to be switched back.
public final class OSThread {
    private final class Box {
        let body: () -> Void
        init(_ body: @escaping () -> Void) { self.body = body }
    }

    private var tid = pthread_t()
    private var joined = false

    /// Starts `body` on a new thread. Call `join()` exactly once.
    public init(_ body: @escaping () -> Void) {
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        let rc = pthread_create(&tid, nil, { raw in
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()
            box.body()
            return nil
        }, box)
        precondition(rc == 0, "pthread_create failed: \(rc)")
    }

    public func join() {
        guard !joined else { return }
        joined = true
        pthread_join(tid, nil)
    }

    /// Runs `body` on a fresh thread and waits for it; errors and results cross back.
    public static func run<T>(_ body: @escaping () throws -> T) throws -> T {
        var result: Result<T, Error>?
        let t = OSThread { result = Result { try body() } }
        t.join()
        return try result!.get()
    }

    /// Runs each body on its own thread, all at once, and returns their results in order.
    public static func all<T>(_ bodies: [() throws -> T]) -> [Result<T, Error>] {
        let slots = bodies.map { _ in ResultSlot<T>() }
        let threads = zip(bodies, slots).map { body, slot in OSThread { slot.value = Result { try body() } } }
        threads.forEach { $0.join() }
        return slots.map { $0.value! }
    }
}

private final class ResultSlot<T> { var value: Result<T, Error>? }
