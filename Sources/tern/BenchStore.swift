import ArgumentParser
import Foundation
import NIOCore
import NIOPosix
import Synchronization
import TernCodec

/// `tern bench-store`: the restart benchmark. `fill` opens persistent sessions (3.1.1, clean
/// session 0), each subscribed at QoS 1 to its own topic, then queues messages for them while they
/// are away. After the broker is restarted, `resume` measures the time to the first CONNACK
/// (counted from when it is started, so start it together with the broker) and the rate at which
/// the resumed sessions drain their queues. It prints figures and asserts nothing.
struct BenchStore: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-store",
        abstract: "Fill a broker with queued messages for persistent sessions, or time their resumption."
    )

    enum Phase: String, ExpressibleByArgument { case fill, resume }

    @Argument(help: "fill or resume.") var phase: Phase
    @Option(name: .shortAndLong, help: "Broker port.") var port = 1883
    @Option(help: "Persistent sessions.") var sessions = 1000
    @Option(help: "Messages queued in all, spread evenly over the sessions.") var messages = 100_000
    @Option(help: "Payload size in bytes.") var payload = 16
    @Option(help: "Give up after this many seconds.") var timeout: Int64 = 120
    @Option(
        help:
            "resume: seconds to wait after the first CONNACK before the sessions resume (to read the broker's memory)."
    )
    var pause: Double = 0

    func run() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let loop = group.next()
        do {
            switch phase {
            case .fill: try await fill(loop: loop)
            case .resume: try await resume(loop: loop)
            }
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try await group.shutdownGracefully()
    }

    private func fill(loop: any EventLoop) async throws {
        let started = NIODeadline.now()
        for first in stride(from: 0, to: sessions, by: 100) {
            var channels: [any Channel] = []
            var acknowledged: [EventLoopFuture<Void>] = []
            for index in first..<min(first + 100, sessions) {
                let counter = BenchCounter(loop: loop, expected: 1)
                let channel = try await StoreBenchConnection.open(
                    loop: loop,
                    port: port,
                    clientID: "store-bench-\(index)",
                    cleanSession: false,
                    counter: counter
                )
                channel.writeAndFlush(
                    MQTTPacket.subscribe(
                        Subscribe(
                            packetIdentifier: 1,
                            subscriptions: [
                                .init(
                                    filter: try TopicFilter("store/bench/\(index)"),
                                    options: .init(qos: .atLeastOnce)
                                )
                            ]
                        )
                    ),
                    promise: nil
                )
                channels.append(channel)
                acknowledged.append(counter.done.futureResult)
            }
            for future in acknowledged { try await future.get() }
            for channel in channels {
                try await channel.writeAndFlush(MQTTPacket.disconnect(Disconnect())).get()
                try? await channel.close()
            }
        }
        let setupSeconds = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        let counter = BenchCounter(loop: loop, expected: messages)
        let publisher = try await StoreBenchConnection.open(
            loop: loop,
            port: port,
            clientID: "store-bench-publisher",
            cleanSession: true,
            counter: counter
        )
        let body = ByteBuffer(repeating: 0x61, count: payload)
        let topics = try (0..<sessions).map { try TopicName("store/bench/\($0)") }
        let publishing = NIODeadline.now()
        var sent = 0
        while sent < messages {
            // At most 1,000 unacknowledged, so that Mosquitto's and Tern's in-flight limits agree.
            while sent - counter.count.load(ordering: .relaxed) >= 1000 { try await Task.sleep(for: .milliseconds(1)) }
            let batch = min(100, messages - sent)
            for _ in 0..<batch {
                let id = UInt16(sent % 65_000 + 1)
                publisher.write(
                    MQTTPacket.publish(
                        Publish(topic: topics[sent % sessions], payload: body, qos: .atLeastOnce, packetIdentifier: id)
                    ),
                    promise: nil
                )
                sent += 1
            }
            publisher.flush()
        }
        try await counter.done.futureResult.get()
        let seconds = Double((NIODeadline.now() - publishing).nanoseconds) / 1e9
        try? await publisher.close()
        // The rate counts the publishing only; opening the sessions is `setup-seconds`.
        print(
            "fill: sessions=\(sessions) messages=\(messages) payload=\(payload)B setup-seconds=\(String(format: "%.3f", setupSeconds)) seconds=\(String(format: "%.3f", seconds)) rate=\(Int(Double(messages) / seconds)) msg/s"
        )
    }

    private func resume(loop: any EventLoop) async throws {
        let started = NIODeadline.now()
        // Time to first CONNACK: retry until the broker answers.
        while true {
            guard NIODeadline.now() - started < .seconds(timeout) else {
                throw ValidationError("no CONNACK within \(timeout) s")
            }
            let probe = BenchCounter(loop: loop, expected: 0)
            if let channel = try? await StoreBenchConnection.open(
                loop: loop,
                port: port,
                clientID: "store-bench-probe",
                cleanSession: true,
                counter: probe
            ) {
                try? await channel.close()
                break
            }
            try await Task.sleep(for: .milliseconds(2))
        }
        let firstConnack = Double((NIODeadline.now() - started).nanoseconds) / 1e6
        print("resume: first CONNACK after \(String(format: "%.1f", firstConnack)) ms")
        if pause > 0 { try await Task.sleep(for: .milliseconds(Int(pause * 1000))) }

        let counter = BenchCounter(loop: loop, expected: messages)
        let drainStarted = NIODeadline.now()
        var channels: [any Channel] = []
        for index in 0..<sessions {
            channels.append(
                try await StoreBenchConnection.open(
                    loop: loop,
                    port: port,
                    clientID: "store-bench-\(index)",
                    cleanSession: false,
                    counter: counter
                )
            )
        }
        let timeoutTask = loop.scheduleTask(in: .seconds(timeout)) {
            counter.done.fail(
                ValidationError("timed out with \(counter.count.load(ordering: .relaxed)) of \(messages) messages")
            )
        }
        try await counter.done.futureResult.get()
        timeoutTask.cancel()
        let seconds = Double((NIODeadline.now() - drainStarted).nanoseconds) / 1e9
        print(
            "resume: drained messages=\(messages) from sessions=\(sessions) seconds=\(String(format: "%.3f", seconds)) rate=\(Int(Double(messages) / seconds)) msg/s"
        )
        for channel in channels { try? await channel.close() }
    }
}

