import NIOCore
import TernCodec
import TernStore
import Testing

@testable import TernBroker
@testable import TernBrokerCore

/// Sessions held by one event loop's shard and reached from, or moved to, another (MQTT 5.0 §4.1
/// session state, §3.1.4 takeover, §4.4 redelivery, §4.6 order, §4.8.2 shared subscriptions).
/// Each `EmbeddedConnection` has an event loop of its own, so each is served by a shard of its
/// own: every delivery between them goes through a session's mailbox, and every reconnection
/// moves the session from one shard to another.
@Suite("Sessions across shards")
struct ShardHandoverTests {
    let helper = OrderedDeliveryTests()

    func connect(
        _ client: EmbeddedConnection,
        _ id: String,
        cleanStart: Bool = true,
        expiry: UInt32? = nil,
        receiveMaximum: UInt16? = nil,
        endBurst: Bool = true
    ) throws {
        var properties = Properties()
        properties.receiveMaximum = receiveMaximum
        properties.sessionExpiryInterval = expiry
        try client.receive(
            .connect(Connect(clientIdentifier: id, cleanStart: cleanStart, properties: properties)),
            endBurst: endBurst
        )
    }

    func connack(_ packets: [MQTTPacket]) -> ConnAck? {
        for packet in packets { if case .connack(let ack) = packet { return ack } }
        return nil
    }

    @Test("§4.4 a session moves to the loop its client comes back on: DUP=1 with the same ids, then the queue in order")
    func sessionMovesWithItsQueue() throws {
        let broker = helper.makeBroker()
        let first = try EmbeddedConnection(broker, id: 1)
        let publisher = try EmbeddedConnection(broker, id: 2)
        try connect(first, "s", cleanStart: true, expiry: 3600, receiveMaximum: 2)
        try helper.subscribe(first, "t", qos: .atLeastOnce)
        _ = try first.sent()
        try helper.connect(publisher, "p")
        for n in 1...5 { try publisher.receive(helper.publish("m\(n)", qos: .atLeastOnce, id: UInt16(n))) }
        let inFlight = try first.sentPublishes()
        #expect(inFlight.map(\.text) == ["m1", "m2"])
        try first.close()
        // Routed to the detached session on the first loop's shard.
        for n in 6...7 { try publisher.receive(helper.publish("m\(n)", qos: .atLeastOnce, id: UInt16(n))) }

        let second = try EmbeddedConnection(broker, id: 3)
        try connect(second, "s", cleanStart: false, expiry: 3600, receiveMaximum: 10)
        let sent = try second.sent()
        #expect(connack(sent)?.sessionPresent == true)
        let publishes = sent.compactMap { if case .publish(let publish) = $0 { publish } else { nil } }
        #expect(publishes.map(\.text) == ["m1", "m2", "m3", "m4", "m5", "m6", "m7"])
        #expect(publishes.prefix(2).map(\.duplicate) == [true, true])
        #expect(publishes.prefix(2).map(\.packetIdentifier) == inFlight.map(\.packetIdentifier))
        #expect(publishes.dropFirst(2).allSatisfy { !$0.duplicate })
    }

    @Test("§3.1.4-3 a CONNECT on another loop takes the session over: the old client gets 0x8E and is closed")
    func takeoverAcrossLoops() throws {
        let broker = helper.makeBroker()
        let old = try EmbeddedConnection(broker, id: 1)
        try connect(old, "same", expiry: 60)
        #expect(connack(try old.sent())?.reasonCode == .success)
        let new = try EmbeddedConnection(broker, id: 2)
        try connect(new, "same", cleanStart: false, expiry: 60)
        #expect(try old.sent() == [.disconnect(Disconnect(reasonCode: .sessionTakenOver))])
        #expect(!old.channel.isActive)
        #expect(connack(try new.sent())?.sessionPresent == true)
        #expect(broker.sessionCount == 1)
    }

    @Test("MQTT-4.6.0-6 what a publisher sends while the session moves between loops arrives in its order")
    func orderAcrossTheMove() throws {
        let broker = helper.makeBroker()
        let first = try EmbeddedConnection(broker, id: 1)
        let publisher = try EmbeddedConnection(broker, id: 2)
        try connect(first, "s", expiry: 3600)
        try helper.subscribe(first, "t", qos: .atLeastOnce)
        try helper.connect(publisher, "p")
        try first.close()

        // m1 and m2 are routed during one burst of the publisher; the session moves to the second
        // loop before the burst ends and its deliveries are posted.
        try publisher.receive(helper.publish("m1", qos: .atLeastOnce, id: 1), endBurst: false)
        let second = try EmbeddedConnection(broker, id: 3)
        try connect(second, "s", cleanStart: false, expiry: 3600)
        try publisher.receive(helper.publish("m2", qos: .atLeastOnce, id: 2), endBurst: false)
        publisher.endBurst()
        try publisher.receive(helper.publish("m3", qos: .atLeastOnce, id: 3))
        #expect(try second.sentPublishes().map(\.text) == ["m1", "m2", "m3"])
    }

