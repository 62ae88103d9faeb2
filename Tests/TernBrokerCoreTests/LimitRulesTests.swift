import NIOCore
import TernBrokerTesting
import TernCodec
import Testing

@testable import TernBrokerCore

/// `memory_limit`, `use_username_as_clientid` and `mount_point` as rules, without sockets.
@Suite("Limit rules")
struct LimitRulesTests {
    @Test("memory_limit, 3.1.1: QoS 0 is dropped, QoS 1 closes the connection unacknowledged so the client re-sends")
    func memoryLimit311() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("old", version: .v3_1_1), now: t0)
        _ = state.connect(conn(2), connectPacket("sub"), now: t0)
        _ = state.subscribe(conn(2), subscribePacket([("t", .init(qos: .atLeastOnce))]), now: t0)
        state.overMemoryLimit = true
        #expect(state.publish(conn(1), publishPacket("t", "zero"), now: t0).isEmpty)
        let qos1 = state.publish(conn(1), publishPacket("t", "one", qos: .atLeastOnce, id: 3), now: t0)
        #expect(qos1 == [.close(conn(1))])
        #expect(state.statistics.publishMessagesDropped == 2)
    }

    @Test("memory_limit, MQTT 5: QoS 2 gets PUBREC 0x97, which ends the flow (§4.3.3); nothing is routed")
    func memoryLimitExactlyOnce() {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), connectPacket("pub"), now: t0)
        _ = state.subscribe(conn(1), subscribePacket([("t", .init(qos: .exactlyOnce))]), now: t0)
        state.overMemoryLimit = true
        let actions = state.publish(conn(1), publishPacket("t", "two", qos: .exactlyOnce, id: 9), now: t0)
        #expect(
            actions == [
                .send(conn(1), .pubrec(PublishAcknowledgement(packetIdentifier: 9, reasonCode: .quotaExceeded)))
            ]
        )
        #expect(state.sessions["pub"]?.inboundQoS2Pending.isEmpty == true)
    }

    @Test("use_username_as_clientid: the user name is the client identifier; no user name is 0x87 (3.1.1: 5)")
    func usernameAsClientID() {
        var configuration = BrokerConfiguration()
        configuration.useUsernameAsClientID = true
        var state = BrokerState(configuration: configuration, now: t0)
        let accepted = state.connect(conn(1), connectPacket("ignored", username: "alice"), now: t0)
        #expect(accepted.connack?.reasonCode == .success)
        #expect(state.clientID(of: conn(1)) == "alice")
        #expect(state.sessions["ignored"] == nil)
        let anonymous = state.connect(conn(2), connectPacket("device-7"), now: t0)
        #expect(anonymous.connack?.reasonCode == .notAuthorized)
        #expect(anonymous.closes(conn(2)))
        let old = state.connect(conn(3), connectPacket("device-8", version: .v3_1_1), now: t0)
        #expect(old.connack?.reasonCode.connectReturnCode == 5)
    }

    @Test("mount_point: topics, filters (shared ones keep $share/NAME/ first) and will topics get the prefix")
    func mountPoint() throws {
        let mount = MountPoint("site-1/")
        #expect(mount.mount(try TopicName("a/b")).string == "site-1/a/b")
        #expect(mount.mount(try TopicFilter("#")).string == "site-1/#")
        #expect(mount.mount(try TopicFilter("$share/g/a/+")).string == "$share/g/site-1/a/+")
        #expect(mount.unmount(try TopicName("site-1/a/b")).string == "a/b")
        let connect = Connect(clientIdentifier: "c", will: will("status", "gone"))
        guard case .connect(let mounted) = mount.mount(.connect(connect)) else {
            Issue.record("CONNECT not kept")
            return
        }
        #expect(mounted.will?.topic.string == "site-1/status")
    }

    @Test("mount_point in the connection state machine: aliases resolve first, then the prefix applies")
    func mountPointAfterAliases() throws {
        var machine = ConnectionStateMachine(topicAliasMaximum: 10, mountPoint: MountPoint("m/"))
        _ = machine.received(.connect(Connect(clientIdentifier: "c")))
        var first = publishPacket("x/y", "1")
        first.properties.topicAlias = 2
        guard case .forward(.publish(let named)) = machine.received(.publish(first)) else {
            Issue.record("PUBLISH not forwarded")
            return
        }
        #expect(named.topic.string == "m/x/y")
        var second = publishPacket("x/y", "2")
        second.topic = .aliasOnly
        second.properties.topicAlias = 2
        guard case .forward(.publish(let aliased)) = machine.received(.publish(second)) else {
            Issue.record("aliased PUBLISH not forwarded")
            return
        }
        #expect(aliased.topic.string == "m/x/y")
        var outbound = named
        machine.outbound(&outbound)
        #expect(outbound.topic.string == "x/y")
    }
}

/// Clients the broker opens itself (a bridge's local side).
@Suite("Trusted clients")
struct TrustedClientTests {
    @Test("a trusted client is held by its Receive Maximum, not max_inflight_messages, and no ACL applies")
    func trustedWindowAndAccess() throws {
        var state = BrokerState(now: t0)
        state.accessControl = try AccessControlList(parsing: "topic read nothing/#\n", file: "acl")
        _ = state.connect(conn(1), connectPacket("bridge", receiveMaximum: 100), credentials: .trusted, now: t0)
        let suback = state.subscribe(conn(1), subscribePacket([("data/#", .init(qos: .atLeastOnce))]), now: t0)
        guard case .suback(let ack)? = suback.sent(to: conn(1)).first else {
            Issue.record("no SUBACK")
            return
        }
        #expect(ack.reasonCodes == [.grantedQoS1])
        _ = state.connect(conn(2), connectPacket("pub"), credentials: .trusted, now: t0)
        var sent = 0
        for n in 0..<150 {
            let actions = state.publish(
                conn(2),
                publishPacket("data/x", "\(n)", qos: .atLeastOnce, id: UInt16(n + 1)),
                now: t0
            )
            sent += actions.publishes(to: conn(1)).count
        }
        #expect(sent == 100)  // an ordinary client gets max_inflight_messages (20) at most
    }
}
