import Logging
import NIOCore
import NIOEmbedded
import NIOPosix
import Synchronization
import TernCodec
import Testing

@testable import TernClient

/// A broker played by the test over in-memory channels: each connection the client opens is the
/// next `NIOAsyncTestingChannel`, and the test reads what the client writes and answers by hand.
final class ScriptedBroker: Sendable {
    let channels: [NIOAsyncTestingChannel]
    private let next = Mutex(0)
    let version: ProtocolVersion

    init(connections: Int, version: ProtocolVersion = .v5) {
        channels = (0..<connections).map { _ in NIOAsyncTestingChannel() }
        self.version = version
    }

    var connector: MQTTClient.Connector {
        { _, _, _, _, initialize in
            let index = self.next.withLock { index in
                defer { index += 1 }
                return index
            }
            guard index < self.channels.count else {
                throw MQTTClientError(.timeout, reasonString: "no more scripted connections")
            }
            let channel = self.channels[index]
            try await channel.eventLoop.flatSubmit { initialize(channel) }.get()
            try await channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 1883)).get()
            return channel
        }
    }

    /// The next packet the client wrote on connection `index`, waiting at most 10 s.
    func read(_ index: Int) async throws -> MQTTPacket {
        let channel = channels[index]
        let version = self.version
        return try await withThrowingTaskGroup(of: MQTTPacket?.self) { group in
            group.addTask {
                var buffer = try await channel.waitForOutboundWrite(as: ByteBuffer.self)
                var decoder = MQTTPacketDecoder(protocolVersion: version)
                return try decoder.decodePacket(from: &buffer)
            }
            group.addTask {
                try await Task.sleep(for: .seconds(10))
                return nil
            }
            defer { group.cancelAll() }
            guard let packet = try await group.next() ?? nil else {
                throw MQTTClientError(.timeout, reasonString: "the client wrote nothing on connection \(index)")
            }
            return packet
        }
    }

    /// Sends `packet` to the client on connection `index`.
    func send(_ packet: MQTTPacket, on index: Int) async throws {
        var buffer = ByteBuffer()
        try packet.write(to: &buffer, version: version)
        try await channels[index].writeInbound(buffer)
    }

    func drop(_ index: Int) async throws {
        try await channels[index].close()
    }
}

func scriptedClient(_ broker: ScriptedBroker, policy: ClientSessionState.SessionLostPolicy = .dropInflight)
    -> MQTTClient
{
    var configuration = MQTTClientConfiguration(clientID: "scripted")
    configuration.sessionExpiry = .seconds(600)
    configuration.keepAlive = 0
    configuration.sessionLostPolicy = policy
    configuration.reconnect?.initialDelay = .milliseconds(1)
    return MQTTClient(
        configuration: configuration,
        group: MultiThreadedEventLoopGroup.singleton,
        logger: Logger(label: "test"),
        connector: broker.connector
    )
}

/// The client's reconnection rules against a scripted broker (MQTT 5.0 §4.4).
@Suite("Client against a scripted broker")
struct ScriptedBrokerTests {
    /// Connects the client on connection 0 and returns the CONNECT it sent.
    func handshake(_ client: MQTTClient, _ broker: ScriptedBroker) async throws -> Connect {
        async let connected = client.connect()
        guard case .connect(let connect) = try await broker.read(0) else { throw MQTTClientError(.refused) }
        try await broker.send(.connack(ConnAck()), on: 0)
        _ = try await connected
        return connect
    }

    @Test(
        "§4.4 messages the broker sends in the same write as CONNACK are acknowledged (the session is up with the CONNACK)"
    )
    func publishRightBehindConnack() async throws {
        let broker = ScriptedBroker(connections: 1)
        let client = scriptedClient(broker)
        async let connected = client.connect()
        guard case .connect = try await broker.read(0) else { throw MQTTClientError(.refused) }
        // One buffer: CONNACK and three queued QoS 1 messages, as a broker resuming a session sends them.
        var bytes = ByteBuffer()
        try MQTTPacket.connack(ConnAck(sessionPresent: true)).write(to: &bytes, version: .v5)
        for id: UInt16 in 1...3 {
            try MQTTPacket.publish(
                Publish(
                    topic: try TopicName("queued"),
                    payload: ByteBuffer(string: "\(id)"),
                    qos: .atLeastOnce,
                    packetIdentifier: id
                )
            ).write(to: &bytes, version: .v5)
        }
        try await broker.channels[0].writeInbound(bytes)
        _ = try await connected
        var acknowledged: [UInt16] = []
        for _ in 1...3 {
            guard case .puback(let ack) = try await broker.read(0) else {
                Issue.record("a queued message was not acknowledged")
                break
            }
            acknowledged.append(ack.packetIdentifier)
        }
        #expect(acknowledged == [1, 2, 3])
        await client.disconnect()
    }

    @Test("session present = 1: the unacknowledged PUBLISH goes again with DUP = 1 and its packet id, and completes")
    func sessionPresentRedelivers() async throws {
        let broker = ScriptedBroker(connections: 2)
        let client = scriptedClient(broker)
        let connect = try await handshake(client, broker)
        #expect(connect.properties.sessionExpiryInterval == 600)
        let publishing = Task { try await client.publish(to: "t", "x", qos: .atLeastOnce) }
        guard case .publish(let original) = try await broker.read(0) else { Issue.record("no PUBLISH"); return }
        #expect(!original.duplicate)

        try await broker.drop(0)
        guard case .connect(let reconnect) = try await broker.read(1) else { Issue.record("no reconnect"); return }
        #expect(reconnect.cleanStart == false)
        try await broker.send(.connack(ConnAck(sessionPresent: true)), on: 1)
        guard case .publish(let again) = try await broker.read(1) else { Issue.record("no redelivery"); return }
        #expect(again.duplicate)
        #expect(again.packetIdentifier == original.packetIdentifier)
        try await broker.send(.puback(PublishAcknowledgement(packetIdentifier: again.packetIdentifier)), on: 1)
        #expect(try await publishing.value == .success)
        await client.disconnect()
    }

