import NIOCore
import TernBrokerTesting
import TernCodec
import Testing

@testable import TernBrokerCore

/// `acl_file` in Mosquitto's format, and what the broker does with it: SUBSCRIBE answered 0x87
/// (MQTT 5.0 §3.9.3) or 0x80 (3.1.1 §3.9.3), PUBLISH dropped and answered 0x87 (§3.4.2.1,
/// §3.5.2.1), deliveries held back, restored sessions re-checked at reconnect.
@Suite("Access control lists")
struct AccessControlTests {
    static let text = """
        # anonymous clients
        topic read public/#

        user alice
        topic readwrite alice/#
        topic deny alice/secret/#
        topic write  shared/with spaces
        topic inbox/+

        user bob
        topic read alice/news

        pattern write devices/%c/status
        pattern read users/%u/#
        """

    static func acl() throws -> AccessControlList { try AccessControlList(parsing: text, file: "acl") }

    @Test("topic lines before the first user are for anonymous clients; user lines for that user; patterns for all")
    func sections() throws {
        let acl = try Self.acl()
        #expect(acl.mayReceive(topic: "public/a", clientID: "c", username: nil))
        #expect(!acl.mayPublish(topic: "public/a", clientID: "c", username: nil))
        #expect(!acl.mayReceive(topic: "public/a", clientID: "c", username: "alice"))
        #expect(acl.mayPublish(topic: "alice/x/y", clientID: "c", username: "alice"))
        #expect(acl.mayReceive(topic: "alice/x/y", clientID: "c", username: "alice"))
        #expect(!acl.mayReceive(topic: "alice/x/y", clientID: "c", username: "bob"))
        #expect(acl.mayReceive(topic: "alice/news", clientID: "c", username: "bob"))
        #expect(!acl.mayPublish(topic: "alice/news", clientID: "c", username: "bob"))
        #expect(!acl.mayReceive(topic: "anything", clientID: "c", username: "carol"))
    }

    @Test("the access word is optional (readwrite) and a topic may hold spaces")
    func defaultsAndSpaces() throws {
        let acl = try Self.acl()
        #expect(acl.mayPublish(topic: "inbox/1", clientID: "c", username: "alice"))
        #expect(acl.mayReceive(topic: "inbox/1", clientID: "c", username: "alice"))
        #expect(acl.mayPublish(topic: "shared/with spaces", clientID: "c", username: "alice"))
        #expect(!acl.mayReceive(topic: "shared/with spaces", clientID: "c", username: "alice"))
    }

    @Test("deny wins over a grant that also matches")
    func denyWins() throws {
        let acl = try Self.acl()
        #expect(!acl.mayPublish(topic: "alice/secret/k", clientID: "c", username: "alice"))
        #expect(!acl.mayReceive(topic: "alice/secret", clientID: "c", username: "alice"))
    }

    @Test("patterns fill in %c and %u, and never match a name holding +, # or /")
    func patterns() throws {
        let acl = try Self.acl()
        #expect(acl.mayPublish(topic: "devices/d1/status", clientID: "d1", username: nil))
        #expect(!acl.mayPublish(topic: "devices/d2/status", clientID: "d1", username: nil))
        #expect(acl.mayReceive(topic: "users/bob/inbox", clientID: "x", username: "bob"))
        #expect(!acl.mayReceive(topic: "users/bob/inbox", clientID: "x", username: nil))
        #expect(!acl.mayPublish(topic: "devices/+/status", clientID: "+", username: nil))
        #expect(!acl.mayReceive(topic: "users/a/b/c", clientID: "x", username: "a/b"))
        #expect(!acl.maySubscribe(filter: try TopicFilter("users/#"), clientID: "x", username: "#"))
    }

    @Test("§4.7.1 level matching: + takes one level (an empty one too), # the parent and below, literals whole levels")
    func levelMatching() throws {
        let acl = try AccessControlList(
            parsing: "topic write a/+\ntopic write b/#\ntopic write c\npattern write dev_%c/x\n",
            file: "acl"
        )
        func may(_ topic: String, _ clientID: String = "k") -> Bool {
            acl.mayPublish(topic: topic, clientID: clientID, username: nil)
        }
        #expect(may("a/1"))
        #expect(may("a/"))
        #expect(!may("a"))
        #expect(!may("a/1/2"))
        #expect(may("b"))
        #expect(may("b/1/2"))
        #expect(may("c"))
        #expect(!may("c/"))
        #expect(!may("cc"))
        #expect(may("dev_k/x"))
        #expect(!may("dev_j/x"))
        #expect(!may("dev_+/x", "+"))
    }

