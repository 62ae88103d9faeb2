import Logging
import NIOCore
import PostgresNIO

/// The statements of one transaction handed to the connection at once: the connection sends
/// each as soon as the server has answered the one before, on its event loop, so the writer
/// thread waits once per transaction instead of once per statement.
///
/// If a statement fails, the server refuses the ones after it in the same transaction (and
/// turns its COMMIT into a rollback): ``finish()`` reports the first failure, so nothing that
/// failed is taken for committed.
struct PostgresPipeline {
    let connection: PostgresConnection
    let logger: Logger
    private var pending: [EventLoopFuture<PostgresQueryResult>] = []

    init(_ connection: PostgresConnection, logger: Logger) {
        self.connection = connection
        self.logger = logger
    }

    /// Queues `query` behind the ones sent before it.
    mutating func send(_ query: PostgresQuery) {
        pending.append(connection.query(query, logger: logger))
    }

    /// Waits for every statement sent.
    /// - Throws: the first statement's failure, if any.
    mutating func finish() throws {
        defer { pending = [] }
        var failure: (any Error)?
        for statement in pending {
            do {
                _ = try statement.wait()
            } catch {
                if failure == nil { failure = error }
            }
        }
        if let failure { throw failure }
    }
}