    @Test("§3.1.4-3 with two claims in flight the last one wins: the first is answered, then taken over")
    func claimsInFlight() throws {
        let broker = helper.makeBroker()
        let holder = try EmbeddedConnection(broker, id: 1)
        try connect(holder, "c", expiry: 60)
        _ = try holder.sent()
        // The second client's CONNECT claims the session; its burst (and so the fetch) is still open
        // when the third client claims it from the second.
        let second = try EmbeddedConnection(broker, id: 2)
        let third = try EmbeddedConnection(broker, id: 3)
        try connect(second, "c", cleanStart: false, expiry: 60, endBurst: false)
        try connect(third, "c", cleanStart: false, expiry: 60)
        #expect(try third.sent().isEmpty)  // waits: the second client's shard has not got the session yet
        second.endBurst()

        #expect(try holder.sent() == [.disconnect(Disconnect(reasonCode: .sessionTakenOver))])
        let secondSent = try second.sent()
        #expect(connack(secondSent)?.sessionPresent == true)
        #expect(secondSent.last == .disconnect(Disconnect(reasonCode: .sessionTakenOver)))
        #expect(connack(try third.sent())?.sessionPresent == true)
        #expect(broker.sessionCount == 1)
    }

    @Test("§4.8.2 a shared subscription with members on two loops delivers each message to one of them")
    func sharedGroupAcrossLoops() throws {
        let broker = helper.makeBroker()
        let a = try EmbeddedConnection(broker, id: 1)
        let b = try EmbeddedConnection(broker, id: 2)
        let publisher = try EmbeddedConnection(broker, id: 3)
        for (client, name) in [(a, "a"), (b, "b")] {
            try helper.connect(client, name)
            try helper.subscribe(client, "$share/g/t", qos: .atLeastOnce)
            _ = try client.sent()
        }
        try helper.connect(publisher, "p")
        for n in 1...10 { try publisher.receive(helper.publish("m\(n)", qos: .atMostOnce, id: 0)) }
        let toA = try a.sentPublishes().map(\.text)
        let toB = try b.sentPublishes().map(\.text)
        #expect((toA + toB).sorted() == (1...10).map { "m\($0)" }.sorted())
        #expect(!toA.isEmpty && !toB.isEmpty)
    }

    @Test("a delivery to a stored session on another loop is stored before the publisher's PUBACK")
    func remoteDeliveryStoredBeforeAcknowledgement() throws {
        let (broker, store) = try helper.makeStoredBroker()
        let subscriber = try EmbeddedConnection(broker, id: 1)
        let publisher = try EmbeddedConnection(broker, id: 2)
        try connect(subscriber, "s", expiry: 3600)
        try helper.subscribe(subscriber, "t", qos: .atLeastOnce)
        try helper.connect(publisher, "p")
        store.commit(upTo: store.lastTicket)
        _ = try subscriber.sent()
        _ = try publisher.sent()
        let before = store.changes.count

        try publisher.receive(helper.publish("m1", qos: .atLeastOnce, id: 1))
        // QoS 1 to the subscriber leaves at once; the PUBACK waits for the commit that holds it.
        #expect(try subscriber.sentPublishes().map(\.text) == ["m1"])
        #expect(try publisher.sent().isEmpty)
        let stored = store.changes.dropFirst(before).filter {
            if case .putDelivery = $0 { true } else { false }
        }
        #expect(stored.count == 1)
        store.commit(upTo: store.lastTicket)
        #expect(try publisher.sent() == [.puback(PublishAcknowledgement(packetIdentifier: 1))])
    }

    @Test("deliveries posted to a stored session that ended meanwhile are finished in the store")
    func postToEndedSession() throws {
        let (broker, store) = try helper.makeStoredBroker()
        let subscriber = try EmbeddedConnection(broker, id: 1)
        let publisher = try EmbeddedConnection(broker, id: 2)
        try connect(subscriber, "s", expiry: 3600)
        try helper.subscribe(subscriber, "t", qos: .atLeastOnce)
        try helper.connect(publisher, "p")
        store.commit(upTo: store.lastTicket)

        // Stored and kept for the mailbox until the publisher's burst ends...
        try publisher.receive(helper.publish("m1", qos: .atLeastOnce, id: 1), endBurst: false)
        var disconnect = Disconnect()
        disconnect.properties.sessionExpiryInterval = 0
        // ...while the session ends on its own loop.
        try subscriber.receive(.disconnect(disconnect))
        publisher.endBurst()

        var put: Set<UInt64> = []
        var finished: Set<UInt64> = []
        for change in store.changes {
            switch change {
            case .putDelivery(_, let delivery): put.insert(delivery.sequence)
            case .deleteDelivery(let sequence, _): finished.insert(sequence)
            case .deleteSession(_, let deliveries): finished.formUnion(deliveries.map(\.sequence))
            default: break
            }
        }
        #expect(!put.isEmpty)
        #expect(put.isSubset(of: finished))
    }
}
