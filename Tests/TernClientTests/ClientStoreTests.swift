import NIOCore
import TernCodec
import Testing

@testable import TernClient

/// What a new client inherits from the store its configuration names.
@Suite("Client stores")
struct ClientStoreTests {
    /// Starts one QoS 1 publication on a client that never connects, and returns a second client
    /// made from the same configuration.
    static func successor(store: any ClientStore) async throws -> MQTTClient {
        var configuration = MQTTClientConfiguration(host: "127.0.0.1", port: 1, clientID: "inheritor")
        configuration.store = store
        let first = MQTTClient(configuration: configuration)
        try await first.publish(to: try TopicName("t"), payload: ByteBuffer(string: "x"), qos: .atLeastOnce) { _ in }
        #expect(await first.inflightCount == 1)
        return MQTTClient(configuration: configuration)
    }

    @Test("InMemoryClientStore hands the in-flight message to the next client with the same store")
    func inMemoryHandsOver() async throws {
        let next = try await Self.successor(store: InMemoryClientStore())
        #expect(await next.inflightCount == 1)
    }

    @Test("The default, TransientClientStore, keeps nothing beyond the client itself")
    func transientKeepsNothing() async throws {
        #expect(MQTTClientConfiguration(clientID: "c").store is TransientClientStore)
        let next = try await Self.successor(store: TransientClientStore())
        #expect(await next.inflightCount == 0)
    }
}
