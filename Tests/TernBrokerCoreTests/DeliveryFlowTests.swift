import NIOCore
import TernBrokerTesting
import TernCodec
import Testing

@testable import TernBrokerCore

/// MQTT 5.0 §4.3 (QoS flows), §4.4 (redelivery), §4.9 (flow control), §3.1.2.5 (wills).
@Suite("Delivery flows and wills")
struct DeliveryFlowTests {
    @Test("§4.9 the outbound window is the client's Receive Maximum; PUBACK releases the queue in order")
    func receiveMaximumWindow() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        _ = state.connect(conn(2), connectPacket("s", receiveMaximum: 2), now: t0)
        _ = state.subscribe(conn(2), subscribePacket([("t", .init(qos: .atLeastOnce))]), now: t0)
        var sent: [Publish] = []
        for n in 1...4 {
            sent += state.publish(conn(1), publishPacket("t", "\(n)", qos: .atLeastOnce, id: UInt16(n)), now: t0)
                .publishes(to: conn(2))
        }
        #expect(sent.map(\.text) == ["1", "2"])
        let released = state.acknowledge(
            conn(2),
            .puback,
            PublishAcknowledgement(packetIdentifier: sent[0].packetIdentifier),
            now: t0
        )
        #expect(released.publishes(to: conn(2)).map(\.text) == ["3"])
    }

    @Test("§4.3.3 QoS 2 outbound: PUBREC is answered with PUBREL, PUBCOMP completes the flow")
    func qos2Outbound() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        _ = state.connect(conn(2), connectPacket("s"), now: t0)
        _ = state.subscribe(conn(2), subscribePacket([("t", .init(qos: .exactlyOnce))]), now: t0)
        let publish = state.publish(conn(1), publishPacket("t", "x", qos: .exactlyOnce, id: 1), now: t0).publishes(
            to: conn(2)
        )[0]
        let id = publish.packetIdentifier
        let rel = state.acknowledge(conn(2), .pubrec, PublishAcknowledgement(packetIdentifier: id), now: t0)
        #expect(rel.sent(to: conn(2)) == [.pubrel(PublishAcknowledgement(packetIdentifier: id))])
        #expect(state.sessions["s"]?.inflight == [.release(packetIdentifier: id)])
        _ = state.acknowledge(conn(2), .pubcomp, PublishAcknowledgement(packetIdentifier: id), now: t0)
        #expect(state.sessions["s"]?.inflight.isEmpty == true)
    }

    @Test("§4.3.3 a re-sent QoS 2 PUBLISH awaiting PUBREL is acknowledged but not delivered twice")
    func qos2InboundDuplicate() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        _ = state.connect(conn(2), connectPacket("s"), now: t0)
        _ = state.subscribe(conn(2), subscribePacket([("t", .init())]), now: t0)
        let first = state.publish(conn(1), publishPacket("t", "x", qos: .exactlyOnce, id: 7), now: t0)
        var again = publishPacket("t", "x", qos: .exactlyOnce, id: 7)
        again.duplicate = true
        let second = state.publish(conn(1), again, now: t0)
        #expect(first.publishes(to: conn(2)).count == 1)
        #expect(second.publishes(to: conn(2)).isEmpty)
        #expect(second.sent(to: conn(1)) == [.pubrec(PublishAcknowledgement(packetIdentifier: 7))])
        let complete = state.publishRelease(conn(1), PublishAcknowledgement(packetIdentifier: 7))
        #expect(complete.sent(to: conn(1)) == [.pubcomp(PublishAcknowledgement(packetIdentifier: 7))])
        let unknown = state.publishRelease(conn(1), PublishAcknowledgement(packetIdentifier: 7))
        #expect(
            unknown.sent(to: conn(1)) == [
                .pubcomp(PublishAcknowledgement(packetIdentifier: 7, reasonCode: .packetIdentifierNotFound))
            ]
        )
    }

    @Test("§3.3.4 a client exceeding the broker's Receive Maximum is disconnected with 0x93")
    func receiveMaximumExceeded() {
        var configuration = BrokerConfiguration()
        configuration.maxInflightMessages = 2
        var state = BrokerState(configuration: configuration, now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        _ = state.publish(conn(1), publishPacket("t", "1", qos: .exactlyOnce, id: 1), now: t0)
        _ = state.publish(conn(1), publishPacket("t", "2", qos: .exactlyOnce, id: 2), now: t0)
        let actions = state.publish(conn(1), publishPacket("t", "3", qos: .exactlyOnce, id: 3), now: t0)
        #expect(actions.sent(to: conn(1)) == [.disconnect(Disconnect(reasonCode: .receiveMaximumExceeded))])
        #expect(actions.closes(conn(1)))
    }

    @Test("§4.4 on resume, unacknowledged PUBLISH go out again with DUP=1 and their packet ids, then PUBREL")
    func redeliveryOnResume() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        _ = state.connect(conn(2), connectPacket("s", cleanStart: false, expiry: 600), now: t0)
        _ = state.subscribe(conn(2), subscribePacket([("t", .init(qos: .exactlyOnce))]), now: t0)
        let first = state.publish(conn(1), publishPacket("t", "a", qos: .atLeastOnce, id: 1), now: t0).publishes(
            to: conn(2)
        )[0]
        let second = state.publish(conn(1), publishPacket("t", "b", qos: .exactlyOnce, id: 2), now: t0).publishes(
            to: conn(2)
        )[0]
        let third = state.publish(conn(1), publishPacket("t", "c", qos: .exactlyOnce, id: 3), now: t0).publishes(
            to: conn(2)
        )[0]
        _ = state.acknowledge(
            conn(2),
            .pubrec,
            PublishAcknowledgement(packetIdentifier: third.packetIdentifier),
            now: t0
        )
        _ = state.connectionClosed(conn(2), now: t0)

        let actions = state.connect(
            conn(3),
            connectPacket("s", cleanStart: false, expiry: 600),
            now: t0.plus(seconds: 5)
        )
        #expect(actions.connack?.sessionPresent == true)
        let packets = actions.sent(to: conn(3))
        #expect(packets.count == 4)
        guard packets.count == 4, case .publish(let again1) = packets[1], case .publish(let again2) = packets[2] else {
            return
        }
        #expect(again1.duplicate && again2.duplicate)
        #expect(again1.packetIdentifier == first.packetIdentifier)
        #expect(again2.packetIdentifier == second.packetIdentifier)
        #expect([again1.text, again2.text] == ["a", "b"])
        #expect(packets[3] == .pubrel(PublishAcknowledgement(packetIdentifier: third.packetIdentifier)))
    }

    @Test("§3.1.2.5 a will with a delay but session expiry 0 is published at once")
    func willDelayWithExpiryZero() {
        var state = stateWithWatcher(on: "w")
        _ = state.connect(conn(1), connectPacket("a", will: will("w", "bye", delay: 60)), now: t0)
        let actions = state.connectionClosed(conn(1), now: t0)
        #expect(actions.publishes(to: conn(9)).map(\.text) == ["bye"])
    }

    @Test("§3.1.2.5 the will waits for its delay, and a reconnection within it cancels the will")
    func willDelay() {
        var state = stateWithWatcher(on: "w")
        _ = state.connect(conn(1), connectPacket("a", expiry: 600, will: will("w", "late", delay: 30)), now: t0)
        #expect(state.connectionClosed(conn(1), now: t0).publishes(to: conn(9)).isEmpty)
        #expect(state.tick(now: t0.plus(seconds: 29)).publishes(to: conn(9)).isEmpty)
        #expect(state.tick(now: t0.plus(seconds: 30)).publishes(to: conn(9)).map(\.text) == ["late"])

        _ = state.connect(conn(2), connectPacket("b", expiry: 600, will: will("w", "cancelled", delay: 30)), now: t0)
        _ = state.connectionClosed(conn(2), now: t0)
        _ = state.connect(conn(3), connectPacket("b", cleanStart: false, expiry: 600), now: t0.plus(seconds: 10))
        #expect(state.tick(now: t0.plus(seconds: 60)).publishes(to: conn(9)).isEmpty)
    }

    @Test("§3.1.2.5 the will goes out when the session ends, if that comes before the delay")
    func willAtSessionEnd() {
        var state = stateWithWatcher(on: "w")
        _ = state.connect(conn(1), connectPacket("a", expiry: 10, will: will("w", "end", delay: 300)), now: t0)
        _ = state.connectionClosed(conn(1), now: t0)
        #expect(state.tick(now: t0.plus(seconds: 10)).publishes(to: conn(9)).map(\.text) == ["end"])
        #expect(state.sessions["a"] == nil)
    }

    @Test(
        "§3.1.2.11.2 a CONNECT for a session whose expiry passed before any tick ended it (a restart ends them after listening) finds no session; the will goes out first"
    )
    func connectAfterExpiryBeforeTick() {
        var state = stateWithWatcher(on: "w")
        _ = state.connect(conn(1), connectPacket("a", expiry: 10, will: will("w", "end", delay: 300)), now: t0)
        _ = state.subscribe(conn(1), subscribePacket([("a/#", .init(qos: .atLeastOnce))]), now: t0)
        _ = state.connectionClosed(conn(1), now: t0)
        // No tick between the expiry and the CONNECT.
        let actions = state.connect(
            conn(2),
            connectPacket("a", cleanStart: false, expiry: 10),
            now: t0.plus(seconds: 11)
        )
        #expect(actions.connack?.sessionPresent == false)
        #expect(actions.publishes(to: conn(9)).map(\.text) == ["end"])
        #expect(state.sessions["a"]?.subscriptions.isEmpty == true, "the expired session's subscriptions came back")
    }

    @Test("§3.14.4 a normal DISCONNECT discards the will; reason 0x04 publishes it")
    func disconnectAndWill() {
        var state = stateWithWatcher(on: "w")
        _ = state.connect(conn(1), connectPacket("a", will: will("w", "one")), now: t0)
        #expect(state.disconnect(conn(1), Disconnect(), now: t0).publishes(to: conn(9)).isEmpty)
        _ = state.connect(conn(2), connectPacket("b", will: will("w", "two")), now: t0)
        let actions = state.disconnect(conn(2), Disconnect(reasonCode: .disconnectWithWillMessage), now: t0)
        #expect(actions.publishes(to: conn(9)).map(\.text) == ["two"])
    }
}

