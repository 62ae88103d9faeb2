import Logging
import NIOCore
import PostgresNIO
import TernBrokerCore
import TernCodec
import TernStore

/// The tables of a PostgreSQL store and how rows map to the broker's values: the same rows as
/// the SQLite store's, keyed by the integers the broker hands out (`sessions.key`,
/// `messages.id`, `deliveries.seq`), times in milliseconds since the Unix epoch, messages as the
/// MQTT 5 PUBLISH that carries them (``StoredMessageCoding``).
///
/// Several writers may share the tables (the nodes of a cluster), so a message's row is not
/// reference-counted in memory: it goes when no delivery and no retained topic refers to it any
/// more, as the database sees it (``PostgresBatch``).
///
/// Every function here blocks its caller until the server answers (`EventLoopFuture.wait()`):
/// the store's reads and its writer run on threads of their own, never on an event loop and
/// never on Swift concurrency's few threads, which a wait would starve.
enum PostgresSchema {
    /// The version of the tables this Tern reads and writes, kept in `tern_meta`.
    static let version: Int64 = 1

    static func create(on connection: PostgresConnection, schema: String, logger: Logger) throws {
        try connection.run(PostgresQuery(unsafeSQL: "CREATE SCHEMA IF NOT EXISTS \(schema)"), logger: logger)
        try connection.run(PostgresQuery(unsafeSQL: "SET search_path TO \(schema)"), logger: logger)
        try connection.run(
            "CREATE TABLE IF NOT EXISTS tern_meta (name TEXT PRIMARY KEY, value BIGINT NOT NULL)",
            logger: logger
        )
        var found: Int64?
        for value in try connection.run(
            "SELECT value FROM tern_meta WHERE name = 'schema_version'",
            logger: logger
        ).decode(Int64.self) {
            found = value
        }
        if let found {
            guard found == version else {
                throw PostgresStoreError(
                    "schema \(schema) holds store version \(found); this Tern reads version \(version)"
                )
            }
            return
        }
        for statement in [
            """
            CREATE TABLE sessions (
                key BIGINT PRIMARY KEY,
                client_id TEXT NOT NULL UNIQUE,
                version SMALLINT NOT NULL,
                expiry BIGINT NOT NULL,
                expires_at BIGINT,
                attached BOOLEAN NOT NULL,
                will BYTEA,
                will_expires_at BIGINT,
                will_delay BIGINT NOT NULL DEFAULT 0,
                will_deadline BIGINT
            )
            """,
            """
            CREATE TABLE subscriptions (
                session BIGINT NOT NULL,
                filter TEXT NOT NULL,
                options SMALLINT NOT NULL,
                identifier BIGINT,
                PRIMARY KEY (session, filter)
            )
            """,
            // `touches` counts the batches that put the message: a collection of messages nothing
            // refers to skips one a concurrent batch has just put again (see PostgresBatch).
            """
            CREATE TABLE messages (
                id BIGINT PRIMARY KEY,
                body BYTEA NOT NULL,
                expires_at BIGINT,
                touches BIGINT NOT NULL DEFAULT 0
            )
            """,
            """
            CREATE TABLE deliveries (
                seq BIGINT PRIMARY KEY,
                session BIGINT NOT NULL,
                message BIGINT NOT NULL,
                flags SMALLINT NOT NULL,
                subscription_ids BYTEA,
                packet_id INTEGER
            )
            """,
            "CREATE INDEX deliveries_by_session ON deliveries (session)",
            "CREATE INDEX deliveries_by_message ON deliveries (message)",
            "CREATE TABLE releases (session BIGINT NOT NULL, packet_id INTEGER NOT NULL, PRIMARY KEY (session, packet_id))",
            "CREATE TABLE inbound_qos2 (session BIGINT NOT NULL, packet_id INTEGER NOT NULL, PRIMARY KEY (session, packet_id))",
            "CREATE TABLE retained (topic TEXT PRIMARY KEY, message BIGINT NOT NULL)",
            "CREATE INDEX retained_by_message ON retained (message)",
            "INSERT INTO tern_meta (name, value) VALUES ('last_message', 0), ('last_delivery', 0)",
            "INSERT INTO tern_meta (name, value) VALUES ('schema_version', \(version))",
        ] {
            try connection.run(PostgresQuery(unsafeSQL: statement), logger: logger)
        }
    }

