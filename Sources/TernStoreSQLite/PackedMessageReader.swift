import NIOCore
import TernBrokerCore
import TernStore

/// Restores stored messages with their bodies packed into shared buffers.
///
/// A restored queue is mostly small messages. A `ByteBuffer` of its own for each body costs two
/// heap blocks with their headers, more than a 16-byte payload: at 100,000 queued messages that
/// was about a quarter of the broker's heap after a restart. Bodies are copied into chunks
/// instead (growing to 1 MiB), and each message's topic and payload are slices of its chunk, as
/// the codec's are of a network read. A chunk is freed with the last message that refers to it.
///
/// A chunk may only be sliced once nothing more is written to it (a slice makes its storage
/// shared, and the next write would copy the whole chunk): bodies wait, as offsets, until their
/// chunk is full or the reading ends, and are decoded then. A body added `asBytes` is only
/// checked and kept as its slice (``StoredMessageBytes``), for a queue that keeps it so.
struct PackedMessageReader {
    private static let firstChunkBytes = 4096
    private static let largestChunkBytes = 1 << 20

    private var chunk = ByteBuffer()
    private var waiting: [(id: UInt64, expiresAt: Int64?, start: Int, length: Int, asBytes: Bool)] = []
    private var waitingIDs: Set<UInt64> = []
    private var messages: [UInt64: ApplicationMessage] = [:]
    private var bodies: [UInt64: StoredMessageBytes] = [:]

    init(expectedMessages: Int = 0) {
        messages.reserveCapacity(expectedMessages)
    }

    /// Whether message `id` was added.
    func contains(_ id: UInt64) -> Bool {
        messages[id] != nil || bodies[id] != nil || waitingIDs.contains(id)
    }

    /// Copies a message's stored body (``StoredMessageCoding``); it is decoded later, or only
    /// checked if `asBytes`.
    mutating func add(id: UInt64, body: UnsafeRawBufferPointer, expiresAt: Int64?, asBytes: Bool = false) throws {
        if chunk.writableBytes < body.count {
            try decodeWaiting()
            let size = min(max(chunk.capacity * 2, Self.firstChunkBytes), Self.largestChunkBytes)
            chunk = ByteBufferAllocator().buffer(capacity: max(size, body.count))
        }
        let start = chunk.writerIndex
        chunk.writeBytes(body)
        waiting.append((id, expiresAt, start, body.count, asBytes))
        waitingIDs.insert(id)
    }

    /// Decodes what waits and hands every message over: decoded, and those added `asBytes`.
    /// - Throws: ``StoreCorruption`` when a body is not a PUBLISH.
    mutating func finish() throws -> (messages: [UInt64: ApplicationMessage], bodies: [UInt64: StoredMessageBytes]) {
        try decodeWaiting()
        chunk = ByteBuffer()
        defer {
            messages = [:]
            bodies = [:]
        }
        return (messages, bodies)
    }

    private mutating func decodeWaiting() throws {
        for body in waiting {
            let bytes = chunk.getSlice(at: body.start, length: body.length)!
            let expiresAt = body.expiresAt.map { BrokerInstant(millisecondsSinceEpoch: $0) }
            if body.asBytes {
                bodies[body.id] = try StoredMessageCoding.validate(bytes, expiresAt: expiresAt)
            } else {
                messages[body.id] = try StoredMessageCoding.decode(bytes, expiresAt: expiresAt, storeID: body.id)
            }
        }
        waiting.removeAll(keepingCapacity: true)
        waitingIDs.removeAll(keepingCapacity: true)
    }
}
