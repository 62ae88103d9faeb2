import Foundation
import GRDB
public import Logging
import NIOCore
import Synchronization
public import TernBrokerCore
import TernCodec
public import TernStore

/// The embedded default ``TernStore``: one SQLite file in write-ahead-log mode.
///
/// Changes are queued by ``submit(_:)`` and written by one writer thread in group commits: each
/// transaction holds everything that arrived while the previous one was being written and
/// fsynced, so the fsync cost is shared by all the changes of a batch. With
/// ``Durability/commit`` the writer starts a transaction as soon as changes wait; with
/// ``Durability/lossWindow`` it waits for the batch interval or change count first.
///
/// A message is one row however many sessions queue it; deliveries refer to it, and the writer
/// deletes it when the last reference goes.
public final class SQLiteStore: TernStore {
    /// When the broker may acknowledge what it stores.
    public enum Durability: Sendable, Hashable {
        /// Acknowledgements that depend on stored state wait until the batch holding it is
        /// committed and fsynced: nothing acknowledged is lost, even to a power cut.
        case commit
        /// Acknowledge at once; commit every `interval`, or sooner once `changes` changes wait.
        /// Like Mosquitto's autosave, a crash loses what arrived since the last commit.
        case lossWindow(interval: Duration, changes: Int)
    }

    public let path: String
    public let durability: Durability
    private let logger: Logger
    private let database: DatabaseQueue
    private let queue: StoreWriterQueue
    private let figures = Mutex(Figures())
    private let writerStarted = Mutex<Bool>(false)
    private let stopped = Mutex<Bool>(false)
    /// Read when the store is opened, handed to the broker by ``load()``.
    private let opened: Mutex<StoreSnapshot?>
    /// The sessions ``load()`` brings: ``loadQueues()`` leaves out the deliveries of any other
    /// (orphans, which the writer removes).
    private let openedSessionKeys: Set<UInt64>

    struct Figures {
        var statistics = StoreStatistics()
        var totalCommitMicroseconds: UInt64 = 0
        /// References to each message with a row of its own, from deliveries and the retained set.
        /// A message stored in its one delivery's row has no entry: it goes with that row, and
        /// counting it cost lookups in a table as large as the queue for every message.
        var references: [UInt64: Int] = [:]
        /// The deliveries that hold their message in their own row.
        var inlineDeliveries = InlineDeliveries()
        /// Messages stored, for `$SYS`.
        var storedMessages: Int { references.count + inlineDeliveries.count }
        /// The message identifier the `counters` row holds: a restart hands out identifiers above
        /// it (and above every message row's).
        var reservedMessageID: UInt64 = 0
        var retained: [String: UInt64] = [:]
    }

    /// Opens (or creates) the store at `path` and reads it. A file that SQLite cannot read, whose
    /// schema is not this one, or whose rows do not decode is moved aside with a timestamped name,
    /// with a loud error line, and a new, empty store is created in its place.
    /// - Throws: only when the new store cannot be created either (for example, no such directory).
    public convenience init(
        path: String,
        durability: Durability = .commit,
        logger: Logger = Logger(label: "tern.store")
    ) throws {
        try self.init(path: path, durability: durability, logger: logger, unaskedCommitDelay: .milliseconds(1))
    }

    /// `unaskedCommitDelay`: how long changes queued without a commit wait for one to be asked
    /// for (``StoreWriterQueue``); tests lengthen it to see batches form.
    init(path: String, durability: Durability, logger: Logger, unaskedCommitDelay: Duration) throws {
        self.path = path
        self.durability = durability
        self.logger = logger
        self.queue = StoreWriterQueue(unaskedCommitDelay: unaskedCommitDelay)
        var snapshot = StoreSnapshot()
        var database: DatabaseQueue
        do {
            database = try Self.open(path: path)
            do {
                snapshot = try database.read { db in try SQLiteSchema.readSnapshot(db) }
            } catch {
                try? database.close()
                throw error
            }
        } catch {
            let aside = Self.moveAside(path: path)
            logger.error(
                "STORE UNREADABLE: moved aside, starting with an empty store",
                metadata: ["store": "\(path)", "moved-to": "\(aside)", "error": "\(error)"]
            )
            database = try Self.open(path: path)
        }
        self.database = database
        self.openedSessionKeys = Set(snapshot.sessions.map(\.header.key))
        self.opened = Mutex(snapshot)
    }

