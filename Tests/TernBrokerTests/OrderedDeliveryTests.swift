import DequeModule
import NIOCore
import TernCodec
import Testing

@testable import TernBroker
@testable import TernBrokerCore

/// [MQTT-4.6.0-6] (MQTT 5.0 §4.6, 3.1.1 §4.6): PUBLISH packets for a topic and QoS reach each
/// subscriber in the order the publisher sent them. Each connection here is an `EmbeddedChannel`
/// with an event loop of its own, so the interleavings that race on real loops are written out.
@Suite("Ordered delivery")
struct OrderedDeliveryTests {
    func makeBroker(_ configure: (inout BrokerOptions) -> Void = { _ in }) -> MQTTBroker {
        var options = BrokerOptions()
        options.listeners = [.init(host: "127.0.0.1", port: 0)]
        options.sysInterval = 0
        configure(&options)
        return MQTTBroker(options: options)
    }

    /// A broker with a store whose commits the test makes, started as `run()` would start it.
    func makeStoredBroker() throws -> (MQTTBroker, ManualStore) {
        let store = ManualStore()
        let broker = makeBroker { $0.store = store }
        try broker.restore(from: store)
        return (broker, store)
    }

    func connect(_ client: EmbeddedConnection, _ id: String, receiveMaximum: UInt16? = nil, expiry: UInt32? = nil)
        throws
    {
        var properties = Properties()
        properties.receiveMaximum = receiveMaximum
        properties.sessionExpiryInterval = expiry
        try client.receive(.connect(Connect(clientIdentifier: id, cleanStart: expiry == nil, properties: properties)))
        guard case .connack(let ack)? = try client.sent().first, ack.reasonCode == .success else {
            throw UnexpectedOutcome("no CONNACK for \(id)")
        }
    }

    func subscribe(_ client: EmbeddedConnection, _ filter: String, qos: QoS) throws {
        try client.receive(
            .subscribe(
                Subscribe(
                    packetIdentifier: 1,
                    subscriptions: [.init(filter: try TopicFilter(filter), options: SubscriptionOptions(qos: qos))]
                )
            )
        )
    }

    func publish(_ payload: String, qos: QoS, id: UInt16) -> MQTTPacket {
        .publish(
            Publish(
                topic: try! TopicName("t"),
                payload: ByteBuffer(string: payload),
                qos: qos,
                packetIdentifier: qos == .atMostOnce ? 0 : id
            )
        )
    }

    @Test("a PUBACK that frees the window during the publisher's burst does not let a queued message pass")
    func pubackRacingPublisherBurst() throws {
        let broker = makeBroker()
        let subscriber = try EmbeddedConnection(broker, id: 1)
        let publisher = try EmbeddedConnection(broker, id: 2)
        try connect(subscriber, "s", receiveMaximum: 2)
        try subscribe(subscriber, "t", qos: .atLeastOnce)
        _ = try subscriber.sent()
        try connect(publisher, "p")

        try publisher.receive(publish("m0", qos: .atLeastOnce, id: 1))
        let first = try subscriber.sentPublishes()
        #expect(first.map(\.text) == ["m0"])

        // One read burst of the publisher: m1 fills the subscriber's window of 2, m2 is queued.
        try publisher.receive(publish("m1", qos: .atLeastOnce, id: 2), endBurst: false)
        try publisher.receive(publish("m2", qos: .atLeastOnce, id: 3), endBurst: false)
        // Before the burst ends, the subscriber acknowledges m0 on its own loop: m2 may now go,
        // but only after m1.
        try subscriber.receive(.puback(PublishAcknowledgement(packetIdentifier: first[0].packetIdentifier)))
        publisher.endBurst()

        #expect(try subscriber.sentPublishes().map(\.text) == ["m1", "m2"])
    }

