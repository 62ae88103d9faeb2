import Foundation
public import Logging
public import NIOCore
public import NIOPosix
import PostgresNIO
import Synchronization
public import TernBrokerCore
public import TernStore

/// A ``TernStore`` in a PostgreSQL database: the store of a Tern cluster, whose nodes share it,
/// and a choice for a single broker that already runs PostgreSQL.
///
/// It keeps the rules of the SQLite store: changes are queued by ``submit(_:)`` and written by
/// one writer thread in group commits, each transaction holding everything that arrived while
/// the previous one was being written; an acknowledgement that depends on a change waits for the
/// commit that holds it; a message is stored once, however many sessions queue it. The writer
/// talks to the server over one connection, with a statement per kind of row per batch
/// (``PostgresBatch``). If the connection fails, the writer connects again and writes the batch
/// again, holding back what waits for it meanwhile: nothing is acknowledged that is not stored.
public final class PostgresStore: TernStore {
    /// When the broker may acknowledge what it stores.
    public enum Durability: Sendable, Hashable {
        /// Acknowledgements wait until the batch holding their changes is committed.
        case commit
        /// Acknowledge at once; commit every `interval`, or sooner once `changes` changes wait.
        case lossWindow(interval: Duration, changes: Int)
    }

    public let configuration: PostgresStoreConfiguration
    public let durability: Durability
    /// The number of the cluster node this store serves, or `nil` for a broker on its own.
    public let clusterNode: Int?
    private let logger: Logger
    private let eventLoopGroup: any EventLoopGroup
    /// The writer's connection; also the one the snapshot and the queues are read on.
    private let connection: Mutex<PostgresConnection?>
    private let queue = StoreWriterQueue()
    private let figures = Mutex(Figures())
    private let opened: Mutex<StoreSnapshot?>
    private let openedSessionKeys: [UInt64]
    private let writerStarted = Mutex(false)
    /// When the counts of ``statistics`` were last read.
    private let countsReadAt = Mutex<ContinuousClock.Instant?>(nil)
    private let closed = Mutex(false)

    struct Figures {
        var statistics = StoreStatistics()
        var totalCommitMicroseconds: UInt64 = 0
    }

