import Foundation
import NIOCore
import Synchronization
import TernBrokerTesting
import TernCodec
import Testing

@testable import TernBrokerCore

/// A cluster node that takes a session from the store while its other event loops publish: the
/// session's subscriptions must route without a gap, or a message acknowledged to its publisher
/// in that gap reaches neither the session nor the store (MQTT 5.0 §4.5: a server delivers
/// every matching message to a session's subscriptions; §4.6 ordering relies on the same).
@Suite("Cluster takeover keeps routing")
struct ClusterTakeoverRoutingTests {
    /// What the matching thread and the taking loop tell each other.
    final class Progress: Sendable {
        let finished = Atomic<Bool>(false)
        let matches = Atomic<Int>(0)
    }

    @Test("a session taken from the store is matched by every PUBLISH on another loop throughout the handover")
    func noGapWhileTaken() async throws {
        let shared = BrokerShared(clustered: true)
        let filter = try TopicFilter("cc/#")
        let subscription = SessionSubscription(filter: filter, options: .init(qos: .exactlyOnce), identifier: nil)
        // What every node knows of a session another node holds: its subscriptions, from the store.
        _ = shared.directory.remoteReference("sub")
        shared.applyRemoteSubscriptions(clientID: "sub", sessionKey: 1, subscriptions: [subscription])
        let stored = StoredSession(
            header: StoredSessionHeader(
                key: 1,
                clientID: "sub",
                protocolVersion: .v5,
                expiryInterval: 600,
                expiresAt: nil,
                attached: true
            ),
            subscriptions: [subscription]
        )

        // Another event loop, publishing to the topic as fast as it can: a thread of its own, so
        // that it runs beside the handovers however busy the test's thread pool is.
        let progress = Progress()
        let (started, start) = AsyncStream<Void>.makeStream()
        let (done, finish) = AsyncStream<Int>.makeStream()
        Thread.detachNewThread {
            let topic = ByteBuffer(string: "cc/1/2")
            var missed = 0
            start.yield()
            start.finish()
            while !progress.finished.load(ordering: .acquiring) {
                if shared.subscriptions.matchSet(topic).isEmpty { missed += 1 }
                progress.matches.add(1, ordering: .relaxed)
            }
            finish.yield(missed)
            finish.finish()
        }
        for await _ in started { break }
        var state = BrokerState(now: t0, shared: shared, shard: 0)
        // The session taken from the store, left to it again (its client went), taken again...
        // until the other thread has matched a good many times meanwhile.
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(5))
        let first = progress.matches.load(ordering: .relaxed)
        var rounds = 0
        while rounds < 1_000 || progress.matches.load(ordering: .relaxed) - first < 20_000, clock.now < deadline {
            _ = state.handover(from: stored, messages: [:], now: t0)
            shared.keepAsRemote("sub", subscriptions: [subscription])
            rounds += 1
        }
        let matched = progress.matches.load(ordering: .relaxed) - first
        progress.finished.store(true, ordering: .releasing)
        var missed = 0
        for await count in done { missed = count }
        #expect(matched > 0, "the other thread never matched during the handovers")
        #expect(missed == 0, "\(missed) of \(matched) matches found no subscription over \(rounds) handovers")
    }
}
