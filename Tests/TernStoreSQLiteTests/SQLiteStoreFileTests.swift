import Foundation
import GRDB
import Logging
import NIOCore
import TernBrokerTesting
import TernCodec
import TernStore
import Testing

@testable import TernBrokerCore
@testable import TernStoreSQLite

@Suite("SQLite store files")
struct SQLiteStoreFileTests {
    @Test("A corrupt store file is moved aside with a timestamped name and the store starts empty")
    func corruptFileMovedAside() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "tern-corrupt-\(UUID().uuidString)"
        ).path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/tern.db"
        try Data(repeating: 0x5A, count: 8192).write(to: URL(fileURLWithPath: path))
        let store = try SQLiteStore(path: path)
        defer { store.close() }
        #expect(try store.load().isEmpty)
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
        #expect(names.contains { $0.hasPrefix("tern.db.corrupt-") })
        #expect(names.contains("tern.db"))
    }

    @Test("A store whose rows do not decode is moved aside too")
    func undecodableRowsMovedAside() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tern-rows-\(UUID().uuidString).db")
            .path
        defer {
            for name
                in (try? FileManager.default.contentsOfDirectory(atPath: FileManager.default.temporaryDirectory.path))
                ?? []
            where name.hasPrefix((path as NSString).lastPathComponent) {
                try? FileManager.default.removeItem(
                    atPath: FileManager.default.temporaryDirectory.appendingPathComponent(name).path
                )
            }
        }
        let first = try StoreFiles.started(path: path)
        let message = ApplicationMessage(
            topic: try TopicName("a"),
            payload: ByteBuffer(string: "x"),
            qos: .atLeastOnce,
            retain: true
        )
        _ = first.submit([.putMessage(id: 1, message), .putRetained(topic: "a", messageID: 1)])
        first.close()
        #expect(try SQLiteStore(path: path).load().retained == ["a": 1])
        // Overwrite the message body with bytes that are not a PUBLISH.
        let broken = try GRDBTestAccess.corruptMessages(path: path)
        #expect(broken == 1)
        let reopened = try SQLiteStore(path: path)
        defer { reopened.close() }
        #expect(try reopened.load().isEmpty)
    }

    @Test(
        "loss_window: nothing waits (no ticket), and the change is committed within the interval",
        .timeLimit(.minutes(1))
    )
    func lossWindowCommitsWithinInterval() async throws {
        let path = StoreFiles.path("window")
        defer { StoreFiles.remove(path) }
        let store = try SQLiteStore(path: path, durability: .lossWindow(interval: .milliseconds(200), changes: 0))
        _ = try store.load()
        let (stream, continuation) = AsyncStream<UInt64>.makeStream()
        store.start { continuation.yield($0.ticket) }
        let header = StoredSessionHeader(
            key: 1,
            clientID: "w",
            protocolVersion: .v5,
            expiryInterval: 60,
            expiresAt: nil,
            attached: true
        )
        let started = ContinuousClock.now
        #expect(store.submit([.putSession(header)]) == nil)
        for await _ in stream { break }
        #expect(ContinuousClock.now - started >= .milliseconds(150))
        #expect(try StoreListing.read(path: path).entries.map(\.clientID) == ["w"])
        store.close()
    }

    @Test("The writer's connection fsyncs every commit (WAL with synchronous FULL), on a new file and a reopened one")
    func commitsAreFsynced() throws {
        let path = StoreFiles.path("synchronous")
        defer { StoreFiles.remove(path) }
        for _ in 0..<2 {
            let store = try SQLiteStore(path: path)
            // SQLite reads FULL as 2 and NORMAL as 1; WAL with NORMAL loses the last commits to a power cut.
            #expect(try store.pragma("synchronous") == 2)
            store.close()
        }
    }

    @Test("Group commit: a submitted change's ticket is reported once it is on disk", .timeLimit(.minutes(1)))
    func commitTicketsReported() async throws {
        let path = StoreFiles.path("ticket")
        defer { StoreFiles.remove(path) }
        let store = try SQLiteStore(path: path)
        _ = try store.load()
        let (stream, continuation) = AsyncStream<UInt64>.makeStream()
        store.start { continuation.yield($0.ticket) }
        let header = StoredSessionHeader(
            key: 1,
            clientID: "t",
            protocolVersion: .v5,
            expiryInterval: 60,
            expiresAt: nil,
            attached: true
        )
        let ticket = try #require(store.submit([.putSession(header)]))
        var reported: UInt64 = 0
        for await committed in stream {
            reported = committed
            if committed >= ticket { break }
        }
        #expect(reported >= ticket)
        store.close()
        #expect(try StoreListing.read(path: path).entries.map(\.clientID) == ["t"])
    }
}

