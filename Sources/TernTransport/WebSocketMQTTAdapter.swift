public import NIOCore
public import NIOWebSocket

/// Carries MQTT bytes in binary WebSocket frames, so that the MQTT handler behind it sees the
/// same byte stream as on TCP. A packet may be split across frames or several may share one: the
/// MQTT decoder reassembles them from the stream.
public final class WebSocketMQTTAdapter: ChannelDuplexHandler, RemovableChannelHandler {
    public typealias InboundIn = WebSocketFrame
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = WebSocketFrame

    /// Whether frames this side sends are masked: clients must mask, servers must not (RFC 6455 §5.1).
    public let masksFrames: Bool
    private var closeSent = false

    /// - Parameter masksFrames: `true` on the client side, `false` on the server side.
    public init(masksFrames: Bool) {
        self.masksFrames = masksFrames
    }

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
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

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        send(opcode: .binary, data: unwrapOutboundIn(data), context: context, promise: promise)
    }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
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

    private func send(
        opcode: WebSocketOpcode,
        data: ByteBuffer,
        context: ChannelHandlerContext,
        promise: EventLoopPromise<Void>? = nil
    ) {
        let mask: WebSocketMaskingKey? = masksFrames ? .random() : nil
        context.write(
            wrapOutboundOut(WebSocketFrame(fin: true, opcode: opcode, maskKey: mask, data: data)),
            promise: promise
        )
    }
}

@available(*, unavailable)
extension WebSocketMQTTAdapter: Sendable {}

/// The subprotocol names MQTT clients ask for: `mqtt` (MQTT 3.1.1 and 5.0 §6.0) and `mqttv3.1`.
public let mqttWebSocketSubprotocols = ["mqtt", "mqttv3.1"]
