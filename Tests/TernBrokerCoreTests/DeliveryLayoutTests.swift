import NIOCore
import TernCodec
import Testing

@testable import TernBrokerCore

/// A session's queue holds a ``Delivery`` per message, millions after a restart: its QoS, retain
/// flag and store sequence share one word so that it stays 32 bytes with its receipt.
@Suite("Delivery layout")
struct DeliveryLayoutTests {
    @Test("a delivery is 32 bytes")
    func size() {
        #expect(MemoryLayout<Delivery>.stride == 32)
    }

    @Test("QoS, retain and sequence read back as set, each without disturbing the others")
    func packedFields() throws {
        let message = ApplicationMessage(
            topic: try TopicName("t"),
            payload: ByteBuffer(),
            qos: .exactlyOnce,
            retain: true
        )
        let largest: UInt64 = (1 << 61) - 1
        for qos in [QoS.atMostOnce, .atLeastOnce, .exactlyOnce] {
            for retain in [false, true] {
                for sequence in [0, 1, largest] as [UInt64] {
                    var delivery = Delivery(
                        message: message,
                        qos: qos,
                        retain: retain,
                        subscriptionIdentifiers: [],
                        sequence: sequence
                    )
                    #expect(delivery.qos == qos && delivery.retain == retain && delivery.sequence == sequence)
                    delivery.sequence = largest - sequence
                    delivery.retain.toggle()
                    #expect(
                        delivery.qos == qos && delivery.retain == !retain && delivery.sequence == largest - sequence
                    )
                    delivery.qos = .atLeastOnce
                    #expect(delivery.qos == .atLeastOnce && delivery.retain == !retain)
                    #expect(delivery.sequence == largest - sequence)
                }
            }
        }
    }
}