extension SQLiteStoreFileTests {
    static func header(_ key: UInt64) -> StoredSessionHeader {
        StoredSessionHeader(
            key: key,
            clientID: "b\(key)",
            protocolVersion: .v5,
            expiryInterval: 60,
            expiresAt: nil,
            attached: true
        )
    }

    @Test(
        "Changes queued without a commit wait for startCommit() and then share one transaction",
        .timeLimit(.minutes(1))
    )
    func queuedChangesShareOneCommit() async throws {
        let path = StoreFiles.path("burst")
        defer { StoreFiles.remove(path) }
        let store = try SQLiteStore(
            path: path,
            durability: .commit,
            logger: Logger(label: "test"),
            unaskedCommitDelay: .seconds(30)
        )
        _ = try store.load()
        let (stream, continuation) = AsyncStream<StoreCommit>.makeStream()
        store.start { continuation.yield($0) }
        var last: UInt64 = 0
        for key in 1...3 {
            last = try #require(store.submit([.putSession(Self.header(UInt64(key)))], startingCommit: false))
        }
        #expect(store.statistics.commits == 0)
        store.startCommit()
        var iterator = stream.makeAsyncIterator()
        let commit = try #require(await iterator.next())
        #expect(commit.ticket == last)
        #expect(store.statistics.commits == 1)
        #expect(store.statistics.lastBatchChanges == 3)
        #expect(store.statistics.averageBatchChanges == 3)
        store.close()
        #expect(try StoreListing.read(path: path).entries.map(\.clientID).sorted() == ["b1", "b2", "b3"])
    }

    @Test("A change queued without a commit is committed anyway once the delay passes", .timeLimit(.minutes(1)))
    func unaskedCommitStillHappens() async throws {
        let path = StoreFiles.path("unasked")
        defer { StoreFiles.remove(path) }
        let store = try SQLiteStore(
            path: path,
            durability: .commit,
            logger: Logger(label: "test"),
            unaskedCommitDelay: .milliseconds(50)
        )
        _ = try store.load()
        let (stream, continuation) = AsyncStream<UInt64>.makeStream()
        store.start { continuation.yield($0.ticket) }
        let started = ContinuousClock.now
        let ticket = try #require(store.submit([.putSession(Self.header(1))], startingCommit: false))
        for await committed in stream where committed >= ticket { break }
        #expect(ContinuousClock.now - started >= .milliseconds(40))
        store.close()
        #expect(try StoreListing.read(path: path).entries.map(\.clientID) == ["b1"])
    }
}

extension SQLiteStoreFileTests {
    @Test(
        "Rows nothing refers to are left out of the restore and removed by the writer after start-up",
        .timeLimit(.minutes(1))
    )
    func orphansRemovedAfterStartUp() async throws {
        let path = StoreFiles.path("orphans")
        defer { StoreFiles.remove(path) }
        let first = try StoreFiles.started(path: path)
        _ = first.submit([.putSession(Self.header(1))])
        first.close()
        // A delivery of a session that is not there, and a message nothing refers to.
        #expect(try GRDBTestAccess.count("sessions", path: path) == 1)
        try GRDBTestAccess.addOrphans(path: path)
        #expect(try GRDBTestAccess.count("deliveries", path: path) == 1)
        #expect(try GRDBTestAccess.count("sessions", path: path) == 1)

        let store = try SQLiteStore(path: path)
        let snapshot = try store.load()
        #expect(snapshot.sessions.map(\.header.clientID) == ["b1"])
        #expect(snapshot.sessions.allSatisfy { $0.deliveries.isEmpty })
        let (stream, continuation) = AsyncStream<UInt64>.makeStream()
        store.start { continuation.yield($0.ticket) }
        // The writer removes them before its first batch.
        let ticket = try #require(store.submit([.putSession(Self.header(2))]))
        for await committed in stream where committed >= ticket { break }
        store.close()
        #expect(try GRDBTestAccess.count("deliveries", path: path) == 0)
        #expect(try GRDBTestAccess.count("messages", path: path) == 0)
    }
}

