import NIOCore
import TernBroker
import TernBrokerCore
import TernBrokerTesting
import TernCodec
import Testing

/// The broker over real sockets on 127.0.0.1, embedded in the test process.
@Suite("Broker over sockets")
struct BrokerSocketTests {
    func subscription(_ filter: String, qos: QoS = .atMostOnce) -> Subscribe {
        Subscribe(
            packetIdentifier: 1,
            subscriptions: [.init(filter: try! TopicFilter(filter), options: .init(qos: qos))]
        )
    }

    func publish(_ topic: String, _ payload: String, qos: QoS = .atMostOnce, id: UInt16 = 0) -> MQTTPacket {
        .publish(
            Publish(topic: try! TopicName(topic), payload: ByteBuffer(string: payload), qos: qos, packetIdentifier: id)
        )
    }

    @Test("a listener without an address (`listener PORT`) serves IPv6 and IPv4 clients, as Mosquitto's does")
    func everyAddress() async throws {
        try await withTestBroker({ $0.listeners = [.init(host: BrokerOptions.Listener.allAddresses, port: 0)] }) {
            _,
            port in
            var ipv6 = try await TestClient.connect(host: "::1", port: port)
            var ipv4 = try await TestClient.connect(host: "127.0.0.1", port: port)
            #expect(try await ipv6.handshake(Connect(clientIdentifier: "six")).reasonCode == .success)
            #expect(try await ipv4.handshake(Connect(clientIdentifier: "four")).reasonCode == .success)
            try await ipv6.send(.subscribe(subscription("t")))
            guard case .suback? = try await ipv6.next() else { throw UnexpectedPacket(description: "no SUBACK") }
            try await ipv4.send(publish("t", "across"))
            guard case .publish(let delivered)? = try await ipv6.next() else {
                throw UnexpectedPacket(description: "no PUBLISH")
            }
            #expect(String(buffer: delivered.payload) == "across")
            await ipv6.close()
            await ipv4.close()
        }
    }

