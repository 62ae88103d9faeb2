import ArgumentParser
import NIOCore
import NIOPosix
import NIOSSL
import Synchronization
import TernCodec

/// `tern bench`: one publisher and one subscriber through any MQTT broker, to compare brokers
/// side by side on the same machine. It prints figures; it asserts nothing.
///
/// The publisher keeps at most `--window` messages ahead of the subscriber (and, at QoS 1, of its
/// PUBACKs), so a broker is measured on what it delivers, not on how much it can buffer.
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Measure publish-to-delivery throughput of an MQTT broker."
    )

    @Option(name: .shortAndLong, help: "Broker host.") var host = "127.0.0.1"
    @Option(name: .shortAndLong, help: "Broker port.") var port = 1883
    @Option(name: .shortAndLong, help: "QoS of the messages (0, 1 or 2).") var qos = 0
    @Option(name: .shortAndLong, help: "Number of messages.") var count = 200_000
    @Option(help: "Payload size in bytes.") var payload = 16
    @Option(help: "Messages the publisher may be ahead of the subscriber.") var window = 1000
    @Option(help: "Give up after this many seconds.") var timeout: Int64 = 120
    @Option(help: "A label for the output line.") var label = "broker"
    @Flag(help: "The subscriber keeps a persistent session (clean session 0), so a store holds its messages.")
    var persistent = false
    @Option(help: "Connect over TLS, trusting the broker certificate if it chains to these PEM certificates.")
    var cafile: String?

    func run() async throws {
        guard let qos = QoS(rawValue: UInt8(qos)) else { throw ValidationError("--qos must be 0, 1 or 2") }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        do {
            var tls: NIOSSLContext?
            if let cafile {
                var configuration = TLSConfiguration.makeClientConfiguration()
                configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(cafile))
                tls = try NIOSSLContext(configuration: configuration)
            }
            try await measure(qos: qos, loop: group.next(), tls: tls)
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
    }

    private func measure(qos: QoS, loop: any EventLoop, tls: NIOSSLContext?) async throws {
        let progress = BenchProgress(count: count)
        let topic = try TopicName("tern/bench/\(UInt32.random(in: 0...UInt32.max))")

        let subscriber = try await connect(
            loop: loop,
            clientID: "bench-sub-\(UInt16.random(in: 0...9999))",
            cleanSession: !persistent,
            tls: tls,
            handler: {
                SubscriberHandler(progress: progress)
            }
        )
        try await subscriber.writeAndFlush(
            MQTTPacket.subscribe(
                Subscribe(
                    packetIdentifier: 1,
                    subscriptions: [.init(filter: try TopicFilter(topic.string), options: .init(qos: qos))]
                )
            )
        ).get()
        try await progress.subscribed.futureResult.get()

        let message = ByteBuffer(repeating: 0x61, count: payload)
        let window = self.window
        let publisher = try await connect(
            loop: loop,
            clientID: "bench-pub-\(UInt16.random(in: 0...9999))",
            cleanSession: true,
            tls: tls,
            handler: {
                PublisherHandler(progress: progress, topic: topic, payload: message, qos: qos, window: window)
            }
        )
        let start = NIODeadline.now()
        publisher.pipeline.fireUserInboundEventTriggered(PublisherHandler.Start())
        let timeoutTask = loop.scheduleTask(in: .seconds(timeout)) {
            progress.done.fail(
                ValidationError(
                    "timed out after \(timeout) s with \(progress.received.load(ordering: .relaxed)) of \(progress.count) messages"
                )
            )
        }
        try await progress.done.futureResult.get()
        timeoutTask.cancel()
        let elapsed = Double((NIODeadline.now() - start).nanoseconds) / 1e9
        let rate = Double(count) / elapsed
        print(
            "\(label): qos=\(qos.rawValue) messages=\(count) payload=\(payload)B seconds=\(String(format: "%.3f", elapsed)) rate=\(Int(rate)) msg/s"
        )
        try? await publisher.close()
        try? await subscriber.close()
    }

    private func connect(
        loop: any EventLoop,
        clientID: String,
        cleanSession: Bool,
        tls: NIOSSLContext?,
        handler: @escaping @Sendable () -> any ChannelHandler
    ) async throws -> any Channel {
        let channel = try await openBenchChannel(loop: loop, host: host, port: port, tls: tls, handler: handler)
        try await channel.writeAndFlush(
            MQTTPacket.connect(
                Connect(protocolVersion: .v3_1_1, clientIdentifier: clientID, cleanStart: cleanSession, keepAlive: 600)
            )
        ).get()
        return channel
    }
}

