public import NIOCore
public import TernBrokerCore
import TernCodec

/// How a store writes a message: as the MQTT 5 PUBLISH that carries it, so that the codec that
/// reads packets from the network also reads them back from disk, properties validated the same
/// way. Its absolute expiry is kept beside it: the Message Expiry Interval inside is the one it was
/// published with.
public enum StoredMessageCoding {
    public static func encode(_ message: ApplicationMessage) -> ByteBuffer {
        var buffer = ByteBuffer()
        encode(message, into: &buffer)
        return buffer
    }

    /// Writes `message` at the end of `buffer`: a writer that stores many messages clears and
    /// reuses one buffer rather than allocating one per message.
    public static func encode(_ message: ApplicationMessage, into buffer: inout ByteBuffer) {
        let packet = MQTTPacket.publish(
            Publish(
                topic: message.topic,
                payload: message.payload,
                qos: message.qos,
                retain: message.retain,
                duplicate: false,
                packetIdentifier: message.qos == .atMostOnce ? 0 : 1,
                properties: message.properties
            )
        )
        buffer.reserveCapacity(minimumWritableBytes: packet.encodedSize(version: .v5))
        // A message the broker accepted always re-encodes; a failure here is a broken invariant.
        try! packet.write(to: &buffer, version: .v5)
    }

    /// Reads a stored message back, with its key in the store (``ApplicationMessage/storeID``).
    /// - Throws: ``StoreCorruption`` when the bytes are not a PUBLISH.
    public static func decode(
        _ buffer: ByteBuffer,
        expiresAt: BrokerInstant?,
        storeID: UInt64 = 0
    ) throws -> ApplicationMessage {
        do {
            return try ApplicationMessage(storedPublish: buffer, expiresAt: expiresAt, storeID: storeID)
        } catch {
            throw StoreCorruption("a stored message does not decode: \(error.reason)")
        }
    }

    /// Checks that a stored message decodes, and keeps it as its bytes (``StoredMessageBytes``).
    /// - Throws: ``StoreCorruption`` when the bytes are not a PUBLISH.
    public static func validate(_ buffer: ByteBuffer, expiresAt: BrokerInstant?) throws -> StoredMessageBytes {
        do {
            return try StoredMessageBytes(validating: buffer, expiresAt: expiresAt)
        } catch {
            throw StoreCorruption("a stored message does not decode: \(error.reason)")
        }
    }
}

/// A store whose contents cannot be read back.
public struct StoreCorruption: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// How a store writes a delivery's Subscription Identifiers: as MQTT variable byte integers, one
/// after another.
public enum StoredIdentifierCoding {
    /// The identifiers' bytes; empty when there are none (the usual case).
    public static func encode(_ identifiers: [UInt32]) -> ByteBuffer {
        var buffer = ByteBuffer()
        for identifier in identifiers { buffer.writeVariableByteInteger(identifier) }
        return buffer
    }

    /// Reads identifiers back.
    /// - Throws: ``StoreCorruption`` when the bytes are not variable byte integers.
    public static func decode(_ bytes: ByteBuffer) throws -> [UInt32] {
        var buffer = bytes
        var identifiers: [UInt32] = []
        while buffer.readableBytes > 0 {
            do {
                identifiers.append(try buffer.readMQTTVariableByteInteger())
            } catch {
                throw StoreCorruption("bad subscription identifiers")
            }
        }
        return identifiers
    }
}
