import NIOCore
import TernCodec
import Testing

@testable import TernClient

func outgoing(_ text: String, qos: QoS) -> Publish {
    Publish(topic: try! TopicName("t"), payload: ByteBuffer(string: text), qos: qos)
}

/// The client's half of MQTT 5.0 §4.3 and §4.4, without sockets.
@Suite("Client session state")
struct ClientSessionStateTests {
    @Test("§4.4 session present: unacknowledged PUBLISH again with DUP=1 and the same ids, then PUBREL")
    func sessionPresentResends() {
        var state = ClientSessionState()
        let first = state.start(outgoing("a", qos: .atLeastOnce))
        let second = state.start(outgoing("b", qos: .exactlyOnce))
        _ = state.received(.pubrec, PublishAcknowledgement(packetIdentifier: second.packetIdentifier))
        let (packets, dropped) = state.resume(sessionPresent: true, policy: .dropInflight)
        var again = first
        again.duplicate = true
        #expect(
            packets == [.publish(again), .pubrel(PublishAcknowledgement(packetIdentifier: second.packetIdentifier))]
        )
        #expect(dropped.isEmpty)
    }

    @Test("session not present, default policy: in-flight state is dropped")
    func sessionLostDrops() {
        var state = ClientSessionState()
        let first = state.start(outgoing("a", qos: .atLeastOnce))
        _ = state.receivedExactlyOnce(9)
        let (packets, dropped) = state.resume(sessionPresent: false, policy: .dropInflight)
        #expect(packets.isEmpty)
        #expect(dropped == [first.packetIdentifier])
        #expect(state.outbound.isEmpty)
        #expect(state.inboundQoS2.isEmpty)
    }

    @Test("session not present, republish policy: unacknowledged messages go again as new (DUP=0)")
    func sessionLostRepublishes() {
        var state = ClientSessionState()
        let first = state.start(outgoing("a", qos: .atLeastOnce))
        let second = state.start(outgoing("b", qos: .exactlyOnce))
        _ = state.received(.pubrec, PublishAcknowledgement(packetIdentifier: second.packetIdentifier))
        let (packets, dropped) = state.resume(sessionPresent: false, policy: .republish)
        #expect(packets == [.publish(first)])
        #expect(dropped == [second.packetIdentifier])
    }

    @Test("§2.2.1 a packet id is not reused while in flight, and is free again once its flow completes")
    func packetIdentifierReuse() {
        var state = ClientSessionState()
        let ids = (0..<3).map { _ in state.start(outgoing("x", qos: .atLeastOnce)).packetIdentifier }
        #expect(ids == [1, 2, 3])
        let (_, completion) = state.received(.puback, PublishAcknowledgement(packetIdentifier: 2))
        #expect(completion == .completed(packetIdentifier: 2, reasonCode: .success))
        _ = state.resume(sessionPresent: true, policy: .dropInflight)
        // 4…65535 are free, then the counter wraps past 1 and 3 (in flight) to 2 (completed).
        var last: UInt16 = 0
        for _ in 0..<65_533 { last = state.start(outgoing("y", qos: .atLeastOnce)).packetIdentifier }
        #expect(last == 2)
        #expect(state.outbound.count == 65_535)
        #expect(Set(state.outbound.map(\.packetIdentifier)).count == 65_535)
    }

    @Test("§4.3.3 QoS 2: PUBREC gets PUBREL, PUBCOMP completes; a failed PUBREC ends the flow")
    func exactlyOnceFlow() {
        var state = ClientSessionState()
        let publish = state.start(outgoing("a", qos: .exactlyOnce))
        let id = publish.packetIdentifier
        let received = state.received(.pubrec, PublishAcknowledgement(packetIdentifier: id))
        #expect(received.reply == .pubrel(PublishAcknowledgement(packetIdentifier: id)))
        let completed = state.received(.pubcomp, PublishAcknowledgement(packetIdentifier: id))
        #expect(completed.completion == .completed(packetIdentifier: id, reasonCode: .success))
        let refused = state.start(outgoing("b", qos: .exactlyOnce))
        let result = state.received(
            .pubrec,
            PublishAcknowledgement(packetIdentifier: refused.packetIdentifier, reasonCode: .quotaExceeded)
        )
        #expect(result.reply == nil)
        #expect(result.completion == .completed(packetIdentifier: refused.packetIdentifier, reasonCode: .quotaExceeded))
        #expect(state.outbound.isEmpty)
    }

    @Test("§4.3.3 an inbound QoS 2 message re-sent before PUBREL is not delivered twice")
    func inboundExactlyOnce() {
        var state = ClientSessionState()
        let first = state.receivedExactlyOnce(5)
        let resent = state.receivedExactlyOnce(5)
        state.released(5)
        let afterRelease = state.receivedExactlyOnce(5)
        #expect(first)
        #expect(!resent)
        #expect(afterRelease)
    }

    @Test("backoff doubles up to its maximum, and jitter stays within its band")
    func backoff() {
        let policy = MQTTClientConfiguration.ReconnectPolicy()
        #expect(policy.delay(attempt: 0) == .milliseconds(100))
        #expect(policy.delay(attempt: 3) == .milliseconds(800))
        #expect(policy.delay(attempt: 30) == .seconds(30))
        var generator = SystemRandomNumberGenerator()
        for attempt in 0..<10 {
            let delay = policy.jitteredDelay(attempt: attempt, using: &generator)
            #expect(delay <= policy.delay(attempt: attempt))
            #expect(delay >= policy.delay(attempt: attempt) * 0.5)
        }
    }

    @Test("sessionExpiry and connectProperties are one value: the last one set wins")
    func sessionExpirySpellings() {
        var configuration = MQTTClientConfiguration(clientID: "c")
        #expect(configuration.sessionExpiry == .none)
        configuration.sessionExpiry = .never
        #expect(configuration.connectProperties.sessionExpiryInterval == 0xFFFF_FFFF)
        configuration.connectProperties.sessionExpiryInterval = 3600
        #expect(configuration.sessionExpiry == .seconds(3600))
        configuration.sessionExpiry = .none
        #expect(configuration.connectProperties.sessionExpiryInterval == nil)
    }
}
