import NIOCore
import NIOEmbedded
import NIOWebSocket
import TernTransport
import Testing

/// MQTT 5.0 §6.0 (MQTT over WebSocket) and RFC 6455 §5, on an `EmbeddedChannel`: what the adapter
/// hands the MQTT side, and what it puts on the wire.
@Suite("WebSocket MQTT adapter")
struct WebSocketMQTTAdapterTests {
    /// A frame as NIO's decoder hands it over from a client: its data still masked, with the key.
    func frame(_ opcode: WebSocketOpcode, _ bytes: [UInt8], fin: Bool = true) -> WebSocketFrame {
        let key = WebSocketMaskingKey.random()
        var data = ByteBuffer(bytes: bytes)
        data.webSocketMask(key)
        return WebSocketFrame(fin: fin, opcode: opcode, maskKey: key, data: data)
    }

    @Test("binary and continuation frames become one unmasked byte stream; packets may span or share frames")
    func byteStream() throws {
        let channel = EmbeddedChannel(handler: WebSocketMQTTAdapter(masksFrames: false))
        try channel.writeInbound(frame(.binary, [0x10, 0x03], fin: false))
        try channel.writeInbound(frame(.continuation, [0x00, 0x01, 0x02]))
        try channel.writeInbound(frame(.binary, [0xC0, 0x00, 0xC0, 0x00]))  // two PINGREQs in one frame
        var stream = ByteBuffer()
        while var part = try channel.readInbound(as: ByteBuffer.self) { stream.writeBuffer(&part) }
        #expect(Array(stream.readableBytesView) == [0x10, 0x03, 0x00, 0x01, 0x02, 0xC0, 0x00, 0xC0, 0x00])
        _ = try channel.finish()
    }

    @Test("MQTT bytes go out as binary frames, unmasked from a server and masked from a client (RFC 6455 §5.1)")
    func outboundFrames() throws {
        for masks in [false, true] {
            let channel = EmbeddedChannel(handler: WebSocketMQTTAdapter(masksFrames: masks))
            try channel.writeOutbound(ByteBuffer(bytes: [0xD0, 0x00]))
            let sent = try #require(try channel.readOutbound(as: WebSocketFrame.self))
            #expect(sent.opcode == .binary)
            #expect(sent.fin)
            #expect((sent.maskKey != nil) == masks)
            // Outbound, `data` is the payload; NIO's frame encoder applies the key on the wire.
            #expect(Array(sent.data.readableBytesView) == [0xD0, 0x00])
            _ = try channel.finish()
        }
    }

    @Test("a ping is answered with a pong carrying its data; a pong is ignored")
    func ping() throws {
        let channel = EmbeddedChannel(handler: WebSocketMQTTAdapter(masksFrames: false))
        try channel.writeInbound(frame(.ping, [1, 2, 3]))
        let pong = try #require(try channel.readOutbound(as: WebSocketFrame.self))
        #expect(pong.opcode == .pong)
        #expect(pong.maskKey == nil)
        #expect(Array(pong.data.readableBytesView) == [1, 2, 3])
        try channel.writeInbound(frame(.pong, [9]))
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        #expect(try channel.readOutbound(as: WebSocketFrame.self) == nil)
        _ = try channel.finish()
    }

    @Test("§6.0 a text frame is a protocol error: close frame 1002, then the connection closes")
    func textFrame() throws {
        let channel = EmbeddedChannel(handler: WebSocketMQTTAdapter(masksFrames: false))
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try channel.writeInbound(frame(.text, Array("hello".utf8)))
        let close = try #require(try channel.readOutbound(as: WebSocketFrame.self))
        #expect(close.opcode == .connectionClose)
        var data = close.data
        #expect(data.readWebSocketErrorCode() == .protocolError)
        #expect(try channel.readInbound(as: ByteBuffer.self) == nil)
        #expect(!channel.isActive)
    }

    @Test("a close frame is answered with a close frame (RFC 6455 §5.5.1), and closing sends 1000 first")
    func closeHandshake() throws {
        let answering = EmbeddedChannel(handler: WebSocketMQTTAdapter(masksFrames: false))
        try answering.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try answering.writeInbound(frame(.connectionClose, [0x03, 0xE8]))
        let reply = try #require(try answering.readOutbound(as: WebSocketFrame.self))
        #expect(reply.opcode == .connectionClose)
        #expect(!answering.isActive)

        let closing = EmbeddedChannel(handler: WebSocketMQTTAdapter(masksFrames: true))
        try closing.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        try closing.close().wait()
        let farewell = try #require(try closing.readOutbound(as: WebSocketFrame.self))
        #expect(farewell.opcode == .connectionClose)
        #expect(farewell.maskKey != nil)
        var code = farewell.data
        #expect(code.readWebSocketErrorCode() == .normalClosure)
    }
}
