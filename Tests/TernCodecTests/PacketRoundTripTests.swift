import NIOCore
import Testing

@testable import TernCodec

/// Every control packet, under every protocol level it exists in, survives encode then decode.
@Suite("Packet round trips")
struct PacketRoundTripTests {
    /// Packets with every field set. Fields a level cannot carry are left at values it can express,
    /// so that the decoded packet equals the original.
    static func samples(for version: ProtocolVersion) throws -> [MQTTPacket] {
        let v5 = version == .v5
        let props: (Property...) throws -> Properties = { v5 ? try Properties($0) : Properties() }
        var packets: [MQTTPacket] = []

        let will = Connect.Will(
            topic: topic("clients/c1/status"),
            payload: buffer("offline"),
            qos: .exactlyOnce,
            retain: true,
            properties: try props(.willDelayInterval(5), .messageExpiryInterval(60), .contentType("text/plain"))
        )
        packets.append(
            .connect(
                Connect(
                    protocolVersion: version,
                    clientIdentifier: "c1",
                    cleanStart: false,
                    keepAlive: 30,
                    properties: try props(.sessionExpiryInterval(0xFFFF_FFFF), .receiveMaximum(10)),
                    will: will,
                    username: "alice",
                    password: ByteBuffer(bytes: [0x00, 0xFF, 0x10])
                )
            )
        )
        packets.append(
            .connect(Connect(protocolVersion: version, clientIdentifier: "", cleanStart: true, keepAlive: 0))
        )
        packets.append(.connect(Connect(protocolVersion: version, clientIdentifier: "u", username: "only-user")))
        if v5 {
            // MQTT 5 allows a password without a user name (§3.1.2.9).
            packets.append(.connect(Connect(clientIdentifier: "p", password: buffer("secret"))))
        }
        packets.append(.connack(ConnAck(sessionPresent: version != .v3_1, reasonCode: .success)))
        packets.append(.connack(ConnAck(sessionPresent: false, reasonCode: .notAuthorized)))
        if v5 {
            packets.append(
                .connack(
                    ConnAck(
                        sessionPresent: true,
                        properties: try props(
                            .assignedClientIdentifier("auto-1"),
                            .serverKeepAlive(60),
                            .maximumQoS(.atLeastOnce),
                            .retainAvailable(false)
                        )
                    )
                )
            )
        }
        for qos in QoS.allCases {
            packets.append(
                .publish(
                    Publish(
                        topic: topic("sensors/room-1/temperature"),
                        payload: buffer("21.5"),
                        qos: qos,
                        retain: qos == .atLeastOnce,
                        duplicate: qos != .atMostOnce,
                        packetIdentifier: qos == .atMostOnce ? 0 : 0xFFFF,
                        properties: try props(.messageExpiryInterval(10), .userProperty(name: "k", value: "v"))
                    )
                )
            )
        }
        packets.append(.publish(Publish(topic: topic("empty"), payload: ByteBuffer())))
        packets.append(.publish(Publish(topic: topic("big"), payload: ByteBuffer(repeating: 0xAB, count: 70_000))))
        if v5 {
            packets.append(
                .publish(Publish(topic: .aliasOnly, payload: buffer("x"), properties: try props(.topicAlias(7))))
            )
        }
        let failure: ReasonCode = v5 ? .noMatchingSubscribers : .success
        packets.append(.puback(PublishAcknowledgement(packetIdentifier: 1)))
        packets.append(.puback(PublishAcknowledgement(packetIdentifier: 2, reasonCode: failure)))
        packets.append(
            .pubrec(
                PublishAcknowledgement(
                    packetIdentifier: 3,
                    reasonCode: v5 ? .quotaExceeded : .success,
                    properties: try props(.reasonString("full"))
                )
            )
        )
        packets.append(
            .pubrel(PublishAcknowledgement(packetIdentifier: 4, reasonCode: v5 ? .packetIdentifierNotFound : .success))
        )
        packets.append(.pubcomp(PublishAcknowledgement(packetIdentifier: 5)))
        packets.append(
            .subscribe(
                Subscribe(
                    packetIdentifier: 6,
                    subscriptions: [
                        .init(filter: filter("a/+/c"), options: SubscriptionOptions(qos: .exactlyOnce)),
                        .init(
                            filter: filter("$share/g/x/#"),
                            options: v5
                                ? SubscriptionOptions(
                                    qos: .atLeastOnce,
                                    retainAsPublished: true,
                                    retainHandling: .doNotSend
                                )
                                : SubscriptionOptions(qos: .atLeastOnce)
                        ),
                        .init(
                            filter: filter("#"),
                            options: v5
                                ? SubscriptionOptions(noLocal: true, retainHandling: .sendOnNewSubscription)
                                : SubscriptionOptions()
                        ),
                    ],
                    properties: try props(.subscriptionIdentifier(42))
                )
            )
        )
        packets.append(
            .suback(
                SubscribeAcknowledgement(
                    packetIdentifier: 6,
                    reasonCodes: [.grantedQoS2, .grantedQoS1, .unspecifiedError]
                )
            )
        )
        packets.append(.unsubscribe(Unsubscribe(packetIdentifier: 7, filters: [filter("a/+/c"), filter("#")])))
        packets.append(
            .unsuback(
                SubscribeAcknowledgement(
                    packetIdentifier: 7,
                    reasonCodes: v5 ? [.success, .noSubscriptionExisted] : []
                )
            )
        )
        packets.append(.pingreq)
        packets.append(.pingresp)
        packets.append(.disconnect(Disconnect()))
        if v5 {
            packets.append(.disconnect(Disconnect(reasonCode: .disconnectWithWillMessage)))
            packets.append(
                .disconnect(
                    Disconnect(
                        reasonCode: .serverShuttingDown,
                        properties: try props(.sessionExpiryInterval(0), .reasonString("bye"))
                    )
                )
            )
            packets.append(.auth(Auth()))
            packets.append(
                .auth(
                    Auth(
                        reasonCode: .continueAuthentication,
                        properties: try props(
                            .authenticationMethod("SCRAM-SHA-1"),
                            .authenticationData(buffer("n,,n=user"))
                        )
                    )
                )
            )
        }
        return packets
    }

