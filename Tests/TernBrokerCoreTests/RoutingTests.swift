import NIOCore
import TernBrokerTesting
import TernCodec
import Testing

@testable import TernBrokerCore

/// MQTT 5.0 §4.7 (topic matching), §3.3.4 (delivery to overlapping subscriptions), §3.8.3.1
/// (subscription options), §4.8.2 (shared subscriptions), §3.3.1.3 (retained messages).
@Suite("Routing")
struct RoutingTests {
    /// A broker with a publisher on connection 1 and subscribers on the next connections.
    static func broker(subscribers: [(String, [(String, SubscriptionOptions)], ProtocolVersion, UInt32?)])
        -> BrokerState
    {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        for (index, (clientID, filters, version, identifier)) in subscribers.enumerated() {
            let connection = conn(UInt64(index + 2))
            _ = state.connect(connection, connectPacket(clientID, version: version), now: t0)
            _ = state.subscribe(connection, subscribePacket(filters, identifier: identifier), now: t0)
        }
        return state
    }

    @Test("§4.7.1 + matches one level, # matches the parent and every level below")
    func wildcards() {
        var tree = TopicTree()
        for filter in ["a/+/c", "a/#", "#", "+/+", "a/b/c", "+"] {
            tree.subscribe(try! TopicFilter(filter), entry: .init(clientID: filter, options: .init(), identifier: nil))
        }
        func matching(_ topic: String) -> Set<String> { Set(tree.match(topic) { _ in true }.map(\.entry.clientID)) }
        #expect(matching("a/b/c") == ["a/+/c", "a/#", "#", "a/b/c"])
        #expect(matching("a") == ["a/#", "#", "+"])
        #expect(matching("a/b") == ["a/#", "#", "+/+"])
        #expect(matching("/x") == ["#", "+/+"])
    }

    @Test("§4.7.1 empty levels are levels: a//b, a/ and / match as the specification's examples say")
    func emptyLevels() {
        var tree = TopicTree()
        for filter in ["a/+/b", "a/+", "+/+", "/+", "a/#", "a//b"] {
            tree.subscribe(try! TopicFilter(filter), entry: .init(clientID: filter, options: .init(), identifier: nil))
        }
        func matching(_ topic: String) -> Set<String> { Set(tree.match(topic) { _ in true }.map(\.entry.clientID)) }
        #expect(matching("a//b") == ["a/+/b", "a/#", "a//b"])
        #expect(matching("a/") == ["a/+", "+/+", "a/#"])
        #expect(matching("/") == ["+/+", "/+"])
        #expect(matching("a") == ["a/#"])
    }

