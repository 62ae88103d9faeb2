import Foundation
import GRDB
import NIOCore
import TernBrokerCore
import TernCodec
import TernStore

/// The tables of a store file and how rows map to the broker's values.
///
/// Integer keys handed out by the broker tie the rows together: `sessions.key`,
/// `messages.id` and `deliveries.seq`. Times are milliseconds since the Unix epoch, absolute,
/// so that time spent stopped counts.
enum SQLiteSchema {
    /// 2: a delivery may carry its message's body (`deliveries.body`, `deliveries.expires_at`);
    /// `counters` keeps an identifier above every message identifier handed out (reserved a block
    /// at a time), which such a message leaves no row of its own to tell; and deliveries have no
    /// index by session: rows are appended in sequence order, and a session's are deleted by
    /// their keys (``StoreChange/deleteSession(key:deliveries:)``).
    static let version = 2

    private static let countersTable =
        "CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;"

    /// Raises the reserved message identifier (`counters`) to `id`.
    static let raiseMessageCounter =
        "INSERT INTO counters(name, value) VALUES ('message', ?) ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)"

    static func create(_ db: Database) throws {
        let found = try Int.fetchOne(db, sql: "PRAGMA user_version") ?? 0
        if found == version { return }
        if found == 1 {
            // Version 1 files read as they are: their deliveries refer to message rows.
            try db.execute(
                sql: """
                    ALTER TABLE deliveries ADD COLUMN body BLOB;
                    ALTER TABLE deliveries ADD COLUMN expires_at INTEGER;
                    DROP INDEX IF EXISTS deliveries_by_session;
                    \(countersTable)
                    PRAGMA user_version = \(version);
                    """
            )
            return
        }
        let tables = try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master WHERE type = 'table'") ?? 0
        guard found == 0, tables == 0 else {
            throw StoreCorruption("schema version \(found) with \(tables) tables; this Tern reads version \(version)")
        }
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
                    packet_id INTEGER,
                    body BLOB,
                    expires_at INTEGER
                );
                CREATE TABLE releases(session INTEGER NOT NULL, packet_id INTEGER NOT NULL, PRIMARY KEY(session, packet_id)) WITHOUT ROWID;
                CREATE TABLE inbound_qos2(session INTEGER NOT NULL, packet_id INTEGER NOT NULL, PRIMARY KEY(session, packet_id)) WITHOUT ROWID;
                CREATE TABLE retained(topic TEXT PRIMARY KEY, message INTEGER NOT NULL) WITHOUT ROWID;
                \(countersTable)
                PRAGMA user_version = \(version);
                """
        )
    }

    /// Rows nothing refers to any more (left by a crash between two batches that a later batch
    /// would have cleaned up): removed by the writer before its first batch, after the listeners
    /// opened, so the file does not grow without bound. The restore ignores them meanwhile.
    static func removeOrphans(_ db: Database) throws {
        try db.execute(
            sql: """
                DELETE FROM deliveries WHERE session NOT IN (SELECT key FROM sessions);
                DELETE FROM subscriptions WHERE session NOT IN (SELECT key FROM sessions);
                DELETE FROM releases WHERE session NOT IN (SELECT key FROM sessions);
                DELETE FROM inbound_qos2 WHERE session NOT IN (SELECT key FROM sessions);
                DELETE FROM messages WHERE id NOT IN (SELECT message FROM deliveries WHERE body IS NULL)
                    AND id NOT IN (SELECT message FROM retained);
                """
        )
    }

    static func putSession(_ header: StoredSessionHeader, db: Database) throws {
        let will = header.will.map { Data(StoredMessageCoding.encode($0).readableBytesView) }
        try db.cachedStatement(
            sql: """
                INSERT INTO sessions(key, client_id, version, expiry, expires_at, attached, will, will_expires_at, will_delay, will_deadline)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(key) DO UPDATE SET
                    version = excluded.version, expiry = excluded.expiry, expires_at = excluded.expires_at,
                    attached = excluded.attached, will = excluded.will, will_expires_at = excluded.will_expires_at,
                    will_delay = excluded.will_delay, will_deadline = excluded.will_deadline
                """
        ).execute(arguments: [
            Int64(header.key), header.clientID, Int(header.protocolVersion.rawValue), Int64(header.expiryInterval),
            header.expiresAt?.millisecondsSinceEpoch, header.attached, will,
            header.will?.expiresAt?.millisecondsSinceEpoch,
            Int64(header.willDelay), header.willDeadline?.millisecondsSinceEpoch,
        ])
    }

    /// Subscription Identifiers as variable byte integers; `nil` when there are none (the usual case).
    static func encodeIdentifiers(_ identifiers: [UInt32]) -> Data? {
        guard !identifiers.isEmpty else { return nil }
        return Data(StoredIdentifierCoding.encode(identifiers).readableBytesView)
    }

    static func decodeIdentifiers(_ bytes: UnsafeRawBufferPointer) throws -> [UInt32] {
        try StoredIdentifierCoding.decode(ByteBuffer(bytes: bytes))
    }

    /// The columns ``header(_:)`` reads, in its order.
    static let sessionColumns =
        "key, client_id, version, expiry, expires_at, attached, will, will_expires_at, will_delay, will_deadline"

    /// A session row, its columns as in ``sessionColumns``.
    static func header(_ row: RawRow) throws -> StoredSessionHeader {
        guard let version = ProtocolVersion(rawValue: UInt8(clamping: row.int64(2))) else {
            throw StoreCorruption("a session has protocol level \(row.int64(2))")
        }
        let will: ApplicationMessage? =
            row.isNull(6)
            ? nil
            : try StoredMessageCoding.decode(
                ByteBuffer(bytes: row.bytes(6)),
                expiresAt: row.optionalInt64(7).map { BrokerInstant(millisecondsSinceEpoch: $0) }
            )
        return StoredSessionHeader(
            key: UInt64(row.int64(0)),
            clientID: row.string(1),
            protocolVersion: version,
            expiryInterval: UInt32(clamping: row.int64(3)),
            expiresAt: row.optionalInt64(4).map { BrokerInstant(millisecondsSinceEpoch: $0) },
            attached: row.int64(5) != 0,
            will: will,
            willDelay: UInt32(clamping: row.int64(8)),
            willDeadline: row.optionalInt64(9).map { BrokerInstant(millisecondsSinceEpoch: $0) }
        )
    }

    static func readSnapshot(_ db: Database) throws -> StoreSnapshot {
        var snapshot = StoreSnapshot()
        // A row per session and per subscription: read through SQLite's C API (PreparedStatement),
        // as the queues are, rather than GRDB's rows with their columns looked up by name. Both
        // in key order (the subscriptions' primary key starts with the session), so that each
        // subscription finds its session by walking the list alongside, without a dictionary of
        // every session to build and then copy out.
        var sessions: [StoredSession] = []
        sessions.reserveCapacity(try Int.fetchOne(db, sql: "SELECT count(*) FROM sessions") ?? 0)
        try PreparedStatement(db, "SELECT \(sessionColumns) FROM sessions ORDER BY key").forEachRow(db) { row in
            sessions.append(StoredSession(header: try header(row)))
        }
        var current = 0
        try PreparedStatement(
            db,
            "SELECT session, filter, options, identifier FROM subscriptions ORDER BY session"
        ).forEachRow(db) { row in
            let key = UInt64(row.int64(0))
            while current < sessions.count, sessions[current].header.key < key { current += 1 }
            guard current < sessions.count, sessions[current].header.key == key else { return }
            let filter: TopicFilter
            let options: SubscriptionOptions
            do throws(TernError) {
                filter = try TopicFilter(row.string(1))
                options = try SubscriptionOptions(byte: UInt8(clamping: row.int64(2)), version: .v5)
            } catch {
                throw StoreCorruption("a subscription does not decode: \(error.reason)")
            }
            sessions[current].subscriptions.append(
                SessionSubscription(
                    filter: filter,
                    options: options,
                    identifier: row.optionalInt64(3).map { UInt32(clamping: $0) }
                )
            )
        }
        // The queues come later (readQueues): here only the retained messages, and the highest
        // keys, so that nothing the broker stores meanwhile takes one of theirs.
        var retainedMessages = PackedMessageReader()
        try PreparedStatement(
            db,
            "SELECT m.id, m.body, m.expires_at FROM retained r JOIN messages m ON m.id = r.message"
        ).forEachRow(db) { row in
            guard !row.isNull(1) else { throw StoreCorruption("a stored message has no body") }
            try retainedMessages.add(id: UInt64(row.int64(0)), body: row.bytes(1), expiresAt: row.optionalInt64(2))
        }
        snapshot.messages.merge(try retainedMessages.finish().messages) { _, new in new }
        snapshot.lastDeliverySequence = UInt64(try Int64.fetchOne(db, sql: "SELECT max(seq) FROM deliveries") ?? 0)
        // A message stored in its delivery's row has no row of its own: the counter tells.
        snapshot.lastMessageID = UInt64(
            try Int64.fetchOne(
                db,
                sql: """
                    SELECT max(coalesce((SELECT max(id) FROM messages), 0),
                               coalesce((SELECT value FROM counters WHERE name = 'message'), 0))
                    """
            ) ?? 0
        )
        snapshot.queuesFollow = true
        // Few rows (QoS 2 exchanges in progress): each finds its session by binary search.
        func index(of key: UInt64) -> Int? {
            var low = 0
            var high = sessions.count
            while low < high {
                let middle = (low + high) / 2
                if sessions[middle].header.key < key { low = middle + 1 } else { high = middle }
            }
            return low < sessions.count && sessions[low].header.key == key ? low : nil
        }
        let releaseRows = try Row.fetchCursor(db, sql: "SELECT session, packet_id FROM releases")
        while let row = try releaseRows.next() {
            guard let index = index(of: UInt64(row[0] as Int64)) else { continue }
            sessions[index].releases.append(UInt16(clamping: row[1] as Int))
        }
        let inboundRows = try Row.fetchCursor(db, sql: "SELECT session, packet_id FROM inbound_qos2")
        while let row = try inboundRows.next() {
            guard let index = index(of: UInt64(row[0] as Int64)) else { continue }
            sessions[index].inboundQoS2.append(UInt16(clamping: row[1] as Int))
        }
        let retainedRows = try Row.fetchCursor(db, sql: "SELECT topic, message FROM retained")
        while let row = try retainedRows.next() {
            snapshot.retained[row[0]] = UInt64(row[1] as Int64)
        }
        snapshot.sessions = sessions
        return snapshot
    }

    /// What ``readQueues(_:sessions:)`` read.
    struct ReadQueues {
        var queues = StoredQueues()
        /// How many deliveries refer to each message with a row of its own.
        var references: [UInt64: Int] = [:]
        /// The deliveries that hold their message in their own row.
        var inlineDeliveries = InlineDeliveries()
    }

    /// The deliveries of `sessions`, with the messages they refer to (``StoredQueues``).
    /// Deliveries of sessions that are not stored are orphans, which the writer removes.
    static func readQueues(_ db: Database, sessions: Set<UInt64>) throws -> ReadQueues {
        var read = ReadQueues()
        // Messages and deliveries are a row per queued message: read through SQLite's C API
        // (see PreparedStatement) rather than GRDB's boxed rows.
        let messageCount = try Int.fetchOne(db, sql: "SELECT count(*) FROM messages") ?? 0
        var messages = PackedMessageReader(expectedMessages: messageCount)
        try PreparedStatement(db, "SELECT id, body, expires_at FROM messages").forEachRow(db) { row in
            guard !row.isNull(1) else { throw StoreCorruption("a stored message has no body") }
            try messages.add(id: UInt64(row.int64(0)), body: row.bytes(1), expiresAt: row.optionalInt64(2))
        }
        let deliveries = try PreparedStatement(
            db,
            "SELECT seq, session, message, flags, subscription_ids, packet_id, body, expires_at FROM deliveries ORDER BY seq"
        )
        try deliveries.forEachRow(db) { row in
            let key = UInt64(row.int64(1))
            guard sessions.contains(key) else { return }
            let flags = row.int64(3)
            guard let qos = QoS(rawValue: UInt8(flags & 3)) else {
                throw StoreCorruption("a delivery has QoS \(flags & 3)")
            }
            // A message only this delivery refers to is stored in its row (SQLiteStore.write).
            let messageID = UInt64(row.int64(2))
            if row.isNull(6) {
                read.references[messageID, default: 0] += 1
            } else {
                read.inlineDeliveries.insert(UInt64(row.int64(0)))
                // Queued, it stays as these bytes until it is sent (RestoredQueue).
                if !messages.contains(messageID) {
                    try messages.add(
                        id: messageID,
                        body: row.bytes(6),
                        expiresAt: row.optionalInt64(7),
                        asBytes: row.isNull(5)
                    )
                }
            }
            read.queues.deliveries[key, default: []].append(
                StoredDelivery(
                    sequence: UInt64(row.int64(0)),
                    messageID: UInt64(row.int64(2)),
                    qos: qos,
                    retain: flags & 4 != 0,
                    subscriptionIdentifiers: row.isNull(4) ? [] : try decodeIdentifiers(row.bytes(4)),
                    packetIdentifier: row.optionalInt64(5).map { UInt16(clamping: $0) }
                )
            )
        }
        (read.queues.messages, read.queues.bodies) = try messages.finish()
        return read
    }
}
