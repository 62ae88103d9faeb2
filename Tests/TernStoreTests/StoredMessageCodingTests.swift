import NIOCore
import TernBrokerCore
import TernCodec
import TernStore
import Testing

/// How a store writes a message: as the MQTT 5 PUBLISH that carries it (MQTT 5.0 §3.3), read back
/// by the same codec as packets from the network.
@Suite("Stored message coding")
struct StoredMessageCodingTests {
    @Test("A message with v5 properties reads back equal, its absolute expiry kept beside it")
    func roundTrip() throws {
        var properties = Properties()
        properties.messageExpiryInterval = 30
        try properties.append(.contentType("text/plain"))
        try properties.append(.userProperty(name: "k", value: "v"))
        let expiry = BrokerInstant(millisecondsSinceEpoch: 1_800_000_030_000)
        for qos in [QoS.atMostOnce, .atLeastOnce, .exactlyOnce] {
            let message = ApplicationMessage(
                topic: try TopicName("a/b"),
                payload: ByteBuffer(string: "hello"),
                qos: qos,
                retain: true,
                properties: properties,
                expiresAt: expiry
            )
            let decoded = try StoredMessageCoding.decode(StoredMessageCoding.encode(message), expiresAt: expiry)
            #expect(decoded.topic == message.topic)
            #expect(decoded.payload == message.payload)
            #expect(decoded.qos == qos)
            #expect(decoded.retain)
            #expect(decoded.properties == properties)
            #expect(decoded.expiresAt == expiry)
        }
    }

    @Test(
        "Bytes that are not a PUBLISH are a StoreCorruption, not a crash",
        arguments: [
            [UInt8](), [0xC0, 0x00], [0x30, 0x05, 0x00, 0x09, 0x61], [0x32, 0x7F, 0xFF], [0x30, 0x02, 0x00, 0x05],
        ]
    )
    func corruption(bytes: [UInt8]) {
        let error = #expect(throws: StoreCorruption.self) {
            try StoredMessageCoding.decode(ByteBuffer(bytes: bytes), expiresAt: nil)
        }
        #expect(error?.description.isEmpty == false)
    }
}