extension SQLiteStoreFileTests {
    @Test(
        "A session ended at start-up before its queue was read (it expired while the broker was stopped) leaves no rows once the writer's first batch is in",
        .timeLimit(.minutes(1))
    )
    func sessionEndedBeforeItsQueueLeavesNoRows() async throws {
        let path = StoreFiles.path("expired-queue")
        defer { StoreFiles.remove(path) }
        let first = try StoreFiles.started(path: path)
        _ = first.submit(
            [.putSession(Self.header(1)), .putSession(Self.header(2))]
                + (try Self.queued(1...2, session: 1)) + (try Self.queued(3...4, session: 2))
        )
        first.close()
        #expect(try GRDBTestAccess.count("deliveries", path: path) == 4)

        // As the broker restarts: the sessions are read, the first one has expired and ends
        // before its queue is read (so its deliveries are not named), then the queues are read
        // and the writer starts.
        let store = try SQLiteStore(path: path)
        #expect(try store.load().sessions.count == 2)
        let ended = try #require(store.submit([.deleteSession(key: 1, deliveries: [])], startingCommit: true))
        let queues = try store.loadQueues()
        #expect(queues.deliveries[2]?.map(\.sequence) == [3, 4])
        let (stream, continuation) = AsyncStream<UInt64>.makeStream()
        store.start { continuation.yield($0.ticket) }
        for await committed in stream where committed >= ended { break }
        store.close()
        #expect(try GRDBTestAccess.count("sessions", path: path) == 1)
        #expect(try GRDBTestAccess.count("deliveries", path: path) == 2, "the ended session's queued rows are left")
    }
}

extension SQLiteStoreFileTests {
    @Test(
        "A version 1 store file is upgraded in place: its session and queued message come back",
        .timeLimit(.minutes(1))
    )
    func versionOneUpgraded() throws {
        let path = StoreFiles.path("v1")
        defer { StoreFiles.remove(path) }
        try GRDBTestAccess.writeVersionOne(path: path)
        let store = try SQLiteStore(path: path)
        let snapshot = try store.load()
        #expect(snapshot.sessions.map(\.header.clientID) == ["old"])
        #expect(snapshot.lastMessageID == 7)
        let queues = try store.loadQueues()
        #expect(queues.deliveries[1]?.map(\.messageID) == [7])
        #expect(queues.messages[7].map { String(buffer: $0.payload) } == "")
        store.start { _ in }
        store.close()
        #expect(try GRDBTestAccess.count("counters", path: path) == 0)
    }
}

extension SQLiteStoreFileTests {
    @Test(
        "A retained message (a row of its own) whose last reference becomes one delivery leaves no row behind when that delivery goes",
        .timeLimit(.minutes(1))
    )
    func messageWithRowIsNotInlined() async throws {
        let path = StoreFiles.path("row")
        defer { StoreFiles.remove(path) }
        let store = try SQLiteStore(path: path)
        _ = try store.load()
        let (stream, continuation) = AsyncStream<UInt64>.makeStream()
        store.start { continuation.yield($0.ticket) }
        var commits = stream.makeAsyncIterator()
        func commit(_ changes: [StoreChange]) async throws {
            let ticket = try #require(store.submit(changes))
            while let committed = await commits.next(), committed < ticket {}
        }
        let message = ApplicationMessage(
            topic: try TopicName("a"),
            payload: ByteBuffer(string: "r"),
            qos: .atLeastOnce,
            retain: true
        )
        // A retained message: a row of its own.
        try await commit([.putMessage(id: 1, message), .putRetained(topic: "a", messageID: 1)])
        #expect(try GRDBTestAccess.count("messages", path: path) == 1)
        // Delivered to a stored session, then no longer retained: the delivery is its only reference.
        let delivery = StoredDelivery(
            sequence: 1,
            messageID: 1,
            qos: .atLeastOnce,
            retain: true,
            subscriptionIdentifiers: [],
            packetIdentifier: nil
        )
        try await commit([
            .putSession(Self.header(1)), .putMessage(id: 1, message), .putDelivery(session: 1, delivery),
            .deleteRetained(topic: "a"),
        ])
        try await commit([.deleteDelivery(sequence: 1, messageID: 1)])
        store.close()
        #expect(try GRDBTestAccess.count("messages", path: path) == 0)
        #expect(try GRDBTestAccess.count("deliveries", path: path) == 0)
    }
}

/// Store files of one test, in the temporary directory.
enum StoreFiles {
    static func path(_ name: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("tern-\(name)-\(UUID().uuidString).db").path
    }

    /// The database and its write-ahead log files.
    static func remove(_ path: String) {
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }
}

