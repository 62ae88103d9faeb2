import NIOCore
import NIOEmbedded
import TernCodec
import Testing

@testable import TernBroker

/// The connect timeout and the keep alive, on an `EmbeddedEventLoop`'s virtual clock: the test
/// moves time, so these run in microseconds and cannot be thrown off by a loaded machine.
@Suite("Connection timers")
struct ConnectionTimerTests {
    func makeBroker(connectTimeout: Int64 = 10) -> MQTTBroker {
        var options = BrokerOptions()
        options.listeners = [.init(host: "127.0.0.1", port: 0)]
        options.sysInterval = 0
        options.connectTimeout = connectTimeout
        return MQTTBroker(options: options)
    }

    @Test("a client that never finishes its CONNECT is dropped at the connect timeout, not before")
    func connectTimeout() throws {
        let client = try EmbeddedConnection(makeBroker(connectTimeout: 3), id: 1)
        // The start of a CONNECT, then silence.
        client.channel.pipeline.fireChannelRead(ByteBuffer(bytes: [0x10, 0x20, 0x00, 0x04]))
        client.channel.embeddedEventLoop.advanceTime(by: .milliseconds(2_999))
        #expect(client.channel.isActive)
        client.channel.embeddedEventLoop.advanceTime(by: .milliseconds(1))
        #expect(!client.channel.isActive)
        #expect(try client.sent().isEmpty)
    }

    @Test("a client that sends CONNECT in time is not dropped by the connect timeout")
    func connectInTime() throws {
        let client = try EmbeddedConnection(makeBroker(connectTimeout: 3), id: 1)
        client.channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        try client.receive(.connect(Connect(clientIdentifier: "on-time", keepAlive: 0)))
        client.channel.embeddedEventLoop.advanceTime(by: .seconds(60))
        #expect(client.channel.isActive)
    }

    @Test("§3.1.2.10 a client silent for 1.5 × keep alive gets DISCONNECT 0x8D; any packet restarts the wait")
    func keepAlive() throws {
        let client = try EmbeddedConnection(makeBroker(), id: 1)
        try client.receive(.connect(Connect(clientIdentifier: "quiet", keepAlive: 2)))
        _ = try client.sent()
        let loop = client.channel.embeddedEventLoop
        loop.advanceTime(by: .milliseconds(2_900))
        try client.receive(.pingreq)
        #expect(try client.sent() == [.pingresp])
        // 2.9 s after the PINGREQ: still inside 1.5 × 2 s.
        loop.advanceTime(by: .milliseconds(2_900))
        #expect(client.channel.isActive)
        #expect(try client.sent().isEmpty)
        loop.advanceTime(by: .milliseconds(100))
        #expect(try client.sent() == [.disconnect(Disconnect(reasonCode: .keepAliveTimeout))])
        #expect(!client.channel.isActive)
    }
}