    // MARK: Reading

    static func readSnapshot(on connection: PostgresConnection, logger: Logger) throws -> StoreSnapshot {
        var snapshot = StoreSnapshot()
        var sessions: [UInt64: StoredSession] = [:]
        var order: [UInt64] = []
        let sessionRows = try connection.run(
            """
            SELECT key, client_id, version, expiry, expires_at, attached, will, will_expires_at, will_delay, will_deadline
            FROM sessions ORDER BY key
            """,
            logger: logger
        )
        for row in try sessionRows.decode(
            (
                Int64, String, Int16, Int64, Int64?, Bool, ByteBuffer?, Int64?, Int64, Int64?
            ).self
        ) {
            guard let version = ProtocolVersion(rawValue: UInt8(clamping: row.2)) else {
                throw StoreCorruption("a session has protocol level \(row.2)")
            }
            let will = try row.6.map {
                try StoredMessageCoding.decode($0, expiresAt: row.7.map(BrokerInstant.init(millisecondsSinceEpoch:)))
            }
            let header = StoredSessionHeader(
                key: UInt64(row.0),
                clientID: row.1,
                protocolVersion: version,
                expiryInterval: UInt32(clamping: row.3),
                expiresAt: row.4.map(BrokerInstant.init(millisecondsSinceEpoch:)),
                attached: row.5,
                will: will,
                willDelay: UInt32(clamping: row.8),
                willDeadline: row.9.map(BrokerInstant.init(millisecondsSinceEpoch:))
            )
            sessions[header.key] = StoredSession(header: header)
            order.append(header.key)
        }
        for (key, filterText, optionsByte, identifier) in try connection.run(
            "SELECT session, filter, options, identifier FROM subscriptions ORDER BY session, filter",
            logger: logger
        ).decode((Int64, String, Int16, Int64?).self) {
            guard sessions[UInt64(key)] != nil else { continue }
            let filter: TopicFilter
            let options: SubscriptionOptions
            do {
                filter = try TopicFilter(filterText)
                options = try SubscriptionOptions(byte: UInt8(clamping: optionsByte), version: .v5)
            } catch {
                throw StoreCorruption("a subscription does not decode: \(error.reason)")
            }
            sessions[UInt64(key)]!.subscriptions.append(
                SessionSubscription(
                    filter: filter,
                    options: options,
                    identifier: identifier.map { UInt32(clamping: $0) }
                )
            )
        }
        for (key, packetID) in try connection.run(
            "SELECT session, packet_id FROM releases ORDER BY session, packet_id",
            logger: logger
        ).decode((Int64, Int32).self) {
            sessions[UInt64(key)]?.releases.append(UInt16(clamping: packetID))
        }
        for (key, packetID) in try connection.run(
            "SELECT session, packet_id FROM inbound_qos2 ORDER BY session, packet_id",
            logger: logger
        ).decode((Int64, Int32).self) {
            sessions[UInt64(key)]?.inboundQoS2.append(UInt16(clamping: packetID))
        }
        for (topic, id, body, expiresAt) in try connection.run(
            "SELECT r.topic, m.id, m.body, m.expires_at FROM retained r JOIN messages m ON m.id = r.message",
            logger: logger
        ).decode((String, Int64, ByteBuffer, Int64?).self) {
            snapshot.retained[topic] = UInt64(id)
            snapshot.messages[UInt64(id)] = try StoredMessageCoding.decode(
                body,
                expiresAt: expiresAt.map(BrokerInstant.init(millisecondsSinceEpoch:)),
                storeID: UInt64(id)
            )
        }
        let (lastMessage, lastDelivery) = try lastKeys(on: connection, logger: logger)
        snapshot.lastMessageID = lastMessage
        snapshot.lastDeliverySequence = lastDelivery
        snapshot.queuesFollow = true
        snapshot.sessions = order.compactMap { sessions[$0] }
        return snapshot
    }

