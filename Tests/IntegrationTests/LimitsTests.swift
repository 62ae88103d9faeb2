import NIOCore
import Synchronization
import TernBroker
import TernBrokerCore
import TernBrokerTesting
import TernCodec
import Testing

/// The limits that protect the broker, with Mosquitto's names: `max_connections` per listener,
/// `memory_limit`, and `mount_point`, each while a bystander keeps working.
@Suite("Limits")
struct LimitsTests {
    static func publish(_ topic: String, _ payload: String, qos: QoS = .atMostOnce, id: UInt16 = 0) -> MQTTPacket {
        .publish(
            Publish(topic: try! TopicName(topic), payload: ByteBuffer(string: payload), qos: qos, packetIdentifier: id)
        )
    }

    @Test("max_connections 100: connection 101 is closed at accept while the first 100 work; a freed slot is usable")
    func maxConnections() async throws {
        try await withTestBroker({ options in
            var limited = BrokerOptions.Listener(host: "127.0.0.1", port: 0)
            limited.maxConnections = 100
            options.listeners = [limited, .init(host: "127.0.0.1", port: 0)]
        }) { broker, port in
            let other = try #require(try await broker.waitUntilListening()[1].port)
            var clients: [SequencedSubscriber] = []
            for index in 0..<100 {
                clients.append(
                    try await SequencedLoad.subscribe(
                        port: port,
                        clientID: "limited-\(index)",
                        filter: "limits/#",
                        qos: .atLeastOnce
                    )
                )
            }
            var refused = try await TestClient.connect(port: port)
            try? await refused.send(.connect(Connect(clientIdentifier: "one-too-many")))
            #expect(try await refused.next() == nil, "connection 101 got an answer instead of being closed")

            // The first 100 still work: a publisher on the other listener (not limited) reaches them all.
            let publication = SequencedLoad.Publication(
                clientID: "limits-pub",
                publisher: 7,
                topic: "limits/a",
                count: 50,
                qos: { _ in .atLeastOnce }
            )
            try await SequencedLoad.publish(port: other, publication)
            for client in clients {
                try await client.wait { $0.count >= 50 }
                let check = SequenceCheck(client.deliveries, published: [7: 50], qos: { _ in .atLeastOnce })
                #expect(check.outOfOrder == 0 && check.lost == 0, "\(check)")
            }

            // A slot freed by a client that leaves is taken by the next one.
            await clients.removeLast().close()
            let deadline = ContinuousClock.now + .seconds(10)
            var accepted = false
            while !accepted, ContinuousClock.now < deadline {
                var next = try await TestClient.connect(port: port)
                try? await next.send(.connect(Connect(clientIdentifier: "after-a-leave")))
                if case .connack(let ack)? = try await next.next() {
                    accepted = ack.reasonCode == .success
                } else {
                    try await Task.sleep(for: .milliseconds(10))  // the leaver's close is still on its way
                }
                await next.close()
            }
            #expect(accepted)
            for client in clients { await client.close() }
        }
    }

