import NIOCore
import NIOEmbedded
import Synchronization
import TernCodec
import TernStore

@testable import TernBroker
@testable import TernBrokerCore

/// One broker connection on an `EmbeddedChannel`, so that a test decides exactly when each packet
/// arrives, when a read burst ends and when the socket is writable: the interleavings that race
/// on real event loops happen here in the order the test writes them.
final class EmbeddedConnection {
    let channel: EmbeddedChannel
    private var decoder = MQTTPacketDecoder(protocolVersion: .v5)
    /// What was written and not yet decoded.
    private var pending = ByteBuffer()

    init(_ broker: MQTTBroker, id: UInt64) throws {
        channel = EmbeddedChannel(loop: EmbeddedEventLoop())
        try channel.pipeline.syncOperations.addHandler(
            MQTTConnectionHandler(broker: broker, id: ConnectionID(id), listener: 0)
        )
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
    }

    /// The packet arrives; with `endBurst` false the read burst stays open (no channelReadComplete).
    func receive(_ packet: MQTTPacket, endBurst: Bool = true) throws {
        var buffer = ByteBuffer()
        try packet.write(to: &buffer, version: .v5)
        channel.pipeline.fireChannelRead(buffer)
        if endBurst { channel.pipeline.fireChannelReadComplete() }
    }

    func endBurst() {
        channel.pipeline.fireChannelReadComplete()
    }

    func setWritable(_ writable: Bool) {
        channel.isWritable = writable
        channel.pipeline.fireChannelWritabilityChanged()
    }

    /// Everything written to the socket since the last call, decoded.
    func sent() throws -> [MQTTPacket] {
        // A packet may span writes (a large payload goes in a buffer of its own), so the bytes
        // are read as one stream.
        while var buffer = try channel.readOutbound(as: ByteBuffer.self) { pending.writeBuffer(&buffer) }
        var packets: [MQTTPacket] = []
        while let packet = try decoder.decodePacket(from: &pending) { packets.append(packet) }
        pending.discardReadBytes()
        return packets
    }

    func sentPublishes() throws -> [Publish] {
        try sent().compactMap { if case .publish(let publish) = $0 { publish } else { nil } }
    }

    func close() throws {
        _ = try? channel.finish()
    }
}

extension Publish {
    var text: String { String(buffer: payload) }
}

/// A store whose commits happen when the test says so, on the test's thread.
final class ManualStore: TernStore {
    private struct State {
        var submitted: UInt64 = 0
        var onCommit: (@Sendable (StoreCommit) -> Void)?
        var changes: [StoreChange] = []
        var commitsStarted = 0
    }
    private let state = Mutex(State())

    func load() throws -> StoreSnapshot { StoreContents().snapshot() }

    func start(onCommit: @escaping @Sendable (StoreCommit) -> Void) {
        state.withLock { $0.onCommit = onCommit }
    }

    func submit(_ changes: [StoreChange]) -> UInt64? {
        state.withLock { state in
            state.submitted += 1
            state.changes += changes
            return state.submitted
        }
    }

    func submit(_ changes: [StoreChange], startingCommit: Bool) -> UInt64? {
        let ticket = submit(changes)
        if startingCommit { startCommit() }
        return ticket
    }

    func startCommit() {
        state.withLock { $0.commitsStarted += 1 }
    }

    /// How many times a commit was asked for (``startCommit()``, or a submission that starts one).
    var commitsStarted: Int { state.withLock { $0.commitsStarted } }

    /// Every change submitted so far, in order.
    var changes: [StoreChange] { state.withLock { $0.changes } }

    /// The ticket of the last batch submitted.
    var lastTicket: UInt64 { state.withLock { $0.submitted } }

    /// Reports every batch up to `ticket` committed.
    func commit(upTo ticket: UInt64) {
        let onCommit = state.withLock { $0.onCommit }
        onCommit?(StoreCommit(ticket: ticket, duration: .zero))
    }

    func close() {}

    var statistics: StoreStatistics { StoreStatistics() }
}
