import Histogram
import NIOCore
import TernCodec

/// How the load generator's publishers and subscribers meet, as in the C generator
/// (`../shared/tools/mqttbench`): `pairs` (publisher i to subscriber i on topic i), `fanin`
/// (publisher i on topic i, every subscriber on the `+` of all of them) and `fanout` (everyone on
/// one topic).
enum BenchLayout: String, CaseIterable, Sendable {
    case pairs, fanin, fanout
}

/// What the load is: who publishes where, how fast and how much.
struct BenchPlan: Sendable {
    var layout: BenchLayout
    var qos: QoS
    var version: ProtocolVersion
    var publishers: Int
    var subscribers: Int
    var payload: Int
    /// Messages per publisher, or 0 to publish for `duration`.
    var count: Int
    var duration: TimeAmount
    /// Messages per second over all publishers, or 0 for as fast as the windows allow.
    var rate: Int
    /// Deliveries on their way to subscribers at most, or 0 for no limit (open loop).
    var window: Int
    /// Unacknowledged QoS 1/2 publishes per publisher at most; 0 takes the broker's Receive Maximum.
    var inflight: Int
    var topicPrefix: String

    func topic(publisher: Int) -> String {
        layout == .fanout ? "\(topicPrefix)/all" : "\(topicPrefix)/\(publisher)"
    }

    func filter(subscriber: Int) -> String {
        switch layout {
        case .pairs: "\(topicPrefix)/\(subscriber)"
        case .fanin: "\(topicPrefix)/+"
        case .fanout: "\(topicPrefix)/all"
        }
    }

    /// Whether subscriber `subscriber` receives what publisher `publisher` sends.
    func reaches(publisher: Int, subscriber: Int) -> Bool { layout != .pairs || publisher == subscriber }

    /// How many subscribers each message of `publisher` reaches.
    func fanout(publisher: Int) -> Int { layout == .pairs ? 1 : subscribers }
}

/// The whole run's state, confined to the generator's one event loop: what each publisher has
/// sent and had acknowledged, what each subscriber received, in what order, and how late.
///
/// Each payload starts with the publisher's number (4 bytes), its sequence number (4 bytes) and
/// the send time (8 bytes, nanoseconds of the loop's clock), so that order, loss and latency are
/// checked per publisher and subscriber, as the C generator does.
final class BenchRun {
    static let headerSize = 16

    let plan: BenchPlan
    let loop: any EventLoop
    var publisherChannels: [BenchConnection?]
    var sent: [Int]
    var acknowledged: [Int]
    var inflightLimit: [Int]
    var checks: [[SequenceCheck]]
    var latency = Histogram<UInt64>(highestTrackableValue: 120_000_000_000, numberOfSignificantValueDigits: .three)
    var received = 0
    var expectedDeliveries = 0
    var started: NIODeadline = .now()
    var publishingEnded: NIODeadline?
    var lastReceived: NIODeadline = .now()
    var finished: EventLoopPromise<Void>
    private var nextPublisher = 0
    private var pumping = false
    /// Whether the delivery window filled up and waits to drain to half (see ``allowance(_:)``).
    private var windowBlocked = false
    private var rateTimer: RepeatedTask?
    private let filler: [UInt8]

    init(plan: BenchPlan, loop: any EventLoop) {
        self.plan = plan
        self.loop = loop
        publisherChannels = Array(repeating: nil, count: plan.publishers)
        sent = Array(repeating: 0, count: plan.publishers)
        acknowledged = Array(repeating: 0, count: plan.publishers)
        inflightLimit = Array(repeating: 20, count: plan.publishers)
        checks = Array(
            repeating: Array(repeating: SequenceCheck(), count: plan.publishers),
            count: plan.subscribers
        )
        finished = loop.makePromise()
        filler = Array(repeating: 0x61, count: max(0, plan.payload - Self.headerSize))
    }

    var totalSent: Int { sent.reduce(0, +) }