    @Test("§3.8.4 a subscription made after a topic was last published reaches the next message on it")
    func subscriptionAfterCachedMatch() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        _ = state.connect(conn(2), connectPacket("s"), now: t0)
        // Matched (to nobody) and remembered by the state for this topic.
        #expect(state.publish(conn(1), publishPacket("a/b", "1"), now: t0).publishes(to: conn(2)).isEmpty)
        _ = state.subscribe(conn(2), subscribePacket([("a/#", .init(qos: .atMostOnce))]), now: t0)
        #expect(state.publish(conn(1), publishPacket("a/b", "2"), now: t0).publishes(to: conn(2)).map(\.text) == ["2"])
        _ = state.unsubscribe(conn(2), Unsubscribe(packetIdentifier: 2, filters: [try! TopicFilter("a/#")]))
        #expect(state.publish(conn(1), publishPacket("a/b", "3"), now: t0).publishes(to: conn(2)).isEmpty)
    }

    @Test("§4.7.2 wildcards at the first level do not match $-topics")
    func dollarTopics() {
        var tree = TopicTree()
        for filter in ["#", "+/broker/uptime", "$SYS/#", "$SYS/+/uptime"] {
            tree.subscribe(try! TopicFilter(filter), entry: .init(clientID: filter, options: .init(), identifier: nil))
        }
        #expect(
            Set(tree.match("$SYS/broker/uptime") { _ in true }.map(\.entry.clientID)) == ["$SYS/#", "$SYS/+/uptime"]
        )
        #expect(try! TopicFilter("#").matches("$SYS/x") == false)
        #expect(try! TopicFilter("$SYS/#").matches("$SYS/x"))
    }

    @Test(
        "3.1.1 overlapping subscriptions deliver one copy at the highest granted QoS",
        arguments: [QoS.atMostOnce, .exactlyOnce]
    )
    func overlappingLegacy(wildcardQoS: QoS) {
        // Both orders of the two QoS, so that the result cannot depend on the order of matching.
        let exactQoS: QoS = wildcardQoS == .atMostOnce ? .exactlyOnce : .atMostOnce
        var state = Self.broker(subscribers: [
            ("s", [("a/#", .init(qos: wildcardQoS)), ("a/+", .init(qos: exactQoS))], .v3_1_1, nil)
        ])
        let actions = state.publish(conn(1), publishPacket("a/b", "x", qos: .exactlyOnce, id: 1), now: t0)
        let delivered = actions.publishes(to: conn(2))
        #expect(delivered.count == 1)
        #expect(delivered.first?.qos == .exactlyOnce)
    }

    @Test("§3.3.4 a single copy carries every matching Subscription Identifier")
    func subscriptionIdentifiers() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        _ = state.connect(conn(2), connectPacket("s"), now: t0)
        _ = state.subscribe(conn(2), subscribePacket([("a/#", .init())], identifier: 7), now: t0)
        _ = state.subscribe(
            conn(2),
            subscribePacket([("a/b", .init(qos: .atLeastOnce))], id: 2, identifier: 9),
            now: t0
        )
        let delivered = state.publish(conn(1), publishPacket("a/b", "x", qos: .atLeastOnce, id: 1), now: t0).publishes(
            to: conn(2)
        )
        #expect(delivered.count == 1)
        #expect(Set(delivered[0].properties.subscriptionIdentifiers) == [7, 9])
        #expect(delivered[0].qos == .atLeastOnce)
    }

    @Test("§3.8.3.1 No Local: a client does not receive its own publications")
    func noLocal() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("self"), now: t0)
        _ = state.subscribe(conn(1), subscribePacket([("t", .init(noLocal: true))]), now: t0)
        #expect(state.publish(conn(1), publishPacket("t", "x"), now: t0).publishes(to: conn(1)).isEmpty)
        _ = state.subscribe(conn(1), subscribePacket([("t", .init(noLocal: false))]), now: t0)
        #expect(state.publish(conn(1), publishPacket("t", "x"), now: t0).publishes(to: conn(1)).count == 1)
    }

    @Test("§3.8.3.1 Retain As Published keeps the RETAIN flag on forwarded messages")
    func retainAsPublished() {
        var state = Self.broker(subscribers: [
            ("keeps", [("t", .init(retainAsPublished: true))], .v5, nil),
            ("clears", [("t", .init())], .v5, nil),
        ])
        let actions = state.publish(conn(1), publishPacket("t", "x", retain: true), now: t0)
        #expect(actions.publishes(to: conn(2)).first?.retain == true)
        #expect(actions.publishes(to: conn(3)).first?.retain == false)
    }

    @Test("§3.3.1.3 retained messages go to new subscribers with RETAIN set; an empty payload deletes them")
    func retainedMessages() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        _ = state.publish(conn(1), publishPacket("r/1", "one", qos: .atLeastOnce, id: 1, retain: true), now: t0)
        _ = state.publish(conn(1), publishPacket("r/2", "two", retain: true), now: t0)
        _ = state.connect(conn(2), connectPacket("s"), now: t0)
        let actions = state.subscribe(conn(2), subscribePacket([("r/#", .init(qos: .atLeastOnce))]), now: t0)
        #expect(actions.sent(to: conn(2)).first?.type == .suback)
        let retained = actions.publishes(to: conn(2))
        #expect(retained.map(\.text) == ["one", "two"])
        #expect(retained.allSatisfy { $0.retain })
        #expect(retained.map(\.qos) == [.atLeastOnce, .atMostOnce])
        _ = state.publish(conn(1), publishPacket("r/1", "", retain: true), now: t0)
        #expect(state.retained.all.keys.sorted() == ["r/2"])
    }

    @Test("§3.8.3.1 Retain Handling 1 sends retained messages only for a new subscription; 2 never")
    func retainHandling() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        _ = state.publish(conn(1), publishPacket("r", "kept", retain: true), now: t0)
        _ = state.connect(conn(2), connectPacket("s"), now: t0)
        let onNew = SubscriptionOptions(retainHandling: .sendOnNewSubscription)
        #expect(state.subscribe(conn(2), subscribePacket([("r", onNew)]), now: t0).publishes(to: conn(2)).count == 1)
        #expect(state.subscribe(conn(2), subscribePacket([("r", onNew)]), now: t0).publishes(to: conn(2)).isEmpty)
        #expect(
            state.subscribe(conn(2), subscribePacket([("r", .init(retainHandling: .doNotSend))]), now: t0).publishes(
                to: conn(2)
            ).isEmpty
        )
        #expect(state.subscribe(conn(2), subscribePacket([("r", .init())]), now: t0).publishes(to: conn(2)).count == 1)
    }

    @Test("§4.8.2 a shared subscription delivers each message to one member, round robin, skipping disconnected ones")
    func sharedRoundRobin() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        for (index, name) in ["m1", "m2", "m3"].enumerated() {
            let connection = conn(UInt64(index + 2))
            _ = state.connect(connection, connectPacket(name, cleanStart: false, expiry: 600), now: t0)
            _ = state.subscribe(connection, subscribePacket([("$share/g/jobs/#", .init(qos: .atLeastOnce))]), now: t0)
        }
        var receivers: [ConnectionID] = []
        for n in 0..<6 {
            let actions = state.publish(conn(1), publishPacket("jobs/x", "\(n)"), now: t0)
            receivers += [conn(2), conn(3), conn(4)].filter { !actions.publishes(to: $0).isEmpty }
        }
        #expect(receivers == [conn(2), conn(3), conn(4), conn(2), conn(3), conn(4)])
        _ = state.connectionClosed(conn(3), now: t0)
        receivers = []
        for n in 0..<4 {
            let actions = state.publish(conn(1), publishPacket("jobs/x", "\(n)"), now: t0)
            receivers += [conn(2), conn(3), conn(4)].filter { !actions.publishes(to: $0).isEmpty }
        }
        #expect(receivers.count == 4)
        #expect(!receivers.contains(conn(3)))
    }

    @Test("§3.3.2.3.3 Message Expiry: the interval is decremented on delivery and expired messages are never sent")
    func messageExpiry() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        _ = state.connect(conn(2), connectPacket("s", cleanStart: false, expiry: 600), now: t0)
        _ = state.subscribe(conn(2), subscribePacket([("t", .init(qos: .atLeastOnce))]), now: t0)
        _ = state.connectionClosed(conn(2), now: t0)
        var short = Properties()
        short.messageExpiryInterval = 10
        var long = Properties()
        long.messageExpiryInterval = 100
        _ = state.publish(conn(1), publishPacket("t", "short", qos: .atLeastOnce, id: 1, properties: short), now: t0)
        _ = state.publish(conn(1), publishPacket("t", "long", qos: .atLeastOnce, id: 2, properties: long), now: t0)
        let delivered = state.connect(
            conn(3),
            connectPacket("s", cleanStart: false, expiry: 600),
            now: t0.plus(seconds: 30)
        ).publishes(to: conn(3))
        #expect(delivered.map(\.text) == ["long"])
        #expect(delivered.first?.properties.messageExpiryInterval == 70)
        #expect(state.statistics.publishMessagesExpired == 1)
    }

    @Test("§3.1.2.11.4 a message too large for one subscriber is dropped for that subscriber only")
    func maximumPacketSizePerSubscriber() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        _ = state.connect(conn(2), connectPacket("small", maximumPacketSize: 64), now: t0)
        _ = state.connect(conn(3), connectPacket("large"), now: t0)
        _ = state.subscribe(conn(2), subscribePacket([("t", .init())]), now: t0)
        _ = state.subscribe(conn(3), subscribePacket([("t", .init())]), now: t0)
        let actions = state.publish(conn(1), publishPacket("t", String(repeating: "x", count: 100)), now: t0)
        #expect(actions.publishes(to: conn(2)).isEmpty)
        #expect(actions.publishes(to: conn(3)).count == 1)
        #expect(!actions.closes(conn(2)))
        #expect(state.statistics.publishMessagesDroppedTooLarge == 1)
    }

    @Test("§3.4.2.1 a v5 PUBACK says 0x10 when nobody subscribed")
    func noMatchingSubscribers() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        let actions = state.publish(conn(1), publishPacket("nobody", "x", qos: .atLeastOnce, id: 5), now: t0)
        #expect(
            actions.sent(to: conn(1)) == [
                .puback(PublishAcknowledgement(packetIdentifier: 5, reasonCode: .noMatchingSubscribers))
            ]
        )
    }

    @Test("QoS 0 messages are not queued for an offline session (queue_qos0_messages false)")
    func qos0NotQueued() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        _ = state.connect(conn(2), connectPacket("s", cleanStart: false, expiry: 60), now: t0)
        _ = state.subscribe(conn(2), subscribePacket([("t", .init(qos: .atLeastOnce))]), now: t0)
        _ = state.connectionClosed(conn(2), now: t0)
        _ = state.publish(conn(1), publishPacket("t", "x"), now: t0)
        #expect(state.sessions["s"]?.queue.isEmpty == true)
    }

    @Test("max_queued_messages: messages beyond the limit are dropped and counted")
    func queueLimit() {
        var configuration = BrokerConfiguration()
        configuration.maxQueuedMessages = 2
        var state = BrokerState(configuration: configuration, now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        _ = state.connect(conn(2), connectPacket("s", cleanStart: false, expiry: 60), now: t0)
        _ = state.subscribe(conn(2), subscribePacket([("t", .init(qos: .atLeastOnce))]), now: t0)
        _ = state.connectionClosed(conn(2), now: t0)
        for n in 1...5 {
            _ = state.publish(conn(1), publishPacket("t", "\(n)", qos: .atLeastOnce, id: UInt16(n)), now: t0)
        }
        #expect(state.sessions["s"]?.queue.count == 2)
        #expect(state.statistics.publishMessagesDropped == 3)
    }
}