    private static func open(path: String) throws -> DatabaseQueue {
        var configuration = Configuration()
        configuration.journalMode = .wal
        configuration.busyMode = .timeout(10)
        let database = try DatabaseQueue(path: path, configuration: configuration)
        try database.writeWithoutTransaction { db in
            // FULL: in WAL mode each commit is fsynced, which is what an acknowledgement promises
            // (with NORMAL a commit survives the process being killed but not a power cut). Set
            // here, after the queue opened: GRDB's WAL set-up sets NORMAL after
            // `prepareDatabase` runs, so a setting made there does not last.
            try db.execute(sql: "PRAGMA synchronous = FULL")
            // The rest stays at SQLite's defaults (4 KiB pages, a checkpoint every 1,000 WAL
            // pages, a 2 MiB page cache). Measured on durable 1 → 1, 100 → 1 and a 300,000-message
            // drain: checkpoints every 100 or 10,000 pages, and a 16 MiB cache, changed the
            // writer's CPU time and the rates by less than the runs' spread. A larger cache would
            // also stay in memory once the restart's read has filled it.
            try db.inTransaction {
                try SQLiteSchema.create(db)
                return .commit
            }
        }
        return database
    }

    /// The value of `PRAGMA name` on the store's connection (tests check the settings the
    /// writer runs with).
    func pragma(_ name: String) throws -> Int? {
        try database.read { db in try Int.fetchOne(db, sql: "PRAGMA \(name)") }
    }

