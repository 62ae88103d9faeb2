import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import NIOWebSocket
import TernTransport

extension MQTTClient {
    /// Opens TCP, then TLS when ``MQTTClientConfiguration/tls`` is set, then a WebSocket upgrade
    /// when ``MQTTClientConfiguration/webSocketPath`` is set, and hands the channel to the MQTT
    /// handlers only once all of them are done.
    package static func networkConnector(for configuration: MQTTClientConfiguration) -> Connector {
        let tls = configuration.tls
        let serverName = configuration.tlsServerName
        let webSocketPath = configuration.webSocketPath
        return { group, host, port, timeout, initialize in
            let context = try tls.map { try NIOSSLContext(configuration: $0) }
            // SNI and name checks use a host name; for an IP address the certificate's IP entries are checked.
            let hostname = serverName ?? (isIPAddress(host) ? nil : host)
            let upgraded = group.any().makePromise(of: Void.self)
            let channel: any Channel
            do {
                channel = try await ClientBootstrap(group: group)
                    .connectTimeout(timeout.timeAmount)
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            if let context {
                                try channel.pipeline.syncOperations.addHandler(
                                    NIOSSLClientHandler(context: context, serverHostname: hostname)
                                )
                            }
                        }.flatMap {
                            guard let webSocketPath else {
                                upgraded.succeed()
                                return initialize(channel)
                            }
                            return channel.eventLoop.makeCompletedFuture {
                                try addWebSocketUpgrade(
                                    channel,
                                    host: host,
                                    port: port,
                                    path: webSocketPath,
                                    upgraded: upgraded,
                                    initialize: initialize
                                )
                            }
                        }
                    }
                    .connect(host: host, port: port)
                    .get()
            } catch {
                upgraded.fail(error)
                throw error
            }
            let deadline = channel.eventLoop.scheduleTask(in: timeout.timeAmount) {
                upgraded.fail(WebSocketUpgradeError(reason: "no WebSocket upgrade within \(timeout)"))
            }
            channel.closeFuture.whenComplete { _ in
                upgraded.fail(WebSocketUpgradeError(reason: "the connection closed during the WebSocket upgrade"))
            }
            do {
                try await upgraded.futureResult.get()
                deadline.cancel()
            } catch {
                deadline.cancel()
                channel.close(promise: nil)
                throw error
            }
            return channel
        }
    }
}

/// The broker did not accept the WebSocket upgrade.
struct WebSocketUpgradeError: Error, CustomStringConvertible {
    var reason: String
    var description: String { reason }
}

private func isIPAddress(_ host: String) -> Bool {
    (try? SocketAddress(ipAddress: host, port: 0)) != nil
}

private func addWebSocketUpgrade(
    _ channel: any Channel,
    host: String,
    port: Int,
    path: String,
    upgraded: EventLoopPromise<Void>,
    initialize: @escaping @Sendable (any Channel) -> EventLoopFuture<Void>
) throws {
    let upgrader = NIOWebSocketClientUpgrader(
        maxFrameSize: Int(UInt32.max),
        automaticErrorHandling: true,
        upgradePipelineHandler: { channel, _ in
            channel.eventLoop.makeCompletedFuture {
                // The requester reads HTTP; from here on the connection carries WebSocket frames.
                channel.pipeline.syncOperations.removeHandler(name: WebSocketUpgradeRequester.name, promise: nil)
                try channel.pipeline.syncOperations.addHandler(WebSocketMQTTAdapter(masksFrames: true))
            }.flatMap { initialize(channel) }.map { upgraded.succeed() }
        }
    )
    var headers = HTTPHeaders()
    headers.add(name: "Host", value: "\(host):\(port)")
    headers.add(name: "Sec-WebSocket-Protocol", value: "mqtt")
    headers.add(name: "Content-Length", value: "0")
    let request = HTTPRequestHead(
        version: .http1_1,
        method: .GET,
        uri: path.hasPrefix("/") ? path : "/" + path,
        headers: headers
    )
    try channel.pipeline.syncOperations.addHTTPClientHandlers(
        leftOverBytesStrategy: .forwardBytes,
        withClientUpgrade: (upgraders: [upgrader], completionHandler: { _ in })
    )
    try channel.pipeline.syncOperations.addHandler(
        WebSocketUpgradeRequester(request: request, upgraded: upgraded),
        name: WebSocketUpgradeRequester.name
    )
}

/// Sends the upgrade request once the connection (and its TLS) is up, and reports a refusal.
private final class WebSocketUpgradeRequester: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart
    static let name = "tern.websocket-upgrade-requester"

    let request: HTTPRequestHead
    let upgraded: EventLoopPromise<Void>

    init(request: HTTPRequestHead, upgraded: EventLoopPromise<Void>) {
        self.request = request
        self.upgraded = upgraded
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(.head(request)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        context.fireChannelActive()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { channelActive(context: context) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            upgraded.fail(
                WebSocketUpgradeError(
                    reason: "the broker refused the WebSocket upgrade: \(head.status.code) \(head.status.reasonPhrase)"
                )
            )
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        upgraded.fail(WebSocketUpgradeError(reason: "WebSocket upgrade failed: \(error)"))
        context.close(promise: nil)
    }
}

@available(*, unavailable)
extension WebSocketUpgradeRequester: Sendable {}
