import NIOCore
import TernCodec
import TernStore
import Testing

@testable import TernBrokerCore
@testable import TernStoreSQLite

/// Restored messages share the buffers their bodies were packed into (``PackedMessageReader``),
/// and come back as they were stored.
@Suite("Packed restored messages")
struct PackedMessageReaderTests {
    func message(_ index: Int, payloadBytes: Int = 16) -> ApplicationMessage {
        ApplicationMessage(
            topic: try! TopicName("rt/\(index)"),
            payload: ByteBuffer(repeating: UInt8(truncatingIfNeeded: index), count: payloadBytes),
            qos: .atLeastOnce,
            retain: index.isMultiple(of: 2)
        )
    }

    func add(_ message: ApplicationMessage, id: UInt64, expiresAt: Int64? = nil, to reader: inout PackedMessageReader)
        throws
    {
        let body = StoredMessageCoding.encode(message)
        try body.withUnsafeReadableBytes { try reader.add(id: id, body: $0, expiresAt: expiresAt) }
    }

    @Test("a thousand small bodies come back whole, in a few shared buffers rather than one each")
    func smallBodiesShareChunks() throws {
        var reader = PackedMessageReader()
        for index in 1...1000 {
            try add(message(index), id: UInt64(index), expiresAt: index == 7 ? 1_234 : nil, to: &reader)
        }
        #expect(reader.contains(500))
        #expect(!reader.contains(1001))
        let messages = try reader.finish().messages
        #expect(messages.count == 1000)
        for index in 1...1000 {
            let restored = try #require(messages[UInt64(index)])
            #expect(restored.topic == (try TopicName("rt/\(index)")))
            #expect(restored.payload == message(index).payload)
            #expect(restored.retain == index.isMultiple(of: 2))
            #expect(restored.storeID == UInt64(index))
        }
        #expect(messages[7]?.expiresAt == BrokerInstant(millisecondsSinceEpoch: 1_234))
        // About 30 bytes each: 30 kB of bodies in chunks of 4, 8 and 16 KiB, not 1,000 buffers.
        let capacities = Set(messages.values.map(\.payload.storageCapacity))
        #expect(capacities.count <= 4)
        #expect(capacities.allSatisfy { $0 >= 4096 })
    }

    @Test("a body larger than a whole chunk gets a buffer of its size, between small ones")
    func largeBody() throws {
        var reader = PackedMessageReader()
        try add(message(1), id: 1, to: &reader)
        try add(message(2, payloadBytes: 3 << 20), id: 2, to: &reader)
        try add(message(3), id: 3, to: &reader)
        let messages = try reader.finish().messages
        #expect(messages[2]?.payload.readableBytes == 3 << 20)
        #expect(messages[2]?.payload == message(2, payloadBytes: 3 << 20).payload)
        #expect(messages[1]?.payload == message(1).payload)
        #expect(messages[3]?.payload == message(3).payload)
    }

    @Test("a body that is not a PUBLISH is reported as a damaged store")
    func corruptBody() throws {
        var reader = PackedMessageReader()
        let garbage: [UInt8] = [0xC0, 0x00]  // a PINGREQ
        try garbage.withUnsafeBytes { try reader.add(id: 1, body: $0, expiresAt: nil) }
        #expect(throws: StoreCorruption.self) { _ = try reader.finish() }
    }

    @Test("a body kept as bytes is checked and sized, not decoded, and a damaged one is reported")
    func bodiesKeptAsBytes() throws {
        var reader = PackedMessageReader()
        try add(message(1), id: 1, to: &reader)
        let body = StoredMessageCoding.encode(message(2, payloadBytes: 40))
        try body.withUnsafeReadableBytes { try reader.add(id: 2, body: $0, expiresAt: 99, asBytes: true) }
        #expect(reader.contains(2))
        let read = try reader.finish()
        #expect(read.messages.keys.sorted() == [1])
        #expect(read.bodies.keys.sorted() == [2])
        #expect(read.bodies[2]?.publish == body)
        #expect(read.bodies[2]?.payloadBytes == 40)
        #expect(read.bodies[2]?.expiresAt == BrokerInstant(millisecondsSinceEpoch: 99))

        var damaged = PackedMessageReader()
        let garbage: [UInt8] = [0xC0, 0x00]
        try garbage.withUnsafeBytes { try damaged.add(id: 1, body: $0, expiresAt: nil, asBytes: true) }
        #expect(throws: StoreCorruption.self) { _ = try damaged.finish() }
    }
}
