public import Foundation
import GRDB

/// The stored sessions as `tern sessions` shows them, read through a read-only connection so
/// that a running broker's writes are neither blocked nor disturbed (WAL readers see the last
/// committed state).
public struct StoreListing: Sendable {
    public struct Entry: Sendable, Hashable {
        public var clientID: String
        public var protocolLevel: Int
        public var expiryInterval: UInt32
        /// Milliseconds since the epoch; `nil` while connected or when it never expires.
        public var expiresAt: Int64?
        public var connected: Bool
        public var subscriptions: [String]
        public var queued: Int
        public var inflight: Int
        public var hasWill: Bool
    }

    public var entries: [Entry]
    public var messages: Int
    public var retained: Int
    public var fileSize: Int64

    public static func read(path: String) throws -> StoreListing {
        var configuration = Configuration()
        configuration.readonly = true
        let database = try DatabaseQueue(path: path, configuration: configuration)
        defer { try? database.close() }
        return try database.read { db in
            var subscriptions: [Int64: [String]] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT session, filter FROM subscriptions ORDER BY filter") {
                subscriptions[row[0], default: []].append(row[1])
            }
            var queued: [Int64: Int] = [:]
            var inflight: [Int64: Int] = [:]
            for row in try Row.fetchAll(
                db,
                sql: "SELECT session, count(*) - count(packet_id), count(packet_id) FROM deliveries GROUP BY session"
            ) {
                queued[row[0]] = row[1]
                inflight[row[0]] = row[2]
            }
            for row in try Row.fetchAll(db, sql: "SELECT session, count(*) FROM releases GROUP BY session") {
                inflight[row[0], default: 0] += row[1] as Int
            }
            let entries = try Row.fetchAll(
                db,
                sql:
                    "SELECT key, client_id, version, expiry, expires_at, attached, will IS NOT NULL FROM sessions ORDER BY client_id"
            ).map { row in
                let key: Int64 = row[0]
                return Entry(
                    clientID: row[1],
                    protocolLevel: row[2],
                    expiryInterval: UInt32(clamping: row[3] as Int64),
                    expiresAt: row[4],
                    connected: row[5],
                    subscriptions: subscriptions[key] ?? [],
                    queued: queued[key] ?? 0,
                    inflight: inflight[key] ?? 0,
                    hasWill: row[6]
                )
            }
            // Messages with a row of their own, and those stored in their only delivery's row.
            let messages =
                try Int.fetchOne(
                    db,
                    sql:
                        "SELECT count(*) FROM (SELECT id FROM messages UNION SELECT message FROM deliveries WHERE body IS NOT NULL)"
                ) ?? 0
            let retained = try Int.fetchOne(db, sql: "SELECT count(*) FROM retained") ?? 0
            let size = SQLiteStore.fileSize
            return StoreListing(
                entries: entries,
                messages: messages,
                retained: retained,
                fileSize: size(path) + size(path + "-wal")
            )
        }
    }

    /// One session per line, then totals: columns padded into an aligned table for a person to
    /// read, or separated by tabs (`aligned` false) for scripts.
    public func table(now: Date, aligned: Bool = true) -> String {
        let formatter = ISO8601DateFormatter()
        var rows = [["CLIENT ID", "LEVEL", "EXPIRY", "EXPIRES AT", "SUBSCRIPTIONS", "QUEUED", "IN FLIGHT", "WILL"]]
        for entry in entries {
            let expiry = entry.expiryInterval == .max ? "never" : "\(entry.expiryInterval)s"
            let deadline: String
            if entry.connected {
                deadline = "connected"
            } else if let expiresAt = entry.expiresAt {
                deadline = formatter.string(from: Date(timeIntervalSince1970: Double(expiresAt) / 1000))
            } else {
                deadline = "never"
            }
            let filters = entry.subscriptions.isEmpty ? "-" : entry.subscriptions.joined(separator: ",")
            rows.append([
                entry.clientID, "\(entry.protocolLevel)", expiry, deadline, filters, "\(entry.queued)",
                "\(entry.inflight)",
                entry.hasWill ? "yes" : "no",
            ])
        }
        var lines: [String]
        if aligned {
            let widths = rows[0].indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
            lines = rows.map { row in
                row.enumerated().map { column, field in
                    column == row.count - 1
                        ? field : field.padding(toLength: widths[column] + 2, withPad: " ", startingAt: 0)
                }.joined()
            }
        } else {
            lines = rows.map { $0.joined(separator: "\t") }
        }
        lines.append("\(entries.count) sessions, \(messages) messages, \(retained) retained, \(fileSize) bytes")
        return lines.joined(separator: "\n")
    }
}
