import GRDB
import GRDBSQLite

/// One of the writer's hot statements, prepared once and bound and stepped through SQLite's C API.
///
/// Written by hand because GRDB's `execute(arguments:)` boxes every argument in a `DatabaseValue`
/// inside a fresh array and looks the cached statement up by its SQL text; the writer runs these
/// statements several times per message, and a profile of durable QoS 1 load showed that
/// boxing and reference counting costing more than SQLite's own work. The statement stays GRDB's,
/// which finalizes it; it is only used inside the writer's transactions.
struct PreparedStatement {
    private let statement: Statement
    private var handle: SQLiteStatement { statement.sqliteStatement }

    init(_ db: Database, _ sql: String) throws {
        statement = try db.makeStatement(sql: sql)
    }

    /// Steps through the rows of a query, calling `body` with each; the row is valid only
    /// during the call.
    func forEachRow(_ db: Database, _ body: (RawRow) throws -> Void) throws {
        defer { sqlite3_reset(handle) }
        while true {
            let code = sqlite3_step(handle)
            if code == SQLITE_DONE { return }
            guard code == SQLITE_ROW else {
                throw DatabaseError(
                    resultCode: ResultCode(rawValue: code),
                    message: db.lastErrorMessage,
                    sql: statement.sql
                )
            }
            try body(RawRow(handle: handle))
        }
    }

    func bind(_ index: Int32, _ value: Int64) {
        sqlite3_bind_int64(handle, index, value)
    }

    func bind(_ index: Int32, _ value: Int64?) {
        if let value { sqlite3_bind_int64(handle, index, value) } else { sqlite3_bind_null(handle, index) }
    }

    /// Binds `bytes` without copying them: they must stay valid until ``run(_:)`` returns.
    func bind(_ index: Int32, bytes: UnsafeRawBufferPointer) {
        if let base = bytes.baseAddress {
            // SQLITE_STATIC (a nil destructor): SQLite reads the bytes during the step, not later.
            sqlite3_bind_blob(handle, index, base, Int32(bytes.count), nil)
        } else {
            sqlite3_bind_zeroblob(handle, index, 0)
        }
    }

    /// Binds `bytes` like ``bind(_:bytes:)``, or NULL when there are none.
    func bind(_ index: Int32, bytesOrNull bytes: UnsafeRawBufferPointer) {
        if bytes.isEmpty { sqlite3_bind_null(handle, index) } else { bind(index, bytes: bytes) }
    }

    /// Steps the statement once with the values bound, then resets it for the next use.
    /// - Returns: the number of rows it changed.
    @discardableResult
    func run(_ db: Database) throws -> Int {
        let code = sqlite3_step(handle)
        guard code == SQLITE_DONE else {
            let error = DatabaseError(
                resultCode: ResultCode(rawValue: code),
                message: db.lastErrorMessage,
                sql: statement.sql
            )
            sqlite3_reset(handle)
            throw error
        }
        sqlite3_reset(handle)
        return Int(sqlite3_changes(db.sqliteConnection))
    }
}

/// The current row of a ``PreparedStatement/forEachRow(_:_:)``, read column by column.
struct RawRow {
    let handle: SQLiteStatement

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }

    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }

    func optionalInt64(_ column: Int32) -> Int64? { isNull(column) ? nil : int64(column) }

    /// A text column; empty for NULL.
    func string(_ column: Int32) -> String {
        String(decoding: bytes(column), as: UTF8.self)
    }

    /// The bytes of a blob column, valid until the next step; empty for NULL.
    func bytes(_ column: Int32) -> UnsafeRawBufferPointer {
        // sqlite3_column_blob first, then sqlite3_column_bytes, as SQLite's documentation asks.
        guard let base = sqlite3_column_blob(handle, column) else {
            return UnsafeRawBufferPointer(start: nil, count: 0)
        }
        return UnsafeRawBufferPointer(start: base, count: Int(sqlite3_column_bytes(handle, column)))
    }
}

/// The statements the writer runs per message, prepared at its first batch.
struct WriterStatements {
    let insertMessage: PreparedStatement
    let deleteMessage: PreparedStatement
    let insertDelivery: PreparedStatement
    let deleteDelivery: PreparedStatement
    let setPacketIdentifier: PreparedStatement
    let raiseMessageCounter: PreparedStatement

    init(_ db: Database) throws {
        insertMessage = try PreparedStatement(
            db,
            "INSERT OR IGNORE INTO messages(id, body, expires_at) VALUES (?, ?, ?)"
        )
        deleteMessage = try PreparedStatement(db, "DELETE FROM messages WHERE id = ?")
        insertDelivery = try PreparedStatement(
            db,
            """
            INSERT OR REPLACE INTO deliveries(seq, session, message, flags, subscription_ids, packet_id, body, expires_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """
        )
        deleteDelivery = try PreparedStatement(db, "DELETE FROM deliveries WHERE seq = ?")
        setPacketIdentifier = try PreparedStatement(db, "UPDATE deliveries SET packet_id = ? WHERE seq = ?")
        raiseMessageCounter = try PreparedStatement(db, SQLiteSchema.raiseMessageCounter)
    }
}
