public import NIOCore
public import TernCodec

/// A message as a store keeps it: the MQTT 5 PUBLISH that carries it, with its absolute expiry
/// beside it (the Message Expiry Interval inside is the one it was published with).
///
/// A store hands restored messages that one queued delivery alone refers to over in this form
/// (``StoredQueues/bodies``), and the broker keeps them so, in their session's
/// ``RestoredQueue``, until each is sent: a decoded message costs a heap object of 128
/// bytes on top of its bytes.
public struct StoredMessageBytes: Sendable {
    /// The PUBLISH, as ``ApplicationMessage/init(storedPublish:expiresAt:storeID:)`` reads it.
    public var publish: ByteBuffer
    public var expiresAt: BrokerInstant?
    /// The size of the message's payload, for the queue's byte limit (`max_queued_bytes`).
    public var payloadBytes: Int

    /// Checks that `publish` decodes, and takes its payload's size: a store's bytes are read
    /// back long after they were written, and this is where a damaged one is found.
    /// - Throws: the codec's error when the bytes are not a PUBLISH.
    public init(validating publish: ByteBuffer, expiresAt: BrokerInstant?) throws(TernError) {
        let message = try ApplicationMessage(storedPublish: publish, expiresAt: expiresAt)
        self.publish = publish
        self.expiresAt = expiresAt
        self.payloadBytes = message.payload.readableBytes
    }
}

extension ApplicationMessage {
    /// Reads a message back from the PUBLISH a store wrote for it, with its key in the store.
    /// The codec that reads packets from the network reads them here, properties validated
    /// the same way. The topic and payload are slices of `storedPublish`.
    /// - Throws: the codec's error when the bytes are not a whole PUBLISH.
    public init(storedPublish: ByteBuffer, expiresAt: BrokerInstant?, storeID: UInt64 = 0) throws(TernError) {
        var buffer = storedPublish
        var decoder = MQTTPacketDecoder(protocolVersion: .v5)
        guard case .publish(let publish) = try decoder.decodePacket(from: &buffer) else {
            throw TernError(.malformedPacket, "a stored message is not a whole PUBLISH")
        }
        self.init(
            topic: publish.topic,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            properties: publish.properties,
            expiresAt: expiresAt,
            storeID: storeID
        )
    }
}

extension ApplicationMessage {
    /// Reads back bytes that ``StoredMessageBytes/init(validating:expiresAt:)`` decoded once
    /// already, so that they cannot fail now: a failure is a broken invariant, not bad input.
    init(validatedPublish publish: ByteBuffer, expiresAt: BrokerInstant?, storeID: UInt64) {
        do {
            try self.init(storedPublish: publish, expiresAt: expiresAt, storeID: storeID)
        } catch {
            preconditionFailure("a stored message validated when read no longer decodes: \(error)")
        }
    }
}