    /// Starts publishing: at a fixed rate, or as fast as the windows allow. At a fixed rate the
    /// timer fires once per message gap (at most every 50 µs), so that messages go one by one as a
    /// steady source would send them, not in bursts that a broker could batch.
    func start() {
        started = .now()
        lastReceived = started
        if plan.rate > 0 {
            let bound = NIOLoopBound(self, eventLoop: loop)
            let gap = TimeAmount.nanoseconds(max(50_000, 1_000_000_000 / Int64(plan.rate)))
            rateTimer = loop.scheduleRepeatedTask(initialDelay: .zero, delay: gap) { _ in
                bound.value.pump()
            }
        } else {
            pump()
        }
    }

    private func publishingIsOver(now: NIODeadline) -> Bool {
        if plan.count > 0 { return sent.allSatisfy { $0 >= plan.count } }
        return now - started >= plan.duration
    }

    /// Sends what the windows and the rate allow, round robin over the publishers, one write and
    /// one flush per publisher per call.
    func pump() {
        guard !pumping, publishingEnded == nil else { return }
        pumping = true
        defer { pumping = false }
        let now = NIODeadline.now()
        if publishingIsOver(now: now) {
            endPublishing(now: now)
            return
        }
        var budget = Int.max
        if plan.rate > 0 {
            let due = Int(Double(plan.rate) * Double((now - started).nanoseconds) / 1e9)
            budget = max(0, due - totalSent)
        }
        var progressed = true
        while budget > 0, progressed {
            progressed = false
            for _ in 0..<plan.publishers {
                let publisher = nextPublisher
                nextPublisher = (nextPublisher + 1) % plan.publishers
                let batch = min(budget, allowance(publisher), 64)
                guard batch > 0, let connection = publisherChannels[publisher] else { continue }
                connection.publish(batch, from: publisher, run: self)
                budget -= batch
                progressed = true
                if budget == 0 { break }
            }
        }
    }

    /// How many messages `publisher` may send now.
    private func allowance(_ publisher: Int) -> Int {
        var allowed = plan.count > 0 ? plan.count - sent[publisher] : Int.max
        if plan.qos != .atMostOnce {
            allowed = min(allowed, inflightLimit[publisher] - (sent[publisher] - acknowledged[publisher]))
        }
        if plan.window > 0 {
            let outstanding = expectedDeliveries - received
            // Once full, the window refills only after half of it has drained, so that messages
            // go out in batches rather than one per delivery that frees a slot: one message per
            // wake-up and write would measure the ping-pong, not the broker. The C generator
            // (../shared/tools/mqttbench) does the same, so that their figures compare.
            if windowBlocked {
                guard outstanding <= plan.window / 2 else { return 0 }
                windowBlocked = false
            }
            if outstanding >= plan.window {
                windowBlocked = true
                return 0
            }
            allowed = min(allowed, (plan.window - outstanding) / plan.fanout(publisher: publisher))
        }
        return max(0, allowed)
    }

    /// The payload of `publisher`'s message number `sequence`.
    func writePayload(publisher: Int, sequence: Int, to buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt32(publisher))
        buffer.writeInteger(UInt32(truncatingIfNeeded: sequence))
        buffer.writeInteger(NIODeadline.now().uptimeNanoseconds)
        buffer.writeBytes(filler)
    }

    func recordSent(_ count: Int, publisher: Int) {
        sent[publisher] += count
        expectedDeliveries += count * plan.fanout(publisher: publisher)
    }

    func recordAcknowledged(publisher: Int) {
        acknowledged[publisher] += 1
    }

    /// A PUBLISH reached `subscriber`: its payload is checked and its latency recorded.
    func recordDelivery(subscriber: Int, payload: ByteBuffer) {
        guard let publisher = payload.getInteger(at: payload.readerIndex, as: UInt32.self),
            let sequence = payload.getInteger(at: payload.readerIndex + 4, as: UInt32.self),
            let sentAt = payload.getInteger(at: payload.readerIndex + 8, as: UInt64.self),
            Int(publisher) < plan.publishers
        else { return }
        let now = NIODeadline.now()
        checks[subscriber][Int(publisher)].record(sequence)
        _ = latency.record(now.uptimeNanoseconds &- sentAt)
        received += 1
        lastReceived = now
    }

    /// After a burst of reads: more may be sent, or everything may have arrived.
    func readBurstEnded() {
        if publishingEnded == nil {
            pump()
        } else if received >= expectedDeliveries {
            finish()
        }
    }

    private func endPublishing(now: NIODeadline) {
        publishingEnded = now
        rateTimer?.cancel()
        rateTimer = nil
        if received >= expectedDeliveries { finish() }
    }

    /// Called once a second: ends a run whose deliveries stopped coming, or that ran out of time.
    func checkProgress(drainTimeout: TimeAmount) {
        let now = NIODeadline.now()
        if publishingEnded == nil, publishingIsOver(now: now) { endPublishing(now: now) }
        if publishingEnded != nil, now - lastReceived >= drainTimeout { finish() }
    }

    func finish() {
        rateTimer?.cancel()
        finished.succeed()
    }

    /// Distinct deliveries missing at the end, and how many came twice or out of order.
    func lossAndDisorder() -> (lost: Int, duplicateOrOutOfOrder: Int) {
        var lost = 0
        var disorder = 0
        for subscriber in 0..<plan.subscribers {
            for publisher in 0..<plan.publishers where plan.reaches(publisher: publisher, subscriber: subscriber) {
                let check = checks[subscriber][publisher]
                lost += max(0, sent[publisher] - check.distinct)
                disorder += check.duplicateOrOutOfOrder
            }
        }
        return (lost, disorder)
    }
}