    @Test("every packet round-trips", arguments: ProtocolVersion.allCases)
    func everyPacketRoundTrips(version: ProtocolVersion) throws {
        let packets = try Self.samples(for: version)
        var seen = Set<PacketType>()
        for packet in packets {
            #expect(try roundTrip(packet, version: version) == packet, "\(packet.type) on \(version)")
            seen.insert(packet.type)
        }
        let expected = Set(PacketType.allCases).subtracting(version == .v5 ? [] : [.auth])
        #expect(seen == expected)
    }

    @Test(
        "a PUBLISH written as its head then its payload is the same bytes as written whole",
        arguments: ProtocolVersion.allCases
    )
    func publishHeadThenPayload(version: ProtocolVersion) throws {
        for packet in try Self.samples(for: version) {
            guard case .publish(let publish) = packet else { continue }
            var whole = ByteBuffer()
            try packet.write(to: &whole, version: version)
            var split = ByteBuffer()
            try publish.writeHead(to: &split, version: version)
            split.writeImmutableBuffer(publish.payload)
            #expect(split == whole, "\(version)")
        }
        // A payload large enough for the Remaining Length to take several bytes.
        let large = Publish(
            topic: topic("t"),
            payload: ByteBuffer(repeating: 7, count: 70_000),
            qos: .atLeastOnce,
            packetIdentifier: 3
        )
        var whole = ByteBuffer()
        try MQTTPacket.publish(large).write(to: &whole, version: version)
        var split = ByteBuffer()
        try large.writeHead(to: &split, version: version)
        split.writeImmutableBuffer(large.payload)
        #expect(split == whole)
    }

    @Test(
        "a server decoder learns the level from CONNECT and reads later packets in it",
        arguments: ProtocolVersion.allCases
    )
    func serverDecoderLearnsVersion(version: ProtocolVersion) throws {
        var stream = ByteBuffer()
        try MQTTPacket.connect(Connect(protocolVersion: version, clientIdentifier: "x")).write(
            to: &stream,
            version: version
        )
        let ack = MQTTPacket.puback(PublishAcknowledgement(packetIdentifier: 9))
        try ack.write(to: &stream, version: version)
        var decoder = MQTTPacketDecoder()
        _ = try decoder.decodePacket(from: &stream)
        #expect(decoder.protocolVersion == version)
        #expect(try decoder.decodePacket(from: &stream) == ack)
        #expect(try decoder.decodePacket(from: &stream) == nil)
    }

    @Test("3.1.1 maps v5 failures onto its CONNACK return codes and SUBACK failure (§3.2.2.3, §3.9.3)")
    func legacyMappings() throws {
        #expect(try encode(.connack(ConnAck(reasonCode: .banned)), version: .v3_1_1) == [0x20, 0x02, 0x00, 0x05])
        #expect(try encode(.connack(ConnAck(reasonCode: .serverBusy)), version: .v3_1_1) == [0x20, 0x02, 0x00, 0x03])
        let suback = MQTTPacket.suback(SubscribeAcknowledgement(packetIdentifier: 1, reasonCodes: [.notAuthorized]))
        #expect(try encode(suback, version: .v3_1_1) == [0x90, 0x03, 0x00, 0x01, 0x80])
    }

    @Test("encoding refuses what MQTT cannot carry, and writes nothing")
    func encodingRefusals() {
        var out = ByteBuffer()
        let longIdentifier = MQTTPacket.connect(Connect(clientIdentifier: String(repeating: "x", count: 70_000)))
        #expect(throws: TernError.self) { try longIdentifier.write(to: &out, version: .v5) }
        #expect(throws: TernError.self) { try MQTTPacket.auth(Auth()).write(to: &out, version: .v3_1_1) }
        #expect(out.readableBytes == 0)
    }
}