    /// Connects, creates or checks the tables, and reads what ``load()`` hands over. Blocks
    /// until the server has answered.
    /// - Throws: ``PostgresStoreError`` or the driver's error when the server cannot be reached
    ///   or holds another version of the tables; ``StoreCorruption`` when a row does not decode.
    /// - Parameter clusterNode: the number of the cluster node the store serves
    ///   (``PostgresCluster/nodeNumber``): its changes then carry the node's ``ClusterChange``s,
    ///   and ``load()`` leaves the sessions out (a node reads a session when its client connects).
    public init(
        configuration: PostgresStoreConfiguration,
        durability: Durability = .commit,
        clusterNode: Int? = nil,
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "tern.store.postgres")
    ) throws {
        guard PostgresStoreConfiguration.isIdentifier(configuration.schema) else {
            throw PostgresStoreError("the schema must be letters, digits and underscores: \(configuration.schema)")
        }
        self.configuration = configuration
        self.durability = clusterNode == nil ? durability : .commit
        self.clusterNode = clusterNode
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
        let connection = try Self.connect(configuration, eventLoopGroup: eventLoopGroup, logger: logger)
        let snapshot: StoreSnapshot
        do {
            snapshot = try PostgresSchema.readSnapshot(
                on: connection,
                includingSessions: clusterNode == nil,
                logger: logger
            )
        } catch {
            try? connection.close().wait()
            throw error
        }
        self.connection = Mutex(connection)
        self.openedSessionKeys = snapshot.sessions.map(\.header.key)
        self.opened = Mutex(snapshot)
        refreshCounts()
    }

    deinit {
        close()
    }

    private static func connect(
        _ configuration: PostgresStoreConfiguration,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger
    ) throws -> PostgresConnection {
        let connection = try PostgresConnection.connect(
            on: eventLoopGroup.any(),
            configuration: PostgresConnection.Configuration(
                host: configuration.host,
                port: configuration.port,
                username: configuration.username,
                password: configuration.password,
                database: configuration.database,
                tls: .disable
            ),
            id: 1,
            logger: logger
        ).wait()
        do {
            try PostgresSchema.create(on: connection, schema: configuration.schema, logger: logger)
        } catch {
            try? connection.close().wait()
            throw error
        }
        return connection
    }

    /// Drops the schema of `configuration` with every table in it (for tests that made one of
    /// their own).
    package static func removeSchema(_ configuration: PostgresStoreConfiguration) throws {
        guard PostgresStoreConfiguration.isIdentifier(configuration.schema) else { return }
        let logger = Logger(label: "tern.store.postgres")
        let connection = try PostgresConnection.connect(
            on: MultiThreadedEventLoopGroup.singleton.any(),
            configuration: PostgresConnection.Configuration(
                host: configuration.host,
                port: configuration.port,
                username: configuration.username,
                password: configuration.password,
                database: configuration.database,
                tls: .disable
            ),
            id: 2,
            logger: logger
        ).wait()
        defer { try? connection.close().wait() }
        try connection.run(
            PostgresQuery(unsafeSQL: "DROP SCHEMA IF EXISTS \(configuration.schema) CASCADE"),
            logger: logger
        )
    }

    // MARK: Loading

    public func load() throws -> StoreSnapshot {
        opened.withLock { opened in
            defer { opened = nil }
            return opened ?? StoreSnapshot()
        }
    }

    public func loadQueues() throws -> StoredQueues {
        guard let connection = connection.withLock({ $0 }) else { return StoredQueues() }
        return try PostgresSchema.readQueues(on: connection, sessions: openedSessionKeys, logger: logger)
    }

    // MARK: Writing

    public func start(onCommit: @escaping @Sendable (StoreCommit) -> Void) {
        writerStarted.withLock { $0 = true }
        let thread = Thread { [self] in
            self.runWriter(onCommit: onCommit)
            queue.markStopped()
        }
        thread.name = "tern-store-writer"
        thread.start()
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
        let first = closed.withLock { closed in
            defer { closed = true }
            return !closed
        }
        guard first else { return }
        if writerStarted.withLock({ $0 }) {
            queue.stop()
            queue.waitUntilStopped()
        }
        if let connection = connection.withLock({ $0.take() }) {
            try? connection.close().wait()
        }
    }

    public var statistics: StoreStatistics {
        figures.withLock { $0.statistics }
    }

    private func runWriter(onCommit: @escaping @Sendable (StoreCommit) -> Void) {
        let (interval, changeLimit): (Duration?, Int) =
            switch durability {
            case .commit: (nil, 0)
            case .lossWindow(let interval, let changes): (interval, changes)
            }
        if let connection = connection.withLock({ $0 }) {
            do {
                try PostgresSchema.removeOrphans(on: connection, logger: logger)
            } catch {
                logger.error("removing orphaned rows failed", metadata: ["error": "\(error)"])
            }
        }
        while let (changes, ticket) = queue.next(waitingUpTo: interval, orChanges: changeLimit) {
            let batch = PostgresBatch(changes, node: clusterNode.map { Int32($0) })
            let started = ContinuousClock.now
            write(batch)
            let elapsed = ContinuousClock.now - started
            // The counts are read at most once a second: figures for $SYS, not for the hot path.
            let now = ContinuousClock.now
            if countsReadAt.withLock({ $0.map { now - $0 >= .seconds(1) } ?? true }) {
                countsReadAt.withLock { $0 = now }
                refreshCounts()
            }
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
            onCommit(StoreCommit(ticket: ticket, duration: elapsed))
        }
    }

    /// Writes `batch`, connecting again and retrying until it is committed or the store closes:
    /// what waits for it is never released unwritten.
    private func write(_ batch: PostgresBatch) {
        var delay = Duration.milliseconds(10)
        while true {
            do {
                let connection = try currentConnection()
                try batch.write(on: connection, schema: configuration.schema, logger: logger)
                return
            } catch {
                logger.error(
                    "store commit failed; connecting again and retrying",
                    metadata: ["error": "\(String(reflecting: error))"]
                )
                if let broken = connection.withLock({ $0.take() }) { try? broken.close().wait() }
                if queue.isStopping {
                    logger.error(
                        "store closing with a batch it could not commit",
                        metadata: ["changes": "\(batch.count)"]
                    )
                    return
                }
                Thread.sleep(
                    forTimeInterval: Double(delay.components.seconds) + Double(delay.components.attoseconds) / 1e18
                )
                delay = min(delay * 2, .seconds(2))
            }
        }
    }

    private func currentConnection() throws -> PostgresConnection {
        if let connection = connection.withLock({ $0 }) { return connection }
        let fresh = try Self.connect(configuration, eventLoopGroup: eventLoopGroup, logger: logger)
        connection.withLock { $0 = fresh }
        return fresh
    }

    private func refreshCounts() {
        guard let connection = connection.withLock({ $0 }) else { return }
        do {
            for (sessions, messages, size) in try connection.run(
                """
                SELECT (SELECT count(*) FROM sessions), (SELECT count(*) FROM messages),
                       (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c
                        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() AND c.relkind = 'r')
                """,
                logger: logger
            ).decode((Int64, Int64, Int64).self) {
                figures.withLock { figures in
                    figures.statistics.sessions = Int(sessions)
                    figures.statistics.messages = Int(messages)
                    figures.statistics.fileSize = size
                }
            }
        } catch {
            logger.debug("reading the store's counts failed", metadata: ["error": "\(error)"])
        }
    }
}