/// One connection of the load generator. It reads and writes MQTT frames itself rather than
/// through Tern's codec: the generator must cost less than the broker it measures, and it only
/// needs the fixed header, the packet identifier and the first bytes of a payload. The few
/// packets it does not handle on the hot path (CONNACK, SUBACK) go through the codec.
final class BenchConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Role: Sendable {
        case publisher(Int)
        case subscriber(Int)

        var isSubscriber: Bool {
            if case .subscriber = self { true } else { false }
        }
    }

    let role: Role
    let run: BenchRun
    let version: ProtocolVersion
    /// Fulfilled by CONNACK (with the broker's Receive Maximum) and then SUBACK.
    var handshake: EventLoopPromise<UInt16>?
    private var context: ChannelHandlerContext?
    private var pending: ByteBuffer?
    private var replies: ByteBuffer?
    private let topic: ByteBuffer
    private var nextPacketIdentifier: UInt16 = 0

    init(role: Role, run: BenchRun, topic: String) {
        self.role = role
        self.run = run
        self.version = run.plan.version
        self.topic = ByteBuffer(string: topic)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }
    func handlerRemoved(context: ChannelHandlerContext) { self.context = nil }

    func channelInactive(context: ChannelHandlerContext) {
        handshake?.fail(BenchError("the broker closed the connection"))
        handshake = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        handshake?.fail(error)
        handshake = nil
        context.close(promise: nil)
    }

    /// Sends a handshake packet (CONNECT, SUBSCRIBE) through the codec.
    func send(_ packet: MQTTPacket) throws {
        guard let context else { throw BenchError("not connected") }
        var buffer = context.channel.allocator.buffer(capacity: packet.encodedSize(version: version))
        try packet.write(to: &buffer, version: version)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    /// Writes `count` PUBLISH packets of `publisher` in one buffer, and flushes.
    func publish(_ count: Int, from publisher: Int, run: BenchRun) {
        guard let context else { return }
        let qos = run.plan.qos
        let body = 2 + topic.readableBytes + (qos == .atMostOnce ? 0 : 2) + (version == .v5 ? 1 : 0) + run.plan.payload
        var buffer = context.channel.allocator.buffer(capacity: count * (body + 5))
        for index in 0..<count {
            buffer.writeInteger(UInt8(0x30 | qos.rawValue << 1))
            buffer.writeRemainingLength(body)
            buffer.writeInteger(UInt16(topic.readableBytes))
            buffer.writeImmutableBuffer(topic)
            if qos != .atMostOnce {
                nextPacketIdentifier = nextPacketIdentifier == .max ? 1 : nextPacketIdentifier + 1
                buffer.writeInteger(nextPacketIdentifier)
            }
            if version == .v5 { buffer.writeInteger(UInt8(0)) }  // no properties
            run.writePayload(publisher: publisher, sequence: run.sent[publisher] + index, to: &buffer)
        }
        run.recordSent(count, publisher: publisher)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        if var partial = pending.take() {
            partial.writeBuffer(&buffer)
            buffer = partial
        }
        while let (header, body) = buffer.readMQTTFrame() {
            handle(header: header, body: body)
        }
        if buffer.readableBytes > 0 { pending = buffer }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if let replies = replies.take() { context.writeAndFlush(wrapOutboundOut(replies), promise: nil) }
        run.readBurstEnded()
    }

    private func reply(_ type: UInt8, _ packetIdentifier: UInt16) {
        if replies == nil { replies = context?.channel.allocator.buffer(capacity: 1024) }
        replies!.writeInteger(type)
        replies!.writeInteger(UInt8(2))
        replies!.writeInteger(packetIdentifier)
    }

    private func handle(header: UInt8, body: ByteBuffer) {
        var body = body
        switch (header >> 4, role) {
        case (3, .subscriber(let subscriber)):  // PUBLISH
            let qos = (header >> 1) & 3
            guard let topicLength = body.readInteger(as: UInt16.self), body.readableBytes >= Int(topicLength) else {
                return
            }
            body.moveReaderIndex(forwardBy: Int(topicLength))
            let packetIdentifier = qos > 0 ? body.readInteger(as: UInt16.self) ?? 0 : 0
            if version == .v5, let length = body.readVariableByteInteger() { body.moveReaderIndex(forwardBy: length) }
            run.recordDelivery(subscriber: subscriber, payload: body)
            if qos == 1 { reply(0x40, packetIdentifier) }  // PUBACK
            if qos == 2 { reply(0x50, packetIdentifier) }  // PUBREC
        case (6, .subscriber):  // PUBREL
            if let packetIdentifier = body.readInteger(as: UInt16.self) { reply(0x70, packetIdentifier) }  // PUBCOMP
        case (4, .publisher(let publisher)), (7, .publisher(let publisher)):  // PUBACK, PUBCOMP
            run.recordAcknowledged(publisher: publisher)
        case (5, .publisher):  // PUBREC
            if let packetIdentifier = body.readInteger(as: UInt16.self) { reply(0x62, packetIdentifier) }  // PUBREL
        case (2, _), (9, _):  // CONNACK, SUBACK: through the codec
            var whole = ByteBuffer()
            whole.writeInteger(header)
            whole.writeRemainingLength(body.readableBytes)
            whole.writeImmutableBuffer(body)
            var decoder = MQTTPacketDecoder(protocolVersion: version)
            switch try? decoder.decodePacket(from: &whole) {
            case .connack(let connack) where connack.reasonCode == .success:
                handshake?.succeed(connack.properties.receiveMaximum ?? 65535)
            case .suback(let suback) where suback.reasonCodes.allSatisfy({ $0.rawValue < 0x80 }):
                handshake?.succeed(0)
            default:
                handshake?.fail(BenchError("the broker refused: \(header >> 4 == 2 ? "CONNACK" : "SUBACK") \(body)"))
            }
            handshake = nil
        default:
            break
        }
    }
}

struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension ByteBuffer {
    /// MQTT's Variable Byte Integer, for a Remaining Length (§1.5.5).
    fileprivate mutating func writeRemainingLength(_ value: Int) {
        var value = value
        repeat {
            var byte = UInt8(value & 0x7F)
            value >>= 7
            if value > 0 { byte |= 0x80 }
            writeInteger(byte)
        } while value > 0
    }

    fileprivate mutating func readVariableByteInteger() -> Int? {
        var value = 0
        for shift in stride(from: 0, to: 28, by: 7) {
            guard let byte = readInteger(as: UInt8.self) else { return nil }
            value |= Int(byte & 0x7F) << shift
            if byte & 0x80 == 0 { return value }
        }
        return nil
    }

    /// The next whole frame: its first byte and its body. Consumes nothing if it is incomplete.
    fileprivate mutating func readMQTTFrame() -> (UInt8, ByteBuffer)? {
        let start = readerIndex
        guard let header = getInteger(at: start, as: UInt8.self) else { return nil }
        var length = 0
        var index = start + 1
        for shift in stride(from: 0, to: 28, by: 7) {
            guard let byte = getInteger(at: index, as: UInt8.self) else { return nil }
            index += 1
            length |= Int(byte & 0x7F) << shift
            if byte & 0x80 == 0 { break }
        }
        guard let body = getSlice(at: index, length: length) else { return nil }
        moveReaderIndex(to: index + length)
        return (header, body)
    }
}
