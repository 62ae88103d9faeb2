import Foundation
public import Logging
public import NIOCore
public import NIOPosix
import PostgresNIO
import Synchronization
public import TernBrokerCore
import TernCodec
import TernStore

/// A Tern cluster's nodes meeting in the PostgreSQL database whose store they share
/// (``PostgresStore`` with a ``PostgresStore/clusterNode``): the ``ClusterTransport`` that moves
/// sessions, subscriptions, retained messages and messages between them through committed rows
/// and `LISTEN`/`NOTIFY`.
///
/// - A node holds a session-level advisory lock named by its number on a connection of its own
///   for as long as it runs: the lock is free exactly when the node's database session is gone,
///   which is how the other nodes learn it died (within a second; a killed process's socket is
///   closed by its kernel, and the server ends the session).
/// - `cluster_clients` names the node each connected client is attached to. A claim moves it
///   (with an epoch raised each time) and asks the old node to let go; the old node's later
///   changes to the client's rows carry its number and no longer match (see
///   ``PostgresClusterBatch``).
/// - A node that finds another dead takes its place's rows under the dead node's row lock: its
///   stored sessions become detached with their expiry and will delay counting from then, the
///   wills of its other clients are published, each by the one node whose transaction took it.
public final class PostgresCluster: ClusterTransport {
    public let nodeNumber: Int
    public let nodeName: String
    let configuration: PostgresStoreConfiguration
    let settings: Settings
    let logger: Logger
    let eventLoopGroup: any EventLoopGroup
    /// Holds the node's advisory lock and hears the notifications; closed only when the node stops.
    let control: PostgresConnection
    /// Connections for claims, the transit queue and upkeep, used by one task at a time each.
    let pool: PostgresClient
    let state = Mutex(State())
    let transitArrived = WakeSignal()
    let subscriptionsChanged = WakeSignal()
    let retainedChanged = WakeSignal()

    /// Timings of a node's part in the cluster.
    public struct Settings: Sendable {
        /// How often the node looks for dead nodes, expired sessions and due wills, and reads its
        /// transit queue when no notification came.
        public var upkeepInterval: Duration = .seconds(1)
        /// How long a claim waits for a live node to give a session up.
        public var releaseTimeout: Duration = .seconds(10)

        public init() {}
    }

    struct State {
        var node: (any ClusterNode)?
        var poolTask: Task<Void, Never>?
        /// Claims waiting for another node to have released a session, by client identifier.
        var releaseWaiters: [String: (token: UInt64, continuation: CheckedContinuation<Bool, Never>)] = [:]
        var lastReleaseToken: UInt64 = 0
        /// Client identifiers whose subscriptions changed since last read; `nil`: all of them.
        var changedSubscriptions: Set<String>? = []
        var changedRetained: Set<String>? = []
        /// When each node was seen joining, for telling a dead node from one that came back.
        var joinedAt: [Int: Int64] = [:]
    }

