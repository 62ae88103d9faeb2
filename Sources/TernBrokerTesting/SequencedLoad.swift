public import NIOCore
import NIOPosix
import Synchronization
public import TernCodec

/// Load clients whose every payload carries its publisher and a sequence number, so that a test
/// checks order and loss per publisher, not only counts.
///
/// Payload layout: the publisher's number (4 bytes, big-endian), the message's sequence number
/// (4 bytes), then padding up to the requested size.
public enum SequencedLoad {
    /// The smallest payload: publisher and sequence number.
    public static let headerSize = 8

    static func payload(publisher: UInt32, sequence: UInt32, size: Int, allocator: ByteBufferAllocator) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: max(size, headerSize))
        buffer.writeInteger(publisher)
        buffer.writeInteger(sequence)
        if size > headerSize { buffer.writeRepeatingByte(0x2E, count: size - headerSize) }
        return buffer
    }

    /// The publisher and sequence number a load payload carries, for subscribers of other kinds.
    public static func read(_ payload: ByteBuffer) -> (publisher: UInt32, sequence: UInt32)? {
        guard let publisher = payload.getInteger(at: payload.readerIndex, as: UInt32.self),
            let sequence = payload.getInteger(at: payload.readerIndex + 4, as: UInt32.self)
        else { return nil }
        return (publisher, sequence)
    }

    /// What to publish.
    public struct Publication: Sendable {
        public var clientID: String
        /// This publisher's number, written into every payload.
        public var publisher: UInt32
        public var topic: String
        /// How many messages; with `duration`, the most it publishes.
        public var count: Int
        /// Publish until this much time has passed, or `count` messages, whichever comes first.
        public var duration: Duration?
        /// With `duration`: go on past it until this many messages are published, so that a
        /// loaded machine still puts the load a test needs through the broker.
        public var minimumCount = 0
        public var payloadSize: Int = 16
        /// The QoS of message number `n`.
        public var qos: @Sendable (Int) -> QoS
        /// At most this many QoS 1/2 messages unacknowledged (also capped by the broker's Receive Maximum).
        public var window: Int = 20
        /// Closed loop: publish only while fewer than this many messages are ahead of what `pacer`
        /// has received.
        public var pacing: (pacer: SequencedSubscriber, ahead: Int)?

        public init(
            clientID: String,
            publisher: UInt32,
            topic: String,
            count: Int,
            qos: @escaping @Sendable (Int) -> QoS
        ) {
            self.clientID = clientID
            self.publisher = publisher
            self.topic = topic
            self.count = count
            self.qos = qos
        }
    }

    /// Connects, publishes, waits until every QoS 1/2 message is acknowledged, and disconnects.
    /// - Returns: how many messages were published.
    @discardableResult
    public static func publish(port: Int, _ publication: Publication, timeout: Duration = .seconds(60)) async throws
        -> Int
    {
        let done = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Int.self)
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(MQTTPacketDecoder(protocolVersion: .v5))
                    )
                    try channel.pipeline.syncOperations.addHandler(
                        MessageToByteHandler(MQTTPacketEncoder(protocolVersion: .v5))
                    )
                    try channel.pipeline.syncOperations.addHandler(PublisherHandler(publication, done: done))
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        let deadline = channel.eventLoop.scheduleTask(
            in: .nanoseconds(Int64(timeout.components.seconds) * 1_000_000_000)
        ) {
            done.fail(LoadTimeout(what: "publisher \(publication.clientID)"))
        }
        defer { deadline.cancel() }
        do {
            let published = try await done.futureResult.get()
            try? await channel.close()
            return published
        } catch {
            try? await channel.close()
            throw error
        }
    }

    /// Connects a subscriber that records every PUBLISH it gets and acknowledges it (QoS 2:
    /// PUBREC, then PUBCOMP for the PUBREL).
    public static func subscribe(
        port: Int,
        clientID: String,
        filter: String,
        qos: QoS,
        receiveMaximum: UInt16? = nil,
        sessionExpiry: UInt32? = nil
    ) async throws -> SequencedSubscriber {
        let subscribed = MultiThreadedEventLoopGroup.singleton.any().makePromise(of: Void.self)
        let record = SequencedSubscriber.Shared()
        var properties = Properties()
        properties.receiveMaximum = receiveMaximum
        properties.sessionExpiryInterval = sessionExpiry
        let connect = Connect(clientIdentifier: clientID, cleanStart: true, keepAlive: 0, properties: properties)
        let subscribe = Subscribe(
            packetIdentifier: 1,
            subscriptions: [.init(filter: try TopicFilter(filter), options: SubscriptionOptions(qos: qos))]
        )
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(MQTTPacketDecoder(protocolVersion: .v5))
                    )
                    try channel.pipeline.syncOperations.addHandler(
                        MessageToByteHandler(MQTTPacketEncoder(protocolVersion: .v5))
                    )
                    try channel.pipeline.syncOperations.addHandler(
                        SubscriberHandler(
                            connect: connect,
                            subscribe: subscribe,
                            record: record,
                            subscribed: subscribed
                        )
                    )
                }
            }
            .connect(host: "127.0.0.1", port: port)
            .get()
        let deadline = channel.eventLoop.scheduleTask(in: .seconds(30)) {
            subscribed.fail(LoadTimeout(what: "SUBACK for \(clientID)"))
        }
        defer { deadline.cancel() }
        try await subscribed.futureResult.get()
        return SequencedSubscriber(channel: channel, shared: record)
    }
}

