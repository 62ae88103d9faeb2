import Logging
import NIOCore
import PostgresNIO

/// The rows of a query that has been run to its end.
struct BlockingRows {
    let rows: [PostgresRow]

    /// The rows as tuples of `type`'s columns.
    func decode<each Column: PostgresDecodable>(_ type: (repeat each Column).Type) throws -> [(repeat each Column)] {
        try rows.map { try $0.decode(type) }
    }

    /// The rows' first column.
    func decode<Column: PostgresDecodable>(_ type: Column.Type) throws -> [Column] {
        try rows.map { try $0.decode(Column.self) }
    }
}

extension PostgresConnection {
    /// Runs `query` and waits for its rows, blocking the calling thread: the store's reads and
    /// writer run on threads of their own (see ``PostgresSchema``). Never call it on an event
    /// loop (NIO stops the wait there) or from a Swift concurrency task.
    @discardableResult
    func run(_ query: PostgresQuery, logger: Logger) throws -> BlockingRows {
        BlockingRows(rows: try self.query(query, logger: logger).wait().rows)
    }
}