/// Counts SUBACKs, PUBACKs or received PUBLISH packets across connections.
final class BenchCounter: Sendable {
    let expected: Int
    let count = Atomic<Int>(0)
    let done: EventLoopPromise<Void>

    init(loop: any EventLoop, expected: Int) {
        self.expected = expected
        done = loop.makePromise()
        if expected == 0 { done.succeed() }
    }

    func add() {
        if count.wrappingAdd(1, ordering: .relaxed).newValue == expected { done.succeed() }
    }
}

/// One 3.1.1 connection of the store benchmark: answers PUBLISH with PUBACK and counts.
final class StoreBenchConnection: ChannelInboundHandler, Sendable {
    typealias InboundIn = MQTTPacket
    typealias OutboundOut = MQTTPacket
    let counter: BenchCounter
    let connected: EventLoopPromise<Void>

    init(counter: BenchCounter, connected: EventLoopPromise<Void>) {
        self.counter = counter
        self.connected = connected
    }

    static func open(loop: any EventLoop, port: Int, clientID: String, cleanSession: Bool, counter: BenchCounter)
        async throws -> any Channel
    {
        let connected = loop.makePromise(of: Void.self)
        let channel = try await openBenchChannel(loop: loop, host: "127.0.0.1", port: port) {
            StoreBenchConnection(counter: counter, connected: connected)
        }
        try await channel.writeAndFlush(
            MQTTPacket.connect(
                Connect(protocolVersion: .v3_1_1, clientIdentifier: clientID, cleanStart: cleanSession, keepAlive: 600)
            )
        ).get()
        try await connected.futureResult.get()
        return channel
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .connack(let ack):
            if ack.reasonCode == .success {
                connected.succeed()
            } else {
                connected.fail(ValidationError("CONNACK \(ack.reasonCode)"))
            }
        case .suback, .puback:
            counter.add()
        case .publish(let publish):
            if publish.qos == .atLeastOnce {
                context.write(
                    wrapOutboundOut(.puback(PublishAcknowledgement(packetIdentifier: publish.packetIdentifier))),
                    promise: nil
                )
            }
            counter.add()
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        connected.fail(ValidationError("connection closed"))
    }
}

/// A 3.1.1 client connection for the store benchmark: the codec, then `handler`. CONNECT is up to the caller.
func openBenchChannel(
    loop: any EventLoop,
    host: String,
    port: Int,
    handler: @escaping @Sendable () -> any ChannelHandler
) async throws -> any Channel {
    try await ClientBootstrap(group: loop)
        .channelOption(.socketOption(.tcp_nodelay), value: 1)
        .channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
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
