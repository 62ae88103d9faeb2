import Foundation
import NIOCore
import TernBroker
import TernBrokerTesting
import TernCodec
import TernStoreSQLite
import Testing

@Suite("$SYS/broker/store")
struct StoreSystemTopicTests {
    @Test("$SYS/broker/store/... gives the file size, stored sessions and messages, commit latency and batch size")
    func storeTopics() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tern-sys-\(UUID().uuidString).db")
            .path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        let store = try SQLiteStore(path: path)
        try await withTestBroker({
            $0.sysInterval = 1
            $0.store = store
        }) { _, port in
            // A stored session with one queued message.
            var away = try await TestClient.connect(port: port)
            var properties = Properties()
            properties.sessionExpiryInterval = 600
            _ = try await away.handshake(Connect(clientIdentifier: "stored", cleanStart: true, properties: properties))
            try await away.send(
                .subscribe(
                    Subscribe(
                        packetIdentifier: 1,
                        subscriptions: [.init(filter: try TopicFilter("kept/#"), options: .init(qos: .atLeastOnce))]
                    )
                )
            )
            guard case .suback? = try await away.next() else { throw UnexpectedPacket(description: "no SUBACK") }
            try await away.send(.disconnect(Disconnect()))
            await away.close()

            var client = try await TestClient.connect(port: port)
            _ = try await client.handshake(Connect(clientIdentifier: "sys-reader"))
            try await client.send(
                .publish(
                    Publish(
                        topic: try TopicName("kept/1"),
                        payload: ByteBuffer(string: "m"),
                        qos: .atLeastOnce,
                        packetIdentifier: 1
                    )
                )
            )
            guard case .puback? = try await client.next() else { throw UnexpectedPacket(description: "no PUBACK") }
            try await client.send(
                .subscribe(
                    Subscribe(
                        packetIdentifier: 2,
                        subscriptions: [.init(filter: try TopicFilter("$SYS/broker/store/#"))]
                    )
                )
            )
            var values: [String: String] = [:]
            // Read until a round reports the stored message (earlier rounds' retained values come first).
            func current() -> Bool {
                values["messages"] == "1" && values["sessions"] == "1" && (Int(values["commits"] ?? "") ?? 0) > 0
                    && values["commit latency/last"] != nil && values["file size"] != nil
                    && (Int(values["batch size/maximum"] ?? "") ?? 0) >= 1
            }
            while !current() {
                guard let packet = try await client.next(seconds: 20) else { break }
                if case .publish(let publish) = packet {
                    values[String(publish.topic.string.dropFirst("$SYS/broker/store/".count))] = String(
                        buffer: publish.payload
                    )
                }
            }
            #expect(values["sessions"] == "1")
            #expect(values["messages"] == "1")
            #expect((Int64(values["file size"] ?? "") ?? 0) > 0)
            #expect((Int(values["commits"] ?? "") ?? 0) > 0)
            #expect(values["commit latency/last"]?.hasSuffix(" us") == true)
            // The subscription and the message went in commits of one change or more.
            #expect((Int(values["batch size/maximum"] ?? "") ?? 0) >= 1)
            #expect((Int(values["batch size/average"] ?? "") ?? 0) >= 1)
            await client.close()
        }
    }
}
