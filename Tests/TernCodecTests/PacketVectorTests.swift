import NIOCore
import Testing

@testable import TernCodec

/// Byte-exact packets worked out by hand from the specifications. Each vector names the section
/// whose figure or field table it follows; the bytes were laid out field by field from there.
@Suite("Byte-exact vectors")
struct PacketVectorTests {
    struct Vector: CustomTestStringConvertible, Sendable {
        var name: String
        var version: ProtocolVersion
        var packet: MQTTPacket
        var bytes: [UInt8]
        var testDescription: String { "\(name) (\(version))" }
    }

    static let vectors: [Vector] = [
        // MQTT 3.1.1 §3.1 Figure 3.6 ff.: "MQTT", level 4, Clean Session, keep alive 60, id "abc".
        Vector(
            name: "§3.1 CONNECT",
            version: .v3_1_1,
            packet: .connect(Connect(protocolVersion: .v3_1_1, clientIdentifier: "abc", keepAlive: 60)),
            bytes: [0x10, 0x0F] + mqttString("MQTT") + [0x04, 0x02, 0x00, 0x3C] + mqttString("abc")
        ),
        // MQTT 3.1 §3.1: protocol name "MQIsdp", version 3.
        Vector(
            name: "3.1 CONNECT",
            version: .v3_1,
            packet: .connect(Connect(protocolVersion: .v3_1, clientIdentifier: "abc", keepAlive: 60)),
            bytes: [0x10, 0x11] + mqttString("MQIsdp") + [0x03, 0x02, 0x00, 0x3C] + mqttString("abc")
        ),
        // MQTT 5.0 §3.1.2.11.2: Session Expiry Interval 0xFFFFFFFF (never expires).
        Vector(
            name: "§3.1 CONNECT with session expiry",
            version: .v5,
            packet: .connect(
                Connect(
                    clientIdentifier: "abc",
                    keepAlive: 60,
                    properties: try! Properties([.sessionExpiryInterval(.max)])
                )
            ),
            bytes: [0x10, 0x15] + mqttString("MQTT") + [0x05, 0x02, 0x00, 0x3C, 0x05, 0x11, 0xFF, 0xFF, 0xFF, 0xFF]
                + mqttString("abc")
        ),
        // MQTT 5.0 §3.1.2.3: will flag, will QoS 1, will retain, user name and password flags.
        Vector(
            name: "§3.1.2.3 CONNECT flags",
            version: .v5,
            packet: .connect(
                Connect(
                    clientIdentifier: "c",
                    cleanStart: false,
                    keepAlive: 0,
                    will: .init(topic: topic("w"), payload: buffer("x"), qos: .atLeastOnce, retain: true),
                    username: "u",
                    password: buffer("p")
                )
            ),
            bytes: [0x10, 0x1B] + mqttString("MQTT") + [0x05, 0xEC, 0x00, 0x00, 0x00] + mqttString("c") + [0x00]
                + mqttString("w") + mqttString("x") + mqttString("u") + mqttString("p")
        ),
        // MQTT 3.1.1 §3.2.2.2: Session Present = 1, return code 0.
        Vector(
            name: "§3.2 CONNACK session present",
            version: .v3_1_1,
            packet: .connack(ConnAck(sessionPresent: true)),
            bytes: [0x20, 0x02, 0x01, 0x00]
        ),
        // MQTT 5.0 §3.2.2: flags, reason code, property length 0.
        Vector(
            name: "§3.2 CONNACK",
            version: .v5,
            packet: .connack(ConnAck()),
            bytes: [0x20, 0x03, 0x00, 0x00, 0x00]
        ),
        Vector(
            name: "§3.2 CONNACK refused",
            version: .v5,
            packet: .connack(ConnAck(reasonCode: .badUserNameOrPassword)),
            bytes: [0x20, 0x03, 0x00, 0x86, 0x00]
        ),
        // MQTT 3.1.1 §3.3.1: QoS 1 = flags 0010; topic "a/b", packet id 10, payload "hi".
        Vector(
            name: "§3.3 PUBLISH QoS 1",
            version: .v3_1_1,
            packet: .publish(
                Publish(topic: topic("a/b"), payload: buffer("hi"), qos: .atLeastOnce, packetIdentifier: 10)
            ),
            bytes: [0x32, 0x09] + mqttString("a/b") + [0x00, 0x0A] + ascii("hi")
        ),
        // MQTT 5.0 §3.3.1: retain = flag 0001; Message Expiry Interval 60.
        Vector(
            name: "§3.3 PUBLISH retained with expiry",
            version: .v5,
            packet: .publish(
                Publish(
                    topic: topic("t"),
                    payload: buffer("x"),
                    retain: true,
                    properties: try! Properties([.messageExpiryInterval(60)])
                )
            ),
            bytes: [0x31, 0x0A] + mqttString("t") + [0x05, 0x02, 0x00, 0x00, 0x00, 0x3C] + ascii("x")
        ),
        // DUP + QoS 2 = flags 1100.
        Vector(
            name: "§3.3 PUBLISH DUP QoS 2",
            version: .v5,
            packet: .publish(
                Publish(
                    topic: topic("t"),
                    payload: ByteBuffer(),
                    qos: .exactlyOnce,
                    duplicate: true,
                    packetIdentifier: 0x0102
                )
            ),
            bytes: [0x3C, 0x06] + mqttString("t") + [0x01, 0x02, 0x00]
        ),
        Vector(
            name: "§3.4 PUBACK",
            version: .v3_1_1,
            packet: .puback(PublishAcknowledgement(packetIdentifier: 10)),
            bytes: [0x40, 0x02, 0x00, 0x0A]
        ),
        // MQTT 5.0 §3.4.2.1: the reason code may stand without properties.
        Vector(
            name: "§3.4 PUBACK no matching subscribers",
            version: .v5,
            packet: .puback(PublishAcknowledgement(packetIdentifier: 10, reasonCode: .noMatchingSubscribers)),
            bytes: [0x40, 0x03, 0x00, 0x0A, 0x10]
        ),
        Vector(
            name: "§3.5 PUBREC",
            version: .v5,
            packet: .pubrec(PublishAcknowledgement(packetIdentifier: 10)),
            bytes: [0x50, 0x02, 0x00, 0x0A]
        ),
        // §3.6.1: PUBREL's fixed header flags are 0010.
        Vector(
            name: "§3.6 PUBREL",
            version: .v3_1_1,
            packet: .pubrel(PublishAcknowledgement(packetIdentifier: 10)),
            bytes: [0x62, 0x02, 0x00, 0x0A]
        ),
        Vector(
            name: "§3.7 PUBCOMP",
            version: .v5,
            packet: .pubcomp(PublishAcknowledgement(packetIdentifier: 10)),
            bytes: [0x70, 0x02, 0x00, 0x0A]
        ),
        // MQTT 3.1.1 §3.8: flags 0010, packet id 1, "a/#" at QoS 1.
        Vector(
            name: "§3.8 SUBSCRIBE",
            version: .v3_1_1,
            packet: .subscribe(
                Subscribe(
                    packetIdentifier: 1,
                    subscriptions: [.init(filter: filter("a/#"), options: .init(qos: .atLeastOnce))]
                )
            ),
            bytes: [0x82, 0x08, 0x00, 0x01] + mqttString("a/#") + [0x01]
        ),
        // MQTT 5.0 §3.8.3.1: options QoS 2 | No Local | Retain As Published | Retain Handling 2 = 0x2E.
        Vector(
            name: "§3.8 SUBSCRIBE with options and identifier",
            version: .v5,
            packet: .subscribe(
                Subscribe(
                    packetIdentifier: 1,
                    subscriptions: [
                        .init(
                            filter: filter("a/#"),
                            options: .init(
                                qos: .exactlyOnce,
                                noLocal: true,
                                retainAsPublished: true,
                                retainHandling: .doNotSend
                            )
                        )
                    ],
                    properties: try! Properties([.subscriptionIdentifier(5)])
                )
            ),
            bytes: [0x82, 0x0B, 0x00, 0x01, 0x02, 0x0B, 0x05] + mqttString("a/#") + [0x2E]
        ),
        Vector(
            name: "§3.9 SUBACK",
            version: .v3_1_1,
            packet: .suback(
                SubscribeAcknowledgement(packetIdentifier: 1, reasonCodes: [.grantedQoS1, .unspecifiedError])
            ),
            bytes: [0x90, 0x04, 0x00, 0x01, 0x01, 0x80]
        ),
        Vector(
            name: "§3.9 SUBACK",
            version: .v5,
            packet: .suback(SubscribeAcknowledgement(packetIdentifier: 1, reasonCodes: [.grantedQoS2])),
            bytes: [0x90, 0x04, 0x00, 0x01, 0x00, 0x02]
        ),
        Vector(
            name: "§3.10 UNSUBSCRIBE",
            version: .v3_1_1,
            packet: .unsubscribe(Unsubscribe(packetIdentifier: 2, filters: [filter("a")])),
            bytes: [0xA2, 0x05, 0x00, 0x02] + mqttString("a")
        ),
        Vector(
            name: "§3.11 UNSUBACK",
            version: .v3_1_1,
            packet: .unsuback(SubscribeAcknowledgement(packetIdentifier: 2, reasonCodes: [])),
            bytes: [0xB0, 0x02, 0x00, 0x02]
        ),
        Vector(
            name: "§3.11 UNSUBACK",
            version: .v5,
            packet: .unsuback(SubscribeAcknowledgement(packetIdentifier: 2, reasonCodes: [.noSubscriptionExisted])),
            bytes: [0xB0, 0x04, 0x00, 0x02, 0x00, 0x11]
        ),
        Vector(name: "§3.12 PINGREQ", version: .v3_1_1, packet: .pingreq, bytes: [0xC0, 0x00]),
        Vector(name: "§3.13 PINGRESP", version: .v5, packet: .pingresp, bytes: [0xD0, 0x00]),
        Vector(name: "§3.14 DISCONNECT", version: .v3_1_1, packet: .disconnect(Disconnect()), bytes: [0xE0, 0x00]),
        // MQTT 5.0 §3.14.2.1: a lone reason code.
        Vector(
            name: "§3.14 DISCONNECT with will",
            version: .v5,
            packet: .disconnect(Disconnect(reasonCode: .disconnectWithWillMessage)),
            bytes: [0xE0, 0x01, 0x04]
        ),
        // MQTT 5.0 §3.14.2.2.2: a DISCONNECT that sets the session expiry to 3600 s.
        Vector(
            name: "§3.14 DISCONNECT changing session expiry",
            version: .v5,
            packet: .disconnect(Disconnect(properties: try! Properties([.sessionExpiryInterval(3600)]))),
            bytes: [0xE0, 0x07, 0x00, 0x05, 0x11, 0x00, 0x00, 0x0E, 0x10]
        ),
        // MQTT 5.0 §3.15: continue authentication with method "PLAIN".
        Vector(
            name: "§3.15 AUTH",
            version: .v5,
            packet: .auth(
                Auth(reasonCode: .continueAuthentication, properties: try! Properties([.authenticationMethod("PLAIN")]))
            ),
            bytes: [0xF0, 0x0A, 0x18, 0x08, 0x15] + mqttString("PLAIN")
        ),
        Vector(name: "§3.15 AUTH success", version: .v5, packet: .auth(Auth()), bytes: [0xF0, 0x00]),
    ]

    @Test("encodes to the vector", arguments: vectors)
    func encodes(vector: Vector) throws {
        #expect(try encode(vector.packet, version: vector.version) == vector.bytes)
    }

    @Test("decodes the vector", arguments: vectors)
    func decodes(vector: Vector) throws {
        #expect(try decode(vector.bytes, version: vector.version) == vector.packet)
    }

    @Test("decoding a PUBLISH shares the receive buffer's storage instead of copying")
    func publishSharesStorage() throws {
        let bytes: [UInt8] = [0x30, 0x08] + mqttString("t/u") + ascii("abc")
        var input = ByteBuffer(bytes: bytes)
        var decoder = MQTTPacketDecoder(protocolVersion: .v3_1_1)
        guard case .publish(let publish)? = try decoder.decodePacket(from: &input) else {
            Issue.record("not a PUBLISH")
            return
        }
        let inputBase = input.withUnsafeReadableBytes { $0.baseAddress! } - bytes.count
        let payloadBase = publish.payload.withUnsafeReadableBytes { $0.baseAddress! }
        #expect(payloadBase == inputBase + 7)
        #expect(publish.topic.string == "t/u")
    }
}
