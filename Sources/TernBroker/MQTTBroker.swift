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
/// The state is shared across event loops behind one `Mutex`. Each packet takes the lock once;
/// the actions it produces are appended, in order, to each connection's ``OutboundQueue``, and the
/// connections on other event loops are woken with one hop per loop per read burst. Each
/// connection flushes once per burst, not once per packet.
public final class MQTTBroker: Service, Sendable {
    struct Handle: Sendable {
        let eventLoop: any EventLoop
        let handler: NIOLoopBound<MQTTConnectionHandler>
        /// The connection's ordered outbound path, appended to from any loop.
        let outbound: ConnectionOutbound
    }

    struct Shared: ~Copyable {
        var state: BrokerState
        var handles: [ConnectionID: Handle] = [:]
        /// The wake-up armed for the state's next deadline, while the broker runs.
        var deadlineTimer: (at: BrokerInstant, task: Scheduled<Void>)?
        /// Whether deadlines are being kept: from listening until shutdown.
        var keepsDeadlines = false
        /// Connections whose CONNECT waits for the store's queues (``BrokerState/connectWaitsForQueues(_:)``).
        var waitingForQueues: [Handle] = []
    }

    public let options: BrokerOptions
    let group: any EventLoopGroup
    let logger: Logger
    let shared: Mutex<Shared>
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
        var state = BrokerState(configuration: options.broker, now: .now())
        state.recordsChanges = options.store != nil
        state.accessControl = options.accessControl
        var passwords = PasswordFiles(global: options.passwordFile)
        for (index, listener) in options.listeners.enumerated() {
            guard let security = listener.security else { continue }
            state.listenerPolicies[index] = AccessPolicy(
                allowAnonymous: security.allowAnonymous,
                accessControl: security.accessControl
            )
            passwords.perListener[index] = security.passwordFile
        }
        self.shared = Mutex(Shared(state: state))
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
        let (statistics, gauges) = shared.withLock { ($0.state.statistics, $0.state.gauges) }
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
    public var statistics: BrokerStatistics { shared.withLock { $0.state.statistics } }

    /// How many sessions the broker holds, connected or not.
    public var sessionCount: Int { shared.withLock { $0.state.sessions.count } }

    /// How many subscriptions the broker holds.
    public var subscriptionCount: Int { shared.withLock { $0.state.topics.count } }

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
        restored.succeed()
        // Read while the startup gates wait and the listeners open: a bridge's own session may
        // be among those whose CONNECT waits for them.
        if queuesFollow, let store = options.store { restoreQueues(from: store) }
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

        let loop = group.any()
        shared.withLock { shared in
            shared.keepsDeadlines = true
            armDeadlineTimer(&shared)
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
        shared.withLock { shared in
            shared.keepsDeadlines = false
            shared.deadlineTimer?.task.cancel()
            shared.deadlineTimer = nil
        }
        sysTicker?.cancel()
        memoryCheck?.cancel()
        await disconnectEveryone()
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
        let handles = shared.withLock { Array($0.handles.values) }
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
        let snapshot = try store.load()
        let loaded = ContinuousClock.now - started
        let summary = shared.withLock { shared in
            // No connection exists yet: wills published at start-up only reach stored sessions.
            shared.state.restore(snapshot, now: .now()).summary
        }
        releaseFreedMemory()
        logger.info(
            "store restored",
            metadata: [
                "sessions": "\(summary.sessions)",
                "expired-sessions": "\(summary.expiredSessions)",
                "queued-messages": snapshot.queuesFollow ? "to follow" : "\(summary.queuedMessages)",
                "inflight-messages": snapshot.queuesFollow ? "to follow" : "\(summary.inflightMessages)",
                "retained-messages": "\(summary.retainedMessages)",
                "load-ms": "\(Self.milliseconds(loaded))",
            ]
        )
        if !snapshot.queuesFollow { startStoreWriter(store) }
        return snapshot.queuesFollow
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
                return shared.withLock { shared in
                    let summary = shared.state.restoreQueues(queues)
                    defer { shared.waitingForQueues = [] }
                    return (summary, shared.waitingForQueues)
                }
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
        // Changes made by the restore itself (sessions detached, wills published) go in the first batch.
        withState { _ in [] }
    }

    /// Holds a CONNECT until the store's queues are in, if its session waits for them.
    /// - Returns: whether it waits; ``MQTTConnectionHandler/continueAfterQueues()`` follows then.
    func waitsForQueues(_ connect: Connect, handle: Handle) -> Bool {
        shared.withLock { shared in
            guard shared.state.connectWaitsForQueues(connect) else { return false }
            shared.waitingForQueues.append(handle)
            return true
        }
    }

    /// How many CONNECTs wait for the store's queues now (for tests).
    var connectionsWaitingForQueues: Int { shared.withLock { $0.waitingForQueues.count } }

    private static func milliseconds(_ duration: Duration) -> Int64 {
        duration.components.seconds * 1000 + duration.components.attoseconds / 1_000_000_000_000_000
    }

