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
    /// Set by the taking loop when it is done, read by the matching one.
    final class Finished: Sendable {
        let value = Atomic<Bool>(false)
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

        let finished = Finished()
        // Another event loop, publishing to the topic as fast as it can.
        let matcher = Task.detached { () -> (matched: Int, missed: Int) in
            let topic = ByteBuffer(string: "cc/1/2")
            var matched = 0
            var missed = 0
            while !finished.value.load(ordering: .acquiring) {
                if shared.subscriptions.matchSet(topic).isEmpty { missed += 1 } else { matched += 1 }
            }
            return (matched, missed)
        }
        var state = BrokerState(now: t0, shared: shared, shard: 0)
        // The session taken from the store, left to it again (its client went), taken again...
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: .seconds(2))
        var rounds = 0
        while rounds < 20_000, clock.now < deadline {
            _ = state.handover(from: stored, messages: [:], now: t0)
            shared.keepAsRemote("sub", subscriptions: [subscription])
            rounds += 1
        }
        finished.value.store(true, ordering: .releasing)
        let (matched, missed) = await matcher.value
        #expect(matched > 0, "the other loop never matched")
        #expect(missed == 0, "\(missed) of \(matched + missed) matches found no subscription over \(rounds) handovers")
    }
}
