#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A value many threads read at once and few change: readers share the lock, a writer has it
/// alone.
///
/// Written by hand because neither the standard library's `Synchronization` nor swift-nio offers
/// a reader-writer lock, and the subscription index needs one: every PUBLISH on every event loop
/// matches against it, so a mutex would make the loops take turns. On Linux the lock prefers
/// writers, so that a SUBSCRIBE is not starved by a steady stream of PUBLISH.
public final class ReadWriteLock<Value: ~Copyable>: @unchecked Sendable {
    // @unchecked Sendable: `value` is read only between `pthread_rwlock_rdlock` and `unlock`, and
    // changed only between `pthread_rwlock_wrlock` and `unlock`, so no two threads ever race on
    // it; the lock itself is heap-allocated and never moves.
    private let lock: UnsafeMutablePointer<pthread_rwlock_t>
    private var value: Value

    public init(_ value: consuming sending Value) {
        self.value = value
        lock = UnsafeMutablePointer.allocate(capacity: 1)
        #if canImport(Glibc)
            var attributes = pthread_rwlockattr_t()
            pthread_rwlockattr_init(&attributes)
            pthread_rwlockattr_setkind_np(&attributes, Int32(PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP))
            let status = pthread_rwlock_init(lock, &attributes)
            pthread_rwlockattr_destroy(&attributes)
        #else
            let status = pthread_rwlock_init(lock, nil)
        #endif
        precondition(status == 0, "pthread_rwlock_init failed: \(status)")
    }

    deinit {
        pthread_rwlock_destroy(lock)
        lock.deallocate()
    }

    /// Runs `body` with shared access: other readers may run at the same time, writers wait.
    public func withReadLock<Result: ~Copyable, Failure: Error>(
        _ body: (borrowing Value) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        pthread_rwlock_rdlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body(value)
    }

    /// Runs `body` with exclusive access.
    public func withWriteLock<Result: ~Copyable, Failure: Error>(
        _ body: (inout Value) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        pthread_rwlock_wrlock(lock)
        defer { pthread_rwlock_unlock(lock) }
        return try body(&value)
    }
}