    @Test("an action held for a commit holds back what follows it on that connection, and nothing else")
    func heldActionBlocksOnlyItsConnection() throws {
        let (broker, store) = try makeStoredBroker()
        let subscriber = try EmbeddedConnection(broker, id: 1)
        let publisher = try EmbeddedConnection(broker, id: 2)
        let bystander = try EmbeddedConnection(broker, id: 3)
        try connect(subscriber, "s", expiry: 3600)  // a stored session: its deliveries are written
        try subscribe(subscriber, "t", qos: .exactlyOnce)
        try connect(publisher, "p")
        try connect(bystander, "b")
        try subscribe(bystander, "t", qos: .atMostOnce)
        store.commit(upTo: store.lastTicket)
        _ = try subscriber.sent()
        _ = try bystander.sent()

        // m1 at QoS 2 is held for its commit (§4.3.3: the state that remembers it must be on disk
        // first); m2 at QoS 1 needs no commit of its own but comes after m1.
        try publisher.receive(publish("m1", qos: .exactlyOnce, id: 1))
        let m1Ticket = store.lastTicket
        try publisher.receive(publish("m2", qos: .atLeastOnce, id: 2))
        let m2Ticket = store.lastTicket
        #expect(m2Ticket > m1Ticket)
        #expect(try subscriber.sent().isEmpty)
        #expect(try publisher.sent().isEmpty)  // PUBREC and PUBACK promise the store: they wait
        // The bystander's session is not stored: nothing it is sent waits.
        #expect(try bystander.sentPublishes().map(\.text) == ["m1", "m2"])

        store.commit(upTo: m1Ticket)
        #expect(try subscriber.sentPublishes().map(\.text) == ["m1", "m2"])
        #expect(try publisher.sent() == [.pubrec(PublishAcknowledgement(packetIdentifier: 1))])

        // A newer message produced while the publisher's PUBACK still waits goes out to the
        // subscriber at once: the publisher's queue holds only the publisher's packets.
        try publisher.receive(publish("m3", qos: .atLeastOnce, id: 3))
        #expect(try subscriber.sentPublishes().map(\.text) == ["m3"])
        #expect(try publisher.sent().isEmpty)

        store.commit(upTo: store.lastTicket)
        #expect(
            try publisher.sent() == [
                .puback(PublishAcknowledgement(packetIdentifier: 2)),
                .puback(PublishAcknowledgement(packetIdentifier: 3)),
            ]
        )
    }

    @Test("a reply the connection makes itself (PINGRESP) waits behind what the state queued before it")
    func replyBehindHeldActions() throws {
        let (broker, store) = try makeStoredBroker()
        let publisher = try EmbeddedConnection(broker, id: 1)
        try connect(publisher, "p", expiry: 3600)
        store.commit(upTo: store.lastTicket)
        try subscribe(publisher, "own", qos: .atLeastOnce)  // a stored subscription: SUBACK waits
        try publisher.receive(.pingreq)
        #expect(try publisher.sent().isEmpty)
        store.commit(upTo: store.lastTicket)
        let sent = try publisher.sent()
        #expect(sent.count == 2)
        guard sent.count == 2, case .suback = sent[0] else {
            Issue.record("expected SUBACK then PINGRESP, got \(sent)")
            return
        }
        #expect(sent[1] == .pingresp)
    }

    @Test("a large payload reaches every subscriber whole, shared rather than copied, in order with small ones")
    func largePayloadToSeveralSubscribers() throws {
        let broker = makeBroker()
        let first = try EmbeddedConnection(broker, id: 1)
        let second = try EmbeddedConnection(broker, id: 2)
        let publisher = try EmbeddedConnection(broker, id: 3)
        for (client, name) in [(first, "a"), (second, "b")] {
            try connect(client, name)
            try subscribe(client, "t", qos: .atLeastOnce)
            _ = try client.sent()
        }
        try connect(publisher, "p")
        let large = String(repeating: "x", count: MQTTConnectionHandler.sharedPayloadSize * 3)
        try publisher.receive(publish("small-1", qos: .atLeastOnce, id: 1), endBurst: false)
        try publisher.receive(publish(large, qos: .atLeastOnce, id: 2), endBurst: false)
        try publisher.receive(publish("small-2", qos: .atMostOnce, id: 0))
        for client in [first, second] {
            #expect(try client.sentPublishes().map(\.text) == ["small-1", large, "small-2"])
        }
    }

    @Test("while the socket is not writable: QoS 0 dropped and counted, QoS 1 queued, then drained in order")
    func writabilityThroughTheHandler() throws {
        let broker = makeBroker()
        let slow = try EmbeddedConnection(broker, id: 1)
        let fast = try EmbeddedConnection(broker, id: 2)
        let publisher = try EmbeddedConnection(broker, id: 3)
        for (client, name) in [(slow, "slow"), (fast, "fast")] {
            try connect(client, name)
            try subscribe(client, "t", qos: .atLeastOnce)
            _ = try client.sent()
        }
        try connect(publisher, "p")
        slow.setWritable(false)
        try publisher.receive(publish("a", qos: .atMostOnce, id: 0))
        try publisher.receive(publish("b", qos: .atLeastOnce, id: 1))
        try publisher.receive(publish("c", qos: .atMostOnce, id: 0))
        try publisher.receive(publish("d", qos: .atLeastOnce, id: 2))
        #expect(try slow.sent().isEmpty)
        #expect(try fast.sentPublishes().map(\.text) == ["a", "b", "c", "d"])
        #expect(broker.statistics.publishMessagesDroppedBackpressure == 2)
        slow.setWritable(true)
        #expect(try slow.sentPublishes().map(\.text) == ["b", "d"])
    }
}

/// What a test found instead of what it expected.
struct UnexpectedOutcome: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

@Suite("Outbound queue")
struct OutboundQueueTests {
    let a = BrokerAction.send(ConnectionID(1), .pingresp)
    let b = BrokerAction.close(ConnectionID(1))

    @Test("without held actions a take empties the queue; one wake-up per take")
    func plain() {
        var queue = OutboundQueue()
        let firstWakes = queue.append(a, after: 0)
        let secondWakes = queue.append(b, after: 0)
        #expect(firstWakes)
        #expect(!secondWakes)
        let (ready, blocked) = queue.take(committed: 0)
        #expect(ready.map(\.action) == [a, b])
        #expect(blocked == nil)
        #expect(queue.isEmpty)
        let wakesAgain = queue.append(a, after: 0)
        #expect(wakesAgain)
    }

    @Test("a held action stops the take at itself until its ticket is committed")
    func held() {
        var queue = OutboundQueue()
        _ = queue.append(a, after: 0)
        _ = queue.append(b, after: 5)
        _ = queue.append(a, after: 0)
        var taken = queue.take(committed: 4)
        #expect(taken.ready.map(\.action) == [a])
        #expect(taken.blockedOn == 5)
        taken = queue.take(committed: 5)
        #expect(taken.ready.map(\.action) == [b, a])
        #expect(taken.blockedOn == nil)
        #expect(queue.isEmpty)
    }
}
