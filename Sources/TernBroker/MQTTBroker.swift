import Foundation
public import Logging
public import NIOCore
import NIOHTTP1
public import NIOPosix
public import Prometheus
public import ServiceLifecycle
import Synchronization
public import TernBrokerCore
import TernCodec
import TernStore

#if canImport(Glibc)
    import Glibc
#endif

/// The broker: listeners on SwiftNIO around the pure ``BrokerState``.
///
/// It is a swift-service-lifecycle `Service`: run it in a `ServiceGroup` (as `tern serve` does) or
/// call ``run()`` from a task in your own program. SIGTERM/SIGINT through the service group shut
/// it down gracefully: MQTT 5 clients are sent DISCONNECT 0x8B (Server shutting down).
///
/// ```swift
/// var options = BrokerOptions()
/// options.listeners = [.init(host: "127.0.0.1", port: 0)]
/// let broker = MQTTBroker(options: options)
/// let task = Task { try await broker.run() }
/// let port = try await broker.waitUntilListening()[0].port!
/// // ... connect clients to 127.0.0.1:port ...
/// task.cancel()
/// ```
///
/// Each event loop has a shard of its own (``BrokerShard``): the state of the sessions of the
/// clients connected to it. A packet is handled against its own loop's shard, under a lock no
/// other loop takes on the publish path; a message for a session on another loop is posted to
/// that session's mailbox, and the loops that received posts are woken once per read burst. The
/// actions a packet produces are appended, in order, to each connection's ``OutboundQueue``, and
/// each connection flushes once per burst, not once per packet.
public final class MQTTBroker: Service, Sendable {
    struct Handle: Sendable {
        let eventLoop: any EventLoop
        let handler: NIOLoopBound<MQTTConnectionHandler>
        /// The connection's ordered outbound path.
        let outbound: ConnectionOutbound
    }

    /// A publishing connection as its ``PublishReceipt``s name it: completing one wakes it.
    ///
    /// A receipt can outlive its connection (a copy in flight to a subscriber that went away keeps
    /// it until that subscriber comes back), so the handle, which holds the connection's handler
    /// and its buffers, is let go when the connection ends: what stays is this small object.
    final class PublisherWaker: PublishReceiptWaiter {
        private let handle: Mutex<Handle?>

        init(_ handle: Handle) { self.handle = Mutex(handle) }

        /// The connection's handle, while it lives.
        var current: Handle? { handle.withLock { $0 } }

        func connectionEnded() { handle.withLock { $0 = nil } }
    }

    public let options: BrokerOptions
    let group: any EventLoopGroup
    let logger: Logger
    /// What the shards share: subscriptions, retained messages, the directory of sessions.
    let sharedState: BrokerShared
    let shards: BrokerShards
    /// The ACLs in force and the memory flag, for shards made after start-up.
    let settings: StateSettings
    /// Whether deadlines are being kept: from listening until shutdown.
    let keepsDeadlines = Atomic<Bool>(false)
    /// Connections whose CONNECT waits for the store's queues (``BrokerShared/connectWaitsForQueues(_:useUsernameAsClientID:)``).
    let waitingForQueues = Mutex<[Handle]>([])
    /// The store's last commit, and the connections whose queues wait for a later one.
    let commits = CommitWaiters()
    let connectionCounter = Atomic<UInt64>(0)
    let counters = TrafficCounters()
    let passwordFiles: Mutex<PasswordFiles>
    let listening: EventLoopPromise<[SocketAddress]>
    /// The metrics listener's address, once bound.
    let metricsListening: EventLoopPromise<SocketAddress>
    /// Fulfilled once the store is loaded, before any listener is bound.
    let restored: EventLoopPromise<Void>
    /// Fulfilled once the store's queues are in and its writer runs (at once without a store, or
    /// with one that loads everything up front).
    let queuesRestored: EventLoopPromise<Void>
    /// What must be ready before the listeners open (``addStartupGate()``).
    let startupGates = Mutex<[EventLoopPromise<Void>]>([])
    let metrics: BrokerMetrics
    /// Whether the store is loaded and every MQTT listener bound, until shutdown begins (`/ready`).
    let ready = Atomic<Bool>(false)
    let startedAt = Date()
    /// Whether memory was over `memory_limit` at the last check.
    let overMemoryLimit = Atomic<Bool>(false)
    /// Client identifiers whose session is being claimed from the cluster, with the messages the
    /// cluster delivered for them meanwhile (posted once the session is here).
    let clusterClaimsInFlight = Mutex<[String: [ClusterTransit]]>([:])

