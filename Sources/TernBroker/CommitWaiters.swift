import Synchronization
import TernBrokerCore

/// The last store commit, and the connections whose queues wait for a later one.
///
/// A connection that finds its queue blocked registers here; the commit that reaches its ticket
/// wakes it. The commit and the registration take the same lock, so no wake-up is lost.
final class CommitWaiters: Sendable {
    private struct State {
        var committed: UInt64 = 0
        var waiters: [ConnectionID: (ticket: UInt64, handle: MQTTBroker.Handle)] = [:]
        /// Tasks waiting for a commit (``waitUntilCommitted(_:)``).
        var tasks: [(ticket: UInt64, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let state = Mutex(State())
    /// The last committed ticket, read without the lock by connections taking from their queue.
    private let committedTicket = Atomic<UInt64>(0)

    var committed: UInt64 { committedTicket.load(ordering: .acquiring) }

    /// Registers `handle` to be woken when `ticket` is committed.
    /// - Returns: false when it already is (take from the queue again instead).
    func wait(_ id: ConnectionID, for ticket: UInt64, handle: MQTTBroker.Handle) -> Bool {
        state.withLock { state in
            guard state.committed < ticket else { return false }
            state.waiters[id] = (ticket, handle)
            return true
        }
    }

    /// Returns once `ticket` is committed.
    func waitUntilCommitted(_ ticket: UInt64) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state in
                guard state.committed < ticket else { return true }
                state.tasks.append((ticket, continuation))
                return false
            }
            if done { continuation.resume() }
        }
    }

    /// Records a commit and returns the connections it unblocks.
    func commit(upTo ticket: UInt64) -> [MQTTBroker.Handle] {
        let (handles, tasks) = state.withLock { state -> ([MQTTBroker.Handle], [CheckedContinuation<Void, Never>]) in
            state.committed = max(state.committed, ticket)
            committedTicket.store(state.committed, ordering: .releasing)
            var tasks: [CheckedContinuation<Void, Never>] = []
            if !state.tasks.isEmpty {
                let committed = state.committed
                tasks = state.tasks.filter { $0.ticket <= committed }.map(\.continuation)
                state.tasks.removeAll { $0.ticket <= committed }
            }
            return (wokenConnections(&state), tasks)
        }
        for task in tasks { task.resume() }
        return handles
    }

    private func wokenConnections(_ state: inout State) -> [MQTTBroker.Handle] {
        guard !state.waiters.isEmpty else { return [] }
        var woken: [MQTTBroker.Handle] = []
        for (id, waiter) in state.waiters where waiter.ticket <= state.committed {
            woken.append(waiter.handle)
            state.waiters[id] = nil
        }
        return woken
    }

    func forget(_ id: ConnectionID) {
        state.withLock { _ = $0.waiters.removeValue(forKey: id) }
    }
}
