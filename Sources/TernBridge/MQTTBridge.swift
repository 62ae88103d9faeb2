import CoreMetrics
public import Logging
public import NIOCore
public import NIOPosix
import NIOSSL
public import ServiceLifecycle
import Synchronization
public import TernBroker
import TernClient
import TernCodec

/// A bridge to another broker, as Mosquitto's `connection` blocks make: topics flow out to the
/// remote broker and in from it, remapped by prefix.
///
/// Both sides are ``MQTTClient``s, so the bridge follows the client's rules for sessions, order,
/// Receive Maximum and redelivery:
/// - The local side is a persistent session in this broker (`local_clientid`, never expiring)
///   reached through ``MQTTBroker/openInternalConnection()``. It acknowledges a message only once
///   the remote broker has (PUBACK, or PUBCOMP for QoS 2). With a store, a message acknowledged
///   to a local publisher therefore stays stored until the remote broker has it, and a restart
///   sends it again (DUP = 1).
/// - The remote side keeps its session on the remote broker (`cleansession false`), and
///   acknowledges a message from there only once this broker has (after its store commit).
/// - Messages do not loop over a topic bridged both ways: the local subscriptions use No Local,
///   the remote ones too on MQTT 5, and a 3.1.1 remote is told the client is a bridge
///   (`try_private`).
public final class MQTTBridge: Service, Sendable {
    public let configuration: BridgeConfiguration
    let broker: MQTTBroker
    let logger: Logger
    let local: MQTTClient
    let remote: MQTTClient
    private let connected: Gauge
    private let forwardedOut: CoreMetrics.Counter
    private let forwardedIn: CoreMetrics.Counter
    /// Messages whose other side is done and that can now be acknowledged where they came from.
    private let settled: (stream: AsyncStream<MQTTMessage>, continuation: AsyncStream<MQTTMessage>.Continuation)
    private let stopping = Atomic<Bool>(false)
    /// Connected to the remote broker with the incoming topics subscribed.
    private let bridging = Atomic<Bool>(false)
    private let subscribedRemotely = Atomic<Bool>(false)
    /// Keeps the broker's listeners closed until the local subscriptions are made, so that no
    /// message published right after start-up misses the bridge.
    private let startupGate: MQTTBroker.StartupGate

    /// Whether the bridge is connected to the remote broker and has subscribed there to the
    /// topics that come in: from then on, messages flow both ways.
    public var isBridging: Bool { bridging.load(ordering: .relaxed) }

