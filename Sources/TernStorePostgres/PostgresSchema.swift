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
    static let version: Int64 = 2
    /// The advisory lock taken while the tables are created or migrated.
    static let schemaLockKey: Int64 = 0x7465_726E_0000

    static func create(on connection: PostgresConnection, schema: String, logger: Logger) throws {
        // Nodes of a cluster starting at once would race to create the same tables.
        try connection.run("SELECT pg_advisory_lock(\(schemaLockKey))", logger: logger)
        defer { _ = try? connection.run("SELECT pg_advisory_unlock(\(schemaLockKey))", logger: logger) }
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
            if found == 1 {
                try migrateToClusterTables(on: connection, logger: logger)
                return
            }
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
                packet_id INTEGER,
                position BIGSERIAL NOT NULL
            )
            """,
            "CREATE INDEX deliveries_by_session ON deliveries (session)",
            "CREATE INDEX deliveries_by_message ON deliveries (message)",
            "CREATE TABLE releases (session BIGINT NOT NULL, packet_id INTEGER NOT NULL, PRIMARY KEY (session, packet_id))",
            "CREATE TABLE inbound_qos2 (session BIGINT NOT NULL, packet_id INTEGER NOT NULL, PRIMARY KEY (session, packet_id))",
            "CREATE TABLE retained (topic TEXT PRIMARY KEY, message BIGINT NOT NULL)",
            "CREATE INDEX retained_by_message ON retained (message)",
            "INSERT INTO tern_meta (name, value) VALUES ('last_message', 0), ('last_delivery', 0)",
        ] + clusterTables + ["INSERT INTO tern_meta (name, value) VALUES ('schema_version', \(version))"] {
            try connection.run(PostgresQuery(unsafeSQL: statement), logger: logger)
        }
    }

    /// Version 2 added the tables of a cluster's nodes to version 1's.
    private static func migrateToClusterTables(on connection: PostgresConnection, logger: Logger) throws {
        try connection.run("BEGIN", logger: logger)
        do {
            for statement in clusterTables {
                try connection.run(PostgresQuery(unsafeSQL: statement), logger: logger)
            }
            try connection.run("UPDATE tern_meta SET value = 2 WHERE name = 'schema_version'", logger: logger)
            try connection.run("COMMIT", logger: logger)
        } catch {
            _ = try? connection.run("ROLLBACK", logger: logger)
            throw error
        }
    }

    /// The tables a cluster's nodes share besides the store's (see ``PostgresCluster``), and the
    /// column that orders deliveries stored by different nodes:
    /// - `cluster_nodes`: each node's number, by name;
    /// - `cluster_clients`: the node each connected client is attached to (`node`, NULL once it
    ///   left), with the will another node publishes should that one die;
    /// - `cluster_subscriptions`: every session's subscriptions, stored or not, which each node
    ///   routes by;
    /// - `cluster_transit`: messages on their way to the node a subscriber is attached to.
    static let clusterTables = [
        // The order deliveries were stored in, across every node: each node numbers its own
        // deliveries (`seq`), so only the database's sequence orders one node's before another's.
        "ALTER TABLE deliveries ADD COLUMN IF NOT EXISTS position BIGSERIAL NOT NULL",
        "CREATE TABLE cluster_nodes (number INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, joined_at BIGINT NOT NULL)",
        """
        CREATE TABLE cluster_clients (
            client_id TEXT PRIMARY KEY,
            node INTEGER,
            epoch BIGINT NOT NULL DEFAULT 1,
            will BYTEA,
            will_delay BIGINT NOT NULL DEFAULT 0,
            expiry BIGINT NOT NULL DEFAULT 0
        )
        """,
        "CREATE INDEX cluster_clients_by_node ON cluster_clients (node)",
        """
        CREATE TABLE cluster_subscriptions (
            client_id TEXT NOT NULL,
            filter TEXT NOT NULL,
            options SMALLINT NOT NULL,
            identifier BIGINT,
            session BIGINT NOT NULL,
            node INTEGER NOT NULL,
            PRIMARY KEY (client_id, filter)
        )
        """,
        """
        CREATE TABLE cluster_transit (
            id BIGSERIAL PRIMARY KEY,
            node INTEGER NOT NULL,
            client_id TEXT NOT NULL,
            session BIGINT NOT NULL,
            seq BIGINT NOT NULL,
            flags SMALLINT NOT NULL,
            subscription_ids BYTEA,
            message_id BIGINT NOT NULL,
            body BYTEA NOT NULL,
            expires_at BIGINT
        )
        """,
        "CREATE INDEX cluster_transit_by_node ON cluster_transit (node, id)",
    ]

    // MARK: Reading

    /// - Parameter includingSessions: whether to read the sessions (and let their queues follow),
    ///   or only the highest session key (a cluster's node, which reads a session when its
    ///   client connects).
    static func readSnapshot(
        on connection: PostgresConnection,
        includingSessions: Bool = true,
        logger: Logger
    ) throws -> StoreSnapshot {
        var snapshot = StoreSnapshot()
        if !includingSessions {
            try readRetained(on: connection, into: &snapshot, logger: logger)
            (snapshot.lastMessageID, snapshot.lastDeliverySequence) = try lastKeys(on: connection, logger: logger)
            for key in try connection.run("SELECT coalesce(max(key), 0) FROM sessions", logger: logger).decode(
                Int64.self
            ) {
                snapshot.lastSessionKey = UInt64(key)
            }
            return snapshot
        }
        var sessions: [UInt64: StoredSession] = [:]
        var order: [UInt64] = []
        for row in try connection.run(
            PostgresQuery(unsafeSQL: "SELECT \(sessionColumns) FROM sessions ORDER BY key"),
            logger: logger
        ).decode(SessionRow.self) {
            let header = try decodeSession(row)
            sessions[header.key] = StoredSession(header: header)
            order.append(header.key)
        }
        for (key, filterText, optionsByte, identifier) in try connection.run(
            "SELECT session, filter, options, identifier FROM subscriptions ORDER BY session, filter",
            logger: logger
        ).decode((Int64, String, Int16, Int64?).self) {
            guard sessions[UInt64(key)] != nil else { continue }
            sessions[UInt64(key)]!.subscriptions.append(
                try decodeSubscription(filter: filterText, options: optionsByte, identifier: identifier)
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
        try readRetained(on: connection, into: &snapshot, logger: logger)
        let (lastMessage, lastDelivery) = try lastKeys(on: connection, logger: logger)
        snapshot.lastMessageID = lastMessage
        snapshot.lastDeliverySequence = lastDelivery
        snapshot.queuesFollow = true
        snapshot.sessions = order.compactMap { sessions[$0] }
        return snapshot
    }

    /// The columns of a session's row, in ``SessionRow``'s order.
    static let sessionColumns =
        "key, client_id, version, expiry, expires_at, attached, will, will_expires_at, will_delay, will_deadline"
    typealias SessionRow = (Int64, String, Int16, Int64, Int64?, Bool, ByteBuffer?, Int64?, Int64, Int64?)

    static func decodeSession(_ row: SessionRow) throws -> StoredSessionHeader {
        guard let version = ProtocolVersion(rawValue: UInt8(clamping: row.2)) else {
            throw StoreCorruption("a session has protocol level \(row.2)")
        }
        let will = try row.6.map {
            try StoredMessageCoding.decode($0, expiresAt: row.7.map(BrokerInstant.init(millisecondsSinceEpoch:)))
        }
        return StoredSessionHeader(
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
    }

    static func decodeSubscription(filter text: String, options byte: Int16, identifier: Int64?) throws
        -> SessionSubscription
    {
        do {
            return SessionSubscription(
                filter: try TopicFilter(text),
                options: try SubscriptionOptions(byte: UInt8(clamping: byte), version: .v5),
                identifier: identifier.map { UInt32(clamping: $0) }
            )
        } catch {
            throw StoreCorruption("a subscription does not decode: \(error.reason)")
        }
    }

    /// The columns of a delivery's row, in ``DeliveryRow``'s order.
    static let deliveryColumns = "seq, session, message, flags, subscription_ids, packet_id"
    typealias DeliveryRow = (Int64, Int64, Int64, Int16, ByteBuffer?, Int32?)

    static func decodeDelivery(_ row: DeliveryRow) throws -> StoredDelivery {
        let (seq, _, message, flags, identifiers, packetID) = row
        guard let qos = QoS(rawValue: UInt8(flags & 3)) else {
            throw StoreCorruption("a delivery has QoS \(flags & 3)")
        }
        return StoredDelivery(
            sequence: UInt64(seq),
            messageID: UInt64(message),
            qos: qos,
            retain: flags & 4 != 0,
            subscriptionIdentifiers: try identifiers.map(StoredIdentifierCoding.decode) ?? [],
            packetIdentifier: packetID.map { UInt16(clamping: $0) }
        )
    }

    static func readRetained(on connection: PostgresConnection, into snapshot: inout StoreSnapshot, logger: Logger)
        throws
    {
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

    /// The deliveries of `sessions`, in sequence order, with the messages they refer to. A
    /// message that one queued delivery alone refers to is handed over as its stored bytes
    /// (``StoredQueues/bodies``), checked but not decoded: its session keeps it so until it is
    /// sent. Every other message is decoded once, for all its deliveries.
    static func readQueues(
        on connection: PostgresConnection,
        sessions: [UInt64],
        logger: Logger
    ) throws -> StoredQueues {
        var queues = StoredQueues()
        let keys = sessions.map { Int64($0) }
        // How each message is referred to: by queued deliveries (a count), or by one in flight.
        var queuedReferences: [UInt64: Int] = [:]
        var inFlight: Set<UInt64> = []
        for row in try connection.run(
            PostgresQuery(
                unsafeSQL: "SELECT \(deliveryColumns) FROM deliveries WHERE session = ANY($1) ORDER BY seq",
                binds: {
                    var binds = PostgresBindings()
                    binds.append(keys)
                    return binds
                }()
            ),
            logger: logger
        ).decode(DeliveryRow.self) {
            let delivery = try decodeDelivery(row)
            if delivery.packetIdentifier == nil {
                queuedReferences[delivery.messageID, default: 0] += 1
            } else {
                inFlight.insert(delivery.messageID)
            }
            queues.deliveries[UInt64(row.1), default: []].append(delivery)
        }
        for (id, body, expiresAt) in try connection.run(
            """
            SELECT m.id, m.body, m.expires_at FROM messages m
            WHERE EXISTS (SELECT 1 FROM deliveries d WHERE d.message = m.id AND d.session = ANY(\(keys)))
            """,
            logger: logger
        ).decode((Int64, ByteBuffer, Int64?).self) {
            let key = UInt64(id)
            let expiry = expiresAt.map(BrokerInstant.init(millisecondsSinceEpoch:))
            if queuedReferences[key] == 1, !inFlight.contains(key) {
                queues.bodies[key] = try StoredMessageCoding.validate(body, expiresAt: expiry)
            } else {
                queues.messages[key] = try StoredMessageCoding.decode(body, expiresAt: expiry, storeID: key)
            }
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
