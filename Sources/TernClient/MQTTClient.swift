import DequeModule
public import Logging
public import NIOCore
public import NIOPosix
public import TernCodec

/// An async/await MQTT 5.0 / 3.1.1 client.
///
/// ```swift
/// var configuration = MQTTClientConfiguration(host: "127.0.0.1", clientID: "sensor-17")
/// configuration.cleanStart = false
/// configuration.sessionExpiry = .never          // a persistent session, in one line
/// let client = MQTTClient(configuration: configuration)
/// let connack = try await client.connect()
/// let readings = try await client.subscribe(to: "sensors/+/temperature", qos: .atLeastOnce)
/// for await message in readings {
///     if message.duplicate { /* may have been seen before a reconnect */ }
///     print(message.topic, message.string)
/// }
/// ```
///
/// The client reconnects by itself with exponential backoff and jitter. When the broker still has
/// the session it re-sends every unacknowledged PUBLISH with DUP = 1 and its original packet
/// identifier, and every pending PUBREL; when it does not, it follows
/// ``MQTTClientConfiguration/sessionLostPolicy`` and subscribes again.
public actor MQTTClient {
    public nonisolated let configuration: MQTTClientConfiguration
    private let logger: Logger
    private let group: any EventLoopGroup
    /// The protocol rules; the actor performs what they decide.
    private var machine: ClientConnectionStateMachine
    private var connection: Connection?
    /// Who learns how each outbound QoS 1/2 flow ended, by packet identifier.
    private var publishWaiters: [UInt16: PublishWaiter] = [:]

    /// A caller awaiting a flow's end, or a callback given to ``publish(to:payload:qos:retain:properties:whenComplete:)``.
    enum PublishWaiter {
        case task(CheckedContinuation<ReasonCode, any Error>)
        case callback(@Sendable (Result<ReasonCode, MQTTClientError>) -> Void)

        func resume(returning code: ReasonCode) {
            switch self {
            case .task(let continuation): continuation.resume(returning: code)
            case .callback(let callback): callback(.success(code))
            }
        }

        func resume(throwing error: MQTTClientError) {
            switch self {
            case .task(let continuation): continuation.resume(throwing: error)
            case .callback(let callback): callback(.failure(error))
            }
        }
    }
    private var acknowledgementWaiters: [UInt16: CheckedContinuation<SubscribeAcknowledgement, any Error>] = [:]
    private var connackWaiter: CheckedContinuation<ConnAck, any Error>?
    /// What the CONNACK that accepted the connection being established made of it.
    private var acceptedConnection: ConnectResult?
    private var streams: [Int: (filter: TopicFilter, continuation: AsyncStream<MQTTMessage>.Continuation)] = [:]
    private var nextStreamID = 0
    /// Messages that matched no subscription stream yet: on a resumed session the broker sends
    /// queued messages right after CONNACK, before the application has subscribed again.
    private var unclaimed: Deque<MQTTMessage> = []
    private static let unclaimedLimit = 10_000
    private var shuttingDown = false
    /// What the pipeline last reported before the connection closed, for the error that says so.
    private var connectionFailure: String?
    private var reconnectTask: Task<Void, Never>?
    /// Who follows the connection going up and down (``connectionStates()``).
    private var stateWatchers: [AsyncStream<Bool>.Continuation] = []
    /// What the last CONNACK said, including after automatic reconnects.
    public private(set) var lastConnectResult: ConnectResult?
    /// How many times the client has connected, automatic reconnects included.
    public private(set) var connectionCount = 0

    struct Connection {
        let channel: any Channel
        let reader: Task<Void, Never>
        var pinger: Task<Void, Never>?
        let generation: Int
    }
    private var generation = 0
    /// The index in ``MQTTClientConfiguration/servers`` of the server connected to last.
    private var currentServer = 0

    /// Opens the network connection and runs `initialize` on its pipeline. Tests replace it to
    /// script a broker over an in-memory channel; a bridge, to try several addresses in turn or
    /// to reach the broker it runs in without a socket of its own.
    package typealias Connector =
        @Sendable (
            _ group: any EventLoopGroup,
            _ host: String,
            _ port: Int,
            _ timeout: Duration,
            _ initialize: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
        ) async throws -> any Channel
    private let connector: Connector

    public init(
        configuration: MQTTClientConfiguration,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "tern.client")
    ) {
        self.init(
            configuration: configuration,
            group: group,
            logger: logger,
            connector: Self.networkConnector(for: configuration)
        )
    }

    package init(
        configuration: MQTTClientConfiguration,
        group: any EventLoopGroup,
        logger: Logger,
        connector: @escaping Connector
    ) {
        self.connector = connector
        self.configuration = configuration
        self.group = group
        self.logger = logger
        self.machine = ClientConnectionStateMachine(
            settings: .init(configuration),
            session: (try? configuration.store.load(clientID: configuration.clientID)) ?? ClientSessionState()
        )
        if configuration.protocolVersion == .v5, !configuration.cleanStart, configuration.sessionExpiry == .none {
            // The pitfall of the source documents: Clean Start 0 alone keeps no session in MQTT 5.
            logger.warning(
                "cleanStart is false but sessionExpiry is .none: an MQTT 5 broker ends the session when the connection closes. Set sessionExpiry (for example .never) to keep it."
            )
        }
    }

    // MARK: Connecting

    /// Connects and waits for CONNACK.
    /// - Throws: ``MQTTClientError`` with `.connectionRefused` and the broker's reason code, or
    ///   `.timeout`.
    @discardableResult
    public func connect() async throws -> ConnectResult {
        shuttingDown = false
        return try await establishOnAnyServer(cleanStart: configuration.cleanStart)
    }

    /// Connects to the server that served last (the first at the start), or else to the next
    /// one of ``MQTTClientConfiguration/servers`` that accepts, each tried once.
    /// - Throws: the last server's error when none accepts.
    private func establishOnAnyServer(cleanStart: Bool) async throws -> ConnectResult {
        let servers = configuration.servers
        var lastError: (any Error)?
        for offset in 0..<servers.count {
            let index = (currentServer + offset) % servers.count
            do {
                let result = try await establish(cleanStart: cleanStart, server: servers[index])
                if index != currentServer {
                    logger.info("connected to another server", metadata: ["server": "\(servers[index])"])
                }
                currentServer = index
                return result
            } catch {
                lastError = error
                if servers.count > 1 {
                    logger.debug(
                        "server did not accept the connection",
                        metadata: ["server": "\(servers[index])", "error": "\(error)"]
                    )
                }
            }
        }
        throw lastError ?? MQTTClientError(.invalidArgument, reasonString: "no server to connect to")
    }

    private func establish(cleanStart: Bool, server: ServerAddress) async throws -> ConnectResult {
        generation += 1
        let generation = self.generation
        let version = configuration.protocolVersion
        let (events, continuation) = AsyncStream<ConnectionEvent>.makeStream()
        let channel: any Channel
        do {
            channel = try await connector(group, server.host, server.port, configuration.connectTimeout) {
                channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(MQTTPacketDecoder(protocolVersion: version))
                    )
                    try channel.pipeline.syncOperations.addHandler(
                        MessageToByteHandler(MQTTPacketEncoder(protocolVersion: version))
                    )
                    try channel.pipeline.syncOperations.addHandler(EventForwarder(continuation: continuation))
                }
            }
        } catch {
            throw MQTTClientError(
                .timeout,
                reasonString: "cannot connect to \(server): \(error)"
            )
        }
        let reader = Task { [weak self] in
            for await event in events {
                guard let self else { return }
                await self.handle(event, generation: generation)
            }
        }
        connection = Connection(channel: channel, reader: reader, generation: generation)

        var properties = Properties()
        if version == .v5 { properties = try configuration.connectProperties.properties() }
        var connect = Connect(
            protocolVersion: version,
            clientIdentifier: configuration.clientID,
            cleanStart: cleanStart,
            keepAlive: configuration.keepAlive,
            properties: properties,
            will: configuration.will,
            username: configuration.username,
            password: configuration.password
        )
        connect.isBridge = configuration.isBridge
        let timeout = channel.eventLoop.scheduleTask(in: configuration.connectTimeout.timeAmount) {
            channel.close(promise: nil)
        }
        let connack: ConnAck
        do {
            connack = try await withCheckedThrowingContinuation { continuation in
                connackWaiter = continuation
                channel.writeAndFlush(MQTTPacket.connect(connect), promise: nil)
            }
        } catch {
            timeout.cancel()
            channel.close(promise: nil)
            throw error
        }
        timeout.cancel()
        guard connack.reasonCode == .success, let result = acceptedConnection else {
            channel.close(promise: nil)
            throw MQTTClientError(
                .connectionRefused,
                reasonCode: connack.reasonCode,
                reasonString: connack.properties.reasonString
            )
        }
        acceptedConnection = nil
        return result
    }

    private func connected(_ connack: ConnAck, channel: any Channel) -> ConnectResult {
        let resumption = machine.connected(connack)
        for id in resumption.dropped {
            publishWaiters.removeValue(forKey: id)?.resume(throwing: MQTTClientError(.sessionLost))
        }
        persist()
        write(resumption.writes, on: channel)

        let properties = connack.properties
        let keepAlive = properties.serverKeepAlive ?? configuration.keepAlive
        if keepAlive > 0 {
            connection?.pinger = Task { [weak self] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(Int(keepAlive)))
                    guard !Task.isCancelled, let self else { return }
                    await self.ping()
                }
            }
        }
        let result = ConnectResult(
            sessionPresent: connack.sessionPresent,
            assignedClientIdentifier: properties.assignedClientIdentifier,
            serverKeepAlive: properties.serverKeepAlive,
            receiveMaximum: properties.receiveMaximum ?? .max,
            maximumPacketSize: properties.maximumPacketSize,
            maximumQoS: properties.maximumQoS ?? .exactlyOnce,
            retainAvailable: {
                if case .retainAvailable(let flag)? = properties.first(.retainAvailable) { flag } else { true }
            }(),
            topicAliasMaximum: properties.topicAliasMaximum ?? 0,
            properties: properties
        )
        lastConnectResult = result
        connectionCount += 1
        for watcher in stateWatchers { watcher.yield(true) }
        return result
    }

    private func ping() {
        guard let connection, machine.isConnected else { return }
        connection.channel.writeAndFlush(MQTTPacket.pingreq, promise: nil)
    }

    /// Writes `packets` in order with one flush.
    private func write(_ packets: [MQTTPacket], on channel: any Channel) {
        guard !packets.isEmpty else { return }
        for packet in packets { channel.write(packet, promise: nil) }
        channel.flush()
    }

    /// Disconnects for good: no reconnection follows. The session expiry stays as it was.
    public func disconnect(reason: ReasonCode = .normalDisconnection) async {
        await close(reason: reason, sessionExpiry: nil)
    }

    /// Disconnects for good and changes the session expiry, as MQTT 5 allows from a non-zero
    /// value to any value (§3.14.2.2.2): `.none` ends the session now, `.never` keeps it.
    public func disconnect(reason: ReasonCode = .normalDisconnection, sessionExpiry: SessionExpiry) async {
        await close(reason: reason, sessionExpiry: sessionExpiry)
    }

    private func close(reason: ReasonCode, sessionExpiry: SessionExpiry?) async {
        shuttingDown = true
        reconnectTask?.cancel()
        reconnectTask = nil
        if let connection, machine.isConnected {
            var properties = Properties()
            if configuration.protocolVersion == .v5, let sessionExpiry {
                properties.sessionExpiryInterval = sessionExpiry.interval
            }
            try? await connection.channel.writeAndFlush(
                MQTTPacket.disconnect(Disconnect(reasonCode: reason, properties: properties))
            ).get()
            try? await connection.channel.close().get()
        }
        _ = machine.connectionClosed()
        tearDown(MQTTClientError(.clientDisconnected))
        for (_, stream) in streams { stream.continuation.finish() }
        streams = [:]
        for watcher in stateWatchers { watcher.finish() }
        stateWatchers = []
    }

    /// Closes the network connection without DISCONNECT, as a network failure would; the client
    /// then reconnects by itself if reconnection is on. For tests and for applications that
    /// detect a dead link themselves.
    public func dropConnection() async {
        try? await connection?.channel.close().get()
    }

    // MARK: Publishing

    /// Publishes a message and returns when its QoS flow completes: at once for QoS 0, at PUBACK
    /// for QoS 1, at PUBCOMP for QoS 2. Made while offline, it waits in a bounded queue.
    /// - Returns: the broker's reason code (MQTT 5), e.g. 0x10 No matching subscribers.
    @discardableResult
    public func publish(
        to topic: String,
        payload: ByteBuffer,
        qos: QoS = .atMostOnce,
        retain: Bool = false,
        properties: Properties = Properties()
    ) async throws -> ReasonCode {
        let publish = Publish(
            topic: try TopicName(topic),
            payload: payload,
            qos: qos,
            retain: retain,
            properties: properties
        )
        switch machine.publish(publish) {
        case .write(let packet):
            connection?.channel.writeAndFlush(packet, promise: nil)
            return .success
        case .queued:
            return .success
        case .rejected(let error):
            throw error
        case .started(let id, let writes):
            persist()
            return try await withCheckedThrowingContinuation { continuation in
                publishWaiters[id] = .task(continuation)
                if let connection { write(writes, on: connection.channel) }
            }
        }
    }

    /// Starts publishing a message and returns as soon as it has its place in the outbound
    /// order; `whenComplete` is called, on the client's executor, when its QoS flow ends: at once
    /// for QoS 0, at PUBACK for QoS 1, at PUBCOMP for QoS 2. For programs that keep many messages
    /// in flight in order without a task each, such as a bridge.
    /// - Throws: what the publication is refused for before it starts (too large, offline queue full).
    public func publish(
        to topic: TopicName,
        payload: ByteBuffer,
        qos: QoS,
        retain: Bool = false,
        properties: Properties = Properties(),
        whenComplete: @escaping @Sendable (Result<ReasonCode, MQTTClientError>) -> Void
    ) throws(MQTTClientError) {
        let publish = Publish(topic: topic, payload: payload, qos: qos, retain: retain, properties: properties)
        switch machine.publish(publish) {
        case .write(let packet):
            connection?.channel.writeAndFlush(packet, promise: nil)
            whenComplete(.success(.success))
        case .queued:
            whenComplete(.success(.success))
        case .rejected(let error):
            throw error
        case .started(let id, let writes):
            persist()
            publishWaiters[id] = .callback(whenComplete)
            if let connection { write(writes, on: connection.channel) }
        }
    }

    /// Publishes a UTF-8 string.
    @discardableResult
    public func publish(to topic: String, _ text: String, qos: QoS = .atMostOnce, retain: Bool = false) async throws
        -> ReasonCode
    {
        try await publish(to: topic, payload: ByteBuffer(string: text), qos: qos, retain: retain)
    }

    private func persist() {
        do {
            try configuration.store.save(machine.session, clientID: configuration.clientID)
        } catch {
            logger.error("could not save the client session: \(error)")
        }
    }

    // MARK: Subscribing

    /// Subscribes and returns the stream of messages matching `filter`.
    public func subscribe(
        to filter: String,
        qos: QoS = .atMostOnce,
        options: SubscriptionOptions? = nil,
        identifier: UInt32? = nil
    ) async throws -> MQTTSubscription {
        var subscriptionOptions = options ?? SubscriptionOptions()
        subscriptionOptions.qos = qos
        let topicFilter = try TopicFilter(filter)
        let subscription = Subscribe.Subscription(filter: topicFilter, options: subscriptionOptions)
        // The stream exists before SUBSCRIBE goes out, so that retained messages are not missed.
        let (stream, continuation) = AsyncStream<MQTTMessage>.makeStream()
        let streamID = nextStreamID
        nextStreamID += 1
        streams[streamID] = (topicFilter, continuation)
        unclaimed.removeAll { message in
            guard topicFilter.matches(message.topic) else { return false }
            continuation.yield(message)
            return true
        }
        var properties = Properties()
        if let identifier, configuration.protocolVersion == .v5 {
            try properties.append(.subscriptionIdentifier(identifier))
        }
        let id = machine.controlPacketIdentifier()
        let ack: SubscribeAcknowledgement
        do {
            ack = try await request(
                .subscribe(Subscribe(packetIdentifier: id, subscriptions: [subscription], properties: properties)),
                id: id
            )
        } catch {
            streams[streamID] = nil
            continuation.finish()
            throw error
        }
        if let code = ack.reasonCodes.first, code.isFailure {
            streams[streamID] = nil
            continuation.finish()
            throw MQTTClientError(.refused, reasonCode: code, reasonString: ack.properties.reasonString)
        }
        machine.subscribed(filter, subscription)
        return MQTTSubscription(reasonCodes: ack.reasonCodes, stream: stream)
    }

    /// Unsubscribes; the subscription streams for `filter` end.
    public func unsubscribe(from filter: String) async throws {
        let topicFilter = try TopicFilter(filter)
        let id = machine.controlPacketIdentifier()
        _ = try await request(.unsubscribe(Unsubscribe(packetIdentifier: id, filters: [topicFilter])), id: id)
        machine.unsubscribed(filter)
        for (key, stream) in streams where stream.filter == topicFilter {
            stream.continuation.finish()
            streams[key] = nil
        }
    }

    private func request(_ packet: MQTTPacket, id: UInt16) async throws -> SubscribeAcknowledgement {
        guard let connection, machine.isConnected else { throw MQTTClientError(.notConnected) }
        return try await withCheckedThrowingContinuation { continuation in
            acknowledgementWaiters[id] = continuation
            connection.channel.writeAndFlush(packet, promise: nil)
        }
    }

    // MARK: Receiving

    enum ConnectionEvent: Sendable {
        case packet(MQTTPacket)
        /// The pipeline caught an error (a TLS handshake that failed, a WebSocket refusal); the
        /// connection closes next, and the error says why.
        case failed(String)
        case closed
    }

    private func handle(_ event: ConnectionEvent, generation: Int) {
        guard let connection, connection.generation == generation else { return }
        switch event {
        case .packet(let packet): received(packet, on: connection.channel)
        case .failed(let cause): connectionFailure = cause
        case .closed: connectionClosed()
        }
    }

    private func received(_ packet: MQTTPacket, on channel: any Channel) {
        switch machine.received(packet) {
        case .connack(let connack):
            // Resumed here, with the CONNACK, not later in `establish`: a broker resuming a session
            // sends queued messages right behind it, and they must find the connection up
            // (acknowledged, not left unanswered until the broker stops sending).
            if connack.reasonCode == .success, connackWaiter != nil {
                acceptedConnection = connected(connack, channel: channel)
            }
            connackWaiter?.resume(returning: connack)
            connackWaiter = nil
        case .deliver(let publish, let sessionChanged, let acknowledgement):
            if sessionChanged { persist() }
            deliver(publish)
            if let acknowledgement { channel.writeAndFlush(acknowledgement, promise: nil) }
        case .acknowledgeOnly(let acknowledgement):
            channel.writeAndFlush(acknowledgement, promise: nil)
        case .publishAcknowledged(let reply, let completion, let reasonString, let writes):
            // Durable before it is acted on: a PUBREL sent before the store knows of it would let a
            // restart re-send a PUBLISH the broker has already completed, and deliver it twice.
            persist()
            write((reply.map { [$0] } ?? []) + writes, on: channel)
            if case .completed(let id, let code)? = completion {
                let waiter = publishWaiters.removeValue(forKey: id)
                if code.isFailure {
                    waiter?.resume(throwing: MQTTClientError(.refused, reasonCode: code, reasonString: reasonString))
                } else {
                    waiter?.resume(returning: code)
                }
            }
        case .released(let reply):
            persist()
            channel.writeAndFlush(reply, promise: nil)
        case .requestAcknowledged(let ack):
            acknowledgementWaiters.removeValue(forKey: ack.packetIdentifier)?.resume(returning: ack)
        case .serverDisconnected(let disconnect):
            logger.notice("the broker disconnected", metadata: ["reason": "\(disconnect.reasonCode)"])
            channel.close(promise: nil)
        case .protocolError(let reason):
            logger.warning("closing the connection: the broker broke a rule", metadata: ["reason": "\(reason)"])
            channel.close(promise: nil)
        case .ignore:
            break
        }
    }

    /// Hands a new message to every subscription stream it matches, or keeps it until one does.
    private func deliver(_ publish: Publish) {
        let acknowledger: MQTTMessage.Acknowledger? =
            machine.settings.manualAcknowledgement && publish.qos != .atMostOnce
            ? MQTTMessage.Acknowledger { [weak self] id, qos in await self?.acknowledge(id, qos: qos) } : nil
        let message = MQTTMessage(
            topic: publish.topic.string,
            payload: publish.payload,
            qos: publish.qos,
            retain: publish.retain,
            duplicate: publish.duplicate,
            properties: publish.properties,
            packetIdentifier: publish.packetIdentifier,
            acknowledger: acknowledger
        )
        var delivered = false
        for (_, stream) in streams where stream.filter.matches(message.topic) {
            stream.continuation.yield(message)
            delivered = true
        }
        if !delivered {
            // Kept until a subscription claims it (see `unclaimed`), within a bound.
            if unclaimed.count >= Self.unclaimedLimit {
                unclaimed.removeFirst()
                logger.warning("dropping the oldest message that no subscription has claimed")
            }
            unclaimed.append(message)
        }
    }

    private func acknowledge(_ id: UInt16, qos: QoS) {
        guard let connection, let acknowledgement = machine.acknowledgement(id, qos: qos) else { return }
        connection.channel.writeAndFlush(acknowledgement, promise: nil)
    }

    // MARK: Losing the connection

    private func connectionClosed() {
        let wasConnected = machine.connectionClosed()
        if wasConnected { for watcher in stateWatchers { watcher.yield(false) } }
        tearDown(MQTTClientError(.connectionClosed, reasonString: connectionFailure))
        connectionFailure = nil
        if !wasConnected { return }
        guard !shuttingDown, let policy = configuration.reconnect else {
            for (_, stream) in streams { stream.continuation.finish() }
            streams = [:]
            return
        }
        reconnectTask = Task { [weak self] in await self?.reconnect(policy: policy) }
    }

    /// Fails what cannot outlive the connection. Publications wait: they resume on reconnect.
    private func tearDown(_ error: MQTTClientError) {
        connackWaiter?.resume(throwing: error)
        connackWaiter = nil
        for (_, waiter) in acknowledgementWaiters { waiter.resume(throwing: error) }
        acknowledgementWaiters = [:]
        connection?.pinger?.cancel()
        connection?.reader.cancel()
        connection = nil
        if shuttingDown {
            for (_, waiter) in publishWaiters { waiter.resume(throwing: error) }
            publishWaiters = [:]
        }
    }

    private func reconnect(policy: MQTTClientConfiguration.ReconnectPolicy) async {
        var generator = SystemRandomNumberGenerator()
        var attempt = 0
        let resume = ClientConnectionStateMachine.reconnectResumes(configuration)
        while !Task.isCancelled, !shuttingDown {
            try? await Task.sleep(for: policy.jitteredDelay(attempt: attempt, using: &generator))
            if Task.isCancelled || shuttingDown { return }
            do {
                let result = try await establishOnAnyServer(cleanStart: !resume)
                logger.info("reconnected", metadata: ["sessionPresent": "\(result.sessionPresent)"])
                return
            } catch {
                logger.debug("reconnection failed", metadata: ["attempt": "\(attempt)", "error": "\(error)"])
                attempt += 1
            }
        }
    }

    /// `true` each time a CONNACK accepts a connection (automatic reconnects included), `false`
    /// each time an accepted connection is lost. The stream ends when the client disconnects for good.
    public func connectionStates() -> AsyncStream<Bool> {
        let (stream, continuation) = AsyncStream<Bool>.makeStream(bufferingPolicy: .bufferingNewest(16))
        stateWatchers.append(continuation)
        return stream
    }

    /// Whether the client is connected now.
    public var isConnected: Bool { machine.isConnected }

    /// How many outbound QoS 1/2 messages are unfinished.
    public var inflightCount: Int { machine.inflightCount }
}

/// Forwards packets and the end of the connection to the client's reader task, in order.
final class EventForwarder: ChannelInboundHandler, Sendable {
    typealias InboundIn = MQTTPacket
    let continuation: AsyncStream<MQTTClient.ConnectionEvent>.Continuation

    init(continuation: AsyncStream<MQTTClient.ConnectionEvent>.Continuation) { self.continuation = continuation }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        continuation.yield(.packet(unwrapInboundIn(data)))
    }

    func channelInactive(context: ChannelHandlerContext) {
        continuation.yield(.closed)
        continuation.finish()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        continuation.yield(.failed("\(error)"))
        context.close(promise: nil)
    }
}
