import NIOCore
import TernCodec
import Testing

@testable import TernClient

/// The client's protocol rules across connections, without sockets: what it writes on CONNACK,
/// within the server's Receive Maximum, and what it answers each packet with.
@Suite("Client connection state machine")
struct ClientConnectionStateMachineTests {
    static func machine(
        _ change: (inout MQTTClientConfiguration) -> Void = { _ in },
        session: ClientSessionState = ClientSessionState()
    ) -> ClientConnectionStateMachine {
        var configuration = MQTTClientConfiguration(clientID: "c")
        change(&configuration)
        return ClientConnectionStateMachine(settings: .init(configuration), session: session)
    }

    static func connack(present: Bool = false, receiveMaximum: UInt16? = nil, maximumPacketSize: UInt32? = nil)
        -> ConnAck
    {
        var properties = Properties()
        properties.receiveMaximum = receiveMaximum
        properties.maximumPacketSize = maximumPacketSize
        return ConnAck(sessionPresent: present, properties: properties)
    }

    static func started(_ action: ClientConnectionStateMachine.PublishAction) -> (UInt16, [MQTTPacket])? {
        if case .started(let id, let writes) = action { (id, writes) } else { nil }
    }

    static func publishedIDs(_ packets: [MQTTPacket]) -> [UInt16] {
        packets.compactMap { if case .publish(let p) = $0 { p.packetIdentifier } else { nil } }
    }

    @Test("§4.9 Receive Maximum: no more than the server's window in flight; each PUBACK lets the next go")
    func receiveMaximumWindow() throws {
        var machine = Self.machine()
        _ = machine.connected(Self.connack(receiveMaximum: 2))
        let writes = (0..<4).map { _ in Self.started(machine.publish(outgoing("m", qos: .atLeastOnce)))!.1 }
        #expect(writes.map(Self.publishedIDs) == [[1], [2], [], []])
        guard
            case .publishAcknowledged(nil, let completion, nil, let more) = machine.received(
                .puback(PublishAcknowledgement(packetIdentifier: 1))
            )
        else {
            Issue.record("PUBACK not handled as an acknowledgement")
            return
        }
        #expect(completion == .completed(packetIdentifier: 1, reasonCode: .success))
        #expect(Self.publishedIDs(more) == [3])
        #expect(machine.inflightCount == 3)
    }

    @Test("§4.4 on a resumed session: written messages again with DUP=1 and their ids, then never-written ones as new")
    func resumeResendsThenQueued() throws {
        var machine = Self.machine()
        _ = machine.connected(Self.connack(receiveMaximum: 1))
        _ = machine.publish(outgoing("a", qos: .atLeastOnce))
        _ = machine.publish(outgoing("b", qos: .atLeastOnce))
        let wasConnected = machine.connectionClosed()
        #expect(wasConnected)
        let resumption = machine.connected(Self.connack(present: true, receiveMaximum: 10))
        let publishes = resumption.writes.compactMap { if case .publish(let p) = $0 { p } else { nil } }
        // "a" was written and may have arrived; "b" never left (§3.3.1.1: DUP=1 only for a re-delivery).
        #expect(publishes.map(\.packetIdentifier) == [1, 2])
        #expect(publishes.map(\.duplicate) == [true, false])
        #expect(resumption.dropped.isEmpty)
    }

    @Test("§4.4 flows read back from the client store after a restart go again with DUP=1")
    func restoredFlowsAreDuplicates() throws {
        var before = ClientSessionState()
        _ = before.start(outgoing("a", qos: .atLeastOnce))
        _ = before.start(outgoing("b", qos: .exactlyOnce))
        var machine = Self.machine(session: before)
        let resumption = machine.connected(Self.connack(present: true))
        let publishes = resumption.writes.compactMap { if case .publish(let p) = $0 { p } else { nil } }
        #expect(publishes.map(\.packetIdentifier) == [1, 2])
        #expect(publishes.allSatisfy { $0.duplicate })
    }

