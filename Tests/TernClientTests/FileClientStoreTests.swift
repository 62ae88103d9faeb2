import Foundation
import NIOCore
import TernBrokerTesting
import TernCodec
import Testing

@testable import TernClient

func temporaryDirectory() -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("tern-client-store-\(UUID().uuidString)")
        .path
    return path
}

@Suite("File client store")
struct FileClientStoreTests {
    @Test("a saved session reads back equal from a new store instance")
    func roundTrip() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var state = ClientSessionState()
        var properties = Properties()
        properties.messageExpiryInterval = 60
        try properties.append(.userProperty(name: "k", value: "v"))
        _ = state.start(
            Publish(
                topic: try TopicName("a/b"),
                payload: ByteBuffer(string: "one"),
                qos: .atLeastOnce,
                properties: properties
            )
        )
        let second = state.start(
            Publish(topic: try TopicName("c"), payload: ByteBuffer(string: "two"), qos: .exactlyOnce, retain: true)
        )
        _ = state.received(.pubrec, PublishAcknowledgement(packetIdentifier: second.packetIdentifier))
        _ = state.receivedExactlyOnce(77)

        try FileClientStore(directory: directory).save(state, clientID: "sensor/ü 1")
        let loaded = try FileClientStore(directory: directory).load(clientID: "sensor/ü 1")
        #expect(loaded == state)
        #expect(try FileClientStore(directory: directory).load(clientID: "other") == nil)
        try FileClientStore(directory: directory).remove(clientID: "sensor/ü 1")
        #expect(try FileClientStore(directory: directory).load(clientID: "sensor/ü 1") == nil)
    }

    @Test("a damaged file is refused, not misread")
    func damaged() throws {
        let directory = temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let store = try FileClientStore(directory: directory)
        var state = ClientSessionState()
        _ = state.start(Publish(topic: try TopicName("t"), payload: ByteBuffer(string: "x"), qos: .atLeastOnce))
        try store.save(state, clientID: "c")
        let file = try FileManager.default.contentsOfDirectory(atPath: directory).first { $0.hasSuffix(".session") }!
        let path = "\(directory)/\(file)"
        var bytes = try Data(contentsOf: URL(fileURLWithPath: path))
        bytes = bytes.prefix(bytes.count - 3)
        try bytes.write(to: URL(fileURLWithPath: path))
        #expect(throws: MQTTClientError.self) { try store.load(clientID: "c") }
    }

    @Test("a client restarted with the same store and id finishes the publication the old one started")
    func restartResumes() async throws {
        try await withTestBroker { _, port in
            let directory = temporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let subscriber = MQTTClient(configuration: MQTTClientConfiguration(port: port, clientID: "restart-sub"))
            try await subscriber.connect()
            let collector = MessageCollector(try await subscriber.subscribe(to: "restart/#", qos: .atLeastOnce))

            var configuration = MQTTClientConfiguration(port: port, clientID: "restart-pub")
            configuration.sessionExpiry = .never
            configuration.reconnect = nil
            configuration.store = try FileClientStore(directory: directory)
            let first = MQTTClient(configuration: configuration)
            try await first.connect()
            await first.dropConnection()
            try await eventually { await !first.isConnected }
            // Published while the link is down: only the store knows about it when the process "dies".
            let pending = Task { try await first.publish(to: "restart/t", "kept", qos: .atLeastOnce) }
            try await eventually { await first.inflightCount == 1 }
            await first.disconnect()
            _ = await pending.result

            configuration.cleanStart = false
            configuration.store = try FileClientStore(directory: directory)
            let second = MQTTClient(configuration: configuration)
            #expect(await second.inflightCount == 1)
            let result = try await second.connect()
            #expect(result.sessionPresent)
            let received = try await collector.wait(for: 1)
            #expect(received.map(\.string) == ["kept"])
            try await eventually { await second.inflightCount == 0 }
            await second.disconnect(sessionExpiry: .none)
            await subscriber.disconnect()
        }
    }
}