/// Direct access to a store file, to damage it on purpose.
enum GRDBTestAccess {
    /// A store file as Tern wrote them with schema version 1: one session with one queued
    /// QoS 1 message (topic "a", empty payload).
    static func writeVersionOne(path: String) throws {
        let database = try DatabaseQueue(path: path)
        defer { try? database.close() }
        try database.write { db in
            try db.execute(
                sql: """
                    CREATE TABLE sessions(
                        key INTEGER PRIMARY KEY,
                        client_id TEXT NOT NULL UNIQUE,
                        version INTEGER NOT NULL,
                        expiry INTEGER NOT NULL,
                        expires_at INTEGER,
                        attached INTEGER NOT NULL,
                        will BLOB,
                        will_expires_at INTEGER,
                        will_delay INTEGER NOT NULL DEFAULT 0,
                        will_deadline INTEGER
                    );
                    CREATE TABLE subscriptions(
                        session INTEGER NOT NULL,
                        filter TEXT NOT NULL,
                        options INTEGER NOT NULL,
                        identifier INTEGER,
                        PRIMARY KEY(session, filter)
                    ) WITHOUT ROWID;
                    CREATE TABLE messages(id INTEGER PRIMARY KEY, body BLOB NOT NULL, expires_at INTEGER);
                    CREATE TABLE deliveries(
                        seq INTEGER PRIMARY KEY,
                        session INTEGER NOT NULL,
                        message INTEGER NOT NULL,
                        flags INTEGER NOT NULL,
                        subscription_ids BLOB,
                        packet_id INTEGER
                    );
                    CREATE INDEX deliveries_by_session ON deliveries(session);
                    CREATE TABLE releases(session INTEGER NOT NULL, packet_id INTEGER NOT NULL, PRIMARY KEY(session, packet_id)) WITHOUT ROWID;
                    CREATE TABLE inbound_qos2(session INTEGER NOT NULL, packet_id INTEGER NOT NULL, PRIMARY KEY(session, packet_id)) WITHOUT ROWID;
                    CREATE TABLE retained(topic TEXT PRIMARY KEY, message INTEGER NOT NULL) WITHOUT ROWID;
                    PRAGMA user_version = 1;
                    """
            )
            try db.execute(
                sql: "INSERT INTO sessions(key, client_id, version, expiry, attached) VALUES (1, 'old', 5, 600, 0)"
            )
            try db.execute(sql: "INSERT INTO messages(id, body) VALUES (7, x'300400016100')")
            try db.execute(sql: "INSERT INTO deliveries(seq, session, message, flags) VALUES (3, 1, 7, 1)")
        }
    }

    static func addOrphans(path: String) throws {
        let database = try DatabaseQueue(path: path)
        defer { try? database.close() }
        try database.write { db in
            try db.execute(sql: "INSERT INTO messages(id, body) VALUES (7, x'300400016100')")
            try db.execute(sql: "INSERT INTO messages(id, body) VALUES (8, x'300400016100')")
            try db.execute(sql: "INSERT INTO deliveries(seq, session, message, flags) VALUES (1, 99, 7, 1)")
        }
    }

    static func count(_ table: String, path: String) throws -> Int {
        let database = try DatabaseQueue(path: path)
        defer { try? database.close() }
        return try database.read { db in try Int.fetchOne(db, sql: "SELECT count(*) FROM \(table)") ?? 0 }
    }

    static func corruptMessages(path: String) throws -> Int {
        let database = try DatabaseQueue(path: path)
        defer { try? database.close() }
        return try database.write { db in
            try db.execute(sql: "UPDATE messages SET body = x'00ff'")
            return db.changesCount
        }
    }
}

/// A will sent at QoS 1, so that it is queued for a subscriber that is away.

extension SQLiteStoreFileTests {
    /// A QoS 1 message "m<n>" on topic "t" queued for `session` for each `n` of `sequences`,
    /// message and delivery both numbered `n`.
    static func queued(_ sequences: ClosedRange<UInt64>, session: UInt64) throws -> [StoreChange] {
        var changes: [StoreChange] = []
        for sequence in sequences {
            let message = ApplicationMessage(
                topic: try TopicName("t"),
                payload: ByteBuffer(string: "m\(sequence)"),
                qos: .atLeastOnce,
                retain: false
            )
            changes += [.putMessage(id: sequence, message), .putDelivery(session: session, Self.delivery(sequence))]
        }
        return changes
    }

    /// A QoS 1 delivery numbered `sequence`, not yet sent, of message `message` (by default
    /// numbered the same).
    static func delivery(_ sequence: UInt64, message: UInt64? = nil) -> StoredDelivery {
        StoredDelivery(
            sequence: sequence,
            messageID: message ?? sequence,
            qos: .atLeastOnce,
            retain: false,
            subscriptionIdentifiers: [],
            packetIdentifier: nil
        )
    }

