import NIOCore
import NIOHTTP1
import TernTransport

/// Answers an HTTP request on a WebSocket listener that is not an upgrade to the `mqtt`
/// subprotocol with 400 Bad Request, and closes the connection.
final class WebSocketUpgradeRefusal: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart
    static let name = "tern.websocket-refusal"

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard case .end = unwrapInboundIn(data) else { return }
        let body = "This is an MQTT over WebSocket listener: upgrade to WebSocket with subprotocol mqtt.\n"
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: "text/plain; charset=utf-8")
        headers.add(name: "Content-Length", value: "\(body.utf8.count)")
        headers.add(name: "Connection", value: "close")
        context.write(
            wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .badRequest, headers: headers))),
            promise: nil
        )
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in
            context.close(promise: nil)
        }
    }
}

@available(*, unavailable)
extension WebSocketUpgradeRefusal: Sendable {}

/// The subprotocol to answer a WebSocket upgrade request with, or `nil` when it offers none of MQTT's.
func chooseMQTTSubprotocol(_ headers: HTTPHeaders) -> String? {
    let offered = headers[canonicalForm: "Sec-WebSocket-Protocol"].map {
        $0.filter { $0 != " " && $0 != "\t" }.lowercased()
    }
    return mqttWebSocketSubprotocols.first { offered.contains($0) }
}
