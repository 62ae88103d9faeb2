import NIOCore
import TernCodec
import Testing

@testable import TernBroker
@testable import TernBrokerCore

/// When a publisher's QoS 1 PUBACK may leave before the store commits the copies of its message
/// (``PublishReceipt``): once every stored copy has been acknowledged by its subscriber, nothing
/// of the message is left to store, so acknowledging it loses nothing (MQTT 5.0 §4.3.2). A copy
/// that waits in a queue, and a retained message, still wait for the commit.
@Suite("PUBACKs released by their subscribers' acknowledgements")
struct EarlyAcknowledgementTests {
    let helpers = OrderedDeliveryTests()

    /// A broker with a manual store; stored session "s" subscribed to "t" (connected) and stored
    /// session "a" subscribed to "away" (its client gone); a connected publisher; all committed.
    func setUp() throws -> (ManualStore, subscriber: EmbeddedConnection, publisher: EmbeddedConnection) {
        let (broker, store) = try helpers.makeStoredBroker()
        let subscriber = try EmbeddedConnection(broker, id: 1)
        let away = try EmbeddedConnection(broker, id: 2)
        let publisher = try EmbeddedConnection(broker, id: 3)
        try helpers.connect(subscriber, "s", expiry: 3600)
        try helpers.subscribe(subscriber, "t", qos: .atLeastOnce)
        try helpers.connect(away, "a", expiry: 3600)
        try helpers.subscribe(away, "away", qos: .atLeastOnce)
        try away.receive(.disconnect(Disconnect()))
        try helpers.connect(publisher, "p")
        store.commit(upTo: store.lastTicket)
        _ = try subscriber.sent()
        return (store, subscriber, publisher)
    }

    func publish(_ topic: String, id: UInt16, retain: Bool = false) -> MQTTPacket {
        .publish(
            Publish(
                topic: try! TopicName(topic),
                payload: ByteBuffer(string: "m\(id)"),
                qos: .atLeastOnce,
                retain: retain,
                packetIdentifier: id
            )
        )
    }

    /// Publishes `packet` (QoS 1), whose one copy reaches `subscriber`, which acknowledges it;
    /// expects the publisher's PUBACK only after the commit.
    func expectPubackWaitsForCommit(
        _ packet: MQTTPacket,
        _ store: ManualStore,
        _ subscriber: EmbeddedConnection,
        _ publisher: EmbeddedConnection
    ) throws {
        guard case .publish(let publish) = packet else { throw UnexpectedOutcome("not a PUBLISH") }
        try publisher.receive(packet)
        let delivered = try subscriber.sentPublishes()
        #expect(delivered.count == 1)
        for copy in delivered {
            try subscriber.receive(.puback(PublishAcknowledgement(packetIdentifier: copy.packetIdentifier)))
        }
        #expect(try acknowledged(publisher).isEmpty)
        store.commit(upTo: store.lastTicket)
        #expect(try acknowledged(publisher) == [publish.packetIdentifier])
    }

    func acknowledged(_ connection: EmbeddedConnection) throws -> [UInt16] {
        try connection.sent().compactMap { packet -> UInt16? in
            if case .puback(let ack) = packet { ack.packetIdentifier } else { nil }
        }
    }

    @Test("the PUBACK leaves when the connected subscriber acknowledges its stored copy, before the commit")
    func acknowledgedCopyReleasesPuback() throws {
        // The manual store commits only when a test says so: here, never.
        let (_, subscriber, publisher) = try setUp()
        try publisher.receive(publish("t", id: 7))
        let delivered = try subscriber.sentPublishes()
        #expect(delivered.map(\.text) == ["m7"])
        #expect(try acknowledged(publisher).isEmpty)  // its copy is stored and not yet acknowledged
        try subscriber.receive(.puback(PublishAcknowledgement(packetIdentifier: delivered[0].packetIdentifier)))
        #expect(try acknowledged(publisher) == [7])
    }

    @Test("a copy queued for a client that is away keeps the PUBACK until the commit")
    func queuedCopyWaitsForCommit() throws {
        let (store, _, publisher) = try setUp()
        try publisher.receive(publish("away", id: 3))
        #expect(try acknowledged(publisher).isEmpty)
        store.commit(upTo: store.lastTicket)
        #expect(try acknowledged(publisher) == [3])
    }

    @Test("a message with copies both delivered and queued waits for the commit, whatever is acknowledged")
    func mixedCopiesWaitForCommit() throws {
        let (store, subscriber, publisher) = try setUp()
        // "s" also takes "away" now: one copy goes to it at once, the other waits in "a"'s queue.
        try helpers.subscribe(subscriber, "away", qos: .atLeastOnce)
        store.commit(upTo: store.lastTicket)
        _ = try subscriber.sent()
        try expectPubackWaitsForCommit(publish("away", id: 4), store, subscriber, publisher)
    }

    @Test("a retained message's PUBACK waits for the commit that stores it as retained")
    func retainedWaitsForCommit() throws {
        let (store, subscriber, publisher) = try setUp()
        try expectPubackWaitsForCommit(publish("t", id: 5, retain: true), store, subscriber, publisher)
    }

    @Test("a copy still in flight does not keep its publisher's connection alive once the publisher has gone")
    func receiptLetsConnectionGo() throws {
        let (_, subscriber, publisher) = try setUp()
        weak let handler = try publisher.channel.pipeline.syncOperations.handler(type: MQTTConnectionHandler.self)
        #expect(handler != nil)
        try publisher.receive(publish("t", id: 8))
        let delivered = try subscriber.sentPublishes()
        #expect(delivered.map(\.text) == ["m8"])
        try publisher.close()
        // The subscriber's copy, and the receipt it carries, are still in flight.
        #expect(handler == nil)
        try subscriber.receive(.puback(PublishAcknowledgement(packetIdentifier: delivered[0].packetIdentifier)))
        #expect(try subscriber.sent().isEmpty)
    }

    @Test("PUBACKs keep their order: one released early waits behind an earlier one that waits for its commit")
    func releasedPubackKeepsOrder() throws {
        let (store, subscriber, publisher) = try setUp()
        try publisher.receive(publish("away", id: 1), endBurst: false)
        try publisher.receive(publish("t", id: 2))
        let delivered = try subscriber.sentPublishes()
        #expect(delivered.map(\.text) == ["m2"])
        try subscriber.receive(.puback(PublishAcknowledgement(packetIdentifier: delivered[0].packetIdentifier)))
        #expect(try acknowledged(publisher).isEmpty)
        store.commit(upTo: store.lastTicket)
        #expect(try acknowledged(publisher) == [1, 2])
    }
}
