import NIOCore
import Testing

@testable import TernCodec

/// MQTT 5.0 §2.2.2.2 (Table 2-4): every property, where it may appear, and how often.
@Suite("MQTT 5 properties (§2.2.2.2)")
struct PropertyTests {
    static func sample(_ identifier: Property.Identifier) -> Property {
        switch identifier {
        case .payloadFormatIndicator: return .payloadFormatIndicator(isUTF8: true)
        case .messageExpiryInterval: return .messageExpiryInterval(3600)
        case .contentType: return .contentType("application/json")
        case .responseTopic: return .responseTopic("replies/client-1")
        case .correlationData: return .correlationData(ByteBuffer(bytes: [0, 1, 2, 0xFF]))
        case .subscriptionIdentifier: return .subscriptionIdentifier(268_435_455)
        case .sessionExpiryInterval: return .sessionExpiryInterval(0xFFFF_FFFF)
        case .assignedClientIdentifier: return .assignedClientIdentifier("auto-7F3A")
        case .serverKeepAlive: return .serverKeepAlive(120)
        case .authenticationMethod: return .authenticationMethod("SCRAM-SHA-256")
        case .authenticationData: return .authenticationData(ByteBuffer(bytes: [9, 8, 7]))
        case .requestProblemInformation: return .requestProblemInformation(false)
        case .willDelayInterval: return .willDelayInterval(30)
        case .requestResponseInformation: return .requestResponseInformation(true)
        case .responseInformation: return .responseInformation("responses/")
        case .serverReference: return .serverReference("other.example:1883")
        case .reasonString: return .reasonString("because")
        case .receiveMaximum: return .receiveMaximum(20)
        case .topicAliasMaximum: return .topicAliasMaximum(10)
        case .topicAlias: return .topicAlias(3)
        case .maximumQoS: return .maximumQoS(.atLeastOnce)
        case .retainAvailable: return .retainAvailable(false)
        case .userProperty: return .userProperty(name: "région", value: "nord")
        case .maximumPacketSize: return .maximumPacketSize(1_048_576)
        case .wildcardSubscriptionAvailable: return .wildcardSubscriptionAvailable(true)
        case .subscriptionIdentifierAvailable: return .subscriptionIdentifierAvailable(false)
        case .sharedSubscriptionAvailable: return .sharedSubscriptionAvailable(true)
        }
    }

    static let contexts: [PropertyContext] = [
        .connect, .connack, .publish, .will, .puback, .pubrec, .pubrel, .pubcomp, .subscribe, .suback,
        .unsubscribe, .unsuback, .disconnect, .auth,
    ]

    /// A v5 packet that carries `properties` in `context`.
    static func packet(in context: PropertyContext, properties: Properties) -> MQTTPacket {
        switch context {
        case .connect: return .connect(Connect(clientIdentifier: "c", properties: properties))
        case .will:
            let will = Connect.Will(topic: topic("w"), payload: buffer("bye"), properties: properties)
            return .connect(Connect(clientIdentifier: "c", will: will))
        case .connack: return .connack(ConnAck(properties: properties))
        case .publish:
            return .publish(Publish(topic: topic("t"), payload: buffer("p"), properties: properties))
        case .puback: return .puback(PublishAcknowledgement(packetIdentifier: 1, properties: properties))
        case .pubrec: return .pubrec(PublishAcknowledgement(packetIdentifier: 1, properties: properties))
        case .pubrel: return .pubrel(PublishAcknowledgement(packetIdentifier: 1, properties: properties))
        case .pubcomp: return .pubcomp(PublishAcknowledgement(packetIdentifier: 1, properties: properties))
        case .subscribe:
            return .subscribe(
                Subscribe(packetIdentifier: 1, subscriptions: [.init(filter: filter("a"))], properties: properties)
            )
        case .suback:
            return .suback(
                SubscribeAcknowledgement(packetIdentifier: 1, reasonCodes: [.grantedQoS1], properties: properties)
            )
        case .unsubscribe:
            return .unsubscribe(Unsubscribe(packetIdentifier: 1, filters: [filter("a")], properties: properties))
        case .unsuback:
            return .unsuback(
                SubscribeAcknowledgement(packetIdentifier: 1, reasonCodes: [.success], properties: properties)
            )
        case .disconnect: return .disconnect(Disconnect(reasonCode: .normalDisconnection, properties: properties))
        case .auth:
            var withMethod = properties
            if !withMethod.contains(.authenticationMethod) { try! withMethod.append(.authenticationMethod("M")) }
            return .auth(Auth(reasonCode: .continueAuthentication, properties: withMethod))
        default: fatalError("not a single context")
        }
    }

    @Test("every property round-trips in every packet that allows it", arguments: Property.Identifier.allCases)
    func everyPropertyRoundTrips(identifier: Property.Identifier) throws {
        let property = Self.sample(identifier)
        #expect(property.identifier == identifier)
        var checked = 0
        for context in Self.contexts where identifier.allowedIn.contains(context) {
            var properties = try Properties([property])
            if identifier == .authenticationData {
                // §3.1.2.11.10: Authentication Data needs an Authentication Method beside it.
                try properties.append(.authenticationMethod("M"))
            }
            let packet = Self.packet(in: context, properties: properties)
            #expect(try roundTrip(packet, version: .v5) == packet, "\(identifier) in \(context.name)")
            checked += 1
        }
        #expect(checked > 0)
    }