    @Test(
        "session present = 0: in-flight state is dropped, the publish fails with sessionLost, and the client subscribes again"
    )
    func sessionLostDrops() async throws {
        let broker = ScriptedBroker(connections: 2)
        let client = scriptedClient(broker)
        _ = try await handshake(client, broker)
        async let subscribed = client.subscribe(to: "cmd/#", qos: .atLeastOnce)
        guard case .subscribe(let subscribe) = try await broker.read(0) else { Issue.record("no SUBSCRIBE"); return }
        try await broker.send(
            .suback(
                SubscribeAcknowledgement(packetIdentifier: subscribe.packetIdentifier, reasonCodes: [.grantedQoS1])
            ),
            on: 0
        )
        _ = try await subscribed
        let publishing = Task { try await client.publish(to: "t", "x", qos: .atLeastOnce) }
        _ = try await broker.read(0)

        try await broker.drop(0)
        _ = try await broker.read(1)
        try await broker.send(.connack(ConnAck(sessionPresent: false)), on: 1)
        guard case .subscribe(let again) = try await broker.read(1) else {
            Issue.record("not subscribed again"); return
        }
        #expect(again.subscriptions.map(\.filter.string) == ["cmd/#"])
        await #expect(throws: MQTTClientError(.sessionLost)) { try await publishing.value }
        #expect(await client.inflightCount == 0)
        await client.disconnect()
    }

    @Test("session present = 0 with the republish policy: the message goes again as new (DUP = 0)")
    func sessionLostRepublishes() async throws {
        let broker = ScriptedBroker(connections: 2)
        let client = scriptedClient(broker, policy: .republish)
        _ = try await handshake(client, broker)
        let publishing = Task { try await client.publish(to: "t", "x", qos: .atLeastOnce) }
        _ = try await broker.read(0)
        try await broker.drop(0)
        _ = try await broker.read(1)
        try await broker.send(.connack(ConnAck(sessionPresent: false)), on: 1)
        guard case .publish(let again) = try await broker.read(1) else { Issue.record("not republished"); return }
        #expect(!again.duplicate)
        try await broker.send(.puback(PublishAcknowledgement(packetIdentifier: again.packetIdentifier)), on: 1)
        #expect(try await publishing.value == .success)
        await client.disconnect()
    }

    @Test("§4.4 a pending PUBREL goes again after the reconnect, and PUBCOMP completes the QoS 2 publish")
    func pubrelRedelivered() async throws {
        let broker = ScriptedBroker(connections: 2)
        let client = scriptedClient(broker)
        _ = try await handshake(client, broker)
        let publishing = Task { try await client.publish(to: "t", "x", qos: .exactlyOnce) }
        guard case .publish(let publish) = try await broker.read(0) else { Issue.record("no PUBLISH"); return }
        try await broker.send(.pubrec(PublishAcknowledgement(packetIdentifier: publish.packetIdentifier)), on: 0)
        #expect(try await broker.read(0) == .pubrel(PublishAcknowledgement(packetIdentifier: publish.packetIdentifier)))

        try await broker.drop(0)
        _ = try await broker.read(1)
        try await broker.send(.connack(ConnAck(sessionPresent: true)), on: 1)
        #expect(try await broker.read(1) == .pubrel(PublishAcknowledgement(packetIdentifier: publish.packetIdentifier)))
        try await broker.send(.pubcomp(PublishAcknowledgement(packetIdentifier: publish.packetIdentifier)), on: 1)
        #expect(try await publishing.value == .success)
        await client.disconnect()
    }

    @Test("§2.2.1 after a resume, new publications do not reuse the identifiers still in flight")
    func packetIdentifiersAfterResume() async throws {
        let broker = ScriptedBroker(connections: 2)
        let client = scriptedClient(broker)
        _ = try await handshake(client, broker)
        let first = Task { try await client.publish(to: "t", "1", qos: .atLeastOnce) }
        guard case .publish(let one) = try await broker.read(0) else { return }
        let second = Task { try await client.publish(to: "t", "2", qos: .atLeastOnce) }
        guard case .publish(let two) = try await broker.read(0) else { return }
        try await broker.drop(0)
        _ = try await broker.read(1)
        try await broker.send(.connack(ConnAck(sessionPresent: true)), on: 1)
        _ = try await broker.read(1)
        _ = try await broker.read(1)
        let third = Task { try await client.publish(to: "t", "3", qos: .atLeastOnce) }
        guard case .publish(let three) = try await broker.read(1) else { return }
        #expect(![one.packetIdentifier, two.packetIdentifier].contains(three.packetIdentifier))
        for id in [one.packetIdentifier, two.packetIdentifier, three.packetIdentifier] {
            try await broker.send(.puback(PublishAcknowledgement(packetIdentifier: id)), on: 1)
        }
        _ = try await (first.value, second.value, third.value)
        await client.disconnect()
    }
}