    @Test("QoS 0, 1 and 2 end to end, on MQTT 5 and 3.1.1", arguments: [ProtocolVersion.v5, .v3_1_1])
    func publishSubscribe(version: ProtocolVersion) async throws {
        try await withTestBroker { _, port in
            var subscriber = try await TestClient.connect(port: port, version: version)
            #expect(
                try await subscriber.handshake(Connect(protocolVersion: version, clientIdentifier: "sub")).reasonCode
                    == .success
            )
            try await subscriber.send(.subscribe(subscription("sensors/+", qos: .exactlyOnce)))
            guard case .suback(let suback)? = try await subscriber.next() else { Issue.record("no SUBACK"); return }
            #expect(suback.reasonCodes == [.grantedQoS2])

            var publisher = try await TestClient.connect(port: port, version: version)
            _ = try await publisher.handshake(Connect(protocolVersion: version, clientIdentifier: "pub"))
            try await publisher.send(publish("sensors/a", "zero"))
            try await publisher.send(publish("sensors/a", "one", qos: .atLeastOnce, id: 1))
            guard case .puback(let puback)? = try await publisher.next() else { Issue.record("no PUBACK"); return }
            #expect(puback.packetIdentifier == 1)
            try await publisher.send(publish("sensors/a", "two", qos: .exactlyOnce, id: 2))
            #expect(try await publisher.next() == .pubrec(PublishAcknowledgement(packetIdentifier: 2)))
            try await publisher.send(.pubrel(PublishAcknowledgement(packetIdentifier: 2)))
            #expect(try await publisher.next() == .pubcomp(PublishAcknowledgement(packetIdentifier: 2)))

            var received: [String] = []
            while received.count < 3 {
                guard case .publish(let message)? = try await subscriber.next() else { Issue.record("closed"); return }
                received.append(String(buffer: message.payload))
                switch message.qos {
                case .atMostOnce: break
                case .atLeastOnce:
                    try await subscriber.send(
                        .puback(PublishAcknowledgement(packetIdentifier: message.packetIdentifier))
                    )
                case .exactlyOnce:
                    try await subscriber.send(
                        .pubrec(PublishAcknowledgement(packetIdentifier: message.packetIdentifier))
                    )
                    #expect(
                        try await subscriber.next()
                            == .pubrel(PublishAcknowledgement(packetIdentifier: message.packetIdentifier))
                    )
                    try await subscriber.send(
                        .pubcomp(PublishAcknowledgement(packetIdentifier: message.packetIdentifier))
                    )
                }
            }
            #expect(received == ["zero", "one", "two"])
            await subscriber.close()
            await publisher.close()
        }
    }

    @Test("§4.4 reconnecting with Clean Start 0 resumes the session: CONNACK session present, DUP=1, same packet id")
    func resumeRedelivers() async throws {
        try await withTestBroker { _, port in
            var properties = Properties()
            properties.sessionExpiryInterval = 300
            let connect = Connect(clientIdentifier: "durable", cleanStart: false, properties: properties)
            var first = try await TestClient.connect(port: port)
            #expect(try await first.handshake(connect).sessionPresent == false)
            try await first.send(.subscribe(subscription("jobs", qos: .atLeastOnce)))
            _ = try await first.next()

            var publisher = try await TestClient.connect(port: port)
            _ = try await publisher.handshake(Connect(clientIdentifier: "pub"))
            try await publisher.send(publish("jobs", "work", qos: .atLeastOnce, id: 9))
            guard case .publish(let original)? = try await first.next() else { Issue.record("not delivered"); return }
            #expect(!original.duplicate)
            await first.close()  // never acknowledged

            var second = try await TestClient.connect(port: port)
            #expect(try await second.handshake(connect).sessionPresent == true)
            guard case .publish(let again)? = try await second.next() else { Issue.record("not redelivered"); return }
            #expect(again.duplicate)
            #expect(again.packetIdentifier == original.packetIdentifier)
            #expect(String(buffer: again.payload) == "work")
            await second.close()
            await publisher.close()
        }
    }

    @Test("§3.1.4 a takeover sends the old connection DISCONNECT 0x8E and closes it")
    func takeover() async throws {
        try await withTestBroker { _, port in
            var old = try await TestClient.connect(port: port)
            _ = try await old.handshake(Connect(clientIdentifier: "twin"))
            var new = try await TestClient.connect(port: port)
            _ = try await new.handshake(Connect(clientIdentifier: "twin"))
            #expect(try await old.next() == .disconnect(Disconnect(reasonCode: .sessionTakenOver)))
            #expect(try await old.next() == nil)
            await new.close()
        }
    }

    @Test("a will is published when the connection drops without DISCONNECT")
    func willOnDrop() async throws {
        try await withTestBroker { _, port in
            var watcher = try await TestClient.connect(port: port)
            _ = try await watcher.handshake(Connect(clientIdentifier: "watcher"))
            try await watcher.send(.subscribe(subscription("status/#")))
            _ = try await watcher.next()
            var dying = try await TestClient.connect(port: port)
            let will = Connect.Will(topic: try TopicName("status/dying"), payload: ByteBuffer(string: "offline"))
            _ = try await dying.handshake(Connect(clientIdentifier: "dying", will: will))
            await dying.close()
            guard case .publish(let message)? = try await watcher.next() else { Issue.record("no will"); return }
            #expect(message.topic.string == "status/dying")
            #expect(String(buffer: message.payload) == "offline")
            await watcher.close()
        }
    }

    @Test("graceful shutdown sends MQTT 5 clients DISCONNECT 0x8B")
    func gracefulShutdown() async throws {
        var options = BrokerOptions()
        options.listeners = [.init(host: "127.0.0.1", port: 0)]
        options.sysInterval = 0
        let broker = MQTTBroker(options: options)
        let task = Task { try await broker.run() }
        let port = try await broker.waitUntilListening()[0].port!
        var client = try await TestClient.connect(port: port)
        _ = try await client.handshake(Connect(clientIdentifier: "c"))
        task.cancel()
        #expect(try await client.next() == .disconnect(Disconnect(reasonCode: .serverShuttingDown)))
        #expect(try await client.next() == nil)
        _ = await task.result
    }

    @Test("§3.1.2.5 wills wait for their Will Delay Interval, and the broker's timer re-arms after each one")
    func delayedWills() async throws {
        try await withTestBroker { _, port in
            var subscriber = try await TestClient.connect(port: port)
            _ = try await subscriber.handshake(Connect(clientIdentifier: "watcher"))
            try await subscriber.send(.subscribe(subscription("wills/+")))
            guard case .suback? = try await subscriber.next() else { throw UnexpectedPacket(description: "no SUBACK") }
            func leaver(_ name: String, willDelay: UInt32) async throws -> TestClient {
                var willProperties = Properties()
                willProperties.willDelayInterval = willDelay
                var properties = Properties()
                properties.sessionExpiryInterval = 60
                var client = try await TestClient.connect(port: port)
                let connack = try await client.handshake(
                    Connect(
                        clientIdentifier: name,
                        properties: properties,
                        will: .init(
                            topic: try TopicName("wills/\(name)"),
                            payload: ByteBuffer(string: name),
                            qos: .atMostOnce,
                            properties: willProperties
                        )
                    )
                )
                #expect(connack.reasonCode == .success)
                return client
            }
            let first = try await leaver("first", willDelay: 1)
            let second = try await leaver("second", willDelay: 2)
            let left = ContinuousClock.now
            // No DISCONNECT: both wills are due, each after its delay.
            await first.close()
            await second.close()
            var arrivals: [(String, Duration)] = []
            while arrivals.count < 2 {
                guard case .publish(let will)? = try await subscriber.next() else {
                    throw UnexpectedPacket(description: "no will")
                }
                arrivals.append((String(buffer: will.payload), ContinuousClock.now - left))
            }
            #expect(arrivals.map(\.0) == ["first", "second"])
            #expect(arrivals[0].1 >= .milliseconds(900), "the first will came early: \(arrivals[0].1)")
            #expect(arrivals[1].1 >= .milliseconds(1900), "the second will came early: \(arrivals[1].1)")
            await subscriber.close()
        }
    }
}