    /// Wakes the connections whose queues waited for this commit; each writes what it released
    /// in its own queue's order, so a newer action never passes a released one.
    private func committed(_ commit: StoreCommit) {
        metrics.recordCommit(commit.duration)
        var outbox = Outbox()
        for handle in commits.commit(upTo: commit.ticket) { outbox.wake(handle) }
        outbox.dispatch()
    }

    /// Figures of the store, if there is one.
    public var storeStatistics: StoreStatistics? { options.store?.statistics }

    // MARK: Driving the state

    /// Runs `body` on the shared state under the lock and appends the actions it returns to the
    /// queues of their connections, in the order `body` produced them. An action that promises a
    /// store change (``WriteAhead``) carries the ticket of its commit. Connections other than
    /// `current`, the one whose event loop calls this, are added to `outbox`, which the caller
    /// dispatches once per read burst; `current` takes from its own queue when this returns.
    func withState(
        current: ConnectionID?,
        outbox: inout Outbox,
        _ body: (inout BrokerState) -> [BrokerAction]
    ) {
        shared.withLock { shared in
            let actions = body(&shared.state)
            var ticket: UInt64 = 0
            if let store = options.store {
                let changes = shared.state.takeStoreChanges()
                if !changes.isEmpty {
                    // A connection's packet commits at the end of its read burst (the caller
                    // dispatches the outbox then); anything else commits at once.
                    ticket = store.submit(changes, startingCommit: current == nil) ?? 0
                    if current != nil { outbox.commitAtEnd(store) }
                }
            }
            // Consecutive actions usually go to the same connection (a burst of deliveries, an
            // acknowledgement and the queue it released): look its handle up once.
            var last: (id: ConnectionID, handle: Handle)?
            for action in actions {
                let id: ConnectionID
                switch action {
                case .send(let target, _), .close(let target): id = target
                }
                let handle: Handle
                if let last, last.id == id {
                    handle = last.handle
                } else if let found = shared.handles[id] {
                    handle = found
                    last = (id, found)
                } else {
                    continue  // the connection is gone
                }
                let wait = ticket != 0 && WriteAhead.mustWait(action, current: current) ? ticket : 0
                let wake = handle.outbound.queue.withLock { $0.append(action, after: wait) }
                if wake, id != current { outbox.wake(handle) }
            }
            armDeadlineTimer(&shared)
        }
    }

    /// Makes sure a wake-up is scheduled for the state's next deadline (a will delay, a session
    /// expiry, a retained message's expiry). One read of the deadline queue when nothing changed;
    /// nothing runs while the broker has nothing timed to do.
    private func armDeadlineTimer(_ shared: inout Shared) {
        guard shared.keepsDeadlines, let next = shared.state.nextDeadline else { return }
        if let armed = shared.deadlineTimer, armed.at <= next { return }
        shared.deadlineTimer?.task.cancel()
        let milliseconds = max(0, next.millisecondsSinceEpoch - BrokerInstant.now().millisecondsSinceEpoch)
        // Weak: a broker that stops is released, whatever deadline lies years ahead.
        let task = group.any().scheduleTask(in: .milliseconds(milliseconds)) { [weak self] () -> Void in
            self?.deadlineReached()
        }
        shared.deadlineTimer = (next, task)
    }

    /// Runs `body` on the shared state for an event that belongs to no connection, and wakes the
    /// connections it produced actions for at once.
    func withState(_ body: (inout BrokerState) -> [BrokerAction]) {
        var outbox = Outbox()
        withState(current: nil, outbox: &outbox, body)
        outbox.dispatch()
    }

    func register(_ id: ConnectionID, handle: Handle) {
        shared.withLock { $0.handles[id] = handle }
    }

    func connectionEnded(_ id: ConnectionID) {
        withState { state in state.connectionClosed(id, now: .now()) }
        let (handle, freed) = shared.withLock { ($0.handles.removeValue(forKey: id), $0.state.takeFreedQueueBytes()) }
        handle?.outbound.queue.withLock { $0.removeAll() }
        commits.forget(id)
        releaseMemoryIfLarge(freed)
    }

    private func deadlineReached() {
        // Cleared first, so that the state change below arms the wake-up for what remains.
        shared.withLock { $0.deadlineTimer = nil }
        withState { state in state.tick(now: .now()) }
        releaseMemoryIfLarge(shared.withLock { $0.state.takeFreedQueueBytes() })
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
        shared.withLock { $0.state.overMemoryLimit = over }
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
        withState { state in
            state.statistics.messagesReceived = counters.packetsReceived.load(ordering: .relaxed)
            state.statistics.messagesSent = counters.packetsSent.load(ordering: .relaxed)
            state.statistics.bytesReceived = counters.bytesReceived.load(ordering: .relaxed)
            state.statistics.bytesSent = counters.bytesSent.load(ordering: .relaxed)
            return state.publishSystemTopics(now: .now(), version: ternVersion, store: store)
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
