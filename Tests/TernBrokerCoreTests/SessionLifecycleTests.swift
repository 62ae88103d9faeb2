import NIOCore
import TernBrokerTesting
import TernCodec
import Testing

@testable import TernBrokerCore

/// MQTT 5.0 §3.1.2.4 (Clean Start), §3.1.2.11.2 and §4.1 (Session Expiry), §3.1.4 (takeover).
@Suite("Sessions")
struct SessionLifecycleTests {
    @Test("§3.2.2.3 CONNACK announces the broker's limits")
    func connackProperties() {
        var state = BrokerState(now: t0)
        let ack = state.connect(conn(1), connectPacket("a"), now: t0).connack
        #expect(ack?.reasonCode == .success)
        #expect(ack?.sessionPresent == false)
        #expect(ack?.properties.receiveMaximum == 20)
        #expect(ack?.properties.topicAliasMaximum == 10)
    }

    @Test("§3.2.2.3.7 an empty client identifier is assigned one and told it")
    func assignedIdentifier() {
        var state = BrokerState(now: t0)
        let ack = state.connect(conn(1), connectPacket(""), now: t0).connack
        let assigned = ack?.properties.assignedClientIdentifier
        #expect(assigned?.hasPrefix("auto-") == true)
        #expect(state.clientID(of: conn(1)) == assigned)
    }

    @Test("3.1.1 §3.1.3.1 an empty client identifier with Clean Session 0 is rejected")
    func emptyIdentifierWithoutCleanSession() {
        var state = BrokerState(now: t0)
        let actions = state.connect(conn(1), connectPacket("", version: .v3_1_1, cleanStart: false), now: t0)
        #expect(actions.connack?.reasonCode == .clientIdentifierNotValid)
        #expect(actions.closes(conn(1)))
    }

