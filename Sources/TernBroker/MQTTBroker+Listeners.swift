import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import Synchronization
import TernBrokerCore
import TernCodec
import TernTransport

#if canImport(Glibc)
    import Glibc
#endif

extension MQTTBroker {
    /// When a connection's unwritten bytes pass `high`, it stops being writable and the state
    /// holds back its messages (QoS 1/2 queued, QoS 0 dropped) until they fall below `low`. This
    /// bounds what a client that does not read costs: `high` plus what was already on its way.
    static let writeBufferWaterMark = ChannelOptions.Types.WriteBufferWaterMark(low: 32 * 1024, high: 128 * 1024)

    /// NIO keeps each connection's receive buffers for reuse. Starting them small keeps an idle
    /// client cheap (its CONNECT fits in a few hundred bytes); a busy one's reads grow them to
    /// the maximum within a few reads.
    static let receiveBufferSizes = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 256, maximum: 64 * 1024)

    /// Binds one listener: TCP or a Unix socket, MQTT or WebSockets, with TLS when configured.
    func bind(_ listener: BrokerOptions.Listener, index: Int) async throws -> any Channel {
        let tls: NIOSSLContext?
        do {
            tls = try listener.tls?.makeContext()
        } catch {
            throw ListenerError(listener: listener.name, reason: "cannot load its TLS files: \(error)")
        }
        let bootstrap = makeBootstrap(listener, index: index, tls: tls)
        if let path = listener.unixSocketPath {
            return try await bootstrap.bind(unixDomainSocketPath: path, cleanupExistingSocketFile: true).get()
        }
        guard listener.host == BrokerOptions.Listener.allAddresses else {
            return try await bootstrap.bind(host: listener.host, port: listener.port).get()
        }
        do {
            return try await bootstrap.bind(host: listener.host, port: listener.port).get()
        } catch let error as IOError where error.errnoCode == EAFNOSUPPORT || error.errnoCode == EADDRNOTAVAIL {
            logger.notice(
                "IPv6 is not available: listening on every IPv4 address",
                metadata: ["listener": "\(listener.name)"]
            )
            return try await makeBootstrap(listener, index: index, tls: tls).bind(host: "0.0.0.0", port: listener.port)
                .get()
        }
    }

    private func makeBootstrap(_ listener: BrokerOptions.Listener, index: Int, tls: NIOSSLContext?) -> ServerBootstrap {
        var bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.maxMessagesPerRead, value: 16)
            .childChannelOption(.writeBufferWaterMark, value: MQTTBroker.writeBufferWaterMark)
            .childChannelOption(.recvAllocator, value: MQTTBroker.receiveBufferSizes)
        if listener.unixSocketPath == nil {
            bootstrap = bootstrap.childChannelOption(.socketOption(.tcp_nodelay), value: 1)
        }
        let open = OpenConnections()
        return bootstrap.childChannelInitializer { [self] channel in
            channel.eventLoop.makeCompletedFuture {
                if listener.maxConnections >= 0 {
                    // max_connections: refused at accept, before a byte of MQTT is read.
                    guard open.count.wrappingAdd(1, ordering: .relaxed).newValue <= listener.maxConnections else {
                        open.count.wrappingSubtract(1, ordering: .relaxed)
                        self.logger.notice(
                            "refused a connection: max_connections reached",
                            metadata: ["listener": "\(listener.name)", "max_connections": "\(listener.maxConnections)"]
                        )
                        throw ListenerError(listener: listener.name, reason: "max_connections reached")
                    }
                    channel.closeFuture.whenComplete { _ in open.count.wrappingSubtract(1, ordering: .relaxed) }
                }
                let id = ConnectionID(self.connectionCounter.wrappingAdd(1, ordering: .relaxed).newValue)
                let operations = channel.pipeline.syncOperations
                if let tls { try operations.addHandler(NIOSSLServerHandler(context: tls)) }
                switch listener.transport {
                case .mqtt:
                    try operations.addHandler(MQTTConnectionHandler(broker: self, id: id, listener: index))
                case .webSockets:
                    try self.configureWebSocketUpgrade(channel, id: id, listener: index)
                }
            }
        }
    }

    /// HTTP until the client upgrades to WebSocket with an MQTT subprotocol, then MQTT in binary
    /// frames. A client that never finishes the upgrade is dropped after the connect timeout, as
    /// one that never sends CONNECT is.
    private func configureWebSocketUpgrade(_ channel: any Channel, id: ConnectionID, listener: Int) throws {
        let maximumFrame =
            options.broker.maxPacketSize > 0
            ? options.broker.maxPacketSize : MQTTPacketDecoder.protocolMaximumPacketSize
        let upgrader = NIOWebSocketServerUpgrader(
            maxFrameSize: min(maximumFrame + 5, Int(UInt32.max)),
            automaticErrorHandling: true,
            shouldUpgrade: { channel, head in
                var headers = HTTPHeaders()
                guard let subprotocol = chooseMQTTSubprotocol(head.headers) else {
                    return channel.eventLoop.makeSucceededFuture(nil)
                }
                headers.add(name: "Sec-WebSocket-Protocol", value: subprotocol)
                return channel.eventLoop.makeSucceededFuture(headers)
            },
            upgradePipelineHandler: { [self] channel, _ in
                channel.eventLoop.makeCompletedFuture {
                    let operations = channel.pipeline.syncOperations
                    operations.removeHandler(name: WebSocketUpgradeRefusal.name, promise: nil)
                    try operations.addHandler(WebSocketMQTTAdapter(masksFrames: false))
                    try operations.addHandler(MQTTConnectionHandler(broker: self, id: id, listener: listener))
                }
            }
        )
        let deadline = channel.eventLoop.scheduleTask(in: .seconds(options.connectTimeout)) {
            channel.close(promise: nil)
        }
        let operations = channel.pipeline.syncOperations
        try operations.configureHTTPServerPipeline(
            withServerUpgrade: (upgraders: [upgrader], completionHandler: { _ in deadline.cancel() })
        )
        try operations.addHandler(WebSocketUpgradeRefusal(), name: WebSocketUpgradeRefusal.name)
        channel.closeFuture.whenComplete { _ in deadline.cancel() }
    }
}

