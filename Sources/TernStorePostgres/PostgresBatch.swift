import Logging
import NIOCore
import PostgresNIO
import TernBrokerCore
import TernCodec
import TernStore

/// One batch of store changes, reduced to what must reach the tables, and written in one
/// transaction with a statement per kind of row rather than one per change.
///
/// As in the SQLite store, a delivery put and finished within the batch (the usual case for a
/// connected subscriber) is never written, and a message is written only if something written
/// refers to it. Sessions and subscriptions keep their order; the rest is keyed, so that the last
/// change of a row wins.
struct PostgresBatch {
    private enum OrderedChange {
        case putSession(StoredSessionHeader)
        case deleteSession(UInt64)
        case putSubscription(session: UInt64, SessionSubscription)
        case deleteSubscription(session: UInt64, filter: String)
    }

    private struct PairKey: Hashable {
        var session: UInt64
        var packetIdentifier: UInt16
    }

    private var ordered: [OrderedChange] = []
    private var messages: [UInt64: ApplicationMessage] = [:]
    /// Deliveries to insert, by sequence.
    private var deliveries: [UInt64: (session: UInt64, delivery: StoredDelivery)] = [:]
    /// Packet identifiers of deliveries stored by an earlier batch that were sent since.
    private var sent: [UInt64: UInt16] = [:]
    private var deletedDeliveries: [UInt64] = []
    /// Messages whose last reference may have gone in this batch.
    private var collectable: Set<UInt64> = []
    /// `true`: put; `false`: delete.
    private var releases: [PairKey: Bool] = [:]
    private var inboundQoS2: [PairKey: Bool] = [:]
    /// A message identifier: put; `nil`: delete.
    private var retained: [String: UInt64?] = [:]
    private var highestMessage: UInt64 = 0
    private var highestDelivery: UInt64 = 0
    /// What the other nodes of a cluster must learn, in order, and the messages on their way.
    private var cluster = PostgresClusterBatch()
    let count: Int

    /// - Parameter node: this node's number when the store is a cluster's, else `nil`.
    init(_ changes: [StoreChange], node: Int32? = nil) {
        count = changes.count
        cluster.node = node
        for change in changes { apply(change) }
    }

    private mutating func apply(_ change: StoreChange) {
        switch change {
        case .putSession(let header):
            ordered.append(.putSession(header))
        case .deleteSession(let key, let stored):
            for (sequence, pending) in deliveries where pending.session == key {
                deliveries[sequence] = nil
                collectable.insert(pending.delivery.messageID)
            }
            for delivery in stored {
                sent[delivery.sequence] = nil
                collectable.insert(delivery.messageID)
            }
            releases = releases.filter { $0.key.session != key }
            inboundQoS2 = inboundQoS2.filter { $0.key.session != key }
            ordered.append(.deleteSession(key))
        case .putSubscription(let key, let subscription):
            ordered.append(.putSubscription(session: key, subscription))
        case .deleteSubscription(let key, let filter):
            ordered.append(.deleteSubscription(session: key, filter: filter))
        case .putMessage(let id, let message):
            if messages[id] == nil { messages[id] = message }
            highestMessage = max(highestMessage, id)
        case .putDelivery(let key, let delivery):
            deliveries[delivery.sequence] = (key, delivery)
            highestDelivery = max(highestDelivery, delivery.sequence)
        case .deliverySent(let sequence, let packetIdentifier):
            if deliveries[sequence] != nil {
                deliveries[sequence]!.delivery.packetIdentifier = packetIdentifier
            } else {
                sent[sequence] = packetIdentifier
            }
        case .deleteDelivery(let sequence, let messageID):
            collectable.insert(messageID)
            if deliveries.removeValue(forKey: sequence) == nil {
                sent[sequence] = nil
                deletedDeliveries.append(sequence)
            }
        case .putRelease(let key, let packetIdentifier):
            releases[PairKey(session: key, packetIdentifier: packetIdentifier)] = true
        case .deleteRelease(let key, let packetIdentifier):
            releases[PairKey(session: key, packetIdentifier: packetIdentifier)] = false
        case .putInboundQoS2(let key, let packetIdentifier):
            inboundQoS2[PairKey(session: key, packetIdentifier: packetIdentifier)] = true
        case .deleteInboundQoS2(let key, let packetIdentifier):
            inboundQoS2[PairKey(session: key, packetIdentifier: packetIdentifier)] = false
        case .putRetained(let topic, let messageID):
            retained[topic] = .some(messageID)
        case .deleteRetained(let topic):
            retained[topic] = .some(nil)
        case .cluster(let change):
            cluster.apply(change)
        }
    }

