public import Logging
public import NIOCore
public import NIOPosix
public import ServiceLifecycle
import Synchronization
public import TernBrokerCore
import TernCodec

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
/// the packets it produces for other connections are grouped per event loop and handed over in
/// one hop, and each connection flushes once per read burst, not once per packet.
public final class MQTTBroker: Service, Sendable {
    struct Handle: Sendable {
        let eventLoop: any EventLoop
        let handler: NIOLoopBound<MQTTConnectionHandler>
    }

    struct Shared: ~Copyable {
        var state: BrokerState
        var handles: [ConnectionID: Handle] = [:]
    }

    public let options: BrokerOptions
    let group: any EventLoopGroup
    let logger: Logger
    let shared: Mutex<Shared>
    let connectionCounter = Atomic<UInt64>(0)
    let counters = TrafficCounters()
    let listening: EventLoopPromise<[SocketAddress]>

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
        self.shared = Mutex(Shared(state: BrokerState(configuration: options.broker, now: .now())))
        self.listening = group.any().makePromise(of: [SocketAddress].self)
    }

    /// The addresses the broker listens on, once it does. Throws if binding failed.
    public func waitUntilListening() async throws -> [SocketAddress] {
        try await listening.futureResult.get()
    }

    /// A snapshot of the broker's counters.
    public var statistics: BrokerStatistics { shared.withLock { $0.state.statistics } }

    /// How many sessions the broker holds, connected or not.
    public var sessionCount: Int { shared.withLock { $0.state.sessions.count } }

    /// How many subscriptions the broker holds.
    public var subscriptionCount: Int { shared.withLock { $0.state.topics.count } }

    /// Runs the listeners until the task is cancelled or a graceful shutdown is requested.
    public func run() async throws {
        var channels: [any Channel] = []
        do {
            for listener in options.listeners {
                let channel = try await makeBootstrap().bind(host: listener.host, port: listener.port).get()
                channels.append(channel)
                logger.info("listening", metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")"])
            }
        } catch {
            for channel in channels { try? await channel.close() }
            listening.fail(error)
            throw error
        }
        listening.succeed(channels.compactMap(\.localAddress))

        let loop = group.any()
        let ticker = loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [self] _ in
            self.tick()
        }
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
        ticker.cancel()
        sysTicker?.cancel()
        await disconnectEveryone()
    }

    private func makeBootstrap() -> ServerBootstrap {
        ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    let id = ConnectionID(self.connectionCounter.wrappingAdd(1, ordering: .relaxed).newValue)
                    let handler = MQTTConnectionHandler(broker: self, id: id)
                    try channel.pipeline.syncOperations.addHandler(handler)
                }
            }
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

    // MARK: Driving the state

    /// Runs `body` on the shared state under the lock. The actions for `current`, the connection
    /// whose event loop calls this, are returned so that its handler writes them inside its read
    /// burst; actions for other connections are added to `outbox`, which the caller dispatches
    /// once per read burst, with one hop per event loop.
    func withState(
        current: ConnectionID?,
        outbox: inout Outbox,
        _ body: (inout BrokerState) -> [BrokerAction]
    ) -> [BrokerAction] {
        shared.withLock { shared in
            let actions = body(&shared.state)
            var own: [BrokerAction] = []
            for action in actions {
                switch action {
                case .send(let id, _), .close(let id):
                    if id == current {
                        own.append(action)
                    } else if let handle = shared.handles[id] {
                        outbox.add(action, for: id, handle: handle)
                    }
                }
            }
            return own
        }
    }

    /// Runs `body` on the shared state for an event that belongs to no connection, and carries
    /// out its actions at once.
    func withState(_ body: (inout BrokerState) -> [BrokerAction]) {
        var outbox = Outbox()
        _ = withState(current: nil, outbox: &outbox, body)
        outbox.dispatch()
    }

    func register(_ id: ConnectionID, handle: Handle) {
        shared.withLock { $0.handles[id] = handle }
    }

    func connectionEnded(_ id: ConnectionID) {
        withState { state in state.connectionClosed(id, now: .now()) }
        shared.withLock { _ = $0.handles.removeValue(forKey: id) }
    }

    private func tick() {
        withState { state in state.tick(now: .now()) }
    }

    private func publishSystemTopics() {
        withState { state in
            state.statistics.messagesReceived = counters.packetsReceived.load(ordering: .relaxed)
            state.statistics.messagesSent = counters.packetsSent.load(ordering: .relaxed)
            state.statistics.bytesReceived = counters.bytesReceived.load(ordering: .relaxed)
            state.statistics.bytesSent = counters.bytesSent.load(ordering: .relaxed)
            return state.publishSystemTopics(now: .now(), version: ternVersion)
        }
    }
}

/// The version reported in `$SYS/broker/version`.
let ternVersion = "tern 0.1.0"
