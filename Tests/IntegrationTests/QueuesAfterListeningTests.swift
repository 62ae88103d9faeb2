import Dispatch
import Foundation
import NIOCore
import TernBrokerCore
import TernBrokerTesting
import TernCodec
import TernStore
import TernStoreSQLite
import Testing

@testable import TernBroker

/// A SQLite store whose queues reach the broker when the test opens the gate.
final class GatedStore: TernStore {
    let inner: SQLiteStore
    private let gate = DispatchSemaphore(value: 0)

    init(_ inner: SQLiteStore) { self.inner = inner }

    /// Lets ``loadQueues()`` go on.
    func open() { gate.signal() }

    func load() throws -> StoreSnapshot { try inner.load() }
    func loadQueues() throws -> StoredQueues {
        // Bounded, so that a failed test still lets the broker stop.
        _ = gate.wait(timeout: .now() + 30)
        return try inner.loadQueues()
    }
    func start(onCommit: @escaping @Sendable (StoreCommit) -> Void) { inner.start(onCommit: onCommit) }
    func submit(_ changes: [StoreChange]) -> UInt64? { inner.submit(changes) }
    func submit(_ changes: [StoreChange], startingCommit: Bool) -> UInt64? {
        inner.submit(changes, startingCommit: startingCommit)
    }
    func startCommit() { inner.startCommit() }
    func close() { inner.close() }
    var statistics: StoreStatistics { inner.statistics }
}

@Suite("Queues read after the listeners open")
struct QueuesAfterListeningTests {
    static func persistentConnect(_ id: String, cleanStart: Bool) -> Connect {
        var properties = Properties()
        properties.sessionExpiryInterval = 600
        return Connect(clientIdentifier: id, cleanStart: cleanStart, properties: properties)
    }

    @Test(
        "A stored session's CONNECT (and what follows it) waits for its queue; a newcomer is answered meanwhile",
        .timeLimit(.minutes(1))
    )
    func storedSessionWaitsNewcomerDoesNot() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("tern-gated-\(UUID().uuidString).db")
            .path
        defer { for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) } }
        // First run: "sub" subscribes and goes away; one QoS 1 message is queued for it.
        try await withTestBroker({ $0.store = try? SQLiteStore(path: path) }) { _, port in
            var sub = try await TestClient.connect(port: port)
            _ = try await sub.handshake(Self.persistentConnect("sub", cleanStart: true))
            try await sub.send(
                .subscribe(
                    Subscribe(
                        packetIdentifier: 1,
                        subscriptions: [.init(filter: try TopicFilter("q/#"), options: .init(qos: .atLeastOnce))]
                    )
                )
            )
            guard case .suback? = try await sub.next() else { throw UnexpectedPacket(description: "no SUBACK") }
            try await sub.send(.disconnect(Disconnect()))
            await sub.close()
            var publisher = try await TestClient.connect(port: port)
            _ = try await publisher.handshake(Connect(clientIdentifier: "pub"))
            try await publisher.send(
                .publish(
                    Publish(
                        topic: try TopicName("q/1"),
                        payload: ByteBuffer(string: "m1"),
                        qos: .atLeastOnce,
                        packetIdentifier: 1
                    )
                )
            )
            guard case .puback? = try await publisher.next() else { throw UnexpectedPacket(description: "no PUBACK") }
            await publisher.close()
        }

        let store = GatedStore(try SQLiteStore(path: path))
        defer { store.open() }
        try await withTestBroker({ $0.store = store }) { broker, port in
            var sub = try await TestClient.connect(port: port)
            // CONNECT and PINGREQ together, as a client that does not wait for CONNACK sends them.
            try await sub.send(.connect(Self.persistentConnect("sub", cleanStart: false)))
            try await sub.send(.pingreq)
            let deadline = ContinuousClock.now + .seconds(20)
            while broker.connectionsWaitingForQueues < 1, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(10))
            }
            #expect(broker.connectionsWaitingForQueues == 1)

            var newcomer = try await TestClient.connect(port: port)
            let answered = try await newcomer.handshake(Connect(clientIdentifier: "newcomer"))
            #expect(answered.reasonCode == .success)
            #expect(broker.connectionsWaitingForQueues == 1)
            await newcomer.close()

            store.open()
            guard case .connack(let ack)? = try await sub.next() else {
                throw UnexpectedPacket(description: "no CONNACK")
            }
            #expect(ack.sessionPresent)
            guard case .publish(let publish)? = try await sub.next() else {
                throw UnexpectedPacket(description: "no queued PUBLISH")
            }
            #expect(String(buffer: publish.payload) == "m1")
            guard case .pingresp? = try await sub.next() else { throw UnexpectedPacket(description: "no PINGRESP") }
            #expect(broker.connectionsWaitingForQueues == 0)
            await sub.close()
        }
    }
}
