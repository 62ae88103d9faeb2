import NIOCore
import TernCodec
import Testing

@testable import TernBrokerCore

/// A restored queue keeps the store's bytes until its client is back: what it gives back must be
/// exactly what was stored, in order.
@Suite("Restored queue")
struct RestoredQueueTests {
    /// The PUBLISH a store writes for a message (as `StoredMessageCoding` does).
    static func storedPublish(_ topic: String, _ payload: String, properties: Properties = Properties()) throws
        -> ByteBuffer
    {
        var buffer = ByteBuffer()
        try MQTTPacket.publish(
            Publish(
                topic: try TopicName(topic),
                payload: ByteBuffer(string: payload),
                qos: .atLeastOnce,
                retain: false,
                duplicate: false,
                packetIdentifier: 1,
                properties: properties
            )
        ).write(to: &buffer, version: .v5)
        return buffer
    }

    /// A stored delivery waiting in a queue (not in flight).
    func queued(
        _ sequence: UInt64,
        message: UInt64,
        qos: QoS = .atLeastOnce,
        retain: Bool = false,
        identifiers: [UInt32] = []
    ) -> StoredDelivery {
        StoredDelivery(
            sequence: sequence,
            messageID: message,
            qos: qos,
            retain: retain,
            subscriptionIdentifiers: identifiers,
            packetIdentifier: nil
        )
    }

    @Test("deliveries come back in order with their sequence, QoS, retain flag, identifiers and expiry")
    func roundTrip() throws {
        var properties = Properties()
        try properties.append(.contentType("text/plain"))
        let expiry = BrokerInstant(millisecondsSinceEpoch: 1_700_000_000_123)
        let first = try StoredMessageBytes(
            validating: Self.storedPublish("a/1", "one", properties: properties),
            expiresAt: expiry
        )
        let second = try StoredMessageBytes(validating: Self.storedPublish("a/2", "two!"), expiresAt: nil)
        let shared = ApplicationMessage(
            topic: try TopicName("b"),
            payload: ByteBuffer(string: "shared"),
            qos: .exactlyOnce,
            retain: false,
            storeID: 77
        )
        var queue = RestoredQueue()
        #expect(queue.isEmpty)
        queue.append(
            queued(5, message: 50, qos: .exactlyOnce, retain: true, identifiers: [1, 268_435_455]),
            bytes: first
        )
        queue.append(queued(6, message: 77, qos: .atMostOnce), message: shared)
        queue.append(queued(9, message: 90), bytes: second)
        queue.trimCapacity()

        #expect(queue.count == 3)
        #expect(queue.payloadBytes == 3 + 6 + 4)
        var keys: [StoredDeliveryKey] = []
        queue.forEachKey { keys.append($0) }
        #expect(keys.map(\.sequence) == [5, 6, 9])
        #expect(keys.map(\.messageID) == [50, 77, 90])

        let deliveries = queue.deliveries()
        #expect(deliveries.map(\.sequence) == [5, 6, 9])
        #expect(deliveries.map(\.qos) == [.exactlyOnce, .atMostOnce, .atLeastOnce])
        #expect(deliveries.map(\.retain) == [true, false, false])
        #expect(deliveries.map(\.subscriptionIdentifiers) == [[1, 268_435_455], [], []])
        #expect(deliveries.map { String(buffer: $0.message.payload) } == ["one", "shared", "two!"])
        #expect(deliveries.map(\.message.topic.string) == ["a/1", "b", "a/2"])
        #expect(deliveries.map(\.message.storeID) == [50, 77, 90])
        #expect(deliveries[0].message.expiresAt == expiry)
        #expect(deliveries[0].message.properties == properties)
        #expect(deliveries[2].message.expiresAt == nil)
        #expect(deliveries[1].message == shared)
    }

    @Test("bytes that are not a whole PUBLISH are refused when the store hands them over")
    func damagedBytesAreRefused() throws {
        let whole = try Self.storedPublish("t", "payload")
        #expect(throws: TernError.self) {
            _ = try StoredMessageBytes(
                validating: whole.getSlice(at: 0, length: whole.readableBytes - 3)!,
                expiresAt: nil
            )
        }
        #expect(throws: TernError.self) {
            _ = try StoredMessageBytes(validating: ByteBuffer(bytes: [0x00, 0xff]), expiresAt: nil)
        }
    }

    @Test("each delivery is decoded when it is taken; the rest stay bytes, counted and named")
    func popOneAtATime() throws {
        var queue = RestoredQueue()
        for n in 1...3 {
            queue.append(
                queued(UInt64(n), message: UInt64(10 * n)),
                bytes: try StoredMessageBytes(validating: Self.storedPublish("t", "m\(n)"), expiresAt: nil)
            )
        }
        #expect(queue.popFirst().map { String(buffer: $0.message.payload) } == "m1")
        #expect(queue.count == 2)
        #expect(queue.payloadBytes == 4)
        var keys: [UInt64] = []
        queue.forEachKey { keys.append($0.sequence) }
        #expect(keys == [2, 3])
        #expect(queue.deliveries().map(\.sequence) == [2, 3])
        #expect(queue.popFirst()?.sequence == 2)
        #expect(queue.popFirst()?.sequence == 3)
        #expect(queue.isEmpty)
        #expect(queue.payloadBytes == 0)
        #expect(queue.popFirst() == nil)
    }

    @Test("a restored queue holds its records in about their own size, not a power of two")
    func recordsTakeTheirSize() throws {
        var queue = RestoredQueue()
        let bytes = try StoredMessageBytes(validating: Self.storedPublish("rt/12", "0123456789abcdef"), expiresAt: nil)
        for n in 1...100 { queue.append(queued(UInt64(n), message: UInt64(n)), bytes: bytes) }
        queue.trimCapacity()
        // A 23-byte header and the stored PUBLISH each: 5,100 bytes here, where a buffer rounded
        // to a power of two held 8,192.
        let recordBytes = 100 * (23 + bytes.publish.readableBytes)
        #expect(queue.recordCapacity >= recordBytes)
        #expect(queue.recordCapacity <= recordBytes + recordBytes / 8)
    }

    @Test("§4.6: a session sends its restored queue before what was routed to it since")
    func restoredGoFirst() throws {
        var session = Session(
            clientID: "c",
            protocolVersion: .v5,
            expiryInterval: 60,
            reference: SessionReference(clientID: "c")
        )
        let routed = ApplicationMessage(
            topic: try TopicName("t"),
            payload: ByteBuffer(string: "new"),
            qos: .atLeastOnce,
            retain: false
        )
        session.queue.append(Delivery(message: routed, qos: .atLeastOnce, retain: false, subscriptionIdentifiers: []))
        for (sequence, payload) in [(UInt64(1), "old1"), (2, "old2")] {
            session.restoredQueue.append(
                queued(sequence, message: sequence * 10),
                bytes: try StoredMessageBytes(validating: Self.storedPublish("t", payload), expiresAt: nil)
            )
        }
        #expect(session.queuedCount == 3)
        #expect(session.queuedDeliveries.map { String(buffer: $0.message.payload) } == ["old1", "old2", "new"])
        #expect(session.popQueued().map { String(buffer: $0.message.payload) } == "old1")
        // Judged one by one (an ACL check), the rest is decoded in front of the queue.
        session.unpackRestoredQueue()
        #expect(session.restoredQueue.isEmpty)
        #expect(session.queue.map { String(buffer: $0.message.payload) } == ["old2", "new"])
    }
}
