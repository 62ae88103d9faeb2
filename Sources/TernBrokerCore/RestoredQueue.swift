import NIOCore
import TernCodec

/// The deliveries a session had queued when the broker stopped, kept as the bytes the store
/// read until each is taken to be sent, in front of its ``Session/queue``.
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
/// and the bytes the store already had, and nothing else reads them. The records are a byte
/// array rather than a `ByteBuffer`, whose capacity is always a power of two: trimmed to size,
/// the array measured 5.2 MB at 1,000 sessions and 100,000 queued messages, where the buffers
/// took 8.2 MB (heaptrack).
public struct RestoredQueue: Sendable {
    /// Records, in queue order: sequence (UInt64), message key (UInt64), flags (UInt8),
    /// identifier count (UInt16), the identifiers (UInt32 each), then either the expiry
    /// (Int64, when flagged) and the PUBLISH's length (UInt32) and bytes, or the index of a
    /// decoded message in ``sharedMessages``. Integers are little-endian.
    private var records: [UInt8] = []
    /// Where the first record not yet taken starts.
    private var readOffset = 0
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

    /// The bytes its records take in memory (for tests of its size).
    var recordCapacity: Int { records.capacity }

    /// Adds a delivery whose message it keeps as stored bytes.
    mutating func append(_ delivery: StoredDelivery, bytes: StoredMessageBytes) {
        var flags = Self.bytesFlag
        if bytes.expiresAt != nil { flags |= Self.expiryFlag }
        appendHeader(delivery, flags: flags)
        if let expiresAt = bytes.expiresAt { appendInteger(expiresAt.millisecondsSinceEpoch) }
        appendInteger(UInt32(bytes.publish.readableBytes))
        bytes.publish.withUnsafeReadableBytes { records.append(contentsOf: $0) }
        count += 1
        payloadBytes += bytes.payloadBytes
    }

    /// Adds a delivery of a message that is already decoded (one that several deliveries share).
    mutating func append(_ delivery: StoredDelivery, message: ApplicationMessage) {
        appendHeader(delivery, flags: 0)
        appendInteger(UInt32(sharedMessages.count))
        sharedMessages.append(message)
        count += 1
        payloadBytes += message.payload.readableBytes
    }

    private mutating func appendHeader(_ delivery: StoredDelivery, flags: UInt8) {
        appendInteger(delivery.sequence)
        appendInteger(delivery.messageID)
        appendInteger(flags | delivery.qos.rawValue | (delivery.retain ? Self.retainFlag : 0))
        let identifiers = delivery.subscriptionIdentifiers.prefix(Int(UInt16.max))
        appendInteger(UInt16(identifiers.count))
        for identifier in identifiers { appendInteger(identifier) }
    }

    private mutating func appendInteger<Integer: FixedWidthInteger>(_ value: Integer) {
        withUnsafeBytes(of: value.littleEndian) { records.append(contentsOf: $0) }
    }

    /// Gives back the room the array left unused as it grew: a restored queue is written once,
    /// then only read.
    mutating func trimCapacity() {
        guard records.capacity > records.count + records.count / 8 else { return }
        records = Array(unsafeUninitializedCapacity: records.count) { trimmed, initialized in
            initialized = trimmed.initialize(fromContentsOf: records)
        }
    }

    /// The store keys of the deliveries, without decoding their messages.
    func forEachKey(_ body: (StoredDeliveryKey) -> Void) {
        var offset = readOffset
        while let record = readRecord(at: &offset) {
            body(StoredDeliveryKey(sequence: record.sequence, messageID: record.messageID))
        }
    }

    /// Takes the first delivery out, decoded.
    mutating func popFirst() -> Delivery? {
        var offset = readOffset
        guard let record = readRecord(at: &offset) else { return nil }
        let delivery = decode(record)
        count -= 1
        payloadBytes -= delivery.message.payload.readableBytes
        if count == 0 {
            self = RestoredQueue()
        } else {
            readOffset = offset
        }
        return delivery
    }

    /// The deliveries, decoded, in queue order, leaving the queue as it is.
    func deliveries() -> [Delivery] {
        var deliveries: [Delivery] = []
        deliveries.reserveCapacity(count)
        var offset = readOffset
        while let record = readRecord(at: &offset) { deliveries.append(decode(record)) }
        return deliveries
    }

    private func decode(_ record: Record) -> Delivery {
        let message: ApplicationMessage
        switch record.message {
        case .shared(let index):
            message = sharedMessages[index]
        case .bytes(let range, let expiresAt):
            let publish = records.withUnsafeBytes { ByteBuffer(bytes: UnsafeRawBufferPointer(rebasing: $0[range])) }
            message = ApplicationMessage(validatedPublish: publish, expiresAt: expiresAt, storeID: record.messageID)
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
            case bytes(Range<Int>, expiresAt: BrokerInstant?)
        }
        var sequence: UInt64
        var messageID: UInt64
        var qos: QoS
        var retain: Bool
        var subscriptionIdentifiers: [UInt32]
        var message: Message
    }

    /// Reads the record at `offset` and moves past it; the records were written by this type,
    /// so each is whole.
    private func readRecord(at offset: inout Int) -> Record? {
        guard offset < records.count else { return nil }
        return records.withUnsafeBytes { raw in
            func next<Integer: FixedWidthInteger>(_: Integer.Type) -> Integer {
                defer { offset += MemoryLayout<Integer>.size }
                return Integer(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: Integer.self))
            }
            let sequence = next(UInt64.self)
            let messageID = next(UInt64.self)
            let flags = next(UInt8.self)
            let identifierCount = Int(next(UInt16.self))
            var identifiers: [UInt32] = []
            if identifierCount > 0 {
                identifiers.reserveCapacity(identifierCount)
                for _ in 0..<identifierCount { identifiers.append(next(UInt32.self)) }
            }
            let message: Record.Message
            if flags & Self.bytesFlag != 0 {
                let expiresAt =
                    flags & Self.expiryFlag != 0 ? BrokerInstant(millisecondsSinceEpoch: next(Int64.self)) : nil
                let length = Int(next(UInt32.self))
                message = .bytes(offset..<offset + length, expiresAt: expiresAt)
                offset += length
            } else {
                message = .shared(Int(next(UInt32.self)))
            }
            return Record(
                sequence: sequence,
                messageID: messageID,
                qos: QoS(rawValue: flags & 3) ?? .atMostOnce,
                retain: flags & Self.retainFlag != 0,
                subscriptionIdentifiers: identifiers,
                message: message
            )
        }
    }
}
