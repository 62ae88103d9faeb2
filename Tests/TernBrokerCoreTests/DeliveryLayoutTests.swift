import NIOCore
import TernCodec
import Testing

@testable import TernBrokerCore

#if canImport(Glibc)
    import Glibc
#endif

#if canImport(Glibc)
    /// glibc's `malloc_usable_size`, which its Swift module does not export (it is in `malloc.h`).
    @_silgen_name("malloc_usable_size")
    private func mallocUsableSize(_ pointer: UnsafeMutableRawPointer) -> Int
#endif

/// A session's queue holds a ``Delivery`` per message, millions after a restart: its QoS, retain
/// flag and store sequence share one word so that it stays 32 bytes with its receipt.
@Suite("Delivery layout")
struct DeliveryLayoutTests {
    @Test("a delivery is 32 bytes")
    func size() {
        #expect(MemoryLayout<Delivery>.stride == 32)
    }

    #if canImport(Glibc)
        @Test("a message's shared storage is served from 128-byte malloc chunks")
        func messageStorageSize() throws {
            let message = ApplicationMessage(
                topic: try TopicName("t"),
                payload: ByteBuffer(),
                qos: .atLeastOnce,
                retain: false,
                expiresAt: BrokerInstant(millisecondsSinceEpoch: 5),
                publisherClientID: "p"
            )
            // glibc's usable size of a 128-byte chunk is 120; a 144-byte chunk gives 136.
            #expect(mallocUsableSize(Unmanaged.passUnretained(message.storageObject).toOpaque()) == 120)
        }

        @Test("a message's expiry reads back as set, including none")
        func expiryStored() throws {
            var message = ApplicationMessage(
                topic: try TopicName("t"),
                payload: ByteBuffer(),
                qos: .atMostOnce,
                retain: false
            )
            #expect(message.expiresAt == nil)
            for milliseconds: Int64 in [0, 1, -1, Int64.max] {
                message.expiresAt = BrokerInstant(millisecondsSinceEpoch: milliseconds)
                #expect(message.expiresAt == BrokerInstant(millisecondsSinceEpoch: milliseconds))
            }
            message.expiresAt = nil
            #expect(message.expiresAt == nil)
            #expect(!message.isExpired(at: BrokerInstant(millisecondsSinceEpoch: Int64.max)))
        }
    #endif

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