    /// Writes the batch in one transaction, committed (and fsynced by the server) when this
    /// returns. Every statement may run again after a failure: they insert with `ON CONFLICT`,
    /// delete by key and raise counters with `greatest`, so a batch retried after a lost answer
    /// to its COMMIT leaves the same rows.
    func write(on connection: PostgresConnection, schema: String, logger: Logger) throws {
        var pipeline = PostgresPipeline(connection, logger: logger)
        pipeline.send("BEGIN")
        do {
            writeOrdered(into: &pipeline)
            writePairs(releases, table: "releases", into: &pipeline)
            writePairs(inboundQoS2, table: "inbound_qos2", into: &pipeline)
            var collectable = self.collectable
            try writeRetained(into: &pipeline, collectable: &collectable)
            writeMessagesAndDeliveries(into: &pipeline)
            if !collectable.isEmpty {
                let ids = collectable.map { Int64($0) }
                var binds = PostgresBindings()
                binds.append(ids)
                pipeline.send(
                    PostgresQuery(
                        unsafeSQL: PostgresSchema.collectMessages(
                            among: "SELECT id, touches FROM messages WHERE id = ANY($1)"
                        ),
                        binds: binds
                    )
                )
            }
            if cluster.node != nil {
                cluster.write(retainedTopics: Array(retained.keys), schema: schema, into: &pipeline)
            }
            if highestMessage > 0 || highestDelivery > 0 {
                pipeline.send(
                    """
                    UPDATE tern_meta SET value = greatest(value, CASE name WHEN 'last_message' THEN \(Int64(highestMessage))
                        ELSE \(Int64(highestDelivery)) END)
                    WHERE name IN ('last_message', 'last_delivery')
                    """
                )
            }
            pipeline.send("COMMIT")
            try pipeline.finish()
        } catch {
            _ = try? connection.run("ROLLBACK", logger: logger)
            throw error
        }
    }

    private func writeOrdered(into pipeline: inout PostgresPipeline) {
        for change in ordered {
            switch change {
            case .putSession(let header):
                let will = header.will.map { StoredMessageCoding.encode($0) }
                pipeline.send(
                    """
                    INSERT INTO sessions (key, client_id, version, expiry, expires_at, attached, will, will_expires_at, will_delay, will_deadline)
                    VALUES (\(Int64(header.key)), \(header.clientID), \(Int16(header.protocolVersion.rawValue)),
                            \(Int64(header.expiryInterval)), \(header.expiresAt?.millisecondsSinceEpoch), \(header.attached),
                            \(will), \(header.will?.expiresAt?.millisecondsSinceEpoch), \(Int64(header.willDelay)),
                            \(header.willDeadline?.millisecondsSinceEpoch))
                    ON CONFLICT (key) DO UPDATE SET
                        client_id = excluded.client_id, version = excluded.version, expiry = excluded.expiry,
                        expires_at = excluded.expires_at, attached = excluded.attached, will = excluded.will,
                        will_expires_at = excluded.will_expires_at, will_delay = excluded.will_delay,
                        will_deadline = excluded.will_deadline
                    """
                )
            case .deleteSession(let key):
                let key = Int64(key)
                for table in ["subscriptions", "releases", "inbound_qos2", "deliveries"] {
                    var binds = PostgresBindings()
                    binds.append(key)
                    pipeline.send(
                        PostgresQuery(unsafeSQL: "DELETE FROM \(table) WHERE session = $1", binds: binds)
                    )
                }
                pipeline.send("DELETE FROM sessions WHERE key = \(key)")
            case .putSubscription(let key, let subscription):
                pipeline.send(
                    """
                    INSERT INTO subscriptions (session, filter, options, identifier)
                    VALUES (\(Int64(key)), \(subscription.filter.string), \(Int16(subscription.options.byte(version: .v5))),
                            \(subscription.identifier.map { Int64($0) }))
                    ON CONFLICT (session, filter) DO UPDATE SET options = excluded.options, identifier = excluded.identifier
                    """
                )
            case .deleteSubscription(let key, let filter):
                pipeline.send(
                    "DELETE FROM subscriptions WHERE session = \(Int64(key)) AND filter = \(filter)"
                )
            }
        }
    }

    private func writePairs(_ pairs: [PairKey: Bool], table: String, into pipeline: inout PostgresPipeline) {
        guard !pairs.isEmpty else { return }
        let puts = pairs.filter(\.value).map(\.key)
        let deletes = pairs.filter { !$0.value }.map(\.key)
        if !deletes.isEmpty {
            var binds = PostgresBindings()
            binds.append(deletes.map { Int64($0.session) })
            binds.append(deletes.map { Int32($0.packetIdentifier) })
            pipeline.send(
                PostgresQuery(
                    unsafeSQL: """
                        DELETE FROM \(table) t USING unnest($1::bigint[], $2::int[]) AS d(session, packet_id)
                        WHERE t.session = d.session AND t.packet_id = d.packet_id
                        """,
                    binds: binds
                )
            )
        }
        if !puts.isEmpty {
            var binds = PostgresBindings()
            binds.append(puts.map { Int64($0.session) })
            binds.append(puts.map { Int32($0.packetIdentifier) })
            pipeline.send(
                PostgresQuery(
                    unsafeSQL: """
                        INSERT INTO \(table) (session, packet_id) SELECT * FROM unnest($1::bigint[], $2::int[])
                        ON CONFLICT DO NOTHING
                        """,
                    binds: binds
                )
            )
        }
    }