    @Test(
        "memory_limit: over it, CONNECT gets 0x97 (3.1.1: 3) and a v5 PUBLISH QoS 1 gets PUBACK 0x97; a bystander stays connected and works again once under"
    )
    func memoryLimit() async throws {
        let usage = Mutex(10_000_000)
        try await withTestBroker({ options in
            options.memoryLimit = 50_000_000
            options.memoryCheckInterval = .milliseconds(10)
            options.memoryUsage = { usage.withLock { $0 } }
        }) { broker, port in
            var bystander = try await TestClient.connect(port: port)
            #expect(try await bystander.handshake(Connect(clientIdentifier: "bystander")).reasonCode == .success)
            try await bystander.send(
                .subscribe(
                    Subscribe(
                        packetIdentifier: 1,
                        subscriptions: [.init(filter: try TopicFilter("mem/#"), options: .init(qos: .atLeastOnce))]
                    )
                )
            )
            guard case .suback? = try await bystander.next() else { throw UnexpectedPacket(description: "no SUBACK") }

            usage.withLock { $0 = 60_000_000 }
            try await Self.waitUntil { broker.isOverMemoryLimit }
            var refused = try await TestClient.connect(port: port)
            #expect(try await refused.handshake(Connect(clientIdentifier: "late")).reasonCode == .quotaExceeded)
            var refused311 = try await TestClient.connect(port: port, version: .v3_1_1)
            let ack311 = try await refused311.handshake(Connect(protocolVersion: .v3_1_1, clientIdentifier: "old"))
            #expect(ack311.reasonCode.connectReturnCode == 3)

            try await bystander.send(Self.publish("mem/a", "refused", qos: .atLeastOnce, id: 5))
            #expect(
                try await bystander.next()
                    == .puback(PublishAcknowledgement(packetIdentifier: 5, reasonCode: .quotaExceeded))
            )
            try await bystander.send(.pingreq)
            #expect(try await bystander.next() == .pingresp)

            usage.withLock { $0 = 10_000_000 }
            try await Self.waitUntil { !broker.isOverMemoryLimit }
            try await bystander.send(Self.publish("mem/a", "taken", qos: .atLeastOnce, id: 6))
            var sawDelivery = false
            var sawAck = false
            for _ in 0..<2 {
                switch try await bystander.next() {
                case .publish(let publish)?: sawDelivery = String(buffer: publish.payload) == "taken"
                case .puback(let ack)?: sawAck = ack.packetIdentifier == 6 && ack.reasonCode == .success
                default: break
                }
            }
            #expect(sawDelivery && sawAck)
            var later = try await TestClient.connect(port: port)
            #expect(try await later.handshake(Connect(clientIdentifier: "later")).reasonCode == .success)
            await later.close()
            await bystander.close()
        }
    }

    @Test("memory_limit with the real resident-set probe: a limit below the process's size refuses connections")
    func memoryLimitMeasured() async throws {
        try await withTestBroker({ $0.memoryLimit = 1 }) { broker, port in
            try await Self.waitUntil { broker.isOverMemoryLimit }
            var client = try await TestClient.connect(port: port)
            #expect(try await client.handshake(Connect(clientIdentifier: "c")).reasonCode == .quotaExceeded)
            #expect(try await client.next() == nil)
        }
    }

    @Test("mount_point: a listener's clients publish and subscribe under its prefix and are sent topics without it")
    func mountPoint() async throws {
        try await withTestBroker({ options in
            var tenant = BrokerOptions.Listener(host: "127.0.0.1", port: 0)
            tenant.mountPoint = "tenant-a/"
            options.listeners = [.init(host: "127.0.0.1", port: 0), tenant]
        }) { broker, port in
            let tenantPort = try #require(try await broker.waitUntilListening()[1].port)
            var outside = try await TestClient.connect(port: port)
            _ = try await outside.handshake(Connect(clientIdentifier: "outside"))
            var inside = try await TestClient.connect(port: tenantPort)
            _ = try await inside.handshake(Connect(clientIdentifier: "inside"))
            for client in [0, 1] {
                let subscribe = MQTTPacket.subscribe(
                    Subscribe(
                        packetIdentifier: 1,
                        subscriptions: [.init(filter: try TopicFilter("#"), options: .init())]
                    )
                )
                if client == 0 { try await outside.send(subscribe) } else { try await inside.send(subscribe) }
            }
            guard case .suback? = try await outside.next(), case .suback? = try await inside.next() else {
                throw UnexpectedPacket(description: "no SUBACK")
            }

            try await inside.send(Self.publish("sensors/1", "from inside"))
            guard case .publish(let seenOutside)? = try await outside.nextIgnoringSys() else {
                throw UnexpectedPacket(description: "nothing outside")
            }
            #expect(seenOutside.topic.string == "tenant-a/sensors/1")
            guard case .publish(let seenInside)? = try await inside.next() else {
                throw UnexpectedPacket(description: "nothing inside")
            }
            #expect(seenInside.topic.string == "sensors/1")

            // Outside the prefix is invisible inside; under it arrives without it.
            try await outside.send(Self.publish("elsewhere/x", "not for the tenant"))
            try await outside.send(Self.publish("tenant-a/cmd", "for the tenant"))
            guard case .publish(let command)? = try await inside.next() else {
                throw UnexpectedPacket(description: "no command inside")
            }
            #expect(command.topic.string == "cmd")
            #expect(String(buffer: command.payload) == "for the tenant")
            await inside.close()
            await outside.close()
        }
    }

    /// Polls `condition` every 5 ms for at most 10 s.
    static func waitUntil(_ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while !condition() {
            guard ContinuousClock.now < deadline else {
                throw UnexpectedPacket(description: "condition not met within 10 s")
            }
            try await Task.sleep(for: .milliseconds(5))
        }
    }
}
