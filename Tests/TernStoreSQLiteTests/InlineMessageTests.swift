import GRDB
import NIOCore
import TernCodec
import TernStore
import Testing

@testable import TernBrokerCore
@testable import TernStoreSQLite

/// A message only one delivery refers to is stored in that delivery's row, and the writer keeps
/// no reference count for it. These hold the accounting to the rows on disk: nothing a delivery
/// still needs goes, and nothing left behind stays.
@Suite("SQLite store: messages stored in their delivery's row")
struct InlineMessageTests {
    /// A store opened as the broker opens it (read, queues read, writer started), and a way to
    /// wait for each batch's commit.
    final class OpenStore {
        let store: SQLiteStore
        let queues: StoredQueues
        private var commits: AsyncStream<UInt64>.Iterator

        init(path: String) throws {
            store = try SQLiteStore(path: path)
            _ = try store.load()
            queues = try store.loadQueues()
            let (stream, continuation) = AsyncStream<UInt64>.makeStream()
            store.start { continuation.yield($0.ticket) }
            commits = stream.makeAsyncIterator()
        }

        /// Submits `changes` as one batch and returns once it is committed.
        func commit(_ changes: [StoreChange]) async throws {
            let ticket = try #require(store.submit(changes))
            while let committed = await commits.next(), committed < ticket {}
        }
    }

    static func message(_ text: String) throws -> ApplicationMessage {
        ApplicationMessage(
            topic: try TopicName("t"),
            payload: ByteBuffer(string: text),
            qos: .atLeastOnce,
            retain: false
        )
    }

    /// Adds a row for message `id` (a QoS 1 PUBLISH on "a") straight into the file.
    static func addMessageRow(id: Int, path: String) throws {
        let database = try DatabaseQueue(path: path)
        defer { try? database.close() }
        try database.write { db in
            try db.execute(sql: "INSERT INTO messages(id, body) VALUES (?, x'300400016100')", arguments: [id])
        }
    }

    /// Reopens the store at `path` and reads everything back, as a restart does.
    static func restored(path: String) throws -> (queues: StoredQueues, storedMessages: Int) {
        let store = try SQLiteStore(path: path)
        defer { store.close() }
        _ = try store.load()
        let queues = try store.loadQueues()
        return (queues, store.statistics.messages)
    }

    /// The payload of a message the store handed over as its stored bytes.
    static func payload(ofBody id: UInt64, in queues: StoredQueues) throws -> ByteBuffer? {
        guard let bytes = queues.bodies[id] else { return nil }
        return try ApplicationMessage(storedPublish: bytes.publish, expiresAt: bytes.expiresAt).payload
    }

    @Test(
        "A queued message held in its delivery's row is counted across a restart and leaves nothing when it goes",
        .timeLimit(.minutes(1))
    )
    func inlineMessageCountedAndRemoved() async throws {
        let path = StoreFiles.path("inline")
        defer { StoreFiles.remove(path) }
        let open = try OpenStore(path: path)
        try await open.commit([
            .putSession(SQLiteStoreFileTests.header(1)), .putMessage(id: 1, try Self.message("m1")),
            .putDelivery(session: 1, SQLiteStoreFileTests.delivery(1, message: 1)),
        ])
        #expect(open.store.statistics.messages == 1)
        open.store.close()
        #expect(try GRDBTestAccess.count("messages", path: path) == 0)

        let (queues, counted) = try Self.restored(path: path)
        #expect(counted == 1)
        #expect(queues.deliveries[1]?.map(\.sequence) == [1])
        // Read as its stored bytes: it is queued, and stays so until its client is back.
        #expect(queues.messages[1] == nil)
        #expect(try Self.payload(ofBody: 1, in: queues) == ByteBuffer(string: "m1"))

        let again = try OpenStore(path: path)
        try await again.commit([.deleteDelivery(sequence: 1, messageID: 1)])
        #expect(again.store.statistics.messages == 0)
        again.store.close()
        #expect(try GRDBTestAccess.count("deliveries", path: path) == 0)
        #expect(try GRDBTestAccess.count("messages", path: path) == 0)
    }

    @Test(
        "A message whose own row loses its last reference in the batch that stores it again in one delivery's row leaves no row behind",
        .timeLimit(.minutes(1))
    )
    func rowGoesWhenMessageMovesIntoDelivery() async throws {
        let path = StoreFiles.path("moved")
        defer { StoreFiles.remove(path) }
        let open = try OpenStore(path: path)
        let message = try Self.message("shared")
        // Two deliveries of one batch: the message gets a row of its own.
        try await open.commit([
            .putSession(SQLiteStoreFileTests.header(1)), .putMessage(id: 5, message),
            .putDelivery(session: 1, SQLiteStoreFileTests.delivery(1, message: 5)),
            .putDelivery(session: 1, SQLiteStoreFileTests.delivery(2, message: 5)),
        ])
        #expect(try GRDBTestAccess.count("messages", path: path) == 1)
        // Both go, and a new delivery of the same message comes, in one batch.
        try await open.commit([
            .deleteDelivery(sequence: 1, messageID: 5), .deleteDelivery(sequence: 2, messageID: 5),
            .putMessage(id: 5, message), .putDelivery(session: 1, SQLiteStoreFileTests.delivery(3, message: 5)),
        ])
        #expect(open.store.statistics.messages == 1)
        open.store.close()
        #expect(try GRDBTestAccess.count("messages", path: path) == 0)
        let (queues, counted) = try Self.restored(path: path)
        #expect(counted == 1)
        #expect(queues.deliveries[1]?.map(\.sequence) == [3])
        #expect(try Self.payload(ofBody: 5, in: queues) == ByteBuffer(string: "shared"))
    }