    private func writeRetained(into pipeline: inout PostgresPipeline, collectable: inout Set<UInt64>) throws {
        guard !retained.isEmpty else { return }
        let topics = Array(retained.keys)
        // The messages these topics held, collected once nothing else refers to them, are read
        // before the statements that follow are sent (the rare batch that changes a retained topic).
        try pipeline.finish()
        for id in try pipeline.connection.run(
            "SELECT message FROM retained WHERE topic = ANY(\(topics))",
            logger: pipeline.logger
        ).decode(Int64.self) {
            collectable.insert(UInt64(id))
        }
        pipeline.send("DELETE FROM retained WHERE topic = ANY(\(topics))")
        let puts = retained.compactMap { topic, id in id.map { (topic, Int64($0)) } }
        guard !puts.isEmpty else { return }
        var binds = PostgresBindings()
        binds.append(puts.map(\.0))
        binds.append(puts.map(\.1))
        pipeline.send(
            PostgresQuery(
                unsafeSQL: "INSERT INTO retained (topic, message) SELECT * FROM unnest($1::text[], $2::bigint[])",
                binds: binds
            )
        )
    }

    private func writeMessagesAndDeliveries(into pipeline: inout PostgresPipeline) {
        if !deletedDeliveries.isEmpty {
            pipeline.send(
                "DELETE FROM deliveries WHERE seq = ANY(\(deletedDeliveries.map { Int64($0) }))"
            )
        }
        // Only messages something written here refers to: one put for a delivery that was also
        // finished in this batch, say, needs no row.
        var referenced = Set(deliveries.values.map(\.delivery.messageID))
        for case .some(let id) in retained.values { referenced.insert(id) }
        let written = messages.filter { referenced.contains($0.key) }
        if !written.isEmpty {
            var ids: [Int64] = []
            var bodies: [ByteBuffer] = []
            var expiries: [Int64] = []
            for (id, message) in written {
                ids.append(Int64(id))
                bodies.append(StoredMessageCoding.encode(message))
                expiries.append(message.expiresAt?.millisecondsSinceEpoch ?? -1)
            }
            var binds = PostgresBindings()
            binds.append(ids)
            binds.append(bodies)
            binds.append(expiries)
            // A put again (a retained message delivered anew, a message routed by another node)
            // raises `touches`, which keeps a concurrent collection from deleting it.
            pipeline.send(
                PostgresQuery(
                    unsafeSQL: """
                        INSERT INTO messages (id, body, expires_at)
                        SELECT id, body, NULLIF(expires_at, -1) FROM unnest($1::bigint[], $2::bytea[], $3::bigint[]) AS m(id, body, expires_at)
                        ON CONFLICT (id) DO UPDATE SET touches = messages.touches + 1
                        """,
                    binds: binds
                )
            )
        }
        if !deliveries.isEmpty {
            var sequences: [Int64] = []
            var sessions: [Int64] = []
            var messageIDs: [Int64] = []
            var flags: [Int16] = []
            var identifiers: [ByteBuffer] = []
            var packetIDs: [Int32] = []
            for (sequence, pending) in deliveries.sorted(by: { $0.key < $1.key }) {
                let delivery = pending.delivery
                sequences.append(Int64(sequence))
                sessions.append(Int64(pending.session))
                messageIDs.append(Int64(delivery.messageID))
                flags.append(Int16(delivery.qos.rawValue) | (delivery.retain ? 4 : 0))
                identifiers.append(StoredIdentifierCoding.encode(delivery.subscriptionIdentifiers))
                packetIDs.append(delivery.packetIdentifier.map { Int32($0) } ?? -1)
            }
            var binds = PostgresBindings()
            binds.append(sequences)
            binds.append(sessions)
            binds.append(messageIDs)
            binds.append(flags)
            binds.append(identifiers)
            binds.append(packetIDs)
            pipeline.send(
                PostgresQuery(
                    unsafeSQL: """
                        INSERT INTO deliveries (seq, session, message, flags, subscription_ids, packet_id)
                        SELECT seq, session, message, flags, NULLIF(ids, ''::bytea), NULLIF(packet_id, -1)
                        FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::smallint[], $5::bytea[], $6::int[])
                            AS d(seq, session, message, flags, ids, packet_id)
                        ON CONFLICT (seq) DO UPDATE SET packet_id = excluded.packet_id
                        """,
                    binds: binds
                )
            )
        }
        if !sent.isEmpty {
            var binds = PostgresBindings()
            binds.append(sent.keys.map { Int64($0) })
            binds.append(sent.values.map { Int32($0) })
            pipeline.send(
                PostgresQuery(
                    unsafeSQL: """
                        UPDATE deliveries d SET packet_id = s.packet_id
                        FROM unnest($1::bigint[], $2::int[]) AS s(seq, packet_id) WHERE d.seq = s.seq
                        """,
                    binds: binds
                )
            )
        }
    }
}