    public init(
        configuration: BridgeConfiguration,
        broker: MQTTBroker,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "tern.bridge")
    ) throws {
        self.configuration = configuration
        self.broker = broker
        var logger = logger
        logger[metadataKey: "bridge"] = "\(configuration.name)"
        self.logger = logger
        local = MQTTClient(
            configuration: Self.localConfiguration(configuration),
            group: group,
            logger: logger,
            connector: Self.internalConnector(broker)
        )
        let remoteConfiguration = try Self.remoteConfiguration(configuration)
        remote = MQTTClient(
            configuration: remoteConfiguration,
            group: group,
            logger: logger,
            connector: Self.failoverConnector(configuration.addresses, remoteConfiguration)
        )
        let dimensions = [("bridge", configuration.name)]
        connected = Gauge(label: "tern_bridge_connected", dimensions: dimensions, factory: broker.metricsFactory)
        forwardedOut = CoreMetrics.Counter(
            label: "tern_bridge_messages_total",
            dimensions: dimensions + [("direction", "out")],
            factory: broker.metricsFactory
        )
        forwardedIn = CoreMetrics.Counter(
            label: "tern_bridge_messages_total",
            dimensions: dimensions + [("direction", "in")],
            factory: broker.metricsFactory
        )
        connected.record(0)
        settled = AsyncStream<MQTTMessage>.makeStream()
        startupGate = broker.addStartupGate()
    }

    // MARK: Configuration of the two clients

    static func localConfiguration(_ bridge: BridgeConfiguration) -> MQTTClientConfiguration {
        var configuration = MQTTClientConfiguration(host: "internal", port: 0, clientID: bridge.localClientID)
        configuration.cleanStart = false
        configuration.sessionExpiry = .never
        configuration.keepAlive = 0  // a socket pair inside the process does not go stale
        // Messages in flight between this broker and the bridge: enough to keep the remote
        // broker's window full while acknowledgements travel back.
        configuration.connectProperties.receiveMaximum = 100
        // The broker holds what the bridge has not finished; the client need not keep a copy.
        configuration.store = TransientClientStore()
        configuration.acknowledgement = .manual
        configuration.sessionLostPolicy = .republish
        configuration.offlineQueueLimit = 1 << 16
        configuration.reconnect?.initialDelay = .milliseconds(50)
        configuration.reconnect?.maximumDelay = .seconds(2)
        return configuration
    }

    /// Loads what the bridge needs before it starts (its TLS files, its notification topic), so
    /// that `tern serve --check` finds what would stop it.
    public static func validate(_ bridge: BridgeConfiguration) throws {
        _ = try remoteConfiguration(bridge)
    }

    static func remoteConfiguration(_ bridge: BridgeConfiguration) throws -> MQTTClientConfiguration {
        let first = bridge.addresses[0]
        var configuration = MQTTClientConfiguration(host: first.host, port: first.port, clientID: bridge.remoteClientID)
        configuration.protocolVersion = bridge.protocolVersion
        configuration.cleanStart = bridge.cleanSession
        if bridge.protocolVersion == .v5 { configuration.sessionExpiry = bridge.cleanSession ? .none : .never }
        configuration.keepAlive = bridge.keepAlive
        configuration.username = bridge.remoteUsername
        configuration.password = bridge.remotePassword.map { ByteBuffer(string: $0) }
        configuration.isBridge = bridge.tryPrivate && bridge.protocolVersion != .v5
        configuration.acknowledgement = .manual
        configuration.store = TransientClientStore()
        // Unfinished messages go again however the remote broker lost the session: the local
        // side holds them unacknowledged until they are through.
        configuration.sessionLostPolicy = .republish
        configuration.offlineQueueLimit = 1 << 16
        configuration.reconnect?.initialDelay = bridge.restartBase
        configuration.reconnect?.maximumDelay = max(bridge.restartBase, bridge.restartCap)
        if bridge.maximumPacketSize > 0 { configuration.connectProperties.maximumPacketSize = bridge.maximumPacketSize }
        if bridge.notifications {
            configuration.will = Connect.Will(
                topic: try TopicName(bridge.stateTopic),
                payload: ByteBuffer(string: "0"),
                qos: .atLeastOnce,
                retain: true
            )
        }
        if bridge.caFile != nil || bridge.certificateFile != nil {
            var tls = TLSConfiguration.makeClientConfiguration()
            if let caFile = bridge.caFile { tls.trustRoots = .file(caFile) }
            if let certificate = bridge.certificateFile, let key = bridge.keyFile {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            }
            // bridge_insecure: the certificate must still chain to the CA; its name is not checked.
            if bridge.insecure { tls.certificateVerification = .noHostnameVerification }
            configuration.tls = tls
        }
        return configuration
    }

    /// Reaches this broker through a socket pair of its own, for every (re)connection.
    static func internalConnector(_ broker: MQTTBroker) -> MQTTClient.Connector {
        { group, _, _, _, initialize in
            let descriptor = try await broker.openInternalConnection()
            return try await ClientBootstrap(group: group)
                .channelInitializer { channel in initialize(channel) }
                .withConnectedSocket(descriptor)
                .get()
        }
    }

    /// Tries the remote addresses in turn: each failed attempt moves on to the next, and once one
    /// works the next round starts from the main address again, as Mosquitto does without
    /// `round_robin`.
    static func failoverConnector(
        _ addresses: [BridgeConfiguration.Address],
        _ configuration: MQTTClientConfiguration
    ) -> MQTTClient.Connector {
        let network = MQTTClient.networkConnector(for: configuration)
        let next = Mutex(0)
        return { group, _, _, timeout, initialize in
            let index = next.withLock { $0 }
            let address = addresses[index % addresses.count]
            do {
                let channel = try await network(group, address.host, address.port, timeout, initialize)
                next.withLock { $0 = 0 }
                return channel
            } catch {
                next.withLock { $0 = index + 1 }
                throw error
            }
        }
    }

    // MARK: Running

    public func run() async throws {
        defer { startupGate.open() }
        try await broker.waitUntilRestored()
        try await connectLocal()
        await withGracefulShutdownHandler {
            await withTaskCancellationHandler {
                await withDiscardingTaskGroup { group in
                    group.addTask { await self.acknowledgeSettled() }
                    for topic in configuration.topics where topic.direction.goesOut {
                        do {
                            let subscription = try await local.subscribe(
                                to: topic.localFilter,
                                qos: topic.qos,
                                options: Self.options(topic.qos, version: .v5)
                            )
                            group.addTask { await self.forwardOut(subscription, topic: topic) }
                        } catch {
                            logger.error(
                                "cannot subscribe locally",
                                metadata: ["filter": "\(topic.localFilter)", "error": "\(error)"]
                            )
                        }
                    }
                    startupGate.open()
                    group.addTask { await self.runRemote() }
                }
            } onCancel: {
                Task { await self.stop() }
            }
        } onGracefulShutdown: {
            Task { await self.stop() }
        }
    }

    /// Stops both sides: the remote one with a DISCONNECT (no will), then the local one. The
    /// forwarding loops end as their subscriptions do.
    func stop() async {
        guard !stopping.exchange(true, ordering: .relaxed) else { return }
        // The notifications are written, not waited for: a remote broker that went away at this
        // moment must not hold up the shutdown. Each goes out ahead of its client's DISCONNECT.
        if configuration.notifications, await remote.isConnected { await notify(remote, up: false) }
        await remote.disconnect()
        if configuration.notifications { await notify(local, up: false) }
        await local.disconnect()
        settled.continuation.finish()
        connected.record(0)
    }

    static func options(_ qos: QoS, version: ProtocolVersion) -> SubscriptionOptions {
        var options = SubscriptionOptions(qos: qos)
        options.noLocal = version == .v5  // a 3.1.1 remote is told with try_private instead
        options.retainAsPublished = true
        return options
    }

    /// The local session: retried until it is open, since nothing can be bridged without it.
    private func connectLocal() async throws {
        var attempt = 0
        while true {
            do {
                try await local.connect()
                return
            } catch {
                attempt += 1
                if attempt % 20 == 1 {
                    logger.warning("cannot open the local session yet", metadata: ["error": "\(error)"])
                }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
    }

    /// Connects to the remote broker (retried every `restart_timeout`), subscribes to the topics
    /// that come in, and publishes the state notifications each time the connection goes up or down.
    private func runRemote() async {
        let states = await remote.connectionStates()
        var attempt = 0
        while !stopping.load(ordering: .relaxed) {
            do {
                let result = try await remote.connect()
                logger.info("connected to the remote broker", metadata: ["sessionPresent": "\(result.sessionPresent)"])
                break
            } catch {
                let delay = min(configuration.restartCap, configuration.restartBase * (1 << min(attempt, 10)))
                if attempt == 0 || attempt % 10 == 0 {
                    logger.warning(
                        "cannot connect to the remote broker",
                        metadata: [
                            "addresses": "\(configuration.addresses)", "error": "\(error)", "retry-in": "\(delay)",
                        ]
                    )
                }
                attempt += 1
                do { try await Task.sleep(for: delay) } catch { return }
            }
        }
        guard !stopping.load(ordering: .relaxed) else { return }
        await withDiscardingTaskGroup { group in
            for topic in configuration.topics where topic.direction.comesIn {
                do {
                    let subscription = try await remote.subscribe(
                        to: topic.remoteFilter,
                        qos: topic.qos,
                        options: Self.options(topic.qos, version: configuration.protocolVersion)
                    )
                    group.addTask { await self.forwardIn(subscription, topic: topic) }
                } catch {
                    logger.error(
                        "cannot subscribe on the remote broker",
                        metadata: ["filter": "\(topic.remoteFilter)", "error": "\(error)"]
                    )
                }
            }
            subscribedRemotely.store(true, ordering: .relaxed)
            bridging.store(await remote.isConnected, ordering: .relaxed)
            group.addTask {
                for await up in states { await self.remoteConnection(up: up) }
            }
        }
    }

    private func remoteConnection(up: Bool) async {
        connected.record(up ? 1 : 0)
        bridging.store(up && subscribedRemotely.load(ordering: .relaxed), ordering: .relaxed)
        if !up { logger.warning("lost the remote broker; reconnecting") }
        guard configuration.notifications, !stopping.load(ordering: .relaxed) else { return }
        // Not awaited: a notification waiting for its acknowledgement from a broker that just went
        // away must not hold up the next state change.
        await notify(local, up: up)
        if up { await notify(remote, up: true) }
    }

    private func notify(_ client: MQTTClient, up: Bool) async {
        guard let topic = try? TopicName(configuration.stateTopic) else { return }
        try? await client.publish(
            to: topic,
            payload: ByteBuffer(string: up ? "1" : "0"),
            qos: .atLeastOnce,
            retain: true,
            whenComplete: { _ in }
        )
    }

    /// Local messages to the remote broker, in the order they arrive; each is acknowledged
    /// locally once the remote broker has it.
    private func forwardOut(_ subscription: MQTTSubscription, topic: BridgeConfiguration.Topic) async {
        for await message in subscription {
            await relay(message, to: remote, topic: topic.remoteTopic(forLocal: message.topic), counter: forwardedOut)
        }
    }

    /// Remote messages into this broker; each is acknowledged to the remote broker once this one
    /// has it (for a stored session, after the store's commit).
    private func forwardIn(_ subscription: MQTTSubscription, topic: BridgeConfiguration.Topic) async {
        for await message in subscription {
            await relay(message, to: local, topic: topic.localTopic(forRemote: message.topic), counter: forwardedIn)
        }
    }

    private func relay(_ message: MQTTMessage, to client: MQTTClient, topic: String, counter: CoreMetrics.Counter)
        async
    {
        var properties = message.properties
        properties.removeAll(.subscriptionIdentifier)
        properties.removeAll(.topicAlias)
        let settled = self.settled.continuation
        do {
            try await client.publish(
                to: try TopicName(topic),
                payload: message.payload,
                qos: message.qos,
                retain: message.retain,
                properties: properties
            ) { [logger] result in
                if case .failure(let error) = result {
                    // Shutting down: left unacknowledged, so that it goes again after the restart.
                    if error.code == .clientDisconnected { return }
                    // Refused there (an ACL, a quota): acknowledged here all the same, or it would block the rest.
                    logger.warning(
                        "a bridged message was refused",
                        metadata: ["topic": "\(topic)", "error": "\(error)"]
                    )
                }
                counter.increment()
                settled.yield(message)
            }
        } catch {
            logger.warning("cannot bridge a message", metadata: ["topic": "\(topic)", "error": "\(error)"])
            settled.yield(message)
        }
    }

    /// Acknowledges, where it came from, every message the other side has finished with.
    private func acknowledgeSettled() async {
        for await message in settled.stream { await message.acknowledge() }
    }
}