    @Test("§3.1.4 a second connection with the same identifier takes the session over (0x8E)")
    func takeover() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("a", expiry: 60), now: t0)
        let actions = state.connect(conn(2), connectPacket("a", cleanStart: false, expiry: 60), now: t0)
        #expect(actions.sent(to: conn(1)) == [.disconnect(Disconnect(reasonCode: .sessionTakenOver))])
        #expect(actions.closes(conn(1)))
        #expect(actions.connack?.sessionPresent == true)
        #expect(state.clientID(of: conn(2)) == "a")
        #expect(state.clientID(of: conn(1)) == nil)
    }

    @Test("§3.1.2.11.2 expiry absent or 0: the session ends when the connection closes")
    func expiryZeroEndsAtDisconnect() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("a", cleanStart: false), now: t0)
        _ = state.subscribe(conn(1), subscribePacket([("t", .init(qos: .atLeastOnce))]), now: t0)
        _ = state.connectionClosed(conn(1), now: t0)
        #expect(state.sessions["a"] == nil)
        #expect(state.topics.count == 0)
        let ack = state.connect(conn(2), connectPacket("a", cleanStart: false), now: t0).connack
        #expect(ack?.sessionPresent == false)
    }

    @Test("§4.1 expiry N: the session, its subscriptions and queue are kept N seconds")
    func expiryKeepsSessionForItsInterval() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("sub", cleanStart: false, expiry: 30), now: t0)
        _ = state.subscribe(conn(1), subscribePacket([("t", .init(qos: .atLeastOnce))]), now: t0)
        _ = state.connectionClosed(conn(1), now: t0)
        _ = state.connect(conn(2), connectPacket("pub"), now: t0)
        _ = state.publish(conn(2), publishPacket("t", "queued", qos: .atLeastOnce, id: 1), now: t0.plus(seconds: 5))
        #expect(state.sessions["sub"]?.queue.count == 1)
        _ = state.tick(now: t0.plus(seconds: 29))
        #expect(state.sessions["sub"] != nil)
        let actions = state.connect(
            conn(3),
            connectPacket("sub", cleanStart: false, expiry: 30),
            now: t0.plus(seconds: 29)
        )
        #expect(actions.connack?.sessionPresent == true)
        #expect(actions.publishes(to: conn(3)).map(\.text) == ["queued"])
    }

    @Test("§4.1 a detached session is gone once its expiry passes")
    func expiryEndsSession() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("a", cleanStart: false, expiry: 30), now: t0)
        _ = state.connectionClosed(conn(1), now: t0)
        #expect(state.nextDeadline == t0.plus(seconds: 30))
        _ = state.tick(now: t0.plus(seconds: 30))
        #expect(state.sessions["a"] == nil)
        #expect(
            state.connect(conn(2), connectPacket("a", cleanStart: false, expiry: 30), now: t0.plus(seconds: 31))
                .connack?.sessionPresent == false
        )
    }

    @Test("§3.1.2.11.2 0xFFFFFFFF never expires, unless persistent_client_expiration caps it")
    func neverExpires() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("a", cleanStart: false, expiry: .max), now: t0)
        _ = state.connectionClosed(conn(1), now: t0)
        _ = state.tick(now: t0.plus(seconds: 10 * 365 * 86_400))
        #expect(state.sessions["a"] != nil)

        var configuration = BrokerConfiguration()
        configuration.persistentClientExpiration = 3600
        var capped = BrokerState(configuration: configuration, now: t0)
        _ = capped.connect(conn(1), connectPacket("a", cleanStart: false, expiry: .max), now: t0)
        _ = capped.connectionClosed(conn(1), now: t0)
        _ = capped.tick(now: t0.plus(seconds: 3599))
        #expect(capped.sessions["a"] != nil)
        _ = capped.tick(now: t0.plus(seconds: 3600))
        #expect(capped.sessions["a"] == nil)
    }

    @Test("3.1.1 Clean Session 0 is a session that never expires; Clean Session 1 is expiry 0")
    func legacyCleanSession() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("keep", version: .v3_1_1, cleanStart: false), now: t0)
        _ = state.connect(conn(2), connectPacket("drop", version: .v3_1_1, cleanStart: true), now: t0)
        _ = state.connectionClosed(conn(1), now: t0)
        _ = state.connectionClosed(conn(2), now: t0)
        _ = state.tick(now: t0.plus(seconds: 86_400 * 365))
        #expect(state.sessions["keep"]?.expiryInterval == .max)
        #expect(state.sessions["drop"] == nil)
    }

    @Test("§3.1.2.4 Clean Start 1 discards the old session, then keeps the new one by its own expiry")
    func cleanStartDiscards() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("a", cleanStart: false, expiry: 60), now: t0)
        _ = state.subscribe(conn(1), subscribePacket([("t", .init())]), now: t0)
        _ = state.connectionClosed(conn(1), now: t0)
        let ack = state.connect(conn(2), connectPacket("a", cleanStart: true, expiry: 60), now: t0).connack
        #expect(ack?.sessionPresent == false)
        #expect(state.sessions["a"]?.subscriptions.isEmpty == true)
        #expect(state.topics.count == 0)
        _ = state.connectionClosed(conn(2), now: t0)
        #expect(state.sessions["a"] != nil)
    }

    @Test("§3.14.2.2.2 DISCONNECT may change a non-zero expiry")
    func disconnectChangesExpiry() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("a", expiry: 60), now: t0)
        var properties = Properties()
        properties.sessionExpiryInterval = 0
        let actions = state.disconnect(conn(1), Disconnect(properties: properties), now: t0)
        #expect(actions.closes(conn(1)))
        #expect(state.sessions["a"] == nil)
    }

    @Test(
        "§3.14.2.2.2 expiry 0 at CONNECT then non-zero at DISCONNECT is a protocol error (0x82); the will is published"
    )
    func disconnectZeroToNonZero() {
        var state = stateWithWatcher(on: "wills/#")
        _ = state.connect(conn(1), connectPacket("a", will: will("wills/a", "gone")), now: t0)
        var properties = Properties()
        properties.sessionExpiryInterval = 300
        let actions = state.disconnect(conn(1), Disconnect(properties: properties), now: t0)
        #expect(actions.sent(to: conn(1)) == [.disconnect(Disconnect(reasonCode: .protocolError))])
        #expect(actions.closes(conn(1)))
        #expect(actions.publishes(to: conn(9)).map(\.text) == ["gone"])
        #expect(state.sessions["a"] == nil)
    }

    @Test("§3.1.2.10 max_keepalive caps the keep alive and replaces 0")
    func serverKeepAlive() {
        var configuration = BrokerConfiguration()
        configuration.maxKeepalive = 120
        var state = BrokerState(configuration: configuration, now: t0)
        #expect(state.grantedKeepAlive(requested: 60) == 60)
        #expect(state.grantedKeepAlive(requested: 600) == 120)
        #expect(state.grantedKeepAlive(requested: 0) == 120)
        let ack = state.connect(conn(1), connectPacket("a", keepAlive: 600), now: t0).connack
        #expect(ack?.properties.serverKeepAlive == 120)
    }

    @Test("allow_anonymous false without a password file refuses the client (0x87)")
    func anonymousRefused() {
        var configuration = BrokerConfiguration()
        configuration.allowAnonymous = false
        var state = BrokerState(configuration: configuration, now: t0)
        let actions = state.connect(conn(1), connectPacket("a"), now: t0)
        #expect(actions.connack?.reasonCode == .notAuthorized)
        #expect(actions.closes(conn(1)))
    }

    @Test("§4.1 expiry deadlines: a client that comes back again and again does not grow the deadline queue")
    func deadlinesStayBounded() {
        var state = BrokerState(now: t0)
        let year: UInt32 = 365 * 86_400
        for round in 0..<5000 {
            let now = t0.plus(seconds: Int64(round))
            _ = state.connect(conn(UInt64(round)), connectPacket("flapping", cleanStart: false, expiry: year), now: now)
            _ = state.connectionClosed(conn(UInt64(round)), now: now)
        }
        // Each detach adds a deadline; stale ones are compacted away, so one session keeps a few.
        #expect(state.deadlines.count <= 1024 + 2)
        #expect(state.nextDeadline != nil)
        // Only the last detach counts: the session lives a year from then, not from the first.
        let last = t0.plus(seconds: 4999)
        _ = state.tick(now: last.plus(seconds: Int64(year) - 1))
        #expect(state.sessions["flapping"] != nil)
        _ = state.tick(now: last.plus(seconds: Int64(year)))
        #expect(state.sessions["flapping"] == nil)
        #expect(state.deadlines.count == 0)
    }

    @Test("§3.3.2.3.3 a retained message's expiry is a deadline; one replaced before it is not removed by it")
    func retainedExpiryDeadline() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        var properties = Properties()
        properties.messageExpiryInterval = 10
        let expiring = publishPacket("r", "short", retain: true, properties: properties)
        _ = state.publish(conn(1), expiring, now: t0)
        #expect(state.nextDeadline == t0.plus(seconds: 10))
        _ = state.tick(now: t0.plus(seconds: 10))
        #expect(state.retained["r"] == nil)

        _ = state.publish(conn(1), expiring, now: t0.plus(seconds: 20))
        _ = state.publish(conn(1), publishPacket("r", "forever", retain: true), now: t0.plus(seconds: 25))
        _ = state.tick(now: t0.plus(seconds: 30))
        #expect(state.retained["r"].map { String(buffer: $0.payload) } == "forever")
    }
}