/// A subscriber connected by ``SequencedLoad/subscribe(port:clientID:filter:qos:receiveMaximum:sessionExpiry:)``.
public final class SequencedSubscriber: Sendable {
    final class Shared: Sendable {
        let deliveries = Mutex<[SequencedDelivery]>([])
        let count = Atomic<Int>(0)
        let closed = Atomic<Bool>(false)
    }

    public let channel: any Channel
    let shared: Shared

    init(channel: any Channel, shared: Shared) {
        self.channel = channel
        self.shared = shared
    }

    /// Everything received so far, in arrival order.
    public var deliveries: [SequencedDelivery] { shared.deliveries.withLock { $0 } }

    /// How many PUBLISH packets arrived (redeliveries included).
    public var receivedCount: Int { shared.count.load(ordering: .relaxed) }

    /// Stops reading the socket, like a client that hangs: the broker's writes to it back up.
    public func stopReading() async throws {
        try await channel.setOption(.autoRead, value: false).get()
    }

    /// Waits, polling every 10 ms, until `condition` holds; throws after `timeout`.
    public func wait(timeout: Duration = .seconds(30), until condition: ([SequencedDelivery]) -> Bool) async throws {
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while !shared.deliveries.withLock({ condition($0) }) {
            guard clock.now < deadline else { throw LoadTimeout(what: "subscriber condition") }
            if shared.closed.load(ordering: .relaxed) { throw LoadTimeout(what: "subscriber closed by the broker") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }

    public func close() async {
        try? await channel.close()
    }
}

/// One PUBLISH a ``SequencedSubscriber`` received.
public struct SequencedDelivery: Sendable, Hashable {
    public var publisher: UInt32
    public var sequence: UInt32
    public var qos: QoS
    public var duplicate: Bool

    public init(publisher: UInt32, sequence: UInt32, qos: QoS, duplicate: Bool) {
        self.publisher = publisher
        self.sequence = sequence
        self.qos = qos
        self.duplicate = duplicate
    }
}

/// What a subscriber received from each publisher, checked against what was published.
public struct SequenceCheck: Sendable, Hashable, CustomStringConvertible {
    /// Deliveries that came after a later one of the same publisher and QoS.
    public var outOfOrder = 0
    /// Sequence numbers of QoS 1/2 messages that never arrived.
    public var lost = 0
    /// Messages that arrived more than once, not counting DUP=1 redeliveries of QoS 1.
    public var duplicates = 0
    public var received = 0

    /// Checks `deliveries` against publishers that each published `published[publisher]`
    /// messages numbered from 0, message `n` at `qos(n)`.
    public init(_ deliveries: [SequencedDelivery], published: [UInt32: Int], qos: (Int) -> QoS) {
        var last: [String: UInt32] = [:]
        var seen: [UInt32: Set<UInt32>] = [:]
        for delivery in deliveries {
            received += 1
            let key = "\(delivery.publisher)/\(delivery.qos.rawValue)"
            if seen[delivery.publisher, default: []].insert(delivery.sequence).inserted == false {
                if !(delivery.qos == .atLeastOnce && delivery.duplicate) { duplicates += 1 }
                continue
            }
            if let previous = last[key], delivery.sequence < previous { outOfOrder += 1 }
            last[key] = max(last[key] ?? 0, delivery.sequence)
        }
        for (publisher, count) in published {
            let arrived = seen[publisher] ?? []
            for n in 0..<count where qos(n) != .atMostOnce && !arrived.contains(UInt32(n)) { lost += 1 }
        }
    }

    public var description: String {
        "received \(received), out of order \(outOfOrder), lost \(lost), duplicates \(duplicates)"
    }
}

/// A load client's wait ran out.
public struct LoadTimeout: Error, CustomStringConvertible {
    public var what: String
    public var description: String { "timed out waiting for \(what)" }
}

private final class PublisherHandler: ChannelInboundHandler {
    typealias InboundIn = MQTTPacket
    typealias OutboundOut = MQTTPacket

    let publication: SequencedLoad.Publication
    let done: EventLoopPromise<Int>
    let topic: TopicName
    var window: Int
    var next = 0
    var inflight: Set<UInt16> = []
    var nextIdentifier: UInt16 = 1
    var connected = false
    var finished = false
    var stopAt: NIODeadline?
    var retry: Scheduled<Void>?

    init(_ publication: SequencedLoad.Publication, done: EventLoopPromise<Int>) {
        self.publication = publication
        self.done = done
        self.topic = try! TopicName(publication.topic)
        self.window = publication.window
    }

    func channelActive(context: ChannelHandlerContext) {
        context.writeAndFlush(
            wrapOutboundOut(.connect(Connect(clientIdentifier: publication.clientID, keepAlive: 0))),
            promise: nil
        )
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .connack(let ack):
            guard ack.reasonCode == .success else {
                done.fail(LoadTimeout(what: "CONNACK success, got \(ack.reasonCode)"))
                return
            }
            if let maximum = ack.properties.receiveMaximum { window = min(window, Int(maximum)) }
            connected = true
            if let duration = publication.duration {
                stopAt =
                    .now()
                    + .nanoseconds(
                        Int64(duration.components.seconds) * 1_000_000_000 + duration.components.attoseconds
                            / 1_000_000_000
                    )
            }
            pump(context: context)
        case .puback(let ack), .pubcomp(let ack):
            inflight.remove(ack.packetIdentifier)
            pump(context: context)
        case .pubrec(let ack):
            context.writeAndFlush(
                wrapOutboundOut(.pubrel(PublishAcknowledgement(packetIdentifier: ack.packetIdentifier))),
                promise: nil
            )
        default:
            break
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { pump(context: context) }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        retry?.cancel()
        if !finished { done.fail(LoadTimeout(what: "publisher \(publication.clientID): connection closed")) }
    }

    private func pump(context: ChannelHandlerContext) {
        guard connected, !finished else { return }
        var wrote = false
        while next < publication.count, context.channel.isWritable {
            if let stopAt, next >= publication.minimumCount, NIODeadline.now() >= stopAt { break }
            let qos = publication.qos(next)
            if qos != .atMostOnce, inflight.count >= window { break }
            if let (pacer, ahead) = publication.pacing, next - pacer.receivedCount >= ahead {
                // Closed loop: look again shortly rather than flooding the broker.
                retry = context.eventLoop.assumeIsolated().scheduleTask(in: .milliseconds(1)) { [self] in
                    pump(context: context)
                }
                break
            }
            var identifier: UInt16 = 0
            if qos != .atMostOnce {
                identifier = nextIdentifier
                nextIdentifier = nextIdentifier == .max ? 1 : nextIdentifier + 1
                inflight.insert(identifier)
            }
            let payload = SequencedLoad.payload(
                publisher: publication.publisher,
                sequence: UInt32(next),
                size: publication.payloadSize,
                allocator: context.channel.allocator
            )
            context.write(
                wrapOutboundOut(
                    .publish(Publish(topic: topic, payload: payload, qos: qos, packetIdentifier: identifier))
                ),
                promise: nil
            )
            wrote = true
            next += 1
        }
        if wrote { context.flush() }
        let timeUp = stopAt.map { next >= publication.minimumCount && NIODeadline.now() >= $0 } ?? false
        if (next >= publication.count || timeUp), inflight.isEmpty {
            finished = true
            context.writeAndFlush(wrapOutboundOut(.disconnect(Disconnect())), promise: nil)
            done.succeed(next)
        }
    }
}

private final class SubscriberHandler: ChannelInboundHandler {
    typealias InboundIn = MQTTPacket
    typealias OutboundOut = MQTTPacket

    let connect: Connect
    let subscribe: Subscribe
    let record: SequencedSubscriber.Shared
    let subscribed: EventLoopPromise<Void>
    var batch: [SequencedDelivery] = []
    var pendingQoS2: Set<UInt16> = []

    init(connect: Connect, subscribe: Subscribe, record: SequencedSubscriber.Shared, subscribed: EventLoopPromise<Void>)
    {
        self.connect = connect
        self.subscribe = subscribe
        self.record = record
        self.subscribed = subscribed
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(.connect(connect)), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.subscribe(subscribe)), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .suback:
            subscribed.succeed()
        case .publish(let publish):
            if publish.qos == .exactlyOnce {
                // A QoS 2 message is ours at its first PUBLISH; a DUP before PUBREL is not a new one.
                if pendingQoS2.insert(publish.packetIdentifier).inserted == false {
                    context.write(
                        wrapOutboundOut(.pubrec(PublishAcknowledgement(packetIdentifier: publish.packetIdentifier))),
                        promise: nil
                    )
                    return
                }
            }
            if let (publisher, sequence) = SequencedLoad.read(publish.payload) {
                batch.append(
                    SequencedDelivery(
                        publisher: publisher,
                        sequence: sequence,
                        qos: publish.qos,
                        duplicate: publish.duplicate
                    )
                )
            }
            switch publish.qos {
            case .atMostOnce: break
            case .atLeastOnce:
                context.write(
                    wrapOutboundOut(.puback(PublishAcknowledgement(packetIdentifier: publish.packetIdentifier))),
                    promise: nil
                )
            case .exactlyOnce:
                context.write(
                    wrapOutboundOut(.pubrec(PublishAcknowledgement(packetIdentifier: publish.packetIdentifier))),
                    promise: nil
                )
            }
        case .pubrel(let release):
            pendingQoS2.remove(release.packetIdentifier)
            context.write(
                wrapOutboundOut(.pubcomp(PublishAcknowledgement(packetIdentifier: release.packetIdentifier))),
                promise: nil
            )
        default:
            break
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
        guard !batch.isEmpty else { return }
        let arrived = batch
        batch.removeAll(keepingCapacity: true)
        record.deliveries.withLock { $0.append(contentsOf: arrived) }
        record.count.add(arrived.count, ordering: .relaxed)
    }

    func channelInactive(context: ChannelHandlerContext) {
        record.closed.store(true, ordering: .relaxed)
        subscribed.fail(LoadTimeout(what: "SUBACK: connection closed"))
    }
}