    @Test(
        "Packet identifiers of deliveries stored earlier are written with their batch, unless the delivery ends in it",
        .timeLimit(.minutes(1))
    )
    func packetIdentifiersOfEarlierDeliveries() async throws {
        let path = StoreFiles.path("sent")
        defer { StoreFiles.remove(path) }
        let store = try SQLiteStore(path: path)
        _ = try store.load()
        let (stream, continuation) = AsyncStream<UInt64>.makeStream()
        store.start { continuation.yield($0.ticket) }
        let first = try #require(store.submit([.putSession(Self.header(1))] + (try Self.queued(1...3, session: 1))))
        for await committed in stream where committed >= first { break }
        // One later batch: 1 and 2 are sent, 2 is acknowledged, 3 waits unsent.
        let second = try #require(
            store.submit([
                .deliverySent(sequence: 1, packetIdentifier: 7),
                .deliverySent(sequence: 2, packetIdentifier: 8),
                .deleteDelivery(sequence: 2, messageID: 2),
            ])
        )
        for await committed in stream where committed >= second { break }
        store.close()

        let reopened = try SQLiteStore(path: path)
        defer { reopened.close() }
        _ = try reopened.load()
        let queues = try reopened.loadQueues()
        let restored = try #require(queues.deliveries[1])
        #expect(restored.map(\.sequence) == [1, 3])
        #expect(restored.map(\.packetIdentifier) == [7, nil])
        #expect(queues.messages[1]?.payload == ByteBuffer(string: "m1"))
        #expect(queues.messages[2] == nil)
    }
}

extension SQLiteStoreFileTests {
    @Test(
        "Each session reads back its own subscriptions and QoS 2 state; rows of sessions that are not stored are left out",
        .timeLimit(.minutes(1))
    )
    func subscriptionsFindTheirSessions() async throws {
        let path = StoreFiles.path("read")
        defer { StoreFiles.remove(path) }
        let first = try StoreFiles.started(path: path)
        func subscription(_ filter: String) throws -> SessionSubscription {
            SessionSubscription(
                filter: try TopicFilter(filter),
                options: SubscriptionOptions(qos: .atLeastOnce),
                identifier: nil
            )
        }
        var changes: [StoreChange] = [1, 3, 5].map { .putSession(Self.header($0)) }
        changes += [
            .putSubscription(session: 1, try subscription("a/1")),
            .putSubscription(session: 3, try subscription("a/3")),
            .putSubscription(session: 3, try subscription("b/3")),
            .putSubscription(session: 5, try subscription("a/5")),
            .putRelease(session: 3, packetIdentifier: 7), .putInboundQoS2(session: 5, packetIdentifier: 9),
        ]
        _ = first.submit(changes)
        first.close()
        try StoreFiles.addRowsOfAbsentSessions(path: path)

        let store = try SQLiteStore(path: path)
        defer { store.close() }
        let sessions = try store.load().sessions
        #expect(sessions.map(\.header.key) == [1, 3, 5])
        #expect(sessions.map { $0.subscriptions.map(\.filter.string) } == [["a/1"], ["a/3", "b/3"], ["a/5"]])
        #expect(sessions.map(\.releases) == [[], [7], []])
        #expect(sessions.map(\.inboundQoS2) == [[], [], [9]])
    }
}

extension StoreFiles {
    /// The store at `path`, read and with its writer started, whose commits nobody watches.
    static func started(path: String) throws -> SQLiteStore {
        let store = try SQLiteStore(path: path)
        _ = try store.load()
        store.start { _ in }
        return store
    }

    /// Subscriptions and QoS 2 rows of sessions 0, 2, 4 and 6, which the store does not hold.
    static func addRowsOfAbsentSessions(path: String) throws {
        let database = try DatabaseQueue(path: path)
        defer { try? database.close() }
        try database.write { db in
            for key in [0, 2, 4, 6] {
                try db.execute(
                    sql: "INSERT INTO subscriptions(session, filter, options) VALUES (?, 'x', 1)",
                    arguments: [key]
                )
                try db.execute(sql: "INSERT INTO releases(session, packet_id) VALUES (?, 1)", arguments: [key])
                try db.execute(sql: "INSERT INTO inbound_qos2(session, packet_id) VALUES (?, 2)", arguments: [key])
            }
        }
    }
}
