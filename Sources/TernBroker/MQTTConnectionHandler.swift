import DequeModule
import Logging
import NIOCore
import NIOSSL
import TernBrokerCore
import TernCodec

/// One client connection: decodes packets, applies the per-connection rules, hands the rest to the
/// broker's shared state and writes what comes back. It does I/O only; the rules live in
/// ``ConnectionStateMachine`` and ``BrokerState``.
final class MQTTConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let broker: MQTTBroker
    let id: ConnectionID
    /// The index of the listener the client came through, in ``BrokerOptions/listeners``.
    let listener: Int
    private var decoder: MQTTPacketDecoder
    /// The start of a packet whose end has not arrived yet. Kept only while a packet is split
    /// across reads: NIO's byte-to-message processor would keep the last read buffer for the life
    /// of the connection (2 KiB per idle client) and stop NIO from reusing its receive buffer.
    private var partialPacket: ByteBuffer?
    private var machine: ConnectionStateMachine
    private var context: ChannelHandlerContext?
    private var version: ProtocolVersion = .v5
    /// Whether the shared state knows this connection (its CONNECT was forwarded).
    private var attached = false
    private var closing = false
    private var needsFlush = false
    /// When the last bytes arrived, on the event loop's clock: the keep-alive and connect timers
    /// run on that clock too, so a test loop (`EmbeddedEventLoop`) drives them in virtual time.
    private var lastRead = NIODeadline.uptimeNanoseconds(0)
    private var keepAliveTimeout: TimeAmount?
    private var timer: Scheduled<Void>?
    private var outbox = Outbox()
    /// This connection's ordered outbound path: every packet it is sent goes through it.
    private let outbound = ConnectionOutbound()
    private var handle: MQTTBroker.Handle?
    /// This connection as the receipts of its QoS 1 messages name it (``PublishReceipt``), when
    /// the broker stores: a PUBACK may then leave before its commit, once every stored copy of the
    /// message has been acknowledged.
    private var publisherWaker: MQTTBroker.PublisherWaker?
    /// The broker's part for this connection's event loop, which holds its session.
    private var shard: BrokerShard!
    /// Whether ``drainOutbound(flush:)`` is running: a drain asked for while it writes (a
    /// writability change fired by a write) runs after it, so the queue's order holds.
    private var draining = false
    private var drainAgain = false
    private var unflushedBytes = 0
    /// The packets written since the last flush, encoded, not yet handed to NIO.
    private var output: ByteBuffer?
    /// The spare buffer ``drainOutbound(flush:)`` takes the queue's actions into.
    private var takenEntries = Deque<OutboundQueue.Entry>()
    private var outboundAliases = OutboundTopicAliases(maximum: 0)
    /// Authentication Method and Data to add to the CONNACK of an enhanced authentication.
    private var connackAuthentication: Properties?
    /// A CONNECT that waits, with its checked credentials: for the store's queues
    /// (``MQTTBroker/waitsForQueues(_:handle:)``), or for its session to arrive from another
    /// event loop's shard. Reading stops meanwhile; what was read after it waits in
    /// `partialPacket`.
    private var heldConnect: HeldConnect?
    private var packetsRead: UInt64 = 0
    private var bytesRead: UInt64 = 0
    private var packetsWritten: UInt64 = 0
    private var bytesWritten: UInt64 = 0

    init(broker: MQTTBroker, id: ConnectionID, listener: Int) {
        self.broker = broker
        self.id = id
        self.listener = listener
        let limit = broker.options.broker.maxPacketSize
        self.decoder = MQTTPacketDecoder(
            maximumPacketSize: limit > 0 ? limit : MQTTPacketDecoder.protocolMaximumPacketSize
        )
        self.machine = ConnectionStateMachine(
            topicAliasMaximum: broker.options.broker.maxTopicAlias,
            authenticators: broker.options.authenticators,
            mountPoint: broker.options.listeners.indices.contains(listener)
                ? broker.options.listeners[listener].mountPoint.map(MountPoint.init) : nil
        )
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let handle = MQTTBroker.Handle(
            eventLoop: context.eventLoop,
            handler: NIOLoopBound(self, eventLoop: context.eventLoop),
            outbound: outbound
        )
        self.handle = handle
        if broker.options.store != nil { publisherWaker = MQTTBroker.PublisherWaker(handle) }
        shard = broker.shard(for: context.eventLoop)
        broker.register(id, handle: handle, on: shard)
        // Added after a WebSocket upgrade, the channel is already active.
        if context.channel.isActive { startConnectTimer(context: context) }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // The context holds this handler; letting go of it breaks the cycle when the channel ends.
        stopTimer()
        self.context = nil
        self.handle = nil
        // In-flight copies of this connection's messages may keep the waker; not this handler.
        publisherWaker?.connectionEnded()
        publisherWaker = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        startConnectTimer(context: context)
        context.fireChannelActive()
    }

    /// A client that never completes its TLS handshake or its CONNECT is dropped after the
    /// connect timeout.
    private func startConnectTimer(context: ChannelHandlerContext) {
        guard timer == nil, !attached else { return }
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: .seconds(broker.options.connectTimeout)) { [self] in
            if !attached, heldConnect == nil {
                close(reason: "no CONNECT within \(broker.options.connectTimeout) s")
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        dispatchOutbox()
        // A DISCONNECT closes the channel within the read burst: count what it read.
        reportReceivedTraffic()
        stopTimer()
        closing = true
        broker.connectionEnded(id, on: shard)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        lastRead = context.eventLoop.now
        var buffer = unwrapInboundIn(data)
        bytesRead += UInt64(buffer.readableBytes)
        if var partial = partialPacket.take() {
            partial.writeBuffer(&buffer)
            buffer = partial
        }
        decodeAndHandle(&buffer)
    }

    /// Handles the packets in `buffer` and keeps what is left of it (a split packet, or what
    /// follows a CONNECT that waits for the store's queues) for later.
    private func decodeAndHandle(_ buffer: inout ByteBuffer) {
        do {
            while !closing, heldConnect == nil, let packet = try decoder.decodePacket(from: &buffer) {
                packetsRead += 1
                handle(packet)
            }
        } catch {
            refuse(error)
            return
        }
        if buffer.readableBytes > 0, !closing { partialPacket = buffer }
    }

    /// The store's queues are in: the CONNECT that waited goes on, then what was read after it,
    /// then reading.
    func continueAfterQueues() {
        continueHeldConnect()
    }

    /// The session the CONNECT waited for has arrived from another shard (or turned out not to
    /// exist): the CONNECT runs again, then what was read after it, then reading.
    func continueAfterSession() {
        continueHeldConnect()
    }

    /// Answers the CONNECT that waited for its session with a refusal (`code`, 0x88 Server
    /// unavailable when the cluster could not hand the session over) and closes.
    func refuseHeldConnect(_ code: ReasonCode) {
        guard heldConnect.take() != nil, !closing else { return }
        write(.connack(ConnAck(reasonCode: code)))
        close(reason: "the session could not be taken over: \(code)")
    }

    private func continueHeldConnect() {
        guard let held = heldConnect.take(), !closing, let context else { return }
        let (connect, credentials) = (held.connect, held.credentials)
        attach(connect, credentials: credentials)
        drainOutbound(flush: false)
        if heldConnect == nil, var buffered = partialPacket.take() { decodeAndHandle(&buffered) }
        dispatchOutbox()
        flushIfNeeded()
        if heldConnect == nil { try? context.channel.syncOptions?.setOption(.autoRead, value: true) }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushIfNeeded()
        dispatchOutbox()
        reportReceivedTraffic()
        context.fireChannelReadComplete()
    }

    /// Hands over what this burst left for others. The outbox is emptied first: dispatching may
    /// call back into this handler (on a test's `EmbeddedEventLoop`, another shard's work runs
    /// at once), and that must find an empty outbox, not the one being dispatched.
    private func dispatchOutbox() {
        var pending = Outbox()
        swap(&pending, &outbox)
        pending.dispatch(broker)
    }

    /// Adds this read burst's packets and bytes to the broker's counters, once per burst.
    private func reportReceivedTraffic() {
        guard packetsRead > 0 || bytesRead > 0 else { return }
        broker.counters.packetsReceived.add(packetsRead, ordering: .relaxed)
        broker.counters.bytesReceived.add(bytesRead, ordering: .relaxed)
        packetsRead = 0
        bytesRead = 0
    }

    /// Backpressure: while the socket does not keep up, the state keeps this client's QoS 1/2
    /// messages in its session queue and drops its QoS 0 messages; when it catches up, the queue
    /// drains in order.
    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if attached, !closing {
            let writable = context.channel.isWritable
            let id = self.id
            broker.withState(on: shard, current: id, outbox: &outbox) {
                $0.writabilityChanged(id, writable: writable, now: .now())
            }
            dispatchOutbox()
            drainOutbound(flush: true)
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if error is NIOSSLError || error is BoringSSLError {
            // An untrusted, expired or missing client certificate, or a client that is not speaking TLS.
            let address = context.remoteAddress.map { "\($0)" } ?? "unknown"
            broker.logger.warning("TLS failed", metadata: ["address": "\(address)", "error": "\(error)"])
        }
        close(reason: "\(error)")
    }

    // MARK: Packets

    private func handle(_ packet: MQTTPacket) {
        switch machine.received(packet) {
        case .reply(let reply):
            // Behind whatever the state already queued for this connection, like everything else.
            _ = outbound.queue.withLock { $0.append(.send(id, reply), after: 0) }
            drainOutbound(flush: false)
        case .close(let code, let reason):
            refuse(TernError(code, reason))
        case .forward(let packet):
            forward(packet)
        case .forwardAuthenticated(let connect, let method, let data):
            var properties = Properties()
            try? properties.append(.authenticationMethod(method))
            if let data { try? properties.append(.authenticationData(data)) }
            connackAuthentication = properties
            forward(.connect(connect))
        case .refuseConnect(let connack):
            broker.logger.notice(
                "refusing connection",
                metadata: ["connection": "\(id)", "reason": "\(connack.reasonCode)"]
            )
            write(.connack(connack))
            close(reason: nil)
        }
    }

    private func forward(_ packet: MQTTPacket) {
        let now = BrokerInstant.now()
        let id = self.id
        switch packet {
        case .connect(let connect):
            var connect = connect
            let credentials = checkCredentials(&connect)
            if let handle, broker.waitsForQueues(connect, handle: handle) {
                heldConnect = HeldConnect(connect: connect, credentials: credentials)
                try? context?.channel.syncOptions?.setOption(.autoRead, value: false)
                return
            }
            attach(connect, credentials: credentials)
        case .publish(let publish):
            let waker = publisherWaker
            broker.withState(on: shard, current: id, outbox: &outbox) {
                $0.publish(id, publish, now: now, receiptWaiter: waker, into: &$1)
            }
        case .puback(let ack):
            broker.withState(on: shard, current: id, outbox: &outbox) {
                $0.acknowledge(id, .puback, ack, now: now, into: &$1)
            }
        case .pubrec(let ack):
            broker.withState(on: shard, current: id, outbox: &outbox) {
                $0.acknowledge(id, .pubrec, ack, now: now, into: &$1)
            }
        case .pubcomp(let ack):
            broker.withState(on: shard, current: id, outbox: &outbox) {
                $0.acknowledge(id, .pubcomp, ack, now: now, into: &$1)
            }
        case .pubrel(let ack): broker.withState(on: shard, current: id, outbox: &outbox) { $0.publishRelease(id, ack) }
        case .subscribe(let subscribe):
            broker.withState(on: shard, current: id, outbox: &outbox) { $0.subscribe(id, subscribe, now: now) }
        case .unsubscribe(let unsubscribe):
            broker.withState(on: shard, current: id, outbox: &outbox) { $0.unsubscribe(id, unsubscribe) }
        case .disconnect(let disconnect):
            broker.withState(on: shard, current: id, outbox: &outbox) { $0.disconnect(id, disconnect, now: now) }
        default: return
        }
        drainOutbound(flush: false)
    }

    private func attach(_ connect: Connect, credentials: Credentials) {
        let now = BrokerInstant.now()
        let id = self.id
        version = connect.protocolVersion
        if version == .v5 {
            outboundAliases = OutboundTopicAliases(maximum: connect.properties.topicAliasMaximum ?? 0)
        }
        attached = true
        let listener = broker.policyListener(self.listener)
        var waits = false
        broker.withState(on: shard, current: id, outbox: &outbox) { state in
            let actions = state.connect(id, connect, credentials: credentials, listener: listener, now: now)
            if case .awaitSession? = actions.last {
                waits = true
            } else {
                self.startKeepAlive(seconds: state.grantedKeepAlive(requested: connect.keepAlive))
            }
            return actions
        }
        if waits {
            // Its session is on another event loop's shard; ``continueAfterSession()`` follows.
            attached = false
            heldConnect = HeldConnect(connect: connect, credentials: credentials)
            try? context?.channel.syncOptions?.setOption(.autoRead, value: false)
        }
    }

    /// Checks the user name and password against the password file, on this event loop: PBKDF2
    /// with Mosquitto's 101 rounds takes microseconds. Failures are logged with the address.
    /// With `use_identity_as_username`, the client certificate's Common Name replaces the user
    /// name and no password is checked.
    private func checkCredentials(_ connect: inout Connect) -> Credentials {
        // Formatted only when a failure is logged, not for every CONNECT.
        var address: String { context?.remoteAddress.map { "\($0)" } ?? "unknown" }
        if listener == MQTTBroker.internalListener { return .trusted }
        if broker.options.listeners[listener].tls?.useIdentityAsUsername == true {
            let certificate = try? context?.pipeline.syncOperations.nioSSL_peerCertificate()
            guard let name = certificate?.subjectName.first(where: { $0.type == .commonName })?.value else {
                broker.logger.warning(
                    "authentication failed: no client certificate Common Name",
                    metadata: ["address": "\(address)"]
                )
                return .invalid
            }
            connect.username = name
            connect.password = nil
            return .valid
        }
        guard let username = connect.username else { return .none }
        guard let passwords = broker.passwordFile(forListener: listener) else { return .unchecked }
        let password = connect.password.map { Array($0.readableBytesView) } ?? []
        if passwords.verify(username: username, password: password) { return .valid }
        broker.logger.warning("authentication failed", metadata: ["address": "\(address)", "username": "\(username)"])
        return .invalid
    }

    /// Writes, in order, what this connection's queue holds, up to the first action that waits
    /// for a store commit not yet made; that commit wakes it again. Called on this connection's
    /// loop: after each of its own packets, and when another loop or a commit wakes it.
    func drainOutbound(flush: Bool) {
        if draining {
            drainAgain = true
            return
        }
        guard let handle, !closing else { return }
        draining = true
        defer { draining = false }
        repeat {
            drainAgain = false
            let committed = broker.commits.committed
            var ready = Deque<OutboundQueue.Entry>()
            swap(&ready, &takenEntries)
            let blockedOn = outbound.queue.withLock { $0.take(committed: committed, into: &ready) }
            defer {
                // A busy connection keeps both buffers; an idle one keeps neither.
                ready.removeAll(keepingCapacity: ready.count > Self.keptBatch)
                swap(&ready, &takenEntries)
            }
            for entry in ready {
                switch entry.action {
                case .send(_, let packet), .acknowledge(_, let packet, _): write(packet)
                case .close:
                    close(reason: nil)
                    return
                case .awaitSession: break  // handled by the broker, never queued
                }
                // A long batch is handed to the socket as it goes, so that a client that reads
                // keeps its connection writable and only one that does not sees backpressure.
                if unflushedBytes >= Self.flushThreshold { flushIfNeeded() }
            }
            if let blockedOn, !broker.commits.wait(id, for: blockedOn, handle: handle) { drainAgain = true }
        } while drainAgain && !closing
        if flush { flushIfNeeded() }
    }

    /// A batch of actions larger than this keeps its buffer for the next one.
    static let keptBatch = 8

    /// Unflushed bytes after which a drain flushes before going on: below the write buffer's
    /// high water mark (``MQTTBroker/writeBufferWaterMark``).
    static let flushThreshold = 64 * 1024

    private func write(_ packet: MQTTPacket) {
        guard let context, !closing else { return }
        var packet = packet
        if case .publish(var publish) = packet, outboundAliases.maximum > 0 || machine.mountsTopics {
            machine.outbound(&publish)
            if outboundAliases.maximum > 0 { outboundAliases.apply(to: &publish) }
            packet = .publish(publish)
        } else if case .connack(var connack) = packet, let authentication = connackAuthentication {
            connackAuthentication = nil
            for property in authentication { try? connack.properties.append(property) }
            packet = .connack(connack)
        }
        // Every packet of a burst goes into one buffer, handed to NIO when the burst is flushed:
        // one allocation and one write per burst rather than per packet.
        if output == nil { output = context.channel.allocator.buffer(capacity: Self.outputCapacity) }
        let before = output!.readableBytes
        do {
            if case .publish(let publish) = packet, publish.payload.readableBytes >= Self.sharedPayloadSize {
                // A large payload is not copied: NIO writes it from the buffer it arrived in, which
                // every subscriber of the message shares, right behind this packet's head.
                try publish.writeHead(to: &output!, version: version)
                unflushedBytes += output!.readableBytes - before + publish.payload.readableBytes
                bytesWritten += UInt64(output!.readableBytes + publish.payload.readableBytes)
                context.write(wrapOutboundOut(output.take()!), promise: nil)
                context.write(wrapOutboundOut(publish.payload), promise: nil)
                packetsWritten += 1
                needsFlush = true
                return
            }
            try packet.write(to: &output!, version: version)
        } catch {
            broker.logger.error("could not encode \(packet.type): \(error)")
            return
        }
        packetsWritten += 1
        unflushedBytes += output!.readableBytes - before
        needsFlush = true
    }

    /// The first size of a burst's output buffer: most bursts are a few small packets.
    static let outputCapacity = 512

    /// Payloads from this size on are written from their own buffer rather than copied into the
    /// burst's: below it a copy costs less than another buffer for NIO to gather.
    static let sharedPayloadSize = 4096

    private func flushIfNeeded() {
        guard needsFlush, let context else { return }
        needsFlush = false
        unflushedBytes = 0
        if let buffer = output.take() {
            bytesWritten += UInt64(buffer.readableBytes)
            context.write(wrapOutboundOut(buffer), promise: nil)
        }
        context.flush()
        broker.counters.packetsSent.add(packetsWritten, ordering: .relaxed)
        broker.counters.bytesSent.add(bytesWritten, ordering: .relaxed)
        packetsWritten = 0
        bytesWritten = 0
    }

    /// Answers a broken rule as the specification asks, then closes: a DISCONNECT with the reason
    /// code on MQTT 5, or for an unknown protocol level a 3.1.1-style CONNACK "unacceptable
    /// protocol version", which every client version can read (§3.1.2.2).
    private func refuse(_ error: TernError) {
        // What the state queued before the broken packet goes first.
        drainOutbound(flush: false)
        broker.logger.notice(
            "closing connection",
            metadata: ["connection": "\(id)", "reason": "\(error.reasonCode)", "detail": "\(error.reason)"]
        )
        if attached, version == .v5 {
            write(.disconnect(Disconnect(reasonCode: error.reasonCode)))
        } else if !attached, error.reasonCode == .unsupportedProtocolVersion, let context {
            // Before CONNECT nothing can be queued for the connection: written at once.
            if output == nil { output = context.channel.allocator.buffer(capacity: 4) }
            output!.writeBytes([0x20, 0x02, 0x00, 0x01])
            needsFlush = true
        }
        close(reason: nil)
    }

    func close(reason: String?) {
        guard !closing, let context else { return }
        dispatchOutbox()
        if let reason {
            broker.logger.debug("closing connection", metadata: ["connection": "\(id)", "reason": "\(reason)"])
        }
        flushIfNeeded()
        closing = true
        stopTimer()
        context.close(promise: nil)
    }

    /// Sends DISCONNECT 0x8B (Server shutting down) to an MQTT 5 client and closes.
    func shutDown() -> EventLoopFuture<Void> {
        guard let context else { return broker.group.any().makeSucceededVoidFuture() }
        if attached, version == .v5 { write(.disconnect(Disconnect(reasonCode: .serverShuttingDown))) }
        flushIfNeeded()
        closing = true
        return context.close().recover { _ in }
    }

    // MARK: Keep alive

    /// Cancels the connect or keep-alive timer and lets go of it: its task holds a closure that
    /// holds this handler, so keeping the `Scheduled` would keep the handler alive forever.
    private func stopTimer() {
        timer?.cancel()
        timer = nil
    }

    /// §3.1.2.10: no packet for 1.5 times the keep alive ends the connection.
    private func startKeepAlive(seconds: UInt16) {
        stopTimer()
        guard seconds > 0, let context else { return }
        let timeout = TimeAmount.milliseconds(Int64(seconds) * 1500)
        keepAliveTimeout = timeout
        timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout) { [self] in checkKeepAlive() }
    }

    private func checkKeepAlive() {
        guard let timeout = keepAliveTimeout, let context, !closing else { return }
        let idle = context.eventLoop.now - lastRead
        if idle >= timeout {
            refuse(TernError(.keepAliveTimeout, "no packet for \(idle.nanoseconds / 1_000_000) ms"))
        } else {
            timer = context.eventLoop.assumeIsolated().scheduleTask(in: timeout - idle) { [self] in checkKeepAlive() }
        }
    }
}

@available(*, unavailable)
extension MQTTConnectionHandler: Sendable {}

/// A CONNECT held back with its checked credentials (``MQTTConnectionHandler``), out of line: a
/// connection rarely holds one, and a `Connect` is wide.
private final class HeldConnect {
    let connect: Connect
    let credentials: Credentials

    init(connect: Connect, credentials: Credentials) {
        self.connect = connect
        self.credentials = credentials
    }
}