/// Shared counters between the two connections. Both run on the same event loop; the atomics
/// are there so that the command's task can read them.
final class BenchProgress: Sendable {
    let count: Int
    let received = Atomic<Int>(0)
    let subscribed: EventLoopPromise<Void>
    let done: EventLoopPromise<Void>
    let publisherWake = Mutex<(@Sendable () -> Void)?>(nil)

    init(count: Int) {
        self.count = count
        let loop = MultiThreadedEventLoopGroup.singleton.any()
        subscribed = loop.makePromise()
        done = loop.makePromise()
    }
}

final class SubscriberHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = MQTTPacket
    typealias OutboundOut = MQTTPacket
    let progress: BenchProgress

    init(progress: BenchProgress) { self.progress = progress }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .suback: progress.subscribed.succeed()
        case .publish(let publish):
            if publish.qos == .atLeastOnce {
                context.write(
                    wrapOutboundOut(.puback(PublishAcknowledgement(packetIdentifier: publish.packetIdentifier))),
                    promise: nil
                )
            } else if publish.qos == .exactlyOnce {
                context.write(
                    wrapOutboundOut(.pubrec(PublishAcknowledgement(packetIdentifier: publish.packetIdentifier))),
                    promise: nil
                )
            }
            let received = progress.received.wrappingAdd(1, ordering: .relaxed).newValue
            if received == progress.count { progress.done.succeed() }
        case .pubrel(let release):
            context.write(
                wrapOutboundOut(.pubcomp(PublishAcknowledgement(packetIdentifier: release.packetIdentifier))),
                promise: nil
            )
        default: break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
        progress.publisherWake.withLock { $0 }?()
    }
}

final class PublisherHandler: ChannelInboundHandler {
    typealias InboundIn = MQTTPacket
    typealias OutboundOut = MQTTPacket
    struct Start {}

    let progress: BenchProgress
    let topic: TopicName
    let payload: ByteBuffer
    let qos: QoS
    let window: Int
    var sent = 0
    var completed = 0
    var context: ChannelHandlerContext?

    init(progress: BenchProgress, topic: TopicName, payload: ByteBuffer, qos: QoS, window: Int) {
        self.progress = progress
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.window = window
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        guard event is Start else { return }
        self.context = context
        let bound = NIOLoopBound(self, eventLoop: context.eventLoop)
        progress.publisherWake.withLock { $0 = { bound.value.pump() } }
        pump()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .puback, .pubcomp: completed += 1
        case .pubrec(let ack):
            context.write(
                wrapOutboundOut(.pubrel(PublishAcknowledgement(packetIdentifier: ack.packetIdentifier))),
                promise: nil
            )
        default: break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
        pump()
    }

    func pump() {
        guard let context else { return }
        let received = progress.received.load(ordering: .relaxed)
        var wrote = false
        while sent < progress.count, sent - received < window, qos == .atMostOnce || sent - completed < window {
            sent += 1
            let id = qos == .atMostOnce ? 0 : UInt16(truncatingIfNeeded: sent % 65535 + 1)
            let publish = Publish(topic: topic, payload: payload, qos: qos, packetIdentifier: id)
            context.write(wrapOutboundOut(.publish(publish)), promise: nil)
            wrote = true
        }
        if wrote { context.flush() }
    }
}

/// A 3.1.1 client connection for the load generators: the codec, then `handler`. CONNECT is up to the caller.
func openBenchChannel(
    loop: any EventLoop,
    host: String,
    port: Int,
    tls: NIOSSLContext? = nil,
    handler: @escaping @Sendable () -> any ChannelHandler
) async throws -> any Channel {
    try await ClientBootstrap(group: loop)
        .channelOption(.socketOption(.tcp_nodelay), value: 1)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                if let tls {
                    try channel.pipeline.syncOperations.addHandler(
                        NIOSSLClientHandler(context: tls, serverHostname: "localhost")
                    )
                }
                try channel.pipeline.syncOperations.addHandler(
                    ByteToMessageHandler(MQTTPacketDecoder(protocolVersion: .v3_1_1))
                )
                try channel.pipeline.syncOperations.addHandler(
                    MessageToByteHandler(MQTTPacketEncoder(protocolVersion: .v3_1_1))
                )
                try channel.pipeline.syncOperations.addHandler(handler())
            }
        }
        .connect(host: host, port: port).get()
}
