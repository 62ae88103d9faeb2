import Foundation
import GRDB
import NIOCore
import TernBrokerTesting
import TernCodec
import TernStore
import TernStoreSQLite
import Testing

@testable import TernBrokerCore

/// ACL rules (Mosquitto's `acl_file`) applied to what a store brought back.
@Suite("Access control of restored sessions")
struct RestoredAccessTests {
    @Test(
        "restored sessions are re-checked at reconnect: a subscription and queued messages no longer allowed are dropped",
        arguments: StoreKind.available
    )
    func restoredSessionRechecked(kind: StoreKind) throws {
        let harness = try StoreHarness(kind)
        // Stored while everything was allowed.
        harness.run { $0.connect(conn(1), connectPacket("alice-phone", expiry: 600, username: "alice"), now: t0) }
        harness.run {
            $0.subscribe(
                conn(1),
                subscribePacket([("alice/#", .init(qos: .atLeastOnce)), ("bob/#", .init(qos: .atLeastOnce))]),
                now: t0
            )
        }
        harness.run { $0.disconnect(conn(1), Disconnect(), now: t0) }
        harness.run { $0.connect(conn(2), connectPacket("pub"), now: t0) }
        for topic in ["alice/1", "bob/1", "alice/secret/1", "alice/2"] {
            harness.run { $0.publish(conn(2), publishPacket(topic, topic, qos: .atLeastOnce, id: 1), now: t0) }
        }

        harness.accessControl = try AccessControlList(
            parsing: "user alice\ntopic readwrite alice/#\ntopic deny alice/secret/#\n",
            file: "acl"
        )
        _ = try harness.restart(now: t0)
        // Before alice is back her identity is unknown: messages are queued, judged at reconnect.
        let actions = harness.run {
            $0.connect(
                conn(3),
                connectPacket("alice-phone", cleanStart: false, expiry: 600, username: "alice"),
                now: t0
            )
        }
        #expect(actions.connack?.sessionPresent == true)
        #expect(actions.publishes(to: conn(3)).map(\.text) == ["alice/1", "alice/2"])
        #expect(harness.state.sessions["alice-phone"]?.subscriptions.keys.sorted() == ["alice/#"])
        #expect(harness.state.topics.count == 1)
        let reloaded = try harness.reload()
        #expect(
            reloaded.sessions.first { $0.header.clientID == "alice-phone" }?.subscriptions.map(\.filter.string) == [
                "alice/#"
            ]
        )
    }

}