    @Test("§4.7.2 a grant starting with a wildcard does not reach $ topics")
    func dollarTopics() throws {
        let acl = try AccessControlList(parsing: "topic readwrite #\n", file: "acl")
        #expect(acl.mayReceive(topic: "a/b", clientID: "c", username: nil))
        #expect(!acl.mayReceive(topic: "$SYS/broker/uptime", clientID: "c", username: nil))
        #expect(!acl.maySubscribe(filter: try TopicFilter("$SYS/#"), clientID: "c", username: nil))
        let sys = try AccessControlList(parsing: "topic read $SYS/#\n", file: "acl")
        #expect(sys.mayReceive(topic: "$SYS/broker/uptime", clientID: "c", username: nil))
    }

    @Test("a subscription is granted only when a read grant covers every topic it can match")
    func subscriptionCoverage() throws {
        let acl = try Self.acl()
        func may(_ filter: String, _ user: String?) throws -> Bool {
            acl.maySubscribe(filter: try TopicFilter(filter), clientID: "c", username: user)
        }
        #expect(try may("public/#", nil))
        #expect(try may("public/+/x", nil))
        #expect(try may("public", nil))  // `public/#` matches its parent (§4.7.1.2)
        #expect(try !may("#", nil))
        #expect(try !may("+/a", nil))
        #expect(try may("alice/+", "alice"))
        #expect(try !may("alice/secret/#", "alice"))
        #expect(try !may("alice/secret/+", "alice"))
        #expect(try may("alice/#", "alice"))  // granted; alice/secret/... is held back per message
        #expect(try may("$share/g/public/+", nil))  // the share name is not part of the check
        #expect(try !may("inbox/#", "alice"))  // `inbox/+` does not cover deeper levels
    }

