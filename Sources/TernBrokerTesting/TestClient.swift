public import NIOCore
import NIOPosix
public import TernCodec

/// A deliberately small MQTT client for driving the broker over a real socket in tests. It sends
/// exactly the packets a test gives it, including broken ones, and every wait has a deadline.
public struct TestClient: ~Copyable {
    enum Event: Sendable {
        case packet(MQTTPacket)
        case closed
        case timeout(UInt64)
    }

    public let channel: any Channel
    public let version: ProtocolVersion
    private var iterator: AsyncStream<Event>.Iterator
    private let continuation: AsyncStream<Event>.Continuation
    private var timeoutToken: UInt64 = 0

    /// Connects a socket to `host`:`port`; the MQTT CONNECT is up to the test.
    public static func connect(host: String = "127.0.0.1", port: Int, version: ProtocolVersion = .v5) async throws
        -> TestClient
    {
        let (stream, continuation) = AsyncStream<Event>.makeStream()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(MQTTPacketDecoder(protocolVersion: version))
                    )
                    try channel.pipeline.syncOperations.addHandler(
                        MessageToByteHandler(MQTTPacketEncoder(protocolVersion: version))
                    )
                    try channel.pipeline.syncOperations.addHandler(Collector(continuation: continuation))
                }
            }
            .connect(host: host, port: port)
            .get()
        return TestClient(
            channel: channel,
            version: version,
            iterator: stream.makeAsyncIterator(),
            continuation: continuation
        )
    }

    private init(
        channel: any Channel,
        version: ProtocolVersion,
        iterator: AsyncStream<Event>.Iterator,
        continuation: AsyncStream<Event>.Continuation
    ) {
        self.channel = channel
        self.version = version
        self.iterator = iterator
        self.continuation = continuation
    }

    public func send(_ packet: MQTTPacket) async throws {
        try await channel.writeAndFlush(packet)
    }

    /// Sends raw bytes, for malformed input.
    public func sendRaw(_ bytes: [UInt8]) async throws {
        // Bypass the encoder: write straight to the socket through the head of the pipeline.
        let channel = self.channel
        try await channel.eventLoop.flatSubmit {
            channel.pipeline.context(handlerType: ByteToMessageHandler<MQTTPacketDecoder>.self).flatMap { context in
                context.writeAndFlush(NIOAny(ByteBuffer(bytes: bytes)))
            }
        }.get()
    }

    /// The next packet, `nil` when the connection closed. Throws after `seconds` without either.
    public mutating func next(seconds: Int64 = 20) async throws -> MQTTPacket? {
        timeoutToken += 1
        let token = timeoutToken
        let continuation = self.continuation
        let scheduled = channel.eventLoop.scheduleTask(in: .seconds(seconds)) { continuation.yield(.timeout(token)) }
        defer { scheduled.cancel() }
        while let event = await iterator.next() {
            switch event {
            case .packet(let packet): return packet
            case .closed: return nil
            case .timeout(let fired): if fired == token { throw TestTimeout(seconds: seconds) }
            }
        }
        return nil
    }

    /// Connects with a CONNECT and returns the CONNACK.
    public mutating func handshake(_ connect: Connect) async throws -> ConnAck {
        try await send(.connect(connect))
        switch try await next() {
        case .connack(let ack)?: return ack
        case nil: throw UnexpectedPacket(description: "no CONNACK: the connection closed")
        case let other?: throw UnexpectedPacket(description: "no CONNACK: \(other) arrived instead")
        }
    }

    /// The next packet that is not a PUBLISH of `$SYS`.
    public mutating func nextIgnoringSys(seconds: Int64 = 20) async throws -> MQTTPacket? {
        while true {
            let packet = try await next(seconds: seconds)
            if case .publish(let publish)? = packet, publish.topic.isDollarTopic { continue }
            return packet
        }
    }

    public func close() async {
        try? await channel.close()
    }

    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = MQTTPacket
        let continuation: AsyncStream<Event>.Continuation
        init(continuation: AsyncStream<Event>.Continuation) { self.continuation = continuation }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            continuation.yield(.packet(unwrapInboundIn(data)))
        }
        func channelInactive(context: ChannelHandlerContext) {
            continuation.yield(.closed)
        }
        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}

/// Nothing arrived before a ``TestClient`` wait's deadline.
public struct TestTimeout: Error, CustomStringConvertible {
    public var seconds: Int64
    public var description: String { "nothing arrived within \(seconds) s" }
}

/// A ``TestClient`` received something other than what the test waited for.
public struct UnexpectedPacket: Error, CustomStringConvertible {
    public var description: String
    public init(description: String) { self.description = description }
}
