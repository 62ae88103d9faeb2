import NIOCore
import TernCodec
import Testing

@testable import TernBroker
@testable import TernBrokerCore

/// When a connection's read burst starts the store's commit. Its packets' changes normally share
/// one commit, started when the burst ends. Deliveries stored for clients that are away start it
/// sooner: no acknowledgement can spare their rows, and a publisher with at most Receive Maximum
/// messages in flight (MQTT 5.0 §4.9) waits for that commit before it sends more.
@Suite("Commits of a read burst")
struct BurstCommitTests {
    let helpers = OrderedDeliveryTests()

    /// A broker with a manual store, a stored session "s" subscribed to "t" at QoS 1 (connected
    /// or away), and a connected publisher, with everything so far committed.
    func setUp(subscriberAway: Bool) throws -> (ManualStore, EmbeddedConnection, EmbeddedConnection) {
        let (broker, store) = try helpers.makeStoredBroker()
        let subscriber = try EmbeddedConnection(broker, id: 1)
        let publisher = try EmbeddedConnection(broker, id: 2)
        try helpers.connect(subscriber, "s", expiry: 3600)
        try helpers.subscribe(subscriber, "t", qos: .atLeastOnce)
        if subscriberAway { try subscriber.receive(.disconnect(Disconnect())) }
        try helpers.connect(publisher, "p")
        store.commit(upTo: store.lastTicket)
        return (store, subscriber, publisher)
    }

    @Test("deliveries queued for an absent client start the commit after 4 of them, before the burst ends")
    func absentClientStartsCommitEarly() throws {
        let (store, _, publisher) = try setUp(subscriberAway: true)
        let started = store.commitsStarted
        for id in 1...3 {
            try publisher.receive(helpers.publish("m\(id)", qos: .atLeastOnce, id: UInt16(id)), endBurst: false)
        }
        #expect(store.commitsStarted == started)
        try publisher.receive(helpers.publish("m4", qos: .atLeastOnce, id: 4), endBurst: false)
        #expect(store.commitsStarted == started + 1)
        for id in 5...7 {
            try publisher.receive(helpers.publish("m\(id)", qos: .atLeastOnce, id: UInt16(id)), endBurst: false)
        }
        #expect(store.commitsStarted == started + 1)
        // The rest of the burst commits when it ends, and nothing is acknowledged before its commit.
        publisher.endBurst()
        #expect(store.commitsStarted == started + 2)
        #expect(try publisher.sent().isEmpty)
        store.commit(upTo: store.lastTicket)
        let acknowledged = try publisher.sent().compactMap { packet -> UInt16? in
            if case .puback(let ack) = packet { ack.packetIdentifier } else { nil }
        }
        #expect(acknowledged == Array(1...7))
    }

    @Test("deliveries to a connected client start no commit before the burst ends")
    func connectedClientCommitsAtEnd() throws {
        let (store, subscriber, publisher) = try setUp(subscriberAway: false)
        _ = try subscriber.sent()
        let started = store.commitsStarted
        for id in 1...8 {
            try publisher.receive(helpers.publish("m\(id)", qos: .atLeastOnce, id: UInt16(id)), endBurst: false)
        }
        #expect(store.commitsStarted == started)
        publisher.endBurst()
        #expect(store.commitsStarted > started)
    }
}
