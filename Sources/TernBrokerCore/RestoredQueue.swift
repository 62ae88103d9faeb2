import NIOCore
import TernCodec

/// The deliveries a session had queued when the broker stopped, kept as the bytes the store
/// read until the session's client is back, in front of its ``Session/queue``.
///
/// A restart may bring back millions of queued messages for clients that come back much later,
/// or never. Decoded, each costs a 128-byte message object and a 32-byte ``Delivery`` on top of
/// its bytes: at 100,000 queued 16-byte messages that was more memory than the broker's code.
/// Here each costs its stored PUBLISH and a 23-byte header in one buffer per session, so the
/// memory a restart takes follows what is stored, at about a third of the cost, and what is
/// decoded follows what is being sent. A delivery is decoded when it is taken to be sent
/// (``popFirst()``), or the whole queue when its deliveries must be judged one by one (an ACL
/// check, ``deliveries()``).
///
/// Written by hand rather than with a general serializer: a record is five fixed-width fields
/// and the bytes the store already had, and nothing else reads them.
public struct RestoredQueue: Sendable {
    /// Records, in queue order: sequence (UInt64), message key (UInt64), flags (UInt8),
    /// identifier count (UInt16), the identifiers (UInt32 each), then either the expiry
    /// (Int64, when flagged) and the PUBLISH's length (UInt32) and bytes, or the index of a
    /// decoded message in ``sharedMessages``.
    private var records: ByteBuffer?
    /// Messages more than one delivery refers to, decoded once and shared by their deliveries.
    private var sharedMessages: [ApplicationMessage] = []
    /// How many deliveries wait here.
    public private(set) var count = 0
    /// Their payloads' bytes, as ``Session`` counts them for `max_queued_bytes`.
    public private(set) var payloadBytes = 0

    private static let retainFlag: UInt8 = 1 << 2
    private static let bytesFlag: UInt8 = 1 << 3
    private static let expiryFlag: UInt8 = 1 << 4

    public init() {}

    public var isEmpty: Bool { count == 0 }

    /// Adds a delivery whose message it keeps as stored bytes.
    mutating func append(_ delivery: StoredDelivery, bytes: StoredMessageBytes) {
        var buffer = takeRecords(adding: 31 + 4 * delivery.subscriptionIdentifiers.count + bytes.publish.readableBytes)
        let start = buffer.writerIndex
        var flags = writeHeader(delivery, into: &buffer) | Self.bytesFlag
        if let expiresAt = bytes.expiresAt {
            flags |= Self.expiryFlag
            buffer.writeInteger(expiresAt.millisecondsSinceEpoch)
        }
        buffer.writeInteger(UInt32(bytes.publish.readableBytes))
        buffer.writeImmutableBuffer(bytes.publish)
        finish(flags: flags, at: start, into: buffer, payloadBytes: bytes.payloadBytes)
    }

    /// Adds a delivery of a message that is already decoded (one that several deliveries share).
    mutating func append(_ delivery: StoredDelivery, message: ApplicationMessage) {
        var buffer = takeRecords(adding: 23 + 4 * delivery.subscriptionIdentifiers.count)
        let start = buffer.writerIndex
        let flags = writeHeader(delivery, into: &buffer)
        buffer.writeInteger(UInt32(sharedMessages.count))
        sharedMessages.append(message)
        finish(flags: flags, at: start, into: buffer, payloadBytes: message.payload.readableBytes)
    }

    /// The buffer out of `records`, so that writing to it does not copy it; room for `bytes`.
    private mutating func takeRecords(adding bytes: Int) -> ByteBuffer {
        var buffer = records ?? ByteBufferAllocator().buffer(capacity: 0)
        records = nil
        buffer.reserveCapacity(minimumWritableBytes: bytes)
        return buffer
    }

    /// Writes the fixed fields and identifiers, with a placeholder for the flags.
    /// - Returns: the flags known so far.
    private func writeHeader(_ delivery: StoredDelivery, into buffer: inout ByteBuffer) -> UInt8 {
        buffer.writeInteger(delivery.sequence)
        buffer.writeInteger(delivery.messageID)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(UInt16(clamping: delivery.subscriptionIdentifiers.count))
        for identifier in delivery.subscriptionIdentifiers.prefix(Int(UInt16.max)) { buffer.writeInteger(identifier) }
        return delivery.qos.rawValue | (delivery.retain ? Self.retainFlag : 0)
    }