    @Test("Session lost, default policy: written flows are dropped and reported; never-written ones go as new")
    func sessionLostDropsWhatWasSent() {
        var machine = Self.machine()
        _ = machine.connected(Self.connack(receiveMaximum: 1))
        _ = machine.publish(outgoing("a", qos: .atLeastOnce))
        _ = machine.publish(outgoing("b", qos: .atLeastOnce))
        _ = machine.connectionClosed()
        let resumption = machine.connected(Self.connack(present: false))
        #expect(resumption.dropped == [1])
        let publishes = resumption.writes.compactMap { if case .publish(let p) = $0 { p } else { nil } }
        #expect(publishes.map(\.packetIdentifier) == [2])
        #expect(publishes.map(\.duplicate) == [false])
        #expect(machine.inflightCount == 1)
    }

    @Test("A message published while offline goes at the next CONNACK, first-time (DUP=0)")
    func offlineQueue() {
        var machine = Self.machine()
        guard case .queued = machine.publish(outgoing("zero", qos: .atMostOnce)) else {
            Issue.record("QoS 0 offline was not queued")
            return
        }
        let id = Self.started(machine.publish(outgoing("one", qos: .atLeastOnce)))
        #expect(id?.1.isEmpty == true)
        let resumption = machine.connected(Self.connack(present: false))
        let publishes = resumption.writes.compactMap { if case .publish(let p) = $0 { p } else { nil } }
        #expect(publishes.map(\.text) == ["zero", "one"])
        #expect(publishes.map(\.duplicate) == [false, false])
    }

    @Test("The offline queue is bounded by offlineQueueLimit")
    func offlineQueueLimit() {
        var machine = Self.machine { $0.offlineQueueLimit = 2 }
        _ = machine.publish(outgoing("a", qos: .atMostOnce))
        _ = machine.publish(outgoing("b", qos: .atLeastOnce))
        guard case .rejected(let error) = machine.publish(outgoing("c", qos: .atLeastOnce)) else {
            Issue.record("a third message was accepted")
            return
        }
        #expect(error.code == .offlineQueueFull)
    }

    @Test("§3.1.2.11.4 a PUBLISH over the server's Maximum Packet Size is refused before it is sent")
    func maximumPacketSize() {
        var machine = Self.machine()
        _ = machine.connected(Self.connack(maximumPacketSize: 64))
        let big = Publish(topic: try! TopicName("t"), payload: ByteBuffer(repeating: 0, count: 100), qos: .atLeastOnce)
        guard case .rejected(let error) = machine.publish(big) else {
            Issue.record("an oversized PUBLISH was accepted")
            return
        }
        #expect(error.code == .packetTooLarge)
        #expect(machine.inflightCount == 0)
    }

    @Test("Session not present: the subscriptions the server forgot are made again in one SUBSCRIBE")
    func resubscribeWhenSessionLost() throws {
        var machine = Self.machine()
        _ = machine.connected(Self.connack())
        for filter in ["b/#", "a/+"] {
            machine.subscribed(
                filter,
                Subscribe.Subscription(filter: try TopicFilter(filter), options: .init(qos: .atLeastOnce))
            )
        }
        _ = machine.connectionClosed()
        let lost = machine.connected(Self.connack(present: false))
        guard case .subscribe(let subscribe)? = lost.writes.first else {
            Issue.record("no SUBSCRIBE after a lost session")
            return
        }
        #expect(subscribe.subscriptions.map(\.filter.string) == ["a/+", "b/#"])
        #expect(subscribe.packetIdentifier & 0x8000 != 0)
        _ = machine.connectionClosed()
        #expect(machine.connected(Self.connack(present: true)).writes.isEmpty)
    }

