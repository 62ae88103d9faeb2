import NIOCore
import TernBrokerTesting
import TernCodec
import Testing

@testable import TernBrokerCore

/// Several states sharing one ``BrokerShared``, as the broker runs one per event loop: deliveries
/// between them go through session mailboxes, and a CONNECT fetches a session another state
/// holds (MQTT 5.0 §4.1, §3.1.4-3, §4.6). Each step the I/O layer would take is written out.
@Suite("Sessions between states")
struct HandoverRulesTests {
    let shared = BrokerShared()

    func state(_ shard: Int) -> BrokerState { BrokerState(now: t0, shared: shared, shard: shard) }

    /// Posts what `from` routed to other states' sessions, as the I/O layer does when a burst ends.
    /// - Returns: the states to wake, by number.
    func post(from state: inout BrokerState) -> Set<Int> {
        var wakes: Set<Int> = []
        for group in state.takeOutgoing() {
            if case .accepted(let owner?) = group.session.post(group.deliveries, storeKey: group.storeKey, ticket: 0) {
                wakes.insert(owner)
            }
        }
        return wakes
    }

    @Test("MQTT-4.6.0-6 what is posted while a session is on its way is taken when it arrives, in order")
    func postedWhileInTransit() throws {
        var a = state(0)
        var b = state(1)
        var c = state(2)
        _ = a.connect(conn(1), connectPacket("s", cleanStart: true, expiry: 60), now: t0)
        _ = a.subscribe(conn(1), subscribePacket([("t", .init(qos: .atLeastOnce))]), now: t0)
        _ = a.connectionClosed(conn(1), now: t0)
        _ = c.connect(conn(3), connectPacket("p"), now: t0)

        // m1 reaches the session while the first state holds it.
        _ = c.publish(conn(3), publishPacket("t", "m1", qos: .atLeastOnce, id: 1), now: t0)
        #expect(post(from: &c) == [0])
        #expect(a.receivePosted(a.sessions["s"]!.reference, now: t0).actions.isEmpty)  // queued: detached

        // A CONNECT on the second state claims it; the first hands it over.
        let claim = b.connect(conn(2), connectPacket("s", cleanStart: false, expiry: 60), now: t0)
        #expect(claim == [.awaitSession(conn(2), clientID: "s", fetchFrom: 0)])
        let (release, _) = a.release("s", to: 1, now: t0)
        guard case .handedOver(let handover) = release else {
            Issue.record("the session was not handed over: \(release)")
            return
        }
        // m2 is posted while the session travels: it wakes the claimant, which does not hold it yet.
        _ = c.publish(conn(3), publishPacket("t", "m2", qos: .atLeastOnce, id: 2), now: t0)
        #expect(post(from: &c) == [1])
        let reference = handover.session.reference
        #expect(b.receivePosted(reference, now: t0).actions.isEmpty)

        _ = b.adopt(handover, clientID: "s", now: t0)
        let resumed = b.connect(conn(2), connectPacket("s", cleanStart: false, expiry: 60), now: t0)
        #expect(resumed.connack?.sessionPresent == true)
        #expect(resumed.publishes(to: conn(2)).map(\.text) == ["m1", "m2"])

        // From now on deliveries reach it on its new state.
        _ = c.publish(conn(3), publishPacket("t", "m3", qos: .atLeastOnce, id: 3), now: t0)
        #expect(post(from: &c) == [1])
        #expect(b.receivePosted(reference, now: t0).actions.publishes(to: conn(2)).map(\.text) == ["m3"])
    }

    @Test("a session that ends refuses posts; one that did not exist is started fresh by the claimant")
    func endedSession() throws {
        var a = state(0)
        var b = state(1)
        _ = a.connect(conn(1), connectPacket("gone", cleanStart: true, expiry: 0), now: t0)
        _ = a.subscribe(conn(1), subscribePacket([("t", .init(qos: .atMostOnce))]), now: t0)
        let reference = a.sessions["gone"]!.reference
        _ = a.connectionClosed(conn(1), now: t0)  // expiry 0: the session ends with its connection
        #expect(reference.post([], storeKey: 0, ticket: 0) == .refused)
        #expect(shared.subscriptions.count == 0)

        // The client identifier is free again: a CONNECT anywhere starts a new session there.
        let fresh = b.connect(conn(2), connectPacket("gone", cleanStart: false, expiry: 0), now: t0)
        #expect(fresh.connack?.sessionPresent == false)
        #expect(b.sessions["gone"]?.reference !== reference)
    }