    @Test(
        "every property is refused as malformed in every packet that does not allow it",
        arguments: Property.Identifier.allCases
    )
    func everyPropertyRefusedElsewhere(identifier: Property.Identifier) throws {
        for context in Self.contexts where !identifier.allowedIn.contains(context) {
            // Build the packet with an allowed dummy, then swap the encoded property in by hand.
            var encodedProperty = ByteBuffer()
            try Properties.write(Self.sample(identifier), to: &encodedProperty)
            var list = ByteBuffer(bytes: [])
            list.writeImmutableBuffer(encodedProperty)
            let properties = Properties(validatedEncoding: list)
            let packet = Self.packet(in: context, properties: properties)
            let bytes = try encode(packet, version: .v5)
            do {
                _ = try decode(bytes, version: .v5)
                Issue.record("\(identifier) accepted in \(context.name)")
            } catch {
                #expect(error.reasonCode == .malformedPacket, "\(identifier) in \(context.name): \(error)")
            }
        }
    }

    @Test("a property that may appear once is a protocol error when repeated")
    func duplicatesAreProtocolErrors() throws {
        for identifier in Property.Identifier.allCases where identifier != .userProperty {
            for context in Self.contexts where identifier.allowedIn.contains(context) {
                if identifier == .subscriptionIdentifier, context == .publish { continue }
                let property = Self.sample(identifier)
                var list = ByteBuffer()
                try Properties.write(property, to: &list)
                try Properties.write(property, to: &list)
                let packet = Self.packet(in: context, properties: Properties(validatedEncoding: list))
                let bytes = try encode(packet, version: .v5)
                do {
                    _ = try decode(bytes, version: .v5)
                    Issue.record("duplicate \(identifier) accepted in \(context.name)")
                } catch {
                    #expect(error.reasonCode == .protocolError, "\(identifier) in \(context.name)")
                }
            }
        }
    }

    @Test("User Properties repeat and keep their order (§3.3.2.3.7)")
    func userPropertiesKeepOrder() throws {
        let pairs = [("b", "2"), ("a", "1"), ("b", "3"), ("a", "1")]
        let properties = try Properties(pairs.map { Property.userProperty(name: $0.0, value: $0.1) })
        let packet = PropertyTests.packet(in: .publish, properties: properties)
        guard case .publish(let decoded) = try roundTrip(packet, version: .v5) else {
            Issue.record("not a PUBLISH")
            return
        }
        #expect(decoded.properties.userProperties.map { "\($0.name)=\($0.value)" } == ["b=2", "a=1", "b=3", "a=1"])
    }

    @Test("a PUBLISH may carry several Subscription Identifiers (§3.3.2.3.8)")
    func severalSubscriptionIdentifiers() throws {
        let properties = try Properties([.subscriptionIdentifier(1), .subscriptionIdentifier(70_000)])
        guard
            case .publish(let decoded) = try roundTrip(Self.packet(in: .publish, properties: properties), version: .v5)
        else { return }
        #expect(decoded.properties.subscriptionIdentifiers == [1, 70_000])
    }

    @Test("typed accessors read, replace and remove")
    func typedAccessors() throws {
        var properties = Properties()
        #expect(properties.sessionExpiryInterval == nil)
        properties.sessionExpiryInterval = 10
        properties.sessionExpiryInterval = 0xFFFF_FFFF
        properties.receiveMaximum = 5
        try properties.append(.reasonString("why"))
        #expect(properties.sessionExpiryInterval == 0xFFFF_FFFF)
        #expect(Array(properties).count == 3)
        #expect(properties.reasonString == "why")
        properties.sessionExpiryInterval = nil
        #expect(!properties.contains(.sessionExpiryInterval))
        #expect(properties.receiveMaximum == 5)
        try properties.set(.reasonString("because"))
        #expect(properties.reasonString == "because")
        #expect(Array(properties).count == 2)
    }

    @Test("a padded property identifier is read as its value (§1.5.5 does not require the minimal form)")
    func paddedIdentifier() throws {
        // PUBACK v5: packet id 1, reason 0, properties: identifier 0x1F padded to 0x9F 0x00, string "x".
        let bytes: [UInt8] = [0x40, 0x09, 0x00, 0x01, 0x00, 0x05, 0x9F, 0x00, 0x00, 0x01, 0x78]
        guard case .puback(let ack)? = try decode(bytes, version: .v5) else {
            Issue.record("not a PUBACK")
            return
        }
        #expect(ack.properties.reasonString == "x")
        #expect(ack.properties.encoded.readableBytes == 4)
    }

    @Test("strings that MQTT cannot carry are refused when building properties")
    func refusesUnencodableStrings() {
        #expect(throws: TernError.self) { try Properties([.contentType("a\u{0}b")]) }
        #expect(throws: TernError.self) { try Properties([.reasonString(String(repeating: "x", count: 65_536))]) }
    }
}