    @Test(
        "A message held in one delivery's row and later given a row for two more deliveries keeps that row until both are gone",
        .timeLimit(.minutes(1))
    )
    func inlineCopyDoesNotReleaseTheRow() async throws {
        let path = StoreFiles.path("both")
        defer { StoreFiles.remove(path) }
        let open = try OpenStore(path: path)
        let message = try Self.message("both")
        try await open.commit([
            .putSession(SQLiteStoreFileTests.header(1)), .putMessage(id: 9, message),
            .putDelivery(session: 1, SQLiteStoreFileTests.delivery(1, message: 9)),
        ])
        // Copies routed through the other shard land in a later batch.
        try await open.commit([
            .putMessage(id: 9, message), .putDelivery(session: 1, SQLiteStoreFileTests.delivery(2, message: 9)),
            .putDelivery(session: 1, SQLiteStoreFileTests.delivery(3, message: 9)),
        ])
        #expect(try GRDBTestAccess.count("messages", path: path) == 1)
        // The copy in its own row goes: the row stays for the other two.
        try await open.commit([.deleteDelivery(sequence: 1, messageID: 9)])
        try await open.commit([.deleteDelivery(sequence: 2, messageID: 9)])
        #expect(open.store.statistics.messages == 1)
        open.store.close()
        #expect(try GRDBTestAccess.count("messages", path: path) == 1)
        let (queues, counted) = try Self.restored(path: path)
        #expect(counted == 1)
        #expect(queues.deliveries[1]?.map(\.sequence) == [3])
        #expect(queues.messages[9]?.payload == ByteBuffer(string: "both"))

        let again = try OpenStore(path: path)
        try await again.commit([.deleteDelivery(sequence: 3, messageID: 9)])
        again.store.close()
        #expect(try GRDBTestAccess.count("messages", path: path) == 0)
    }

    @Test(
        "A message row that only deliveries holding their own copy refer to is removed after start-up",
        .timeLimit(.minutes(1))
    )
    func rowReferredToOnlyByInlineCopiesIsAnOrphan() async throws {
        let path = StoreFiles.path("inline-orphan")
        defer { StoreFiles.remove(path) }
        let open = try OpenStore(path: path)
        try await open.commit([
            .putSession(SQLiteStoreFileTests.header(1)), .putMessage(id: 1, try Self.message("m1")),
            .putDelivery(session: 1, SQLiteStoreFileTests.delivery(1, message: 1)),
        ])
        open.store.close()
        // A row for the same message, which the delivery does not need (it holds its own copy).
        try Self.addMessageRow(id: 1, path: path)

        let reopened = try OpenStore(path: path)
        #expect(reopened.queues.deliveries[1]?.map(\.sequence) == [1])
        try await reopened.commit([.putSession(SQLiteStoreFileTests.header(2))])
        reopened.store.close()
        #expect(try GRDBTestAccess.count("messages", path: path) == 0)
        #expect(try GRDBTestAccess.count("deliveries", path: path) == 1)
    }

    @Test("The set of deliveries holding their message: members across words, repeats and removals")
    func inlineDeliveriesSet() {
        var set = InlineDeliveries()
        for sequence: UInt64 in [1, 63, 64, 65, 1_000_000, 1] { set.insert(sequence) }
        #expect(set.count == 5)
        #expect(set.contains(63) && set.contains(64) && set.contains(1_000_000))
        #expect(!set.contains(2) && !set.contains(128))
        let removals = [64, 64, 66].map { set.remove($0) }
        #expect(removals == [true, false, false])
        #expect(set.contains(63) && set.contains(65))
        #expect(set.count == 4)
        let rest = [1, 63, 65, 1_000_000].map { set.remove($0) }
        #expect(rest == [true, true, true, true])
        #expect(set.count == 0)
        #expect(!set.contains(1))
    }
}

extension InlineMessageTests {
    static func counter(path: String) throws -> Int64? {
        let database = try DatabaseQueue(path: path)
        defer { try? database.close() }
        return try database.read { db in
            try Int64.fetchOne(db, sql: "SELECT value FROM counters WHERE name = 'message'")
        }
    }

    @Test(
        "Message identifiers are reserved a block at a time: later batches leave the counter alone, and a restart hands out identifiers above every one used",
        .timeLimit(.minutes(1))
    )
    func messageIdentifiersReservedInBlocks() async throws {
        let path = StoreFiles.path("counter")
        defer { StoreFiles.remove(path) }
        let open = try OpenStore(path: path)
        try await open.commit([
            .putSession(SQLiteStoreFileTests.header(1)), .putMessage(id: 5, try Self.message("m5")),
            .putDelivery(session: 1, SQLiteStoreFileTests.delivery(1, message: 5)),
        ])
        let reserved = try #require(try Self.counter(path: path))
        #expect(reserved == 5 + Int64(SQLiteStore.reservedMessageIDs))
        for id: UInt64 in 6...8 {
            try await open.commit([
                .putMessage(id: id, try Self.message("m\(id)")),
                .putDelivery(session: 1, SQLiteStoreFileTests.delivery(id, message: id)),
            ])
        }
        #expect(try Self.counter(path: path) == reserved)
        open.store.close()

        let reopened = try SQLiteStore(path: path)
        defer { reopened.close() }
        let snapshot = try reopened.load()
        #expect(snapshot.lastMessageID >= 8)
        #expect(snapshot.lastMessageID == UInt64(reserved))
    }
}