    /// Sets the flags of the record that starts at `start` and puts the buffer back.
    private mutating func finish(flags: UInt8, at start: Int, into buffer: ByteBuffer, payloadBytes: Int) {
        var buffer = buffer
        buffer.setInteger(flags, at: start + 16)
        records = buffer
        count += 1
        self.payloadBytes += payloadBytes
    }

    /// Gives back the room a buffer grown by doubling left unused: a restored queue is written
    /// once, then only read.
    mutating func trimCapacity() {
        guard let buffer = records, buffer.capacity > buffer.readableBytes + buffer.readableBytes / 8 else { return }
        var trimmed = ByteBufferAllocator().buffer(capacity: buffer.readableBytes)
        trimmed.writeImmutableBuffer(buffer)
        records = trimmed
    }

    /// The store keys of the deliveries, without decoding their messages.
    func forEachKey(_ body: (StoredDeliveryKey) -> Void) {
        guard var buffer = records else { return }
        while let record = Self.readRecord(from: &buffer) {
            body(StoredDeliveryKey(sequence: record.sequence, messageID: record.messageID))
        }
    }

    /// Takes the first delivery out, decoded. Its topic and payload are slices of this queue's
    /// buffer, which goes with the last of them.
    mutating func popFirst() -> Delivery? {
        guard var buffer = records, let record = Self.readRecord(from: &buffer) else { return nil }
        let delivery = decode(record)
        count -= 1
        payloadBytes -= delivery.message.payload.readableBytes
        if count == 0 {
            records = nil
            sharedMessages = []
        } else {
            records = buffer
        }
        return delivery
    }

    /// The deliveries, decoded, in queue order, leaving the queue as it is.
    func deliveries() -> [Delivery] {
        guard var buffer = records else { return [] }
        var deliveries: [Delivery] = []
        deliveries.reserveCapacity(count)
        while let record = Self.readRecord(from: &buffer) { deliveries.append(decode(record)) }
        return deliveries
    }

    private func decode(_ record: Record) -> Delivery {
        let message: ApplicationMessage
        switch record.message {
        case .shared(let index):
            message = sharedMessages[index]
        case .bytes(let publish, let expiresAt):
            do {
                message = try ApplicationMessage(
                    storedPublish: publish,
                    expiresAt: expiresAt,
                    storeID: record.messageID
                )
            } catch {
                // StoredMessageBytes(validating:) decoded these very bytes before they came here.
                preconditionFailure("a restored message no longer decodes: \(error)")
            }
        }
        return Delivery(
            message: message,
            qos: record.qos,
            retain: record.retain,
            subscriptionIdentifiers: record.subscriptionIdentifiers,
            sequence: record.sequence
        )
    }

    private struct Record {
        enum Message {
            case shared(Int)
            case bytes(ByteBuffer, expiresAt: BrokerInstant?)
        }
        var sequence: UInt64
        var messageID: UInt64
        var qos: QoS
        var retain: Bool
        var subscriptionIdentifiers: [UInt32]
        var message: Message
    }

    /// Reads the next record; the records were written by this type, so each is whole.
    private static func readRecord(from buffer: inout ByteBuffer) -> Record? {
        guard let sequence = buffer.readInteger(as: UInt64.self),
            let messageID = buffer.readInteger(as: UInt64.self),
            let flags = buffer.readInteger(as: UInt8.self),
            let identifierCount = buffer.readInteger(as: UInt16.self)
        else { return nil }
        var identifiers: [UInt32] = []
        if identifierCount > 0 {
            identifiers.reserveCapacity(Int(identifierCount))
            for _ in 0..<identifierCount { identifiers.append(buffer.readInteger(as: UInt32.self)!) }
        }
        let message: Record.Message
        if flags & bytesFlag != 0 {
            let expiresAt =
                flags & expiryFlag != 0
                ? BrokerInstant(millisecondsSinceEpoch: buffer.readInteger(as: Int64.self)!) : nil
            let length = Int(buffer.readInteger(as: UInt32.self)!)
            message = .bytes(buffer.readSlice(length: length)!, expiresAt: expiresAt)
        } else {
            message = .shared(Int(buffer.readInteger(as: UInt32.self)!))
        }
        return Record(
            sequence: sequence,
            messageID: messageID,
            qos: QoS(rawValue: flags & 3) ?? .atMostOnce,
            retain: flags & retainFlag != 0,
            subscriptionIdentifiers: identifiers,
            message: message
        )
    }
}