/// MQTT 5.0 §3.1.0 (packet order) and §3.3.2.3.4 (Topic Alias), per connection.
@Suite("Connection state machine")
struct ConnectionStateMachineTests {
    static func connected(aliasMaximum: UInt16 = 10) -> ConnectionStateMachine {
        var machine = ConnectionStateMachine(topicAliasMaximum: aliasMaximum)
        _ = machine.received(.connect(Connect(clientIdentifier: "c")))
        return machine
    }

    @Test("[MQTT-3.1.0-2] a second CONNECT is a protocol error")
    func secondConnect() {
        var machine = Self.connected()
        #expect(
            machine.received(.connect(Connect(clientIdentifier: "c"))) == .close(.protocolError, "a second CONNECT")
        )
    }

    @Test("a client sending a server-only packet is a protocol error")
    func serverOnlyPackets() {
        var machine = Self.connected()
        guard case .close(let code, _) = machine.received(.connack(ConnAck())) else {
            Issue.record("accepted")
            return
        }
        #expect(code == .protocolError)
    }

    @Test("PINGREQ is answered with PINGRESP")
    func ping() {
        var machine = Self.connected()
        #expect(machine.received(.pingreq) == .reply(.pingresp))
    }

    @Test("§3.3.2.3.4 a Topic Alias is set by a named PUBLISH and resolves later empty names")
    func topicAlias() throws {
        var machine = Self.connected()
        var properties = Properties()
        properties.topicAlias = 3
        let named = Publish(
            topic: try TopicName("long/topic/name"),
            payload: ByteBuffer(string: "1"),
            properties: properties
        )
        let aliased = Publish(topic: .aliasOnly, payload: ByteBuffer(string: "2"), properties: properties)
        guard case .forward(.publish(let first)) = machine.received(.publish(named)),
            case .forward(.publish(let second)) = machine.received(.publish(aliased))
        else {
            Issue.record("not forwarded")
            return
        }
        #expect(first.topic.string == "long/topic/name")
        #expect(second.topic.string == "long/topic/name")
        #expect(second.properties.topicAlias == nil)
    }

    @Test("§3.3.2.3.4 an unknown alias is a protocol error; one above the maximum is 0x94")
    func badAliases() {
        var properties = Properties()
        properties.topicAlias = 4
        var machine = Self.connected()
        guard
            case .close(let unknown, _) = machine.received(
                .publish(Publish(topic: .aliasOnly, payload: ByteBuffer(), properties: properties))
            )
        else {
            Issue.record("accepted")
            return
        }
        #expect(unknown == .protocolError)
        var small = Self.connected(aliasMaximum: 2)
        guard
            case .close(let tooHigh, _) = small.received(
                .publish(Publish(topic: try! TopicName("t"), payload: ByteBuffer(), properties: properties))
            )
        else {
            Issue.record("accepted")
            return
        }
        #expect(tooHigh == .topicAliasInvalid)
    }
}

/// MQTT 5.0 §3.3.2.3.4: Topic Aliases on messages the broker sends.
@Suite("Outbound Topic Aliases")
struct OutboundTopicAliasTests {
    @Test("the first message on a topic carries name and alias, later ones only the alias; past the maximum, names")
    func assignsAndReuses() throws {
        var aliases = OutboundTopicAliases(maximum: 1)
        var first = publishPacket("a/long/topic", "1")
        aliases.apply(to: &first)
        #expect(first.topic.string == "a/long/topic")
        #expect(first.properties.topicAlias == 1)
        var second = publishPacket("a/long/topic", "2")
        aliases.apply(to: &second)
        #expect(second.topic.isEmpty)
        #expect(second.properties.topicAlias == 1)
        var other = publishPacket("b", "3")
        aliases.apply(to: &other)
        #expect(other.topic.string == "b")
        #expect(other.properties.topicAlias == nil)
    }

    @Test("a client that announces no maximum gets no alias")
    func disabled() {
        var aliases = OutboundTopicAliases(maximum: 0)
        var publish = publishPacket("t", "x")
        aliases.apply(to: &publish)
        #expect(publish.properties.topicAlias == nil)
        #expect(publish.topic.string == "t")
    }
}
