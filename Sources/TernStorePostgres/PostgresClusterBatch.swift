import Logging
import NIOCore
import PostgresNIO
import TernBrokerCore
import TernStore

/// The ``ClusterChange``s of one batch, written in the batch's transaction: the other nodes see
/// them when, and only when, the rest of the batch is committed (a PUBACK waits for it).
///
/// Every row a node changes for a client it serves is fenced by the node's number: once another
/// node has claimed the client (``PostgresCluster``), this node's late changes to its place and
/// its subscriptions match no row.
struct PostgresClusterBatch {
    /// This node's number; `nil` when the store serves a broker on its own.
    var node: Int32?
    /// Changes to the nodes' shared view of clients and subscriptions, in order.
    private var ordered: [ClusterChange] = []
    /// Messages for sessions other nodes hold (or none does), in the order they were routed.
    private var transits:
        [(clientID: String, sessionKey: UInt64, delivery: StoredDelivery, message: ApplicationMessage)] =
            []

    mutating func apply(_ change: ClusterChange) {
        guard node != nil else { return }
        if case .transit(let clientID, let sessionKey, let delivery, let message) = change {
            transits.append((clientID, sessionKey, delivery, message))
        } else {
            ordered.append(change)
        }
    }

    /// The channel a cluster's nodes hear `kind` on, for the cluster in `schema`.
    static func channel(_ kind: String, schema: String) -> String {
        "\(schema.lowercased())_\(kind)"
    }

    /// Writes the changes and notifies the nodes concerned, in the current transaction.
    /// - Parameter retainedTopics: the topics whose retained message the batch changes.
    func write(retainedTopics: [String], schema: String, into pipeline: inout PostgresPipeline) {
        guard let node else { return }
        var changedClients: Set<String> = []
        for change in ordered {
            switch change {
            case .subscribe(let clientID, let sessionKey, let subscription):
                pipeline.send(
                    """
                    INSERT INTO cluster_subscriptions (client_id, filter, options, identifier, session, node)
                    VALUES (\(clientID), \(subscription.filter.string), \(Int16(subscription.options.byte(version: .v5))),
                            \(subscription.identifier.map { Int64($0) }), \(Int64(sessionKey)), \(node))
                    ON CONFLICT (client_id, filter) DO UPDATE SET options = excluded.options,
                        identifier = excluded.identifier, session = excluded.session, node = excluded.node
                    """
                )
                changedClients.insert(clientID)
            case .unsubscribe(let clientID, let filter):
                pipeline.send(
                    "DELETE FROM cluster_subscriptions WHERE client_id = \(clientID) AND filter = \(filter) AND node = \(node)"
                )
                changedClients.insert(clientID)
            case .sessionEnded(let clientID):
                pipeline.send(
                    "DELETE FROM cluster_subscriptions WHERE client_id = \(clientID) AND node = \(node)"
                )
                pipeline.send(
                    "DELETE FROM cluster_clients WHERE client_id = \(clientID) AND node = \(node)"
                )
                changedClients.insert(clientID)
            case .attached(let clientID, let will, let willDelay, let expiryInterval):
                // A claimed client's row names this node already; a client whose identifier this
                // node assigned has none yet.
                pipeline.send(
                    """
                    INSERT INTO cluster_clients (client_id, node, will, will_delay, expiry)
                    VALUES (\(clientID), \(node), \(will.map { StoredMessageCoding.encode($0) }), \(Int64(willDelay)),
                            \(Int64(expiryInterval)))
                    ON CONFLICT (client_id) DO UPDATE SET will = excluded.will, will_delay = excluded.will_delay,
                        expiry = excluded.expiry
                    WHERE cluster_clients.node = excluded.node
                    """
                )
            case .detached(let clientID):
                pipeline.send(
                    "UPDATE cluster_clients SET node = NULL, will = NULL WHERE client_id = \(clientID) AND node = \(node)"
                )
            case .transit:
                break
            }
        }
        writeTransits(schema: schema, into: &pipeline)
        if !changedClients.isEmpty {
            notify(Self.channel("subscriptions", schema: schema), changedClients, into: &pipeline)
        }
        if !retainedTopics.isEmpty {
            notify(Self.channel("retained", schema: schema), Set(retainedTopics), into: &pipeline)
        }
    }

    /// Inserts a row per message for the node its session's client is attached to, read under a
    /// share lock: a claim that moves the client waits for this transaction, and one that
    /// committed first is seen, so a message reaches the node that serves the client from then
    /// on. A session no node serves gets no row: its stored copy waits in `deliveries`.
    private func writeTransits(schema: String, into pipeline: inout PostgresPipeline) {
        guard !transits.isEmpty else { return }
        var clientIDs: [String] = []
        var sessions: [Int64] = []
        var sequences: [Int64] = []
        var flags: [Int16] = []
        var identifiers: [ByteBuffer] = []
        var messageIDs: [Int64] = []
        var bodies: [ByteBuffer] = []
        var expiries: [Int64] = []
        for transit in transits {
            clientIDs.append(transit.clientID)
            sessions.append(Int64(transit.sessionKey))
            sequences.append(Int64(transit.delivery.sequence))
            flags.append(Int16(transit.delivery.qos.rawValue) | (transit.delivery.retain ? 4 : 0))
            identifiers.append(StoredIdentifierCoding.encode(transit.delivery.subscriptionIdentifiers))
            messageIDs.append(Int64(transit.message.storeID))
            bodies.append(StoredMessageCoding.encode(transit.message))
            expiries.append(transit.message.expiresAt?.millisecondsSinceEpoch ?? -1)
        }
        var binds = PostgresBindings()
        binds.append(clientIDs)
        binds.append(sessions)
        binds.append(sequences)
        binds.append(flags)
        binds.append(identifiers)
        binds.append(messageIDs)
        binds.append(bodies)
        binds.append(expiries)
        binds.append(Self.channel("transit_", schema: schema))
        pipeline.send(
            PostgresQuery(
                unsafeSQL: """
                    WITH t AS (
                        SELECT * FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::smallint[], $5::bytea[],
                                             $6::bigint[], $7::bytea[], $8::bigint[])
                            WITH ORDINALITY AS t(client_id, session, seq, flags, ids, message_id, body, expires_at, ord)
                    ), hosts AS (
                        SELECT client_id, node FROM cluster_clients
                        WHERE client_id IN (SELECT client_id FROM t) AND node IS NOT NULL FOR SHARE
                    ), inserted AS (
                        INSERT INTO cluster_transit (node, client_id, session, seq, flags, subscription_ids, message_id, body, expires_at)
                        SELECT h.node, t.client_id, t.session, t.seq, t.flags, NULLIF(t.ids, ''::bytea), t.message_id,
                               t.body, NULLIF(t.expires_at, -1)
                        FROM t JOIN hosts h ON h.client_id = t.client_id ORDER BY t.ord
                        RETURNING node
                    )
                    SELECT pg_notify($9 || node, '') FROM (SELECT DISTINCT node FROM inserted) n
                    """,
                binds: binds
            )
        )
    }

    /// Notifies `channel` once per value. A value too long for a notification's payload is sent
    /// as the empty payload, which tells the listeners to read everything again.
    private func notify(_ channel: String, _ values: Set<String>, into pipeline: inout PostgresPipeline) {
        let payloads = Array(Set(values.map { $0.utf8.count > 7_000 ? "" : $0 }))
        pipeline.send(
            "SELECT pg_notify(\(channel), payload) FROM unnest(\(payloads)::text[]) AS p(payload)"
        )
    }
}
