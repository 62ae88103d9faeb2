import NIOCore
import NIOHTTP1
import NIOWebSocket

/// Carries MQTT bytes in binary WebSocket frames, so that the MQTT handler behind it sees the
/// same byte stream as on TCP. A packet may be split across frames or several may share one: the
/// MQTT decoder reassembles them from the stream.
final class WebSocketMQTTAdapter: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = WebSocketFrame
    typealias InboundOut = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = WebSocketFrame

    /// Whether frames this side sends are masked: clients must mask, servers must not (RFC 6455 §5.1).
    let masksFrames: Bool
    private var closeSent = false

    init(masksFrames: Bool) {
        self.masksFrames = masksFrames
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let frame = unwrapInboundIn(data)
        switch frame.opcode {
        case .binary, .continuation:
            context.fireChannelRead(wrapInboundOut(frame.unmaskedData))
        case .ping:
            send(opcode: .pong, data: frame.unmaskedData, context: context)
            context.flush()
        case .pong:
            break
        case .connectionClose:
            // Answer the close handshake (RFC 6455 §5.5.1), then end the connection.
            if !closeSent {
                closeSent = true
                send(opcode: .connectionClose, data: frame.unmaskedData, context: context, promise: nil)
            }
            context.flush()
            context.close(promise: nil)
        case .text:
            // MQTT over WebSocket is binary only (MQTT 5.0 §6.0): a text frame is a protocol error.
            closeWith(.protocolError, context: context)
        default:
            closeWith(.protocolError, context: context)
        }
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        send(opcode: .binary, data: unwrapOutboundIn(data), context: context, promise: promise)
    }

    func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        // A WebSocket peer expects a close frame before the connection ends.
        if mode == .all, !closeSent, context.channel.isActive {
            closeSent = true
            var code = context.channel.allocator.buffer(capacity: 2)
            code.write(webSocketErrorCode: .normalClosure)
            send(opcode: .connectionClose, data: code, context: context, promise: nil)
            context.flush()
        }
        context.close(mode: mode, promise: promise)
    }

    private func closeWith(_ code: WebSocketErrorCode, context: ChannelHandlerContext) {
        guard !closeSent else { return }
        closeSent = true
        var data = context.channel.allocator.buffer(capacity: 2)
        data.write(webSocketErrorCode: code)
        send(opcode: .connectionClose, data: data, context: context, promise: nil)
        context.flush()
        context.close(promise: nil)
    }

    private func send(opcode: WebSocketOpcode, data: ByteBuffer, context: ChannelHandlerContext, promise: EventLoopPromise<Void>? = nil) {
        let mask: WebSocketMaskingKey? = masksFrames ? .random() : nil
        context.write(wrapOutboundOut(WebSocketFrame(fin: true, opcode: opcode, maskKey: mask, data: data)), promise: promise)
    }
}

@available(*, unavailable)
extension WebSocketMQTTAdapter: Sendable {}

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
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .badRequest, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(ByteBuffer(string: body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}

@available(*, unavailable)
extension WebSocketUpgradeRefusal: Sendable {}

/// The subprotocol names MQTT clients ask for: `mqtt` (MQTT 3.1.1 and 5.0 §6.0) and `mqttv3.1`.
let mqttWebSocketSubprotocols = ["mqtt", "mqttv3.1"]

/// The subprotocol to answer a WebSocket upgrade request with, or `nil` when it offers none of MQTT's.
func chooseMQTTSubprotocol(_ headers: HTTPHeaders) -> String? {
    let offered = headers[canonicalForm: "Sec-WebSocket-Protocol"].map { $0.filter { $0 != " " && $0 != "\t" }.lowercased() }
    return mqttWebSocketSubprotocols.first { offered.contains($0) }
}