    /// - Parameters:
    ///   - options: Listeners and limits.
    ///   - group: The event loops to serve on; the shared singleton by default.
    ///   - logger: Where connection events and refusals are logged.
    public init(
        options: BrokerOptions = BrokerOptions(),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "tern.broker")
    ) {
        self.options = options
        self.group = group
        self.logger = logger
        var passwords = PasswordFiles(global: options.passwordFile)
        var policies: [Int: AccessPolicy] = [:]
        for (index, listener) in options.listeners.enumerated() {
            guard let security = listener.security else { continue }
            policies[index] = AccessPolicy(
                allowAnonymous: security.allowAnonymous,
                accessControl: security.accessControl
            )
            passwords.perListener[index] = security.passwordFile
        }
        let shared = BrokerShared(
            clustered: options.cluster != nil,
            keyStride: options.cluster == nil ? 1 : UInt64(ClusterLimits.maximumNodes),
            keyOffset: UInt64(options.cluster?.nodeNumber ?? 0)
        )
        let settings = StateSettings(
            configuration: options.broker,
            recordsChanges: options.store != nil,
            accessControl: options.accessControl,
            listenerPolicies: policies,
            startedAt: .now()
        )
        self.sharedState = shared
        self.settings = settings
        var loops: [any EventLoop] = []
        for loop in group.makeIterator() { loops.append(loop) }
        self.shards = BrokerShards(loops: loops) { index in settings.makeState(shard: index, shared: shared) }
        self.passwordFiles = Mutex(passwords)
        self.listening = group.any().makePromise(of: [SocketAddress].self)
        self.metricsListening = group.any().makePromise(of: SocketAddress.self)
        self.restored = group.any().makePromise(of: Void.self)
        self.queuesRestored = group.any().makePromise(of: Void.self)
        self.metrics = BrokerMetrics(withStore: options.store != nil)
    }

    deinit {
        // A broker released without having run (embedded in a test, say) never bound anything;
        // its waiters learn so. A no-op once the promise is fulfilled.
        listening.fail(ListenerError(listener: "every listener", reason: "the broker was released before it listened"))
        metricsListening.fail(ListenerError(listener: "metrics", reason: "the broker was released before it listened"))
        restored.fail(ListenerError(listener: "every listener", reason: "the broker was released before it started"))
        queuesRestored.succeed()
        for gate in startupGates.withLock({ $0 }) { gate.succeed() }
    }

    /// Returns once the store is loaded (at once without one), before any listener is bound:
    /// from then on ``openInternalConnection()`` works.
    public func waitUntilRestored() async throws {
        try await restored.futureResult.get()
    }

    /// Holds the listeners closed until the returned gate is opened (or 30 s pass), so that
    /// something inside the broker, such as a bridge's local subscriptions, is in place before
    /// the first client can publish. Call it before ``run()``.
    public func addStartupGate() -> StartupGate {
        let promise = group.any().makePromise(of: Void.self)
        startupGates.withLock { $0.append(promise) }
        return StartupGate(promise: promise)
    }

    /// What ``addStartupGate()`` returns: ``open()`` lets the listeners open.
    public struct StartupGate: Sendable {
        let promise: EventLoopPromise<Void>
        public func open() { promise.succeed() }
    }

    /// The addresses the broker listens on, once it does. Throws if binding failed.
    public func waitUntilListening() async throws -> [SocketAddress] {
        try await listening.futureResult.get()
    }

    /// The metrics listener's address once it is bound. Throws if there is none or binding failed.
    public func waitUntilMetricsListening() async throws -> SocketAddress {
        try await metricsListening.futureResult.get()
    }

    /// The factory behind the broker's Prometheus registry. An embedding program that
    /// bootstraps swift-metrics with it (`MetricsSystem.bootstrap(broker.metricsFactory)`) has its
    /// own metrics served on the same `/metrics`.
    public var metricsFactory: PrometheusMetricsFactory { metrics.factory }

    /// What `/metrics` serves now, in Prometheus' text exposition format.
    public func scrapeMetrics() -> [UInt8] {
        // Read outside the lock: a store's figures may touch the file system.
        let store = options.store?.statistics
        let (statistics, gauges) = totals()
        var all = statistics
        all.messagesReceived = counters.packetsReceived.load(ordering: .relaxed)
        all.messagesSent = counters.packetsSent.load(ordering: .relaxed)
        all.bytesReceived = counters.bytesReceived.load(ordering: .relaxed)
        all.bytesSent = counters.bytesSent.load(ordering: .relaxed)
        return metrics.exposition(
            .init(statistics: all, gauges: gauges, store: store, process: .read(), startedAt: startedAt)
        )
    }

    /// A snapshot of the broker's counters.
    public var statistics: BrokerStatistics { totals().statistics }

    /// How many sessions the broker holds, connected or not.
    public var sessionCount: Int { sharedState.directory.count }

    /// How many subscriptions the broker holds.
    public var subscriptionCount: Int { sharedState.subscriptions.count }

    /// The counters and gauges of every shard, added up. Walks every session: for a scrape or
    /// `$SYS`, not for the publish path.
    func totals() -> (statistics: BrokerStatistics, gauges: BrokerGauges) {
        var statistics = BrokerStatistics()
        var gauges: BrokerGauges?
        for shard in shards.all {
            let (shardStatistics, shardGauges) = shard.state.withLock { ($0.broker.statistics, $0.broker.gauges) }
            statistics.add(shardStatistics)
            if gauges == nil { gauges = shardGauges } else { gauges!.add(shardGauges) }
        }
        return (statistics, gauges ?? BrokerGauges())
    }

    /// Runs the listeners until the task is cancelled or a graceful shutdown is requested.
    public func run() async throws {
        // First, so that orchestration sees the process live (and not ready) while the store loads.
        let metricsChannel: (any Channel)?
        do {
            metricsChannel = try await bindMetricsListener()
        } catch {
            listening.fail(error)
            metricsListening.fail(error)
            throw error
        }
        defer { metricsChannel?.close(promise: nil) }
        var queuesFollow = false
        if let store = options.store {
            do {
                queuesFollow = try restore(from: store)
            } catch {
                listening.fail(error)
                restored.fail(error)
                queuesRestored.succeed()
                throw error
            }
        } else {
            queuesRestored.succeed()
        }
        defer { options.store?.close() }
        if let cluster = options.cluster {
            do {
                // Every node's subscriptions are known before the first client can publish.
                try await cluster.join(self)
            } catch {
                listening.fail(error)
                restored.fail(error)
                throw error
            }
        }
        restored.succeed()
        // Read while the startup gates wait and the listeners open: a bridge's own session may
        // be among those whose CONNECT waits for them.
        if queuesFollow, let store = options.store {
            restoreQueues(from: store)
        } else {
            queuesRestored.succeed()  // a store that loads everything up front (or a cluster's)
        }
        await openStartupGates()
        var channels: [any Channel] = []
        do {
            for (index, listener) in options.listeners.enumerated() {
                let channel = try await bind(listener, index: index)
                channels.append(channel)
                logger.info(
                    "listening",
                    metadata: [
                        "listener": "\(listener.name)", "address": "\(channel.localAddress.map { "\($0)" } ?? "?")",
                    ]
                )
            }
        } catch {
            for channel in channels { try? await channel.close() }
            listening.fail(error)
            throw error
        }
        listening.succeed(channels.compactMap(\.localAddress))
        ready.store(true, ordering: .relaxed)
        if options.store != nil { finishRestore() }

        let loop = group.any()
        keepsDeadlines.store(true, ordering: .relaxed)
        for shard in shards.all {
            shard.state.withLock { armDeadlineTimer(&$0, shard) }
        }
        let memoryCheck: RepeatedTask? =
            options.memoryLimit > 0
            ? loop.scheduleRepeatedTask(
                initialDelay: .zero,
                delay: .nanoseconds(
                    Int64(
                        options.memoryCheckInterval.components.seconds * 1_000_000_000
                            + options.memoryCheckInterval.components.attoseconds / 1_000_000_000
                    )
                )
            ) { [self] _ in self.checkMemoryLimit() }
            : nil
        let sysTicker: RepeatedTask? =
            options.sysInterval > 0
            ? loop.scheduleRepeatedTask(initialDelay: .zero, delay: .seconds(options.sysInterval)) { [self] _ in
                self.publishSystemTopics()
            } : nil

        let boundChannels = channels
        let clusterTask = options.cluster.map { cluster in
            Task { [logger] () -> (any Error)? in
                do {
                    try await cluster.run()
                    return nil
                } catch {
                    // The node can no longer tell which sessions are its own: it stops serving.
                    logger.critical("leaving the cluster", metadata: ["error": "\(error)"])
                    for channel in boundChannels { channel.close(promise: nil) }
                    return error
                }
            }
        }
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                // Park until shutdown or cancellation; both close the listeners.
                for channel in boundChannels { try? await channel.closeFuture.get() }
            } onCancel: {
                for channel in boundChannels { channel.close(promise: nil) }
            }
        } onGracefulShutdown: {
            for channel in boundChannels { channel.close(promise: nil) }
        }
        ready.store(false, ordering: .relaxed)
        keepsDeadlines.store(false, ordering: .relaxed)
        for shard in shards.all {
            shard.state.withLock { state in
                state.deadlineTimer?.task.cancel()
                state.deadlineTimer = nil
            }
        }
        sysTicker?.cancel()
        memoryCheck?.cancel()
        clusterTask?.cancel()
        await disconnectEveryone()
        if let cluster = options.cluster {
            // What the disconnections changed reaches the other nodes before this one goes.
            await clusterStoreSettled()
            let failure = await clusterTask?.value
            await cluster.leave()
            if let failure { throw failure }
        }
        // The store closes when this returns: not while its queues are still being read.
        try? await queuesRestored.futureResult.get()
    }

    /// Waits for the startup gates, at most 30 s: a gate that never opens delays the listeners,
    /// it does not keep them closed. A bridge opens its gate within milliseconds; the bound is
    /// for a machine so busy that even that takes seconds.
    private func openStartupGates() async {
        let gates = startupGates.withLock { $0 }
        guard !gates.isEmpty else { return }
        let loop = group.any()
        let timeout = loop.scheduleTask(in: .seconds(30)) {
            for gate in gates { gate.succeed() }
        }
        for gate in gates { try? await gate.futureResult.get() }
        timeout.cancel()
    }

    /// Sends DISCONNECT 0x8B to every MQTT 5 client and closes every connection.
    private func disconnectEveryone() async {
        let handles = shards.all.flatMap { shard in shard.state.withLock { Array($0.handles.values) } }
        var closed: [EventLoopFuture<Void>] = []
        for handle in handles {
            closed.append(
                handle.eventLoop.flatSubmit {
                    handle.handler.value.shutDown()
                }
            )
        }
        for future in closed { try? await future.get() }
    }

    // MARK: The store

    /// Loads the store into the state before any client can connect. Unless the queues follow
    /// (``StoreSnapshot/queuesFollow``), starts its writer too.
    /// - Returns: whether the queues follow, for ``restoreQueues(from:)`` once the listeners are open.
    @discardableResult
    func restore(from store: any TernStore) throws -> Bool {
        let started = ContinuousClock.now
        var snapshot = try store.load()
        let loaded = ContinuousClock.now - started
        let now = BrokerInstant.now()
        // Each session goes to a shard of its own, by its client identifier; a client that comes
        // back on another loop fetches it from there. The retained messages are restored once.
        let fixed = shards.fixed
        var parts = Array(repeating: [StoredSession](), count: fixed.count)
        for session in snapshot.sessions {
            parts[Self.home(of: session.header.clientID, among: fixed.count)].append(session)
        }
        snapshot.sessions = []
        var summary = BrokerState.RestoreSummary()
        var outbox = Outbox()
        for (index, shard) in fixed.enumerated() {
            var part = snapshot
            part.sessions = parts[index]
            if index > 0 { part.retained = [:] }
            withState(on: shard, current: nil, outbox: &outbox) { state in
                // No connection exists yet: wills published at start-up only reach stored sessions.
                let restored = state.restore(part, now: now, finishing: false)
                summary.sessions += restored.summary.sessions
                summary.queuedMessages += restored.summary.queuedMessages
                summary.inflightMessages += restored.summary.inflightMessages
                summary.retainedMessages += restored.summary.retainedMessages
                return restored.actions
            }
        }
        outbox.dispatch(self)
        // The rows as read are gone. When the queues follow, their reader gives the freed heap
        // back once they are in (it takes milliseconds that the listeners need not wait for).
        if !snapshot.queuesFollow { releaseFreedMemory() }
        logger.info(
            "store restored",
            metadata: [
                "sessions": "\(summary.sessions)",
                "queued-messages": snapshot.queuesFollow ? "to follow" : "\(summary.queuedMessages)",
                "inflight-messages": snapshot.queuesFollow ? "to follow" : "\(summary.inflightMessages)",
                "retained-messages": "\(summary.retainedMessages)",
                "load-ms": "\(Self.milliseconds(loaded))",
                "restore-ms": "\(Self.milliseconds(ContinuousClock.now - started))",
            ]
        )
        if !snapshot.queuesFollow { startStoreWriter(store) }
        return snapshot.queuesFollow
    }

    /// Publishes the wills that fell due while the broker was stopped and ends the sessions that
    /// expired meanwhile, once every session is back (so that a will reaches each of them) and
    /// the listeners are open (ending many sessions takes time that new clients need not wait
    /// for: a CONNECT for an expired session that comes first ends it itself).
    func finishRestore() {
        let started = ContinuousClock.now
        var expired = 0
        var outbox = Outbox()
        for shard in shards.fixed {
            withState(on: shard, current: nil, outbox: &outbox) { state in
                let before = state.sessions.count
                let actions = state.tick(now: .now())
                expired += before - state.sessions.count
                return actions
            }
        }
        outbox.dispatch(self)
        guard expired > 0 else { return }
        logger.info(
            "expired sessions ended",
            metadata: [
                "expired-sessions": "\(expired)",
                "ms": "\(Self.milliseconds(ContinuousClock.now - started))",
            ]
        )
    }

    /// The shard a restored session is put in: the same one for the same client identifier.
    static func home(of clientID: String, among count: Int) -> Int {
        // FNV-1a over the identifier's bytes: stable across runs, unlike `hashValue`.
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in clientID.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        return Int(hash % UInt64(max(1, count)))
    }

    /// Reads the queues the store left out, on a thread of its own (the listeners open and
    /// clients connect meanwhile), puts them in front of their sessions' queues, starts the
    /// store's writer, and lets the CONNECTs that waited for them go on. Changes the broker
    /// makes meanwhile wait in the store's queue for the writer: the store is unchanged while
    /// its queues are read.
    private func restoreQueues(from store: any TernStore) {
        let thread = Thread { [self] in
            let started = ContinuousClock.now
            let (summary, waiting) = { () -> (BrokerState.RestoreSummary, [Handle]) in
                let queues: StoredQueues
                do {
                    queues = try store.loadQueues()
                } catch {
                    logger.error(
                        "STORE QUEUES UNREADABLE: the sessions go on without their queued messages",
                        metadata: ["error": "\(error)"]
                    )
                    queues = StoredQueues()
                }
                var summary = BrokerState.RestoreSummary()
                let fixed = shards.fixed
                for (index, shard) in fixed.enumerated() {
                    let part = shard.state.withLock { $0.broker.restoreQueues(queues, last: index == fixed.count - 1) }
                    summary.sessions += part.sessions
                    summary.queuedMessages += part.queuedMessages
                    summary.inflightMessages += part.inflightMessages
                }
                return (
                    summary,
                    waitingForQueues.withLock { waiting in
                        defer { waiting = [] }
                        return waiting
                    }
                )
            }()
            // The rows as read (the queues' dictionaries) are gone once they are in the sessions.
            releaseFreedMemory()
            logger.info(
                "store queues restored",
                metadata: [
                    "sessions": "\(summary.sessions)",
                    "queued-messages": "\(summary.queuedMessages)",
                    "inflight-messages": "\(summary.inflightMessages)",
                    "load-ms": "\(Self.milliseconds(ContinuousClock.now - started))",
                    "waiting-connections": "\(waiting.count)",
                ]
            )
            startStoreWriter(store)
            for handle in waiting {
                handle.eventLoop.execute { handle.handler.value.continueAfterQueues() }
            }
            queuesRestored.succeed()
        }
        thread.name = "tern-store-queues"
        thread.start()
    }

    private func startStoreWriter(_ store: any TernStore) {
        store.start { [self] commit in self.committed(commit) }
    }

    /// Holds a CONNECT until the store's queues are in, if its session waits for them.
    /// - Returns: whether it waits; ``MQTTConnectionHandler/continueAfterQueues()`` follows then.
    func waitsForQueues(_ connect: Connect, handle: Handle) -> Bool {
        waitingForQueues.withLock { waiting in
            guard
                sharedState.connectWaitsForQueues(connect, useUsernameAsClientID: options.broker.useUsernameAsClientID)
            else { return false }
            waiting.append(handle)
            return true
        }
    }

    /// How many CONNECTs wait for the store's queues now (for tests).
    var connectionsWaitingForQueues: Int { waitingForQueues.withLock { $0.count } }

    private static func milliseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    }

    /// Wakes the connections whose queues waited for this commit; each writes what it released
    /// in its own queue's order, so a newer action never passes a released one.
    private func committed(_ commit: StoreCommit) {
        metrics.recordCommit(commit.duration)
        var outbox = Outbox()
        for handle in commits.commit(upTo: commit.ticket) { outbox.wake(handle) }
        outbox.dispatch(self)
    }

    /// Figures of the store, if there is one.
    public var storeStatistics: StoreStatistics? { options.store?.statistics }

    // MARK: Driving the state

    /// Runs `body` on `shard`'s state under its lock and appends the actions it returns to the
    /// queues of their connections, in the order `body` produced them. An action that promises a
    /// store change (``WriteAhead``) carries the ticket of its commit. Connections other than
    /// `current`, the one whose event loop calls this, are added to `outbox`, and so are the
    /// deliveries for sessions of other shards; the caller dispatches it once per read burst.
    /// `current` takes from its own queue when this returns.
    func withState(
        on shard: BrokerShard,
        current: ConnectionID?,
        outbox: inout Outbox,
        _ body: (inout BrokerState) -> [BrokerAction]
    ) {
        withShard(shard, current: current, outbox: &outbox) { state, actions in
            actions += body(&state.broker)
            return 0
        }
    }

    /// ``withState(on:current:outbox:_:)`` for the packets of the publish path: `body` appends its
    /// actions to a buffer the shard keeps, so that a packet allocates no array.
    func withState(
        on shard: BrokerShard,
        current: ConnectionID?,
        outbox: inout Outbox,
        appending body: (inout BrokerState, inout [BrokerAction]) -> Void
    ) {
        withShard(shard, current: current, outbox: &outbox) { state, actions in
            body(&state.broker, &actions)
            return 0
        }
    }

    /// ``withState(on:current:outbox:_:)`` with the whole shard at hand. `body` appends its actions
    /// to `actions` and returns the store commit they wait for besides their own (deliveries
    /// another shard stored).
    func withShard(
        _ shard: BrokerShard,
        current: ConnectionID?,
        outbox: inout Outbox,
        _ body: (inout BrokerShard.State, inout [BrokerAction]) -> UInt64
    ) {
        shard.state.withLock { state in
            // The shard's kept buffer, taken out so that it is not shared while it grows.
            var actions = state.spareActions
            state.spareActions = []
            defer {
                if actions.capacity <= BrokerShard.keptActions {
                    actions.removeAll(keepingCapacity: true)
                    state.spareActions = actions
                }
            }
            let postedTicket = body(&state, &actions)
            var ticket = postedTicket
            if let store = options.store {
                // A connection's packet commits at the end of its read burst (the caller
                // dispatches the outbox then); anything else commits at once.
                let startsCommit = current == nil
                // The retained messages' changes reach the store under their own lock, in the order
                // they were made, and before the deliveries that may refer to them.
                if let retainedTicket = sharedState.retained.takeChanges({
                    store.submit($0, startingCommit: startsCommit)
                }) {
                    ticket = max(ticket, retainedTicket ?? 0)
                    if !startsCommit { outbox.commitAtEnd(store) }
                }
                let changes = state.broker.takeSessionChanges()
                let storedForAbsentClients = state.broker.takeStoredForAbsentClients()
                if !changes.isEmpty {
                    ticket = max(ticket, store.submit(changes, startingCommit: startsCommit) ?? 0)
                    if !startsCommit {
                        outbox.commitAtEnd(store)
                        outbox.storedForAbsentClients(storedForAbsentClients)
                    }
                }
            }
            let outgoing = state.broker.takeOutgoing()
            if !outgoing.isEmpty { outbox.post(outgoing, ticket: ticket, from: shard) }
            state.broker.takeCompletedReceipts { receipt in
                if let publisher = receipt.waiter as? PublisherWaker, let handle = publisher.current {
                    outbox.wake(handle)
                }
            }
            // Consecutive actions usually go to the same connection (a burst of deliveries, an
            // acknowledgement and the queue it released): look its handle up once.
            var last: (id: ConnectionID, handle: Handle)?
            for action in actions {
                let id: ConnectionID
                var receipt: PublishReceipt?
                switch action {
                case .send(let target, _), .close(let target): id = target
                case .acknowledge(let target, _, let publishReceipt):
                    id = target
                    receipt = publishReceipt
                case .awaitSession(let target, let clientID, let owner):
                    guard let handle = state.handles[target] else { continue }
                    state.awaitingSession[clientID, default: []].append(handle)
                    if let owner { outbox.fetch(clientID, from: owner, for: shard) }
                    continue
                }
                let handle: Handle
                if let last, last.id == id {
                    handle = last.handle
                } else if let found = state.handles[id] {
                    handle = found
                    last = (id, found)
                } else {
                    continue  // the connection is gone
                }
                let wait = ticket != 0 && WriteAhead.mustWait(action, current: current) ? ticket : 0
                let wake = handle.outbound.queue.withLock { $0.append(action, after: wait, receipt: receipt) }
                if wake, id != current { outbox.wake(handle) }
            }
            armDeadlineTimer(&state, shard)
        }
    }

    /// Makes sure a wake-up is scheduled for the shard's next deadline (a will delay, a session
    /// expiry, a retained message's expiry). One read of the deadline queue when nothing changed;
    /// nothing runs while the shard has nothing timed to do.
    func armDeadlineTimer(_ state: inout BrokerShard.State, _ shard: BrokerShard) {
        guard keepsDeadlines.load(ordering: .relaxed), let next = state.broker.nextDeadline else { return }
        if let armed = state.deadlineTimer, armed.at <= next { return }
        state.deadlineTimer?.task.cancel()
        let milliseconds = max(0, next.millisecondsSinceEpoch - BrokerInstant.now().millisecondsSinceEpoch)
        // Weak: a broker that stops is released, whatever deadline lies years ahead.
        let task = shard.eventLoop.scheduleTask(in: .milliseconds(milliseconds)) { [weak self] () -> Void in
            self?.deadlineReached(on: shard)
        }
        state.deadlineTimer = (next, task)
    }

    /// Runs `body` on `shard`'s state for an event that belongs to no connection, and dispatches
    /// what it produced at once.
    func withState(on shard: BrokerShard, _ body: (inout BrokerState) -> [BrokerAction]) {
        var outbox = Outbox()
        withState(on: shard, current: nil, outbox: &outbox, body)
        outbox.dispatch(self)
    }

    /// The shard of the connections on `loop`.
    func shard(for loop: any EventLoop) -> BrokerShard { shards.shard(for: loop) }

    func register(_ id: ConnectionID, handle: Handle, on shard: BrokerShard) {
        shard.state.withLock { $0.handles[id] = handle }
    }

    func connectionEnded(_ id: ConnectionID, on shard: BrokerShard) {
        withState(on: shard) { state in state.connectionClosed(id, now: .now()) }
        let (handle, freed) = shard.state.withLock { state in
            let handle = state.handles.removeValue(forKey: id)
            for (clientID, waiting) in state.awaitingSession
            where waiting.contains(where: { $0.outbound === handle?.outbound }) {
                state.awaitingSession[clientID] = waiting.filter { $0.outbound !== handle?.outbound }
            }
            return (handle, state.broker.takeFreedQueueBytes())
        }
        handle?.outbound.queue.withLock { $0.removeAll() }
        commits.forget(id)
        releaseMemoryIfLarge(freed)
    }

    private func deadlineReached(on shard: BrokerShard) {
        // Cleared first, so that the state change below arms the wake-up for what remains.
        shard.state.withLock { $0.deadlineTimer = nil }
        withState(on: shard) { state in state.tick(now: .now()) }
        releaseMemoryIfLarge(shard.state.withLock { $0.broker.takeFreedQueueBytes() })
    }

    // MARK: Between shards

    /// Takes what other shards posted to sessions of `shard` (on its loop).
    func receivePosted(_ sessions: [SessionReference], on shard: BrokerShard) {
        var outbox = Outbox()
        withShard(shard, current: nil, outbox: &outbox) { state, actions in
            let now = BrokerInstant.now()
            var ticket: UInt64 = 0
            for session in sessions {
                ticket = max(ticket, state.broker.receivePosted(session, now: now, into: &actions))
            }
            return ticket
        }
        outbox.dispatch(self)
    }

    /// Finishes deliveries whose session ended before they were posted to it.
    func postsRefused(_ refused: [OutgoingDeliveries], by shard: BrokerShard) {
        withState(on: shard) { state in
            for group in refused { state.postRefused(group) }
            return []
        }
    }

    /// Sends on through the cluster's store the deliveries whose session left for another node
    /// (or none) between their routing and their post.
    func postsElsewhere(_ groups: [OutgoingDeliveries], by shard: BrokerShard) {
        withState(on: shard) { state in
            for group in groups { state.postElsewhere(group) }
            return []
        }
    }

    /// Asks `owner` to hand `clientID`'s session to `claimant`, whose CONNECT waits for it (on
    /// the owner's loop).
    func release(_ clientID: String, on owner: BrokerShard, to claimant: BrokerShard) {
        var outbox = Outbox()
        var release = SessionRelease.none
        withState(on: owner, current: nil, outbox: &outbox) { state in
            let outcome = state.release(clientID, to: claimant.index, now: .now())
            release = outcome.release
            return outcome.actions
        }
        outbox.dispatch(self)
        switch release {
        case .deferred: return
        case .handedOver(let handover): claimant.run { self.adopt(handover, clientID, on: claimant) }
        case .none: claimant.run { self.adopt(nil, clientID, on: claimant) }
        }
    }

    /// Takes in a session `shard` claimed (or learns there is none), lets the CONNECTs that
    /// waited for it go on, then hands it on to the shards that claimed it meanwhile (on its loop).
    private func adopt(_ handover: SessionHandover?, _ clientID: String, on shard: BrokerShard) {
        var outbox = Outbox()
        var waiting: [Handle] = []
        withShard(shard, current: nil, outbox: &outbox) { state, actions in
            waiting = state.awaitingSession.removeValue(forKey: clientID) ?? []
            let adopted = state.broker.adopt(handover, clientID: clientID, now: .now())
            actions += adopted.actions
            return adopted.ticket
        }
        outbox.dispatch(self)
        for handle in waiting { handle.handler.value.continueAfterSession() }
        let claimants = shard.state.withLock { $0.broker.takeDeferredReleases(clientID) }
        for claimant in claimants { release(clientID, on: shard, to: shards[claimant]) }
    }

    /// Once a session with a long queue has ended, gives the freed heap back to the system, on a
    /// thread of its own: glibc keeps it otherwise, and a broker that once queued a gigabyte for a
    /// stalled client would go on looking that size after the client left.
    private func releaseMemoryIfLarge(_ freedBytes: Int) {
        guard freedBytes >= 8 << 20 else { return }
        NIOThreadPool.singleton.submit { _ in releaseFreedMemory() }
    }

    /// Whether the broker is over `memory_limit` now, as last checked.
    public var isOverMemoryLimit: Bool { overMemoryLimit.load(ordering: .relaxed) }

    private func checkMemoryLimit() {
        let usage = options.memoryUsage()
        let over = usage > options.memoryLimit
        guard overMemoryLimit.exchange(over, ordering: .relaxed) != over else { return }
        settings.overMemoryLimit.store(over, ordering: .relaxed)
        for shard in shards.all { shard.state.withLock { $0.broker.overMemoryLimit = over } }
        if over {
            logger.warning(
                "over memory_limit: refusing new connections and new messages",
                metadata: ["bytes": "\(usage)", "memory_limit": "\(options.memoryLimit)"]
            )
        } else {
            logger.notice("back under memory_limit", metadata: ["bytes": "\(usage)"])
        }
    }

    private func publishSystemTopics() {
        // Read outside the lock: a store's figures may touch the file system.
        let store = options.store?.statistics
        var (statistics, gauges) = totals()
        statistics.messagesReceived = counters.packetsReceived.load(ordering: .relaxed)
        statistics.messagesSent = counters.packetsSent.load(ordering: .relaxed)
        statistics.bytesReceived = counters.bytesReceived.load(ordering: .relaxed)
        statistics.bytesSent = counters.bytesSent.load(ordering: .relaxed)
        withState(on: shards[0]) { state in
            state.publishSystemTopics(
                now: .now(),
                version: ternVersion,
                store: store,
                broker: (statistics, gauges)
            )
        }
    }
}

/// The version reported in `$SYS/broker/version`.
let ternVersion = "tern 0.1.0"

/// Hands memory freed after a restore (the rows read, the snapshot) back to the system: glibc keeps
/// freed heap otherwise, and a large store would leave the broker looking twice its size.
private func releaseFreedMemory() {
    #if canImport(Glibc)
        // Looked up at run time: Swift's Glibc module does not export malloc_trim.
        typealias MallocTrim = @convention(c) (Int) -> Int32
        guard let symbol = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "malloc_trim") else { return }
        _ = unsafeBitCast(symbol, to: MallocTrim.self)(0)
    #endif
}