@Suite("Topic Aliases over sockets")
struct TopicAliasSocketTests {
    @Test("§3.3.2.3.4 the broker sends a client that allows aliases the topic once, then the alias")
    func outboundAliases() async throws {
        try await withTestBroker { _, port in
            var properties = Properties()
            properties.topicAliasMaximum = 4
            var subscriber = try await TestClient.connect(port: port)
            _ = try await subscriber.handshake(Connect(clientIdentifier: "aliased", properties: properties))
            try await subscriber.send(
                .subscribe(Subscribe(packetIdentifier: 1, subscriptions: [.init(filter: try TopicFilter("long/#"))]))
            )
            _ = try await subscriber.next()
            var publisher = try await TestClient.connect(port: port)
            _ = try await publisher.handshake(Connect(clientIdentifier: "p"))
            for n in 0..<2 {
                try await publisher.send(
                    .publish(Publish(topic: try TopicName("long/topic/name"), payload: ByteBuffer(string: "\(n)")))
                )
            }
            guard case .publish(let first)? = try await subscriber.next(),
                case .publish(let second)? = try await subscriber.next()
            else {
                Issue.record("not delivered")
                return
            }
            #expect(first.topic.string == "long/topic/name")
            #expect(first.properties.topicAlias == 1)
            #expect(second.topic.isEmpty)
            #expect(second.properties.topicAlias == 1)
            await subscriber.close()
            await publisher.close()
        }
    }
}

