import GRDB
import GRDBSQLite

/// One of the writer's hot statements, prepared once and bound and stepped through SQLite's C API.
///
/// Written by hand because GRDB's `execute(arguments:)` boxes every argument in a `DatabaseValue`
/// inside a fresh array and looks the cached statement up by its SQL text; the writer runs these
/// statements several times per message, and a profile of durable QoS 1 load showed that
/// boxing and reference counting costing more than SQLite's own work. The statement stays GRDB's,
/// which finalizes it; it is only used inside the writer's transactions.
struct PreparedWrite {
    private let statement: Statement
    private var handle: SQLiteStatement { statement.sqliteStatement }

    init(_ db: Database, _ sql: String) throws {
        statement = try db.makeStatement(sql: sql)
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

/// The statements the writer runs per message, prepared at its first batch.
struct WriterStatements {
    let insertMessage: PreparedWrite
    let deleteMessage: PreparedWrite
    let insertDelivery: PreparedWrite
    let deleteDelivery: PreparedWrite
    let setPacketIdentifier: PreparedWrite

    init(_ db: Database) throws {
        insertMessage = try PreparedWrite(db, "INSERT OR IGNORE INTO messages(id, body, expires_at) VALUES (?, ?, ?)")
        deleteMessage = try PreparedWrite(db, "DELETE FROM messages WHERE id = ?")
        insertDelivery = try PreparedWrite(
            db,
            "INSERT OR REPLACE INTO deliveries(seq, session, message, flags, subscription_ids, packet_id) VALUES (?, ?, ?, ?, ?, ?)"
        )
        deleteDelivery = try PreparedWrite(db, "DELETE FROM deliveries WHERE seq = ?")
        setPacketIdentifier = try PreparedWrite(db, "UPDATE deliveries SET packet_id = ? WHERE seq = ?")
    }
}