    @Test("§4.3.3 a re-sent QoS 2 PUBLISH is acknowledged again with PUBREC but delivered once")
    func exactlyOnceDuplicate() {
        var machine = Self.machine()
        _ = machine.connected(Self.connack())
        var publish = outgoing("x", qos: .exactlyOnce)
        publish.packetIdentifier = 7
        guard case .deliver(_, true, .pubrec(let ack)?) = machine.received(.publish(publish)) else {
            Issue.record("the first QoS 2 PUBLISH was not delivered and acknowledged")
            return
        }
        #expect(ack.packetIdentifier == 7)
        publish.duplicate = true
        guard case .acknowledgeOnly(.pubrec) = machine.received(.publish(publish)) else {
            Issue.record("the duplicate was delivered again")
            return
        }
        guard
            case .released(.pubcomp(let complete)) = machine.received(
                .pubrel(PublishAcknowledgement(packetIdentifier: 7))
            )
        else {
            Issue.record("PUBREL not completed")
            return
        }
        #expect(complete.packetIdentifier == 7)
        // After PUBREL the id is free: the same id is a new message.
        publish.duplicate = false
        guard case .deliver = machine.received(.publish(publish)) else {
            Issue.record("a new message reusing a released id was not delivered")
            return
        }
    }

    @Test("§3.3.2.3.4 an inbound topic alias maps later empty topics; an unknown one is a protocol error")
    func inboundTopicAliases() {
        var machine = Self.machine()
        _ = machine.connected(Self.connack())
        var first = outgoing("x", qos: .atMostOnce)
        first.topic = try! TopicName("sensors/1")
        first.properties.topicAlias = 3
        _ = machine.received(.publish(first))
        var second = outgoing("y", qos: .atMostOnce)
        second.topic = .aliasOnly
        second.properties.topicAlias = 3
        guard case .deliver(let mapped, _, nil) = machine.received(.publish(second)) else {
            Issue.record("an aliased PUBLISH was not delivered")
            return
        }
        #expect(mapped.topic.string == "sensors/1")
        second.properties.topicAlias = 4
        guard case .protocolError = machine.received(.publish(second)) else {
            Issue.record("an unknown alias was accepted")
            return
        }
        // Aliases belong to one connection (§3.3.2.3.4): a new one starts without them.
        _ = machine.connectionClosed()
        _ = machine.connected(Self.connack(present: true))
        second.properties.topicAlias = 3
        guard case .protocolError = machine.received(.publish(second)) else {
            Issue.record("an alias survived the connection")
            return
        }
    }

    @Test("Manual acknowledgement: nothing is acknowledged until the application asks, and not while offline")
    func manualAcknowledgement() {
        var machine = Self.machine { $0.acknowledgement = .manual }
        _ = machine.connected(Self.connack())
        var publish = outgoing("x", qos: .atLeastOnce)
        publish.packetIdentifier = 5
        guard case .deliver(_, false, nil) = machine.received(.publish(publish)) else {
            Issue.record("manual mode acknowledged by itself")
            return
        }
        #expect(machine.acknowledgement(5, qos: .atLeastOnce) == .puback(PublishAcknowledgement(packetIdentifier: 5)))
        _ = machine.connectionClosed()
        #expect(machine.acknowledgement(5, qos: .atLeastOnce) == nil)
    }

    @Test("A reconnection resumes only a session that outlives the connection (§3.1.2.11.2, 3.1.1 §3.1.2.4)")
    func reconnectResumes() {
        var configuration = MQTTClientConfiguration(clientID: "c")
        configuration.sessionExpiry = .none
        #expect(!ClientConnectionStateMachine.reconnectResumes(configuration))
        configuration.sessionExpiry = .seconds(60)
        #expect(ClientConnectionStateMachine.reconnectResumes(configuration))
        configuration.protocolVersion = .v3_1_1
        configuration.cleanStart = true
        #expect(!ClientConnectionStateMachine.reconnectResumes(configuration))
        configuration.cleanStart = false
        #expect(ClientConnectionStateMachine.reconnectResumes(configuration))
    }
}

extension Publish {
    fileprivate var text: String { String(buffer: payload) }
}