    /// Renames the store and its WAL files to `<path>.corrupt-<UTC timestamp>`.
    private static func moveAside(path: String) -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyyMMdd'T'HHmmss'Z'"
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.locale = Locale(identifier: "en_US_POSIX")
        let target = "\(path).corrupt-\(formatter.string(from: Date()))"
        let files = FileManager.default
        try? files.moveItem(atPath: path, toPath: target)
        for suffix in ["-wal", "-shm"] where files.fileExists(atPath: path + suffix) {
            try? files.moveItem(atPath: path + suffix, toPath: target + suffix)
        }
        return target
    }

    // MARK: Loading

    public func load() throws -> StoreSnapshot {
        let snapshot = opened.withLock { opened in
            defer { opened = nil }
            return opened ?? StoreSnapshot()
        }
        figures.withLock { figures in
            for (topic, id) in snapshot.retained {
                figures.references[id, default: 0] += 1
                figures.retained[topic] = id
            }
            figures.statistics.sessions = snapshot.sessions.count
            figures.statistics.messages = figures.storedMessages
            figures.reservedMessageID = snapshot.lastMessageID
        }
        return snapshot
    }

    /// The deliveries ``load()`` left out, with the messages they refer to. Their references
    /// count from here on: the writer, which releases them, starts after this.
    public func loadQueues() throws -> StoredQueues {
        // The whole-file check reads every page: here, after the listeners opened, rather than
        // before (at a million queued messages it took longer than the rest of start-up).
        let problems = try database.read { db in try String.fetchAll(db, sql: "PRAGMA quick_check") }
        if problems != ["ok"] {
            logger.error(
                "STORE DAMAGED: SQLite's quick_check found problems; reading on",
                metadata: ["store": "\(path)", "problems": "\(problems.prefix(10))"]
            )
        }
        let read = try database.read { db in try SQLiteSchema.readQueues(db, sessions: openedSessionKeys) }
        figures.withLock { figures in
            figures.references.merge(read.references, uniquingKeysWith: +)
            figures.inlineDeliveries = read.inlineDeliveries
            figures.statistics.messages = figures.storedMessages
        }
        return read.queues
    }

    // MARK: Writing

    public func start(onCommit: @escaping @Sendable (StoreCommit) -> Void) {
        let thread = Thread { [self] in self.runWriter(onCommit: onCommit) }
        thread.name = "tern-store-writer"
        thread.start()
        writerStarted.withLock { $0 = true }
    }

    public func submit(_ changes: [StoreChange]) -> UInt64? {
        submit(changes, startingCommit: true)
    }

    public func submit(_ changes: [StoreChange], startingCommit: Bool) -> UInt64? {
        let ticket = queue.append(changes, wakingWriter: startingCommit)
        if case .lossWindow = durability { return nil }
        return ticket
    }

    public func startCommit() {
        queue.wakeWriter()
    }

    public func close() {
        let started = writerStarted.withLock { $0 }
        if started {
            queue.stop()
            queue.waitUntilStopped()
        }
        stopped.withLock { stopped in
            guard !stopped else { return }
            stopped = true
            try? database.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
            try? database.close()
        }
    }

    public var statistics: StoreStatistics {
        var statistics = figures.withLock { $0.statistics }
        statistics.fileSize = Self.fileSize(path) + Self.fileSize(path + "-wal")
        return statistics
    }

    /// The size of the file at `path`, 0 if there is none. Through `stat` rather than
    /// `FileManager.attributesOfItem`, which also looks up the owner's user and group names (a
    /// read of `/etc/passwd` and `/etc/group` at every `$SYS` update).
    static func fileSize(_ path: String) -> Int64 {
        var status = stat()
        guard stat(path, &status) == 0 else { return 0 }
        return Int64(status.st_size)
    }

    private func runWriter(onCommit: @escaping @Sendable (StoreCommit) -> Void) {
        let (interval, changeLimit): (Duration?, Int) =
            switch durability {
            case .commit: (nil, 0)
            case .lossWindow(let interval, let changes): (interval, changes)
            }
        // Rows nothing refers to are removed once the changes queued during start-up are written:
        // those end the sessions that expired while the broker was stopped, whose queued rows
        // (not read, so not named) become orphans only then. Start-up does not wait for this: it
        // reads through orphans (it skips them) and listens.
        var orphansLeft = true
        func removeOrphans() {
            orphansLeft = false
            do {
                try database.write { db in try SQLiteSchema.removeOrphans(db) }
            } catch {
                logger.error("removing orphaned rows failed", metadata: ["store": "\(path)", "error": "\(error)"])
            }
        }
        if !queue.hasPending { removeOrphans() }
        // Prepared at the first batch, released when the writer stops (before the store closes).
        var statements: WriterStatements?
        while let (batch, ticket) = queue.next(waitingUpTo: interval, orChanges: changeLimit) {
            let started = ContinuousClock.now
            do {
                try database.writeWithoutTransaction { db in
                    if statements == nil { statements = try WriterStatements(db) }
                    let prepared = statements!
                    try db.inTransaction(.immediate) {
                        try figures.withLock { figures in
                            try self.write(batch, db: db, statements: prepared, figures: &figures)
                        }
                        return .commit
                    }
                }
            } catch {
                // The batch is lost from disk but still in memory; the broker keeps running and the
                // next batch is tried. Acknowledgements waiting on it are released so clients do not hang.
                logger.error("store commit failed", metadata: ["store": "\(path)", "error": "\(error)"])
            }
            let elapsed = ContinuousClock.now - started
            let microseconds = UInt64(
                max(0, elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000)
            )
            figures.withLock { figures in
                figures.statistics.commits += 1
                figures.statistics.committedChanges += UInt64(batch.count)
                figures.statistics.lastBatchChanges = batch.count
                figures.statistics.maximumBatchChanges = max(figures.statistics.maximumBatchChanges, batch.count)
                figures.statistics.lastCommitMicroseconds = microseconds
                figures.statistics.maximumCommitMicroseconds = max(
                    figures.statistics.maximumCommitMicroseconds,
                    microseconds
                )
                figures.totalCommitMicroseconds += microseconds
                figures.statistics.averageCommitMicroseconds =
                    figures.totalCommitMicroseconds / figures.statistics.commits
            }
            if orphansLeft { removeOrphans() }
            onCommit(StoreCommit(ticket: ticket, duration: elapsed))
        }
        queue.markStopped()
    }

    /// How many message identifiers the `counters` row reserves at a time. A restart skips what
    /// was not handed out: identifiers are 63-bit, so skipping never runs them out.
    static let reservedMessageIDs: UInt64 = 65_536

    /// Writes one batch. Deliveries and messages are written at the end of the batch, so that a
    /// delivery acknowledged before its batch was committed (the usual case for a connected
    /// subscriber) is never written at all, and neither is a message nobody refers to any more.
    private func write(
        _ batch: [StoreChange],
        db: Database,
        statements: WriterStatements,
        figures: inout Figures
    ) throws {
        // Messages whose row may need deleting, and those counted from nothing in this batch,
        // which have no row of their own yet.
        var removable: Set<UInt64> = []
        var counted: Set<UInt64> = []
        var pendingMessages: [UInt64: ApplicationMessage] = [:]
        var pendingDeliveries: [UInt64: (session: UInt64, delivery: StoredDelivery)] = [:]
        // Packet identifiers of stored deliveries, written at the end of the batch: a delivery
        // sent and acknowledged within one batch (a subscriber that keeps up) is then only deleted.
        var pendingPacketIdentifiers: [UInt64: UInt16] = [:]
        var sessionsChanged = false
        func reference(_ id: UInt64) {
            if let count = figures.references[id] {
                figures.references[id] = count + 1
            } else {
                figures.references[id] = 1
                counted.insert(id)
            }
        }
        func release(_ id: UInt64) {
            let count = (figures.references[id] ?? 0) - 1
            if count <= 0 {
                figures.references[id] = nil
                // A message counted in this batch only has no row to delete.
                if !counted.contains(id) { removable.insert(id) }
            } else {
                figures.references[id] = count
            }
        }
        // Deletes a stored delivery's row, and its reference to its message's row if it has one.
        func deleteStoredDelivery(_ sequence: UInt64, messageID: UInt64) throws {
            let heldItsMessage = figures.inlineDeliveries.remove(sequence)
            statements.deleteDelivery.bind(1, Int64(sequence))
            if try statements.deleteDelivery.run(db) > 0, !heldItsMessage { release(messageID) }
        }
        for change in batch {
            switch change {
            case .putSession(let header):
                sessionsChanged = true
                try SQLiteSchema.putSession(header, db: db)
            case .deleteSession(let key, let deliveries):
                sessionsChanged = true
                for (sequence, pending) in pendingDeliveries where pending.session == key {
                    pendingDeliveries[sequence] = nil
                    release(pending.delivery.messageID)
                }
                // By key: deliveries have no index by session (it cost a random index page per
                // queued message); the broker names them. Any it did not are orphans, removed
                // at the next start.
                for delivery in deliveries {
                    pendingPacketIdentifiers[delivery.sequence] = nil
                    try deleteStoredDelivery(delivery.sequence, messageID: delivery.messageID)
                }
                for table in ["subscriptions", "releases", "inbound_qos2"] {
                    try db.cachedStatement(sql: "DELETE FROM \(table) WHERE session = ?").execute(arguments: [
                        Int64(key)
                    ])
                }
                try db.cachedStatement(sql: "DELETE FROM sessions WHERE key = ?").execute(arguments: [Int64(key)])
            case .putSubscription(let key, let subscription):
                try db.cachedStatement(
                    sql:
                        "INSERT OR REPLACE INTO subscriptions(session, filter, options, identifier) VALUES (?, ?, ?, ?)"
                )
                .execute(arguments: [
                    Int64(key), subscription.filter.string, Int(subscription.options.byte(version: .v5)),
                    subscription.identifier.map { Int64($0) },
                ])
            case .deleteSubscription(let key, let filter):
                try db.cachedStatement(sql: "DELETE FROM subscriptions WHERE session = ? AND filter = ?").execute(
                    arguments: [Int64(key), filter])
            case .putMessage(let id, let message):
                if pendingMessages[id] == nil { pendingMessages[id] = message }
            case .putDelivery(let key, let delivery):
                reference(delivery.messageID)
                pendingDeliveries[delivery.sequence] = (key, delivery)
            case .deliverySent(let sequence, let packetIdentifier):
                if pendingDeliveries[sequence] != nil {
                    pendingDeliveries[sequence]!.delivery.packetIdentifier = packetIdentifier
                } else {
                    pendingPacketIdentifiers[sequence] = packetIdentifier
                }
            case .deleteDelivery(let sequence, let messageID):
                if pendingDeliveries.removeValue(forKey: sequence) != nil {
                    release(messageID)
                } else {
                    pendingPacketIdentifiers[sequence] = nil
                    try deleteStoredDelivery(sequence, messageID: messageID)
                }
            case .putRelease(let key, let packetIdentifier):
                try db.cachedStatement(sql: "INSERT OR IGNORE INTO releases(session, packet_id) VALUES (?, ?)").execute(
                    arguments: [Int64(key), Int(packetIdentifier)])
            case .deleteRelease(let key, let packetIdentifier):
                try db.cachedStatement(sql: "DELETE FROM releases WHERE session = ? AND packet_id = ?").execute(
                    arguments: [Int64(key), Int(packetIdentifier)])
            case .putInboundQoS2(let key, let packetIdentifier):
                try db.cachedStatement(sql: "INSERT OR IGNORE INTO inbound_qos2(session, packet_id) VALUES (?, ?)")
                    .execute(arguments: [Int64(key), Int(packetIdentifier)])
            case .deleteInboundQoS2(let key, let packetIdentifier):
                try db.cachedStatement(sql: "DELETE FROM inbound_qos2 WHERE session = ? AND packet_id = ?").execute(
                    arguments: [Int64(key), Int(packetIdentifier)])
            case .putRetained(let topic, let messageID):
                reference(messageID)
                if let old = figures.retained.updateValue(messageID, forKey: topic) { release(old) }
                try db.cachedStatement(sql: "INSERT OR REPLACE INTO retained(topic, message) VALUES (?, ?)").execute(
                    arguments: [topic, Int64(messageID)])
            case .deleteRetained(let topic):
                if let old = figures.retained.removeValue(forKey: topic) { release(old) }
                try db.cachedStatement(sql: "DELETE FROM retained WHERE topic = ?").execute(arguments: [topic])
            case .cluster:
                break  // a file serves one broker: there is no cluster to tell
            }
        }
        for (sequence, packetIdentifier) in pendingPacketIdentifiers {
            statements.setPacketIdentifier.bind(1, Int64(packetIdentifier))
            statements.setPacketIdentifier.bind(2, Int64(sequence))
            try statements.setPacketIdentifier.run(db)
        }
        // A message that one delivery of this batch is the only reference to is written in that
        // delivery's row: one row to insert now and one to delete at its PUBACK, instead of two
        // each, and no count to keep. Every other message gets its own row, which its deliveries
        // refer to. A message that had a row before this batch (counted before it) keeps it; one
        // whose row lost its last reference in this batch loses that row below.
        var inline: [UInt64: ApplicationMessage] = [:]
        var deliveriesByMessage: [UInt64: Int] = [:]
        for (_, pending) in pendingDeliveries { deliveriesByMessage[pending.delivery.messageID, default: 0] += 1 }
        let insertMessage = statements.insertMessage
        // One buffer for every body of the batch, cleared between rows: SQLite copies what is
        // bound during the step.
        var body = ByteBuffer()
        for (id, message) in pendingMessages {
            guard let references = figures.references[id] else { continue }
            if references == 1, deliveriesByMessage[id] == 1, counted.contains(id) {
                inline[id] = message
                figures.references[id] = nil
                continue
            }
            insertMessage.bind(1, Int64(id))
            insertMessage.bind(3, message.expiresAt?.millisecondsSinceEpoch)
            body.clear()
            StoredMessageCoding.encode(message, into: &body)
            try body.withUnsafeReadableBytes { body in
                insertMessage.bind(2, bytes: body)
                try insertMessage.run(db)
            }
        }
        // Identifiers are reserved a block at a time: raising the counter at every batch wrote its
        // page into every commit, and the offline fill measured 13 % faster without that page.
        if let highest = inline.keys.max(), highest > figures.reservedMessageID {
            let reserved = highest + Self.reservedMessageIDs
            statements.raiseMessageCounter.bind(1, Int64(reserved))
            try statements.raiseMessageCounter.run(db)
            figures.reservedMessageID = reserved
        }
        let insertDelivery = statements.insertDelivery
        for (_, pending) in pendingDeliveries.sorted(by: { $0.key < $1.key }) {
            let delivery = pending.delivery
            insertDelivery.bind(1, Int64(delivery.sequence))
            insertDelivery.bind(2, Int64(pending.session))
            insertDelivery.bind(3, Int64(delivery.messageID))
            insertDelivery.bind(4, Int64(delivery.qos.rawValue) | (delivery.retain ? 4 : 0))
            insertDelivery.bind(6, delivery.packetIdentifier.map { Int64($0) })
            let identifiers = SQLiteSchema.encodeIdentifiers(delivery.subscriptionIdentifiers) ?? Data()
            body.clear()
            let message = inline[delivery.messageID]
            if let message {
                StoredMessageCoding.encode(message, into: &body)
                figures.inlineDeliveries.insert(delivery.sequence)
            }
            insertDelivery.bind(8, message?.expiresAt?.millisecondsSinceEpoch)
            try identifiers.withUnsafeBytes { identifierBytes in
                try body.withUnsafeReadableBytes { bodyBytes in
                    insertDelivery.bind(5, bytesOrNull: identifierBytes)
                    insertDelivery.bind(7, bytesOrNull: bodyBytes)
                    try insertDelivery.run(db)
                }
            }
        }
        // A message goes with its last reference; SQLite reuses the freed pages.
        for id in removable where figures.references[id] == nil {
            statements.deleteMessage.bind(1, Int64(id))
            try statements.deleteMessage.run(db)
        }
        figures.statistics.messages = figures.storedMessages
        if sessionsChanged {
            figures.statistics.sessions =
                try Int.fetchOne(db.cachedStatement(sql: "SELECT count(*) FROM sessions")) ?? 0
        }
    }
}