    @Test("§3.1.4-3 a release of a session the state itself waits for is made once it has arrived")
    func deferredRelease() throws {
        var a = state(0)
        var b = state(1)
        var c = state(2)
        _ = a.connect(conn(1), connectPacket("x", cleanStart: true, expiry: 60), now: t0)
        #expect(b.connect(conn(2), connectPacket("x", cleanStart: false, expiry: 60), now: t0).count == 1)
        // The third state claims it from the second, which does not have it yet.
        #expect(
            c.connect(conn(3), connectPacket("x", cleanStart: false, expiry: 60), now: t0)
                == [.awaitSession(conn(3), clientID: "x", fetchFrom: 1)]
        )
        guard case .deferred = b.release("x", to: 2, now: t0).release else {
            Issue.record("the second state released a session it does not hold")
            return
        }
        guard case .handedOver(let first) = a.release("x", to: 1, now: t0).release else {
            Issue.record("the first state did not hand the session over")
            return
        }
        _ = b.adopt(first, clientID: "x", now: t0)
        #expect(b.connect(conn(2), connectPacket("x", cleanStart: false, expiry: 60), now: t0).connack != nil)
        #expect(b.takeDeferredReleases("x") == [2])
        let (second, actions) = b.release("x", to: 2, now: t0)
        #expect(actions.sent(to: conn(2)) == [.disconnect(Disconnect(reasonCode: .sessionTakenOver))])
        guard case .handedOver(let handover) = second else {
            Issue.record("the second state did not hand the session on")
            return
        }
        _ = c.adopt(handover, clientID: "x", now: t0)
        #expect(
            c.connect(conn(3), connectPacket("x", cleanStart: false, expiry: 60), now: t0).connack?.sessionPresent
                == true
        )
    }
}

/// What a delivery routed between states leaves in the store: the routing state stores it for a
/// stored session, and the session's state finishes it.
@Suite("Stored deliveries between states")
struct StoredDeliveriesBetweenStatesTests {
    let shared = BrokerShared()

    func state(_ shard: Int, configuration: BrokerConfiguration = BrokerConfiguration()) -> BrokerState {
        var state = BrokerState(configuration: configuration, now: t0, shared: shared, shard: shard)
        state.recordsChanges = true
        return state
    }

    /// The sequences of the deliveries `changes` put, and of those they delete.
    func deliveries(_ changes: [StoreChange]) -> (put: Set<UInt64>, deleted: Set<UInt64>) {
        var put: Set<UInt64> = []
        var deleted: Set<UInt64> = []
        for change in changes {
            if case .putDelivery(_, let delivery) = change { put.insert(delivery.sequence) }
            if case .deleteDelivery(let sequence, _) = change { deleted.insert(sequence) }
        }
        return (put, deleted)
    }

    @Test(
        "A QoS 0 message sent, or dropped, by the session's state is finished in the store as well as put: no row outlives it (§4.3.1)",
        arguments: ["sent", "not queued while detached", "queue full"]
    )
    func qos0AndDroppedDeliveriesAreFinished(_ case: String) throws {
        var configuration = BrokerConfiguration()
        configuration.maxQueuedMessages = 1
        var subscriberState = state(0, configuration: configuration)
        var publisherState = state(1, configuration: configuration)
        _ = subscriberState.connect(conn(1), connectPacket("s", cleanStart: true, expiry: 600), now: t0)
        _ = subscriberState.subscribe(conn(1), subscribePacket([("t", .init(qos: .atLeastOnce))]), now: t0)
        var qos = QoS.atMostOnce
        switch `case` {
        case "sent": break
        case "not queued while detached": _ = subscriberState.connectionClosed(conn(1), now: t0)
        default:
            // One message queued behind a closed window fills the queue of one; the next is dropped.
            _ = subscriberState.connectionClosed(conn(1), now: t0)
            qos = .atLeastOnce
        }
        _ = subscriberState.takeSessionChanges()
        _ = publisherState.connect(conn(2), connectPacket("p"), now: t0)
        let count = `case` == "queue full" ? 2 : 1
        for index in 0..<count {
            _ = publisherState.publish(
                conn(2),
                publishPacket("t", "m\(index)", qos: qos, id: UInt16(index + 1)),
                now: t0
            )
        }
        let routed = deliveries(publisherState.takeSessionChanges())
        #expect(routed.put.count == count, "the routing state stores the deliveries of a stored session")
        for group in publisherState.takeOutgoing() {
            _ = group.session.post(group.deliveries, storeKey: group.storeKey, ticket: 0)
        }
        _ = subscriberState.receivePosted(subscriberState.sessions["s"]!.reference, now: t0)
        let finished = deliveries(subscriberState.takeSessionChanges())
        let expectedFinished = `case` == "queue full" ? Set([routed.put.max()!]) : routed.put
        #expect(finished.deleted == expectedFinished)
    }
}