    @Test("a bad line is reported with file, line and reason")
    func badLines() {
        func error(_ text: String) -> AccessControlList.ParseError? {
            do {
                _ = try AccessControlList(parsing: text, file: "/etc/tern/acl")
                return nil
            } catch { return error }
        }
        #expect(
            error("topic read a\nsubscribe x\n")
                == .init(file: "/etc/tern/acl", line: 2, reason: "expected user, topic or pattern, not 'subscribe'")
        )
        #expect(error("\n\ntopic read a/#/b\n")?.line == 3)
        #expect(error("user\n")?.reason == "user needs a user name")
        #expect(error("topic\n")?.line == 1)
    }

    // MARK: In the broker

    static func broker() throws -> BrokerState {
        var state = BrokerState(now: t0)
        state.accessControl = try Self.acl()
        return state
    }

    static func connect(
        _ clientID: String,
        user: String?,
        version: ProtocolVersion = .v5,
        expiry: UInt32? = nil,
        cleanStart: Bool = true
    ) -> Connect {
        var packet = connectPacket(clientID, version: version, cleanStart: cleanStart, expiry: expiry)
        packet.username = user
        return packet
    }

    @Test(
        "§3.9.3 SUBSCRIBE to a denied filter: 0x87 on v5, 0x80 on 3.1.1; the others are granted",
        arguments: [ProtocolVersion.v5, .v3_1_1]
    )
    func subscribeDenied(version: ProtocolVersion) throws {
        var state = try Self.broker()
        _ = state.connect(conn(1), Self.connect("c", user: "alice", version: version), now: t0)
        let actions = state.subscribe(
            conn(1),
            subscribePacket([("alice/a", .init(qos: .atLeastOnce)), ("bob/#", .init(qos: .atLeastOnce))]),
            now: t0
        )
        guard case .suback(let ack)? = actions.sent(to: conn(1)).first else { Issue.record("no SUBACK"); return }
        #expect(ack.reasonCodes == [.grantedQoS1, version == .v5 ? .notAuthorized : .unspecifiedError])
        #expect(state.topics.count == 1)
    }

    @Test(
        "§3.4.2.1 a denied PUBLISH is dropped: PUBACK/PUBREC 0x87 on v5, QoS 0 silently",
        arguments: [QoS.atMostOnce, .atLeastOnce, .exactlyOnce]
    )
    func publishDenied(qos: QoS) throws {
        var state = try Self.broker()
        _ = state.connect(conn(1), Self.connect("sub", user: "bob"), now: t0)
        _ = state.subscribe(conn(1), subscribePacket([("alice/news", .init(qos: .exactlyOnce))]), now: t0)
        _ = state.connect(conn(2), Self.connect("pub", user: "bob"), now: t0)
        let actions = state.publish(conn(2), publishPacket("alice/news", "forged", qos: qos, id: 5), now: t0)
        #expect(actions.publishes(to: conn(1)).isEmpty)
        let replies = actions.sent(to: conn(2))
        switch qos {
        case .atMostOnce: #expect(replies.isEmpty)
        case .atLeastOnce:
            #expect(replies == [.puback(PublishAcknowledgement(packetIdentifier: 5, reasonCode: .notAuthorized))])
        case .exactlyOnce:
            #expect(replies == [.pubrec(PublishAcknowledgement(packetIdentifier: 5, reasonCode: .notAuthorized))])
            #expect(state.sessions["pub"]?.inboundQoS2Pending.isEmpty == true)  // the flow ended at the failed PUBREC
        }
        #expect(!actions.closes(conn(2)))
    }

    @Test("3.1.1: a denied QoS 1 PUBLISH gets a plain PUBACK (it has no reason codes) and is not delivered")
    func publishDeniedLegacy() throws {
        var state = try Self.broker()
        _ = state.connect(conn(1), Self.connect("pub", user: "bob", version: .v3_1_1), now: t0)
        let actions = state.publish(conn(1), publishPacket("alice/news", "forged", qos: .atLeastOnce, id: 5), now: t0)
        #expect(actions.sent(to: conn(1)) == [.puback(PublishAcknowledgement(packetIdentifier: 5))])
        #expect(state.statistics.publishMessagesDropped == 1)
    }

    @Test(
        "a delivery the subscriber may not read is not sent, also through a granted wildcard and for retained messages"
    )
    func deliveryDenied() throws {
        var state = try Self.broker()
        _ = state.connect(conn(1), Self.connect("a", user: "alice"), now: t0)
        _ = state.subscribe(conn(1), subscribePacket([("alice/#", .init(qos: .atLeastOnce))]), now: t0)
        _ = state.connect(conn(2), Self.connect("writer", user: "alice"), now: t0)
        // A retained message kept from before the ACL existed (alice may not write there now).
        let old = ApplicationMessage(
            topic: try TopicName("alice/secret/r"),
            payload: ByteBuffer(string: "r"),
            qos: .atMostOnce,
            retain: true,
            properties: Properties(),
            expiresAt: nil,
            publisherClientID: "old"
        )
        state.retained.set("alice/secret/r", old, record: false)
        let open = state.publish(conn(2), publishPacket("alice/open", "1", qos: .atLeastOnce, id: 1), now: t0)
        #expect(open.publishes(to: conn(1)).map(\.text) == ["1"])
        let secret = state.publish(conn(2), publishPacket("alice/secret/x", "2", qos: .atLeastOnce, id: 2), now: t0)
        #expect(secret.publishes(to: conn(1)).isEmpty)
        let again = state.subscribe(conn(1), subscribePacket([("alice/#", .init(qos: .atLeastOnce))], id: 2), now: t0)
        #expect(again.publishes(to: conn(1)).isEmpty)
    }

    @Test("a will the client may not publish is refused at CONNECT with 0x87")
    func willDenied() throws {
        var state = try Self.broker()
        var packet = Self.connect("c", user: "bob")
        packet.will = will("alice/news", "gone")
        let actions = state.connect(conn(1), packet, now: t0)
        #expect(actions.connack?.reasonCode == .notAuthorized)
        #expect(actions.closes(conn(1)))
    }

    @Test("per listener: each listener's allow_anonymous and ACL apply to the clients that came through it")
    func perListener() throws {
        var state = BrokerState(now: t0)
        state.configuration.allowAnonymous = false
        state.listenerPolicies = [
            1: AccessPolicy(
                allowAnonymous: true,
                accessControl: try AccessControlList(parsing: "topic read open/#\n", file: "acl")
            )
        ]
        let refused = state.connect(conn(1), Self.connect("a", user: nil), now: t0)
        #expect(refused.connack?.reasonCode == .notAuthorized)
        let accepted = state.connect(conn(2), Self.connect("b", user: nil), listener: 1, now: t0)
        #expect(accepted.connack?.reasonCode == .success)
        let suback = state.subscribe(conn(2), subscribePacket([("open/x", .init()), ("closed/x", .init())]), now: t0)
        guard case .suback(let ack)? = suback.sent(to: conn(2)).first else { Issue.record("no SUBACK"); return }
        #expect(ack.reasonCodes == [.success, .notAuthorized])
    }

    @Test("a reload holds connected clients to the new ACL without disconnecting them")
    func reload() throws {
        var state = BrokerState(now: t0)
        _ = state.connect(conn(1), Self.connect("a", user: "alice"), now: t0)
        _ = state.subscribe(conn(1), subscribePacket([("bob/#", .init()), ("alice/#", .init())]), now: t0)
        state.reloadAccess(accessControl: try Self.acl(), listenerPolicies: [:])
        #expect(state.sessions["a"]?.subscriptions.keys.sorted() == ["alice/#"])
        #expect(state.sessions["a"]?.connection == conn(1))
        _ = state.connect(conn(2), Self.connect("p", user: "alice"), now: t0)
        let bob = state.publish(conn(2), publishPacket("bob/x", "x"), now: t0)
        #expect(bob.publishes(to: conn(1)).isEmpty)
    }
}
