import NIOCore
import TernBrokerTesting
import TernCodec
import Testing

@testable import TernBrokerCore

/// A connection that does not keep up (its socket not writable) keeps its QoS 1/2 messages in its
/// session queue, loses its QoS 0 messages, and costs the other subscribers nothing (MQTT 5.0
/// §4.9 flow control; what is dropped is counted as Mosquitto counts it).
@Suite("Backpressure")
struct BackpressureTests {
    func brokerWithTwoSubscribers(qos: QoS, maxQueued: Int = 1000) -> BrokerState {
        var configuration = BrokerConfiguration()
        configuration.maxQueuedMessages = maxQueued
        var state = BrokerState(configuration: configuration, now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        _ = state.connect(conn(2), connectPacket("slow"), now: t0)
        _ = state.connect(conn(3), connectPacket("fast"), now: t0)
        _ = state.subscribe(conn(2), subscribePacket([("t", .init(qos: qos))]), now: t0)
        _ = state.subscribe(conn(3), subscribePacket([("t", .init(qos: qos))]), now: t0)
        return state
    }

    @Test("QoS 0 to a client that is not writable is dropped and counted; the other subscriber gets all")
    func qos0Dropped() {
        var state = brokerWithTwoSubscribers(qos: .atMostOnce)
        let stalled = state.writabilityChanged(conn(2), writable: false, now: t0)
        #expect(stalled.isEmpty)
        var slow: [String] = []
        var fast: [String] = []
        for n in 1...5 {
            let actions = state.publish(conn(1), publishPacket("t", "\(n)"), now: t0)
            slow += actions.publishes(to: conn(2)).map(\.text)
            fast += actions.publishes(to: conn(3)).map(\.text)
        }
        #expect(slow.isEmpty)
        #expect(fast == ["1", "2", "3", "4", "5"])
        #expect(state.statistics.publishMessagesDroppedBackpressure == 5)
        #expect(state.statistics.publishMessagesDropped == 5)
        #expect(state.statistics.backpressureEvents == 1)
        #expect(state.gauges.clientsBackpressured == 1)
        // Writable again: QoS 0 flows again, nothing dropped is replayed.
        let resumed = state.writabilityChanged(conn(2), writable: true, now: t0)
        #expect(resumed.isEmpty)
        let sixth = state.publish(conn(1), publishPacket("t", "6"), now: t0)
        #expect(sixth.publishes(to: conn(2)).map(\.text) == ["6"])
        #expect(state.gauges.clientsBackpressured == 0)
    }

    @Test("QoS 1 to a client that is not writable waits in its queue, then drains in order when it is")
    func qos1Queued() {
        var state = brokerWithTwoSubscribers(qos: .atLeastOnce, maxQueued: 3)
        _ = state.writabilityChanged(conn(2), writable: false, now: t0)
        var fast: [String] = []
        for n in 1...5 {
            let actions = state.publish(conn(1), publishPacket("t", "\(n)", qos: .atLeastOnce, id: UInt16(n)), now: t0)
            #expect(actions.publishes(to: conn(2)).isEmpty)
            fast += actions.publishes(to: conn(3)).map(\.text)
        }
        #expect(fast == ["1", "2", "3", "4", "5"])
        // max_queued_messages 3: the rest is dropped and counted, not held in memory.
        #expect(state.sessions["slow"]?.queue.map { String(buffer: $0.message.payload) } == ["1", "2", "3"])
        #expect(state.statistics.publishMessagesDropped == 2)
        #expect(state.statistics.publishMessagesDroppedBackpressure == 0)
        let drained = state.writabilityChanged(conn(2), writable: true, now: t0)
        #expect(drained.publishes(to: conn(2)).map(\.text) == ["1", "2", "3"])
        #expect(drained.publishes(to: conn(2)).allSatisfy { !$0.duplicate })
    }

    @Test("an acknowledgement does not release the queue while the client is not writable")
    func acknowledgementWhileNotWritable() {
        var state = brokerWithTwoSubscribers(qos: .atLeastOnce)
        let first = state.publish(conn(1), publishPacket("t", "1", qos: .atLeastOnce, id: 1), now: t0).publishes(
            to: conn(2)
        )
        #expect(first.map(\.text) == ["1"])
        _ = state.writabilityChanged(conn(2), writable: false, now: t0)
        _ = state.publish(conn(1), publishPacket("t", "2", qos: .atLeastOnce, id: 2), now: t0)
        let ack = state.acknowledge(
            conn(2),
            .puback,
            PublishAcknowledgement(packetIdentifier: first[0].packetIdentifier),
            now: t0
        )
        #expect(ack.publishes(to: conn(2)).isEmpty)
        let drained = state.writabilityChanged(conn(2), writable: true, now: t0)
        #expect(drained.publishes(to: conn(2)).map(\.text) == ["2"])
    }

    @Test("a new connection of the session starts writable")
    func reconnectResetsWritability() {
        var state = brokerWithTwoSubscribers(qos: .atMostOnce)
        _ = state.writabilityChanged(conn(2), writable: false, now: t0)
        _ = state.connectionClosed(conn(2), now: t0)
        _ = state.connect(conn(4), connectPacket("slow"), now: t0)
        _ = state.subscribe(conn(4), subscribePacket([("t", .init())]), now: t0)
        let delivered = state.publish(conn(1), publishPacket("t", "x"), now: t0)
        #expect(delivered.publishes(to: conn(4)).map(\.text) == ["x"])
        // A change reported for the old connection is ignored.
        let stale = state.writabilityChanged(conn(2), writable: false, now: t0)
        #expect(stale.isEmpty)
        #expect(state.sessions["slow"]?.writable == true)
    }
}