@Suite("Property pass-through")
struct PropertyPassThroughTests {
    @Test(
        "§3.3.2.3 Payload Format, Content Type, Response Topic, Correlation Data and User Properties reach the subscriber unchanged, in order"
    )
    func passThrough() throws {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("requester"), now: t0)
        _ = state.connect(conn(2), connectPacket("responder"), now: t0)
        _ = state.subscribe(conn(2), subscribePacket([("requests", .init())]), now: t0)
        let properties = try Properties([
            .payloadFormatIndicator(isUTF8: true),
            .contentType("application/json"),
            .responseTopic("responses/requester"),
            .correlationData(ByteBuffer(bytes: [1, 2, 3])),
            .userProperty(name: "b", value: "2"),
            .userProperty(name: "a", value: "1"),
        ])
        let delivered = state.publish(conn(1), publishPacket("requests", "{}", properties: properties), now: t0)
            .publishes(to: conn(2))
        #expect(delivered.count == 1)
        #expect(delivered.first?.properties == properties)
    }

    @Test("3.1.1 subscribers get the message without MQTT 5 properties")
    func legacySubscriber() throws {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("p"), now: t0)
        _ = state.connect(conn(2), connectPacket("s", version: .v3_1_1), now: t0)
        _ = state.subscribe(conn(2), subscribePacket([("t", .init())]), now: t0)
        let properties = try Properties([.contentType("text/plain")])
        let delivered = state.publish(conn(1), publishPacket("t", "x", properties: properties), now: t0).publishes(
            to: conn(2)
        )
        #expect(delivered.first?.properties.isEmpty == true)
    }
}

/// A client that announces itself as a bridge (`try_private`, CONNECT level 0x84).
@Suite("Bridge clients")
struct BridgeClientTests {
    @Test("a bridge is not sent back what it published, over any of its subscriptions; others are")
    func bridgeGetsNoLocal() {
        var state = BrokerState(now: t0)
        var bridge = connectPacket("bridge", version: .v3_1_1)
        bridge.isBridge = true
        _ = state.connect(conn(1), bridge, now: t0)
        _ = state.subscribe(conn(1), subscribePacket([("#", .init(qos: .atLeastOnce))]), now: t0)
        _ = state.connect(conn(2), connectPacket("plain", version: .v3_1_1), now: t0)
        _ = state.subscribe(conn(2), subscribePacket([("#", .init(qos: .atLeastOnce))]), now: t0)
        let own = state.publish(conn(1), publishPacket("a", "from the bridge", qos: .atLeastOnce, id: 1), now: t0)
        #expect(own.publishes(to: conn(1)).isEmpty)
        #expect(own.publishes(to: conn(2)).map(\.text) == ["from the bridge"])
        let other = state.publish(conn(2), publishPacket("a", "from a client"), now: t0)
        #expect(other.publishes(to: conn(1)).map(\.text) == ["from a client"])
    }
}
