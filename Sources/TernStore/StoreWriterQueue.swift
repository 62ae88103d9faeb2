import Foundation
public import TernBrokerCore

/// The changes waiting for a store's writer thread, and the ticket of the last one.
///
/// Written by the broker's event loops and drained by the writer, which takes everything that
/// waits as one batch (group commit); an `NSCondition` lets the writer sleep until there is work.
public final class StoreWriterQueue: Sendable {
    private struct State {
        var pending: [StoreChange] = []
        var lastTicket: UInt64 = 0
        var firstPendingAt: ContinuousClock.Instant?
        /// Whether a commit of `pending` was asked for, or only queued (``append(_:wakingWriter:)``).
        var commitAsked = false
        var stopping = false
        var stopped = false
    }

    /// How long queued changes wait for the ``wakeWriter()`` that was put off: a safety net, so
    /// that a caller that never asks costs a moment, not a hang. Read bursts ask within
    /// microseconds.
    private let unaskedCommitDelay: Duration
    /// How often an idle writer looks for changes queued without a commit asked for. Queuing them
    /// does not wake it (that would cost a wake-up per read burst, the commit being asked for at
    /// its end), so a caller that never asks waits up to this long plus the delay.
    private static let idleRecheck: Duration = .milliseconds(100)

    public init(unaskedCommitDelay: Duration = .milliseconds(1)) {
        self.unaskedCommitDelay = unaskedCommitDelay
    }

    // `condition` guards `state`: every access below holds it (lock/unlock or wait). NSCondition
    // is thread-safe; the box only exists because Mutex has no condition variable.
    private let condition = NSCondition()
    private nonisolated(unsafe) var state = State()

    /// Queues `changes`; with `wakingWriter`, asks for a commit of everything queued.
    /// - Returns: the ticket of the last change.
    public func append(_ changes: [StoreChange], wakingWriter: Bool) -> UInt64 {
        condition.lock()
        defer { condition.unlock() }
        if state.pending.isEmpty {
            state.firstPendingAt = .now
            state.pending = changes
        } else {
            state.pending += changes
        }
        state.lastTicket += UInt64(changes.count)
        // Nothing queued (an empty submission, asking only for the last ticket): nothing to
        // commit, and no request left standing that would swallow the next one.
        if wakingWriter, !state.pending.isEmpty {
            state.commitAsked = true
            condition.signal()
        }
        return state.lastTicket
    }

    /// Asks for a commit of the changes queued without one.
    public func wakeWriter() {
        condition.lock()
        defer { condition.unlock() }
        guard !state.commitAsked, !state.pending.isEmpty else { return }
        state.commitAsked = true
        condition.signal()
    }

    /// Waits for changes and hands them over with the ticket of the last one; `nil` once stopped
    /// and drained. With an interval, waits until the oldest change is that old, or `changes`
    /// changes wait, or the store is closing.
    public func next(waitingUpTo interval: Duration?, orChanges limit: Int) -> ([StoreChange], UInt64)? {
        condition.lock()
        defer { condition.unlock() }
        while true {
            if state.pending.isEmpty {
                if state.stopping { return nil }
                _ = condition.wait(until: Self.date(in: Self.idleRecheck))
                continue
            }
            if interval == nil, !state.commitAsked, !state.stopping {
                // Counted from the oldest change, however often the writer wakes meanwhile.
                let due = (state.firstPendingAt ?? .now) + unaskedCommitDelay
                if ContinuousClock.now >= due || !condition.wait(until: Self.date(in: due - .now)) {
                    state.commitAsked = true
                }
                continue
            }
            if let interval, !state.stopping, limit <= 0 || state.pending.count < limit,
                let first = state.firstPendingAt, ContinuousClock.now < first + interval
            {
                _ = condition.wait(until: Self.date(in: first + interval - .now))
                continue
            }
            let batch = state.pending
            state.pending = []
            state.firstPendingAt = nil
            state.commitAsked = false
            return (batch, state.lastTicket)
        }
    }

    /// The wall-clock moment `duration` from now, as `NSCondition` takes it.
    private static func date(in duration: Duration) -> Date {
        let parts = duration.components
        return Date(timeIntervalSinceNow: Double(parts.seconds) + Double(parts.attoseconds) / 1e18)
    }

    /// Whether changes wait for the writer.
    public var hasPending: Bool {
        condition.lock()
        defer { condition.unlock() }
        return !state.pending.isEmpty
    }

    /// Lets the writer take what is queued and then end.
    public func stop() {
        condition.lock()
        state.stopping = true
        condition.broadcast()
        condition.unlock()
    }

    /// Called by the writer when it has ended.
    public func markStopped() {
        condition.lock()
        state.stopped = true
        condition.broadcast()
        condition.unlock()
    }

    /// Waits until the writer has ended.
    public func waitUntilStopped() {
        condition.lock()
        while !state.stopped { condition.wait() }
        condition.unlock()
    }

    /// Whether ``stop()`` was called.
    public var isStopping: Bool {
        condition.lock()
        defer { condition.unlock() }
        return state.stopping
    }
}
