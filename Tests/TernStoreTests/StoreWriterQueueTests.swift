import Foundation
import TernBrokerCore
import TernStore
import Testing

/// The queue between the broker's event loops and a store's writer thread.
@Suite("Store writer queue")
struct StoreWriterQueueTests {
    /// Runs `next` on a thread of its own (it blocks) and reports what it returned.
    private static func nextBatch(of queue: StoreWriterQueue) async -> ([StoreChange], UInt64)? {
        await withCheckedContinuation { continuation in
            Thread { continuation.resume(returning: queue.next(waitingUpTo: nil, orChanges: 0)) }.start()
        }
    }

    /// Waits for the writer started on `queue` to take a batch, for `seconds` at most: a writer
    /// left waiting would hang the test, so the queue is stopped then (and the writer takes what
    /// waits as it ends).
    /// - Returns: the batch, and whether the time ran out first.
    private static func batch(
        _ batch: Task<([StoreChange], UInt64)?, Never>,
        of queue: StoreWriterQueue,
        within seconds: Int
    ) async -> (taken: ([StoreChange], UInt64)?, timedOut: Bool) {
        let watchdog = Task { () -> Bool in
            guard (try? await Task.sleep(for: .seconds(seconds))) != nil else { return false }
            queue.stop()
            return true
        }
        let taken = await batch.value
        watchdog.cancel()
        return (taken, await watchdog.value)
    }

    @Test(
        "An empty submission that asks for a commit (a request for the last ticket) leaves no request standing: changes queued after it are still committed when asked"
    )
    func emptySubmissionDoesNotSwallowTheNextWake() async throws {
        let queue = StoreWriterQueue()
        let ticket = queue.append([], wakingWriter: true)
        #expect(ticket == 0)
        let batch = Task { await Self.nextBatch(of: queue) }
        // The writer must be waiting for changes when they come: the thread gets a head start,
        // there being no event that says it is blocked. If it is not blocked yet, the test passes
        // without having tested anything, never the other way round.
        try await Task.sleep(for: .milliseconds(200))
        let change = StoreChange.deleteRetained(topic: "a")
        let changeTicket = queue.append([change], wakingWriter: false)
        queue.wakeWriter()
        let (taken, timedOut) = await Self.batch(batch, of: queue, within: 10)
        #expect(!timedOut, "the writer was left waiting with changes to commit")
        #expect(taken?.0 == [change])
        #expect(taken?.1 == changeTicket)
    }

    @Test(
        "Changes queued without a commit asked for, while the writer waits idle, are committed anyway after the delay"
    )
    func unaskedChangesReachAnIdleWriter() async throws {
        let queue = StoreWriterQueue(unaskedCommitDelay: .milliseconds(20))
        let batch = Task { await Self.nextBatch(of: queue) }
        // As above: the writer must be waiting idle when the change comes; a head start, there
        // being no event that says so.
        try await Task.sleep(for: .milliseconds(200))
        let change = StoreChange.deleteRetained(topic: "a")
        let changeTicket = queue.append([change], wakingWriter: false)
        // No wakeWriter(): the caller never asks.
        let (taken, timedOut) = await Self.batch(batch, of: queue, within: 5)
        #expect(!timedOut, "the idle writer never took the change queued without a commit")
        #expect(taken?.0 == [change])
        #expect(taken?.1 == changeTicket)
    }
}