@Suite("$SYS topics")
struct SystemTopicTests {
    @Test("$SYS/broker/... carries Mosquitto's names and counts, retained, at sys_interval")
    func systemTopics() async throws {
        try await withTestBroker({ $0.sysInterval = 1 }) { _, port in
            var client = try await TestClient.connect(port: port)
            _ = try await client.handshake(Connect(clientIdentifier: "sys-reader"))
            try await client.send(
                .subscribe(
                    Subscribe(packetIdentifier: 1, subscriptions: [.init(filter: try TopicFilter("$SYS/broker/#"))])
                )
            )
            var values: [String: String] = [:]
            let wanted = [
                "version", "uptime", "clients/connected", "clients/total", "messages/received", "messages/sent",
                "bytes/received", "bytes/sent", "subscriptions/count", "retained messages/count",
                "publish/messages/dropped",
                "publish/messages/received", "publish/messages/dropped/backpressure", "clients/backpressured",
                "clients/backpressure events",
            ]
            // The retained values of an earlier round come first; read until a round counts this client.
            func current() -> Bool {
                wanted.allSatisfy { values[$0] != nil } && values["clients/connected"] == "1"
                    && values["subscriptions/count"] == "1" && (Int(values["bytes/received"] ?? "") ?? 0) > 0
                    && (Int(values["messages/received"] ?? "") ?? 0) >= 2
            }
            while !current() {
                guard let packet = try await client.next(seconds: 20) else { break }
                if case .publish(let publish) = packet {
                    values[String(publish.topic.string.dropFirst("$SYS/broker/".count))] = String(
                        buffer: publish.payload
                    )
                }
            }
            #expect(values["version"]?.hasPrefix("tern ") == true)
            #expect(values["clients/connected"] == "1")
            #expect(values["subscriptions/count"] == "1")
            #expect(Int(values["bytes/received"] ?? "") ?? 0 > 0)
            // Mosquitto's meanings: messages/ counts every packet (CONNECT, SUBSCRIBE), publish/ only PUBLISH.
            #expect(Int(values["messages/received"] ?? "") ?? 0 >= 2)
            #expect(values["publish/messages/received"] == "0")
            #expect(values["clients/backpressured"] == "0")
            await client.close()
        }
    }
}

@Suite("Enhanced authentication over sockets")
struct EnhancedAuthenticationSocketTests {
    struct Secret: EnhancedAuthentication {
        let method = "TEST-SECRET"
        func makeExchange(clientID: String) -> any AuthenticationExchange { Exchange() }
        struct Exchange: AuthenticationExchange {
            var asked = false
            mutating func step(_ data: ByteBuffer?) -> AuthenticationStep {
                if !asked {
                    asked = true
                    return .challenge(ByteBuffer(string: "password?"))
                }
                return data == ByteBuffer(string: "swordfish") ? .success(nil) : .failure
            }
        }
    }

    func properties(_ data: String?) -> Properties {
        var properties = Properties()
        try! properties.append(.authenticationMethod("TEST-SECRET"))
        if let data { try! properties.append(.authenticationData(ByteBuffer(string: data))) }
        return properties
    }

    @Test("§4.12 CONNECT, AUTH challenge, AUTH answer, CONNACK with the method; a wrong answer gets 0x87")
    func exchange() async throws {
        try await withTestBroker({ $0.authenticators = [Secret()] }) { _, port in
            var client = try await TestClient.connect(port: port)
            try await client.send(.connect(Connect(clientIdentifier: "a", properties: properties(nil))))
            #expect(
                try await client.next()
                    == .auth(Auth(reasonCode: .continueAuthentication, properties: properties("password?")))
            )
            try await client.send(.auth(Auth(reasonCode: .continueAuthentication, properties: properties("swordfish"))))
            guard case .connack(let ack)? = try await client.next() else { Issue.record("no CONNACK"); return }
            #expect(ack.reasonCode == .success)
            #expect(ack.properties.authenticationMethod == "TEST-SECRET")
            await client.close()

            var intruder = try await TestClient.connect(port: port)
            try await intruder.send(.connect(Connect(clientIdentifier: "b", properties: properties(nil))))
            _ = try await intruder.next()
            try await intruder.send(.auth(Auth(reasonCode: .continueAuthentication, properties: properties("guess"))))
            #expect(try await intruder.next() == .connack(ConnAck(reasonCode: .notAuthorized)))
            #expect(try await intruder.next() == nil)
        }
    }
}