    /// The highest message identifier and delivery sequence ever stored: the counters the writer
    /// raises, or what the tables hold, whichever is higher.
    static func lastKeys(on connection: PostgresConnection, logger: Logger) throws -> (UInt64, UInt64) {
        var result: (UInt64, UInt64) = (0, 0)
        for (message, delivery) in try connection.run(
            """
            SELECT greatest((SELECT value FROM tern_meta WHERE name = 'last_message'), coalesce((SELECT max(id) FROM messages), 0)),
                   greatest((SELECT value FROM tern_meta WHERE name = 'last_delivery'), coalesce((SELECT max(seq) FROM deliveries), 0))
            """,
            logger: logger
        ).decode((Int64, Int64).self) {
            result = (UInt64(message), UInt64(delivery))
        }
        return result
    }

    /// The deliveries of `sessions`, in sequence order, with the messages they refer to.
    static func readQueues(
        on connection: PostgresConnection,
        sessions: [UInt64],
        logger: Logger
    ) throws -> StoredQueues {
        var queues = StoredQueues()
        let keys = sessions.map { Int64($0) }
        for (id, body, expiresAt) in try connection.run(
            """
            SELECT m.id, m.body, m.expires_at FROM messages m
            WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.message = m.id AND d.session = ANY(\(keys)))
            """,
            logger: logger
        ).decode((Int64, ByteBuffer, Int64?).self) {
            queues.messages[UInt64(id)] = try StoredMessageCoding.decode(
                body,
                expiresAt: expiresAt.map(BrokerInstant.init(millisecondsSinceEpoch:)),
                storeID: UInt64(id)
            )
        }
        for (seq, session, message, flags, identifiers, packetID) in try connection.run(
            """
            SELECT seq, session, message, flags, subscription_ids, packet_id FROM deliveries
            WHERE session = ANY(\(keys)) ORDER BY seq
            """,
            logger: logger
        ).decode((Int64, Int64, Int64, Int16, ByteBuffer?, Int32?).self) {
            guard let qos = QoS(rawValue: UInt8(flags & 3)) else {
                throw StoreCorruption("a delivery has QoS \(flags & 3)")
            }
            queues.deliveries[UInt64(session), default: []].append(
                StoredDelivery(
                    sequence: UInt64(seq),
                    messageID: UInt64(message),
                    qos: qos,
                    retain: flags & 4 != 0,
                    subscriptionIdentifiers: try identifiers.map(StoredIdentifierCoding.decode) ?? [],
                    packetIdentifier: packetID.map { UInt16(clamping: $0) }
                )
            )
        }
        return queues
    }

    /// Rows nothing refers to any more (left by a crash between two batches that a later batch
    /// would have cleaned up), removed by the writer before its first batch.
    static func removeOrphans(on connection: PostgresConnection, logger: Logger) throws {
        for table in ["deliveries", "subscriptions", "releases", "inbound_qos2"] {
            try connection.run(
                PostgresQuery(
                    unsafeSQL:
                        "DELETE FROM \(table) t WHERE NOT EXISTS (SELECT 1 FROM sessions s WHERE s.key = t.session)"
                ),
                logger: logger
            )
        }
        try connection.run(
            PostgresQuery(unsafeSQL: collectMessages(among: "SELECT id, touches FROM messages")),
            logger: logger
        )
    }

    /// Deletes the messages among `candidates` (a query of `id, touches`) that no delivery and no
    /// retained topic refers to. Another writer may be putting one of them again, with a delivery
    /// that this statement cannot see yet: its put raised `touches` and locked the row, so once
    /// it commits the row no longer matches the `touches` read here and stays.
    static func collectMessages(among candidates: String) -> String {
        """
        DELETE FROM messages m USING (\(candidates)) c
        WHERE m.id = c.id AND m.touches = c.touches
          AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.message = m.id)
          AND NOT EXISTS (SELECT 1 FROM retained r WHERE r.message = m.id)
        """
    }
}