/// How many connections are open on one listener, for `max_connections`.
final class OpenConnections: Sendable {
    let count = Atomic<Int>(0)
}

/// A listener that could not be started.
public struct ListenerError: Error, CustomStringConvertible {
    /// The listener, as ``BrokerOptions/Listener/name`` names it.
    public var listener: String
    /// What went wrong.
    public var reason: String
    public var description: String { "listener \(listener): \(reason)" }
}

extension MQTTBroker {
    /// Binds the metrics and health listener, if one is configured.
    func bindMetricsListener() async throws -> (any Channel)? {
        guard let listener = options.metricsListener else {
            metricsListening.fail(ListenerError(listener: "metrics", reason: "no metrics_listener is configured"))
            return nil
        }
        let endpoints = MetricsEndpoints(
            scrape: { [weak self] in self?.scrapeMetrics() ?? [] },
            isReady: { [weak self] in self?.ready.load(ordering: .relaxed) ?? false }
        )
        let channel: any Channel
        do {
            channel = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                        try channel.pipeline.syncOperations.addHandler(MetricsHTTPHandler(endpoints: endpoints))
                    }
                }
                .bind(host: listener.host, port: listener.port).get()
        } catch {
            throw ListenerError(listener: "metrics \(listener.host):\(listener.port)", reason: "\(error)")
        }
        logger.info(
            "metrics listening",
            metadata: ["address": "\(channel.localAddress.map { "\($0)" } ?? "?")", "paths": "/metrics /health /ready"]
        )
        if let address = channel.localAddress { metricsListening.succeed(address) }
        return channel
    }
}

extension MQTTBroker {
    /// The listener index of connections the broker opens to itself (``openInternalConnection()``).
    static let internalListener = -1

    /// Opens a connection into this broker that no other process can reach: one end of a Unix
    /// socket pair is served as a client connection, trusted (no password is asked and no ACL
    /// applies, as for Mosquitto's bridges), and the other end is returned for an MQTT client to
    /// adopt (`ClientBootstrap.withConnectedSocket`). A bridge reaches its local broker this way,
    /// with every rule of an ordinary connection: sessions, the store, ordering, backpressure.
    public func openInternalConnection() async throws -> Int32 {
        var descriptors: [Int32] = [-1, -1]
        #if canImport(Glibc)
            let kind = Int32(SOCK_STREAM.rawValue)
        #else
            let kind = SOCK_STREAM
        #endif
        guard socketpair(AF_UNIX, kind, 0, &descriptors) == 0 else {
            throw ListenerError(listener: "internal", reason: "socketpair failed: errno \(errno)")
        }
        do {
            _ = try await ClientBootstrap(group: group)
                .channelOption(.writeBufferWaterMark, value: MQTTBroker.writeBufferWaterMark)
                .channelInitializer { [self] channel in
                    channel.eventLoop.makeCompletedFuture {
                        let id = ConnectionID(self.connectionCounter.wrappingAdd(1, ordering: .relaxed).newValue)
                        try channel.pipeline.syncOperations.addHandler(
                            MQTTConnectionHandler(broker: self, id: id, listener: Self.internalListener)
                        )
                    }
                }
                .withConnectedSocket(descriptors[0])
                .get()
        } catch {
            close(descriptors[0])
            close(descriptors[1])
            throw error
        }
        return descriptors[1]
    }
}