    /// Connects, creates or checks the tables, and takes the place of node `nodeName`: the number
    /// it had before, or the lowest one free.
    /// - Throws: ``PostgresStoreError`` when another process serves as `nodeName` already, the
    ///   cluster is full, or the server cannot be reached.
    public init(
        configuration: PostgresStoreConfiguration,
        nodeName: String,
        settings: Settings = Settings(),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "tern.cluster")
    ) async throws {
        guard !nodeName.isEmpty else { throw PostgresStoreError("a cluster node needs a name (cluster_node)") }
        self.configuration = configuration
        self.nodeName = nodeName
        self.settings = settings
        self.logger = logger
        self.eventLoopGroup = eventLoopGroup
        let control = try await PostgresConnection.connect(
            on: eventLoopGroup.any(),
            configuration: Self.connectionConfiguration(configuration),
            id: 3,
            logger: logger
        )
        do {
            // The tables first (the store creates them too; whichever comes first does).
            try await Self.ensureTables(configuration, eventLoopGroup: eventLoopGroup, logger: logger)
            let number = try await Self.register(nodeName, on: control, logger: logger)
            let locked = try await control.query(
                "SELECT pg_try_advisory_lock(hashtext(\(configuration.schema)), \(Int32(number)))",
                logger: logger
            ).collect()
            guard try locked.first?.decode(Bool.self) == true else {
                throw PostgresStoreError("cluster node \(nodeName) is running already (node \(number))")
            }
            self.nodeNumber = number
        } catch {
            try? await control.close()
            throw error
        }
        self.control = control
        var poolConfiguration = PostgresClient.Configuration(
            host: configuration.host,
            port: configuration.port,
            username: configuration.username,
            password: configuration.password,
            database: configuration.database,
            tls: .disable
        )
        poolConfiguration.options.additionalStartupParameters = [("search_path", configuration.schema)]
        poolConfiguration.options.maximumConnections = 8
        self.pool = PostgresClient(
            configuration: poolConfiguration,
            eventLoopGroup: eventLoopGroup,
            backgroundLogger: logger
        )
    }

    static func connectionConfiguration(_ configuration: PostgresStoreConfiguration) -> PostgresConnection.Configuration
    {
        var connection = PostgresConnection.Configuration(
            host: configuration.host,
            port: configuration.port,
            username: configuration.username,
            password: configuration.password,
            database: configuration.database,
            tls: .disable
        )
        connection.options.additionalStartupParameters = [("search_path", configuration.schema)]
        return connection
    }

    /// Creates the tables if they are not there, on a connection of its own (the schema code
    /// blocks, so it runs on a thread of its own, not on Swift concurrency's).
    private static func ensureTables(
        _ configuration: PostgresStoreConfiguration,
        eventLoopGroup: any EventLoopGroup,
        logger: Logger
    ) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let thread = Thread {
                do {
                    let connection = try PostgresConnection.connect(
                        on: eventLoopGroup.any(),
                        configuration: connectionConfiguration(configuration),
                        id: 4,
                        logger: logger
                    ).wait()
                    defer { try? connection.close().wait() }
                    try PostgresSchema.create(on: connection, schema: configuration.schema, logger: logger)
                    continuation.resume()
                } catch {
                    continuation.resume(throwing: error)
                }
            }
            thread.name = "tern-cluster-schema"
            thread.start()
        }
    }

    /// The node's number: the one `name` had, or the lowest free one, recorded with the time it joined.
    private static func register(_ name: String, on connection: PostgresConnection, logger: Logger) async throws -> Int
    {
        let now = Self.nowMilliseconds()
        return try await connection.withTransaction(logger: logger) { connection in
            // One registration at a time, so that two new nodes never take the same number.
            try await connection.query("LOCK TABLE cluster_nodes IN EXCLUSIVE MODE", logger: logger)
            let found = try await connection.query(
                "UPDATE cluster_nodes SET joined_at = \(now) WHERE name = \(name) RETURNING number",
                logger: logger
            ).collect()
            if let row = found.first { return Int(try row.decode(Int32.self)) }
            let free = try await connection.query(
                """
                INSERT INTO cluster_nodes (number, name, joined_at)
                SELECT min(n), \(name), \(now) FROM generate_series(1, \(Int32(ClusterLimits.maximumNodes - 1))) n
                WHERE n NOT IN (SELECT number FROM cluster_nodes)
                HAVING min(n) IS NOT NULL
                RETURNING number
                """,
                logger: logger
            ).collect()
            guard let row = free.first else {
                throw PostgresStoreError("the cluster has \(ClusterLimits.maximumNodes - 1) nodes already")
            }
            return Int(try row.decode(Int32.self))
        }
    }

    /// The channel of `kind` in this cluster (its schema): nodes of other clusters in the same
    /// database never hear it.
    func channel(_ kind: String) -> String {
        PostgresClusterBatch.channel(kind, schema: configuration.schema)
    }

    // MARK: Joining and leaving

    public func join(_ node: any ClusterNode) async throws {
        state.withLock { $0.node = node }
        let pool = self.pool
        state.withLock { $0.poolTask = Task { await pool.run() } }
        try await listen()
        // A previous run of this node that died left its clients attached to it: nobody else
        // cleaned up after it while its number was free, or not completely.
        try await failOver(nodeNumber, previousRun: true)
        try await refreshSubscriptions(all: true)
    }

    public func leave() async {
        // The clients were disconnected already; closing the control connection frees the number.
        try? await control.close()
        state.withLock { $0.poolTask?.cancel() }
    }

    private var node: (any ClusterNode)? { state.withLock { $0.node } }

    // MARK: Notifications

    /// Starts hearing the notifications addressed to this node and to every node. Each handler
    /// only records what arrived and wakes the loop that deals with it (it runs on the control
    /// connection's event loop, which must not wait).
    private func listen() async throws {
        let handlers: [(String, @Sendable (String) -> Void)] = [
            (channel("transit_\(nodeNumber)"), { [weak self] _ in self?.transitArrived.signal() }),
            (
                channel("subscriptions"),
                { [weak self] payload in
                    guard let self else { return }
                    state.withLock { state in
                        if payload.isEmpty {
                            state.changedSubscriptions = nil
                        } else {
                            state.changedSubscriptions?.insert(payload)
                        }
                    }
                    subscriptionsChanged.signal()
                }
            ),
            (
                channel("retained"),
                { [weak self] payload in
                    guard let self else { return }
                    state.withLock { state in
                        if payload.isEmpty {
                            state.changedRetained = nil
                        } else {
                            state.changedRetained?.insert(payload)
                        }
                    }
                    retainedChanged.signal()
                }
            ),
            (channel("release_\(nodeNumber)"), { [weak self] payload in self?.releaseRequested(payload) }),
            (
                channel("released_\(nodeNumber)"),
                { [weak self] payload in
                    let waiter = self?.state.withLock { $0.releaseWaiters.removeValue(forKey: payload) }
                    waiter?.continuation.resume(returning: true)
                }
            ),
        ]
        for (name, handler) in handlers {
            control.addListener(channel: name) { _, notification in handler(notification.payload) }
            try await control.query(PostgresQuery(unsafeSQL: "LISTEN \"\(name)\""), logger: logger)
        }
    }

    /// Another node claimed a session of a client attached here: the payload is the client
    /// identifier and the claimant's number, on two lines.
    private func releaseRequested(_ payload: String) {
        guard let newline = payload.lastIndex(of: "\n"), let claimant = Int(payload[payload.index(after: newline)...])
        else { return }
        let clientID = String(payload[..<newline])
        Task {
            await node?.clusterRelease(clientID)
            do {
                try await control.query(
                    "SELECT pg_notify(\(channel("released_\(claimant)")), \(clientID))",
                    logger: logger
                )
            } catch {
                logger.warning("could not answer a release", metadata: ["client": "\(clientID)", "error": "\(error)"])
            }
        }
    }

    // MARK: Serving

    public func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await self.consumeTransits() }
            group.addTask { try await self.followSubscriptions() }
            group.addTask { try await self.followRetained() }
            group.addTask { try await self.keepUp() }
            defer { group.cancelAll() }
            try await group.next()
        }
    }

    private var upkeepLoop: any EventLoop { control.eventLoop }

    /// Takes the messages other nodes routed to sessions held here, in the order they were
    /// committed, and hands them to the broker.
    private func consumeTransits() async throws {
        // A connection of its own: the queue is read after every notification, and a pooled
        // connection's lease costs more than the read at low rates.
        var reader: PostgresConnection?
        while !Task.isCancelled {
            var full = false
            do {
                if reader == nil {
                    reader = try await PostgresConnection.connect(
                        on: eventLoopGroup.any(),
                        configuration: Self.connectionConfiguration(configuration),
                        id: 5,
                        logger: logger
                    )
                }
                let rows = try await reader!.query(
                    """
                    DELETE FROM cluster_transit WHERE id IN (
                        SELECT id FROM cluster_transit WHERE node = \(Int32(nodeNumber)) ORDER BY id LIMIT 5000)
                    RETURNING id, client_id, session, seq, flags, subscription_ids, message_id, body, expires_at
                    """,
                    logger: logger
                ).collect()
                full = rows.count == 5000
                var transits: [(Int64, ClusterTransit)] = []
                transits.reserveCapacity(rows.count)
                for row in rows {
                    let (id, clientID, session, seq, flags, identifiers, messageID, body, expiresAt) = try row.decode(
                        (Int64, String, Int64, Int64, Int16, ByteBuffer?, Int64, ByteBuffer, Int64?).self
                    )
                    guard let qos = QoS(rawValue: UInt8(flags & 3)) else { continue }
                    let message = try StoredMessageCoding.decode(
                        body,
                        expiresAt: expiresAt.map(BrokerInstant.init(millisecondsSinceEpoch:)),
                        storeID: UInt64(messageID)
                    )
                    let delivery = Delivery(
                        message: message,
                        qos: qos,
                        retain: flags & 4 != 0,
                        subscriptionIdentifiers: try identifiers.map(StoredIdentifierCoding.decode) ?? [],
                        sequence: UInt64(seq)
                    )
                    transits.append(
                        (id, ClusterTransit(clientID: clientID, sessionKey: UInt64(session), delivery: delivery))
                    )
                }
                transits.sort { $0.0 < $1.0 }
                if !transits.isEmpty { node?.clusterDeliver(transits.map(\.1)) }
            } catch {
                logger.warning("reading the transit queue failed", metadata: ["error": "\(error)"])
                if let broken = reader.take() { try? await broken.close() }
            }
            if !full { await transitArrived.wait(upTo: settings.upkeepInterval, on: upkeepLoop) }
        }
        if let reader { try? await reader.close() }
    }

    private func followSubscriptions() async throws {
        while !Task.isCancelled {
            await subscriptionsChanged.wait(upTo: .seconds(60), on: upkeepLoop)
            if Task.isCancelled { return }
            do {
                try await refreshSubscriptions(all: false)
            } catch {
                logger.warning("reading the cluster's subscriptions failed", metadata: ["error": "\(error)"])
                state.withLock { $0.changedSubscriptions = nil }
            }
        }
    }

    /// Reads the subscriptions of the clients whose subscriptions changed (every client's with
    /// `all`) and hands them to the broker.
    private func refreshSubscriptions(all: Bool) async throws {
        let changed: Set<String>? =
            all
            ? nil
            : state.withLock { state in
                defer { state.changedSubscriptions = [] }
                return state.changedSubscriptions
            }
        if let changed, changed.isEmpty { return }
        let rows: [PostgresRow]
        if let changed {
            rows = try await pool.query(
                """
                SELECT client_id, filter, options, identifier, session FROM cluster_subscriptions
                WHERE client_id = ANY(\(Array(changed))) ORDER BY client_id
                """,
                logger: logger
            ).collect()
        } else {
            rows = try await pool.query(
                "SELECT client_id, filter, options, identifier, session FROM cluster_subscriptions ORDER BY client_id",
                logger: logger
            ).collect()
        }
        var byClient: [String: (key: UInt64, subscriptions: [SessionSubscription])] = [:]
        for row in rows {
            let (clientID, filter, options, identifier, session) = try row.decode(
                (String, String, Int16, Int64?, Int64).self
            )
            let subscription = try PostgresSchema.decodeSubscription(
                filter: filter,
                options: options,
                identifier: identifier
            )
            byClient[clientID, default: (UInt64(session), [])].subscriptions.append(subscription)
        }
        guard let node else { return }
        for clientID in changed ?? [] where byClient[clientID] == nil {
            node.clusterSubscriptionsChanged(clientID: clientID, sessionKey: 0, subscriptions: [])
        }
        for (clientID, entry) in byClient {
            node.clusterSubscriptionsChanged(
                clientID: clientID,
                sessionKey: entry.key,
                subscriptions: entry.subscriptions
            )
        }
    }

    private func followRetained() async throws {
        while !Task.isCancelled {
            await retainedChanged.wait(upTo: .seconds(60), on: upkeepLoop)
            if Task.isCancelled { return }
            let changed = state.withLock { state in
                defer { state.changedRetained = [] }
                return state.changedRetained
            }
            if let changed, changed.isEmpty { continue }
            do {
                var topics = changed ?? []
                let rows = try await pool.query(
                    changed == nil
                        ? "SELECT r.topic, m.id, m.body, m.expires_at FROM retained r JOIN messages m ON m.id = r.message"
                        : """
                        SELECT r.topic, m.id, m.body, m.expires_at FROM retained r JOIN messages m ON m.id = r.message
                        WHERE r.topic = ANY(\(Array(topics)))
                        """,
                    logger: logger
                ).collect()
                for row in rows {
                    let (topic, id, body, expiresAt) = try row.decode((String, Int64, ByteBuffer, Int64?).self)
                    let message = try StoredMessageCoding.decode(
                        body,
                        expiresAt: expiresAt.map(BrokerInstant.init(millisecondsSinceEpoch:)),
                        storeID: UInt64(id)
                    )
                    topics.remove(topic)
                    node?.clusterRetainedChanged(topic: topic, message: message)
                }
                for topic in topics { node?.clusterRetainedChanged(topic: topic, message: nil) }
            } catch {
                logger.warning("reading retained messages failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Once per upkeep interval: stops if this node lost its place; fails over dead nodes;
    /// publishes the wills that fell due and ends the sessions that expired while no node held
    /// them.
    private func keepUp() async throws {
        while !Task.isCancelled {
            guard !control.isClosed else {
                throw PostgresStoreError(
                    "node \(nodeName) lost its connection to the cluster's database: another node may take its sessions"
                )
            }
            do {
                for number in try await deadNodes() { try await failOver(number, previousRun: false) }
                try await publishDueWills()
                try await endExpiredSessions()
            } catch {
                logger.warning("cluster upkeep failed", metadata: ["error": "\(error)"])
            }
            try? await Task.sleep(for: settings.upkeepInterval)
        }
    }

    // MARK: Claims

    public func claim(_ clientID: String) async throws -> ClusterClaim {
        let me = Int32(nodeNumber)
        let logger = self.logger
        // In one transaction, under the client's row lock: the node read is the one that holds
        // the client as the last committed claim left it, and the next claim reads this one.
        let holder: Int? = try await pool.withTransaction(logger: logger) { connection in
            try await connection.query(
                "INSERT INTO cluster_clients (client_id, node) VALUES (\(clientID), NULL) ON CONFLICT DO NOTHING",
                logger: logger
            )
            let rows = try await connection.query(
                "SELECT node FROM cluster_clients WHERE client_id = \(clientID) FOR UPDATE",
                logger: logger
            ).collect()
            try await connection.query(
                "UPDATE cluster_clients SET node = \(me), epoch = epoch + 1, will = NULL WHERE client_id = \(clientID)",
                logger: logger
            )
            return try rows.first?.decode(Int32?.self).map { Int($0) }
        }
        if let holder, holder != nodeNumber {
            if try await isDead(holder) {
                try await failOver(holder, previousRun: false)
            } else if !(await askRelease(clientID, from: holder)) {
                guard try await isDead(holder) else {
                    throw PostgresStoreError("node \(holder) holds the session of \(clientID) and did not give it up")
                }
                try await failOver(holder, previousRun: false)
            }
        }
        // What this node routed to the session before its CONNECT claimed it (or stored of it
        // before it let the session go a moment ago) is committed before the session is read:
        // it is then read with the session, in its place, not sent on behind later messages.
        await node?.clusterStoreSettled()
        return try await loadSession(clientID)
    }

    /// How often a claim waiting for a node's answer checks whether that node died meanwhile.
    /// A node killed a moment before the claim may still hold its lock when the claim first
    /// looks (the server has not yet seen its connection go); without these checks the claim
    /// would wait the whole ``Settings/releaseTimeout`` for an answer that cannot come.
    static let releaseLivenessCheck: Duration = .milliseconds(100)

    /// Asks node `holder` to give up `clientID`'s session, and waits for its answer, which it
    /// sends once its changes to the session are committed.
    /// - Returns: whether it answered within ``Settings/releaseTimeout``; `false` as soon as it
    ///   is found dead.
    private func askRelease(_ clientID: String, from holder: Int) async -> Bool {
        let token = state.withLock { state in
            state.lastReleaseToken += 1
            return state.lastReleaseToken
        }
        let timeout = settings.releaseTimeout
        return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            state.withLock { $0.releaseWaiters[clientID] = (token, continuation) }
            let giveUp: @Sendable () -> Void = { [weak self] in
                guard let self else { return }
                let waiter = state.withLock { state -> CheckedContinuation<Bool, Never>? in
                    guard let waiter = state.releaseWaiters[clientID], waiter.token == token else { return nil }
                    state.releaseWaiters[clientID] = nil
                    return waiter.continuation
                }
                waiter?.resume(returning: false)
            }
            upkeepLoop.scheduleTask(in: TimeAmount.nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000)) {
                giveUp()
            }
            let request = channel("release_\(holder)")
            let payload = clientID + "\n\(nodeNumber)"
            let (control, logger) = (self.control, self.logger)
            Task { [weak self] in
                do {
                    try await control.query("SELECT pg_notify(\(request), \(payload))", logger: logger)
                } catch {
                    giveUp()
                    return
                }
                // Until the answer (or the timeout) resumes the claim: is the holder dead?
                while let self, state.withLock({ $0.releaseWaiters[clientID]?.token == token }) {
                    try? await Task.sleep(for: Self.releaseLivenessCheck)
                    if (try? await isDead(holder)) == true {
                        giveUp()
                        return
                    }
                }
            }
        }
    }

    /// Reads `clientID`'s stored session, if any, with everything it refers to, in one snapshot;
    /// and marks its subscriptions in the cluster as this node's.
    private func loadSession(_ clientID: String) async throws -> ClusterClaim {
        let me = Int32(nodeNumber)
        let logger = self.logger
        return try await pool.withConnection { connection in
            try await connection.query("BEGIN ISOLATION LEVEL REPEATABLE READ", logger: logger)
            do {
                try await connection.query(
                    "UPDATE cluster_subscriptions SET node = \(me) WHERE client_id = \(clientID)",
                    logger: logger
                )
                var claim = ClusterClaim()
                let sessionRows = try await connection.query(
                    PostgresQuery(
                        unsafeSQL: "SELECT \(PostgresSchema.sessionColumns) FROM sessions WHERE client_id = $1",
                        binds: Self.binds(clientID)
                    ),
                    logger: logger
                ).collect()
                if let row = sessionRows.first {
                    let header = try PostgresSchema.decodeSession(try row.decode(PostgresSchema.SessionRow.self))
                    let key = Int64(header.key)
                    var session = StoredSession(header: header)
                    for row in try await connection.query(
                        "SELECT filter, options, identifier FROM subscriptions WHERE session = \(key) ORDER BY filter",
                        logger: logger
                    ).collect() {
                        let (filter, options, identifier) = try row.decode((String, Int16, Int64?).self)
                        session.subscriptions.append(
                            try PostgresSchema.decodeSubscription(
                                filter: filter,
                                options: options,
                                identifier: identifier
                            )
                        )
                    }
                    for row in try await connection.query(
                        "SELECT packet_id FROM releases WHERE session = \(key) ORDER BY packet_id",
                        logger: logger
                    ).collect() {
                        session.releases.append(UInt16(clamping: try row.decode(Int32.self)))
                    }
                    for row in try await connection.query(
                        "SELECT packet_id FROM inbound_qos2 WHERE session = \(key) ORDER BY packet_id",
                        logger: logger
                    ).collect() {
                        session.inboundQoS2.append(UInt16(clamping: try row.decode(Int32.self)))
                    }
                    for row in try await connection.query(
                        PostgresQuery(
                            unsafeSQL:
                                "SELECT \(PostgresSchema.deliveryColumns) FROM deliveries WHERE session = $1 ORDER BY position",
                            binds: Self.binds(key)
                        ),
                        logger: logger
                    ).collect() {
                        session.deliveries.append(
                            try PostgresSchema.decodeDelivery(try row.decode(PostgresSchema.DeliveryRow.self))
                        )
                    }
                    for row in try await connection.query(
                        """
                        SELECT m.id, m.body, m.expires_at FROM messages m
                        WHERE m.id IN (SELECT message FROM deliveries WHERE session = \(key))
                        """,
                        logger: logger
                    ).collect() {
                        let (id, body, expiresAt) = try row.decode((Int64, ByteBuffer, Int64?).self)
                        claim.messages[UInt64(id)] = try StoredMessageCoding.decode(
                            body,
                            expiresAt: expiresAt.map(BrokerInstant.init(millisecondsSinceEpoch:)),
                            storeID: UInt64(id)
                        )
                    }
                    claim.session = session
                }
                try await connection.query("COMMIT", logger: logger)
                return claim
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
        }
    }

    private static func binds(_ value: some PostgresNonThrowingEncodable) -> PostgresBindings {
        var binds = PostgresBindings()
        binds.append(value)
        return binds
    }

    /// The wall clock, as the store's times are kept: milliseconds since the Unix epoch.
    static func nowMilliseconds() -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1000).rounded(.down))
    }

    // MARK: Dead nodes

    /// Whether node `number`'s database session is gone: its advisory lock is free. The lock is
    /// let go at once; the node's row lock guards the clean-up that follows.
    private func isDead(_ number: Int) async throws -> Bool {
        guard number != nodeNumber else { return false }
        let rows = try await control.query(
            """
            SELECT pg_try_advisory_lock(hashtext(\(configuration.schema)), \(Int32(number)))
                   AND pg_advisory_unlock(hashtext(\(configuration.schema)), \(Int32(number)))
            """,
            logger: logger
        ).collect()
        return try rows.first?.decode(Bool?.self) == true
    }

    /// The nodes that still have clients attached, or messages waiting, and are dead.
    private func deadNodes() async throws -> [Int] {
        let rows = try await pool.query(
            """
            SELECT DISTINCT node FROM (
                SELECT node FROM cluster_clients WHERE node IS NOT NULL
                UNION SELECT node FROM cluster_transit) n
            """,
            logger: logger
        ).collect()
        var dead: [Int] = []
        for row in rows {
            let number = Int(try row.decode(Int32.self))
            if number != nodeNumber, try await isDead(number) { dead.append(number) }
        }
        return dead
    }

    /// Takes over what dead node `number` left (or, with `previousRun`, what this node's previous
    /// run left): its stored sessions become detached, their expiry and will delay counting from
    /// now; the wills of its other clients are published now and their subscriptions go; its
    /// transit queue goes. Each row is taken by one transaction, so each will is published by
    /// one node once.
    private func failOver(_ number: Int, previousRun: Bool) async throws {
        let now = Self.nowMilliseconds()
        let node = Int32(number)
        let logger = self.logger
        let (wills, endedClients): ([ApplicationMessage], [String]) = try await pool.withConnection { connection in
            try await connection.query("BEGIN", logger: logger)
            do {
                // Whoever else fails this node over goes first; then there is nothing left.
                let locked = try await connection.query(
                    "SELECT number FROM cluster_nodes WHERE number = \(node) FOR UPDATE\(unescaped: previousRun ? "" : " SKIP LOCKED")",
                    logger: logger
                ).collect()
                guard !locked.isEmpty else {
                    try await connection.query("COMMIT", logger: logger)
                    return ([], [])
                }
                try await connection.query(
                    """
                    UPDATE sessions s SET attached = false,
                        expires_at = CASE WHEN s.expiry >= 4294967295 THEN NULL ELSE \(now) + s.expiry * 1000 END,
                        will_deadline = CASE WHEN s.will IS NULL THEN NULL ELSE \(now) + least(s.will_delay, s.expiry) * 1000 END
                    FROM cluster_clients c WHERE c.node = \(node) AND c.client_id = s.client_id AND s.attached
                    """,
                    logger: logger
                )
                var wills: [ApplicationMessage] = []
                var ended: [String] = []
                for row in try await connection.query(
                    """
                    DELETE FROM cluster_clients c WHERE c.node = \(node)
                        AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.client_id = c.client_id)
                    RETURNING c.client_id, c.will
                    """,
                    logger: logger
                ).collect() {
                    let (clientID, will) = try row.decode((String, ByteBuffer?).self)
                    ended.append(clientID)
                    if let will { wills.append(try StoredMessageCoding.decode(will, expiresAt: nil)) }
                }
                if !ended.isEmpty {
                    try await connection.query(
                        "DELETE FROM cluster_subscriptions WHERE client_id = ANY(\(ended))",
                        logger: logger
                    )
                    try await connection.query(
                        "SELECT pg_notify(\(self.channel("subscriptions")), c) FROM unnest(\(ended)::text[]) AS c",
                        logger: logger
                    )
                }
                try await connection.query(
                    "UPDATE cluster_clients SET node = NULL, will = NULL WHERE node = \(node)",
                    logger: logger
                )
                try await connection.query("DELETE FROM cluster_transit WHERE node = \(node)", logger: logger)
                try await connection.query("COMMIT", logger: logger)
                return (wills, ended)
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
        }
        if !endedClients.isEmpty || !wills.isEmpty {
            logger.notice(
                previousRun ? "took over what this node's previous run left" : "took over a dead node's clients",
                metadata: ["node": "\(number)", "ended-sessions": "\(endedClients.count)", "wills": "\(wills.count)"]
            )
        }
        // Published after the commit: a crash in between loses them rather than publishing twice.
        for will in wills { self.node?.clusterPublish(will) }
    }

    // MARK: Upkeep of sessions no node holds

    /// Publishes the wills whose delay passed while no node held their session: each is taken
    /// (cleared) by one node's statement, and published by that node after it commits.
    private func publishDueWills() async throws {
        let now = Self.nowMilliseconds()
        let rows = try await pool.query(
            """
            WITH due AS (
                SELECT s.key, s.will FROM sessions s
                WHERE NOT s.attached AND s.will IS NOT NULL AND s.will_deadline <= \(now)
                  AND NOT EXISTS (SELECT 1 FROM cluster_clients c WHERE c.client_id = s.client_id AND c.node IS NOT NULL)
                FOR UPDATE OF s SKIP LOCKED LIMIT 1000)
            UPDATE sessions s SET will = NULL, will_deadline = NULL FROM due WHERE s.key = due.key
            RETURNING due.will
            """,
            logger: logger
        ).collect()
        for row in rows {
            guard let body = try row.decode(ByteBuffer?.self) else { continue }
            node?.clusterPublish(try StoredMessageCoding.decode(body, expiresAt: nil))
        }
    }

    /// Ends the sessions whose expiry passed while no node held them.
    private func endExpiredSessions() async throws {
        let now = Self.nowMilliseconds()
        let logger = self.logger
        let channel = self.channel("subscriptions")
        try await pool.withConnection { connection in
            try await connection.query("BEGIN", logger: logger)
            do {
                let gone = try await connection.query(
                    """
                    DELETE FROM sessions s WHERE s.key IN (
                        SELECT s2.key FROM sessions s2
                        WHERE NOT s2.attached AND s2.expires_at <= \(now)
                          AND NOT EXISTS (SELECT 1 FROM cluster_clients c WHERE c.client_id = s2.client_id AND c.node IS NOT NULL)
                        FOR UPDATE SKIP LOCKED LIMIT 1000)
                    RETURNING s.key, s.client_id
                    """,
                    logger: logger
                ).collect()
                guard !gone.isEmpty else {
                    try await connection.query("COMMIT", logger: logger)
                    return
                }
                var keys: [Int64] = []
                var clients: [String] = []
                for row in gone {
                    let (key, clientID) = try row.decode((Int64, String).self)
                    keys.append(key)
                    clients.append(clientID)
                }
                for table in ["subscriptions", "releases", "inbound_qos2"] {
                    try await connection.query(
                        PostgresQuery(
                            unsafeSQL: "DELETE FROM \(table) WHERE session = ANY($1)",
                            binds: Self.binds(keys)
                        ),
                        logger: logger
                    )
                }
                var messages: [Int64] = []
                for row in try await connection.query(
                    "DELETE FROM deliveries WHERE session = ANY(\(keys)) RETURNING message",
                    logger: logger
                ).collect() {
                    messages.append(try row.decode(Int64.self))
                }
                if !messages.isEmpty {
                    try await connection.query(
                        PostgresQuery(
                            unsafeSQL: PostgresSchema.collectMessages(
                                among: "SELECT id, touches FROM messages WHERE id = ANY($1)"
                            ),
                            binds: Self.binds(Array(Set(messages)))
                        ),
                        logger: logger
                    )
                }
                try await connection.query(
                    "DELETE FROM cluster_subscriptions WHERE client_id = ANY(\(clients))",
                    logger: logger
                )
                try await connection.query(
                    "DELETE FROM cluster_clients WHERE client_id = ANY(\(clients)) AND node IS NULL",
                    logger: logger
                )
                try await connection.query(
                    "SELECT pg_notify(\(channel), c) FROM unnest(\(clients)::text[]) AS c",
                    logger: logger
                )
                try await connection.query("COMMIT", logger: logger)
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
        }
    }
}
