import Foundation
import NIOCore
import NIOPosix
import TernBroker
import TernBrokerTesting
import TernCodec
import Testing

@testable import TernClient

/// A client given several servers of one service (the nodes of a cluster) connects to the first
/// that accepts, and after losing its server goes on with the next one.
@Suite("Clients with several servers")
struct ServerFailoverTests {
    /// A port nothing listens on: bound, then let go.
    static func closedPort() async throws -> Int {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = channel.localAddress?.port ?? 0
        try await channel.close()
        return port
    }

    @Test("connect() tries each server in turn: a refused connection moves on to the next")
    func connectMovesOnToTheNextServer() async throws {
        let refusing = try await Self.closedPort()
        try await withTestBroker { _, port in
            var configuration = MQTTClientConfiguration(host: "127.0.0.1", port: refusing, clientID: "failover-a")
            configuration.alternateServers = [ServerAddress(host: "127.0.0.1", port: port)]
            configuration.reconnect = nil
            let client = MQTTClient(configuration: configuration)
            let result = try await client.connect()
            #expect(result.sessionPresent == false)
            #expect(await client.isConnected)
            await client.disconnect()
        }
    }

    @Test(
        "MQTTClientConfiguration(urls:) reads each URL; the first gives the scheme's settings, the others their addresses"
    )
    func urls() throws {
        let configuration = try MQTTClientConfiguration(
            urls: ["mqtt://a.example:1884", "mqtt://b.example", "mqtt://[::1]:1999"],
            clientID: "c"
        )
        #expect(
            configuration.servers == [
                ServerAddress(host: "a.example", port: 1884), ServerAddress(host: "b.example", port: 1883),
                ServerAddress(host: "::1", port: 1999),
            ]
        )
        #expect(throws: MQTTClientError.self) { try MQTTClientConfiguration(urls: [], clientID: "c") }
    }

    @Test("A client whose server goes away reconnects to the next one, subscribes again there and receives")
    func reconnectsToTheNextServer() async throws {
        try await withTestBroker { second, secondPort in
            var options = BrokerOptions()
            options.listeners = [.init(host: "127.0.0.1", port: 0)]
            options.sysInterval = 0
            let first = MQTTBroker(options: options)
            let running = Task { try await first.run() }
            let firstPort = try #require(try await first.waitUntilListening()[0].port)

            var configuration = MQTTClientConfiguration(host: "127.0.0.1", port: firstPort, clientID: "failover-b")
            configuration.alternateServers = [ServerAddress(host: "127.0.0.1", port: secondPort)]
            configuration.reconnect?.initialDelay = .milliseconds(20)
            let client = MQTTClient(configuration: configuration)
            var states = await client.connectionStates().makeAsyncIterator()
            try await client.connect()
            #expect(await states.next() == true)
            let messages = MessageCollector(try await client.subscribe(to: "f/#", qos: .atLeastOnce))

            running.cancel()  // the first server shuts down
            _ = await running.result
            #expect(await states.next() == false)
            #expect(await states.next() == true, "no reconnection to the second server")

            var publisherConfiguration = MQTTClientConfiguration(
                host: "127.0.0.1",
                port: secondPort,
                clientID: "failover-publisher"
            )
            publisherConfiguration.reconnect = nil
            let publisher = MQTTClient(configuration: publisherConfiguration)
            try await publisher.connect()
            // The subscription reaches the second server after the CONNACK: publish until it routes.
            try await eventually {
                _ = try? await publisher.publish(to: "f/x", "after", qos: .atMostOnce)
                return !messages.received.isEmpty
            }
            #expect(messages.received.first?.string == "after")
            await publisher.disconnect()
            await client.disconnect()
            _ = second
        }
    }
}
