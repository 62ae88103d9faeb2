import NIOCore
import Testing

@testable import TernCodec

/// Hostile and broken input: each case must be refused with the reason code the broker sends
/// in its DISCONNECT (or CONNACK), never a crash and never a silently accepted packet.
@Suite("Malformed input")
struct MalformedPacketTests {
    struct Case: CustomTestStringConvertible, Sendable {
        var name: String
        var version: ProtocolVersion?
        var bytes: [UInt8]
        var expected: ReasonCode
        var testDescription: String { name }
    }

    static let connectHeader: [UInt8] = mqttString("MQTT") + [0x05]
    static let legacyConnectHeader: [UInt8] = mqttString("MQTT") + [0x04]

    /// A v5 CONNECT with the given flags, property list and payload.
    static func connect(flags: UInt8 = 0x02, properties: [UInt8] = [], payload: [UInt8] = mqttString("c")) -> [UInt8] {
        let body = connectHeader + [flags, 0x00, 0x3C, UInt8(properties.count)] + properties + payload
        return [0x10, UInt8(body.count)] + body
    }

    /// A 3.1.1 CONNECT with the given flags and payload.
    static func legacyConnect(flags: UInt8, payload: [UInt8] = mqttString("c")) -> [UInt8] {
        let body = legacyConnectHeader + [flags, 0x00, 0x3C] + payload
        return [0x10, UInt8(body.count)] + body
    }

    /// A v5 QoS 0 PUBLISH to "t" with the given property list.
    static func publish(properties: [UInt8]) -> [UInt8] {
        let body = mqttString("t") + [UInt8(properties.count)] + properties + ascii("x")
        return [0x30, UInt8(body.count)] + body
    }

    /// A SUBSCRIBE (packet id 1) with one filter and options byte; v5 adds an empty property list.
    static func subscribe(_ filter: String, options: UInt8, v5: Bool, properties: [UInt8] = []) -> [UInt8] {
        let body = [0x00, 0x01] + (v5 ? [UInt8(properties.count)] + properties : []) + mqttString(filter) + [options]
        return [0x82, UInt8(body.count)] + body
    }

    static let cases: [Case] = [
        // Fixed header (§2.1)
        Case(name: "§2.1.2 packet type 0 is reserved", version: .v5, bytes: [0x00, 0x00], expected: .malformedPacket),
        Case(
            name: "§2.1.3 PUBREL flags must be 0010",
            version: .v5,
            bytes: [0x60, 0x02, 0x00, 0x01],
            expected: .malformedPacket
        ),
        Case(
            name: "§2.1.3 SUBSCRIBE flags must be 0010",
            version: .v3_1_1,
            bytes: [0x80, 0x06, 0x00, 0x01] + mqttString("a") + [0x00],
            expected: .malformedPacket
        ),
        Case(
            name: "§2.1.3 UNSUBSCRIBE flags must be 0010",
            version: .v3_1_1,
            bytes: [0xA0, 0x05, 0x00, 0x01] + mqttString("a"),
            expected: .malformedPacket
        ),
        Case(name: "§2.1.3 PINGREQ flags must be 0000", version: .v5, bytes: [0xC1, 0x00], expected: .malformedPacket),
        Case(
            name: "§1.5.5 Remaining Length of five bytes",
            version: .v5,
            bytes: [0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
            expected: .malformedPacket
        ),
        Case(name: "§3.12 PINGREQ with a body", version: .v5, bytes: [0xC0, 0x01, 0x00], expected: .malformedPacket),
        Case(
            name: "§3.1 [MQTT-3.1.0-1] first packet is not CONNECT",
            version: nil,
            bytes: [0x30],
            expected: .protocolError
        ),

        // PUBLISH (§3.3)
        Case(
            name: "§3.3.1.2 PUBLISH with QoS 3",
            version: .v5,
            bytes: [0x36, 0x06] + mqttString("t") + [0x00, 0x01, 0x00],
            expected: .malformedPacket
        ),
        Case(
            name: "§3.3.1.1 QoS 0 PUBLISH with DUP",
            version: .v5,
            bytes: [0x38, 0x04] + mqttString("t") + [0x00],
            expected: .malformedPacket
        ),
        Case(
            name: "§3.3.2.1 topic name with #",
            version: .v3_1_1,
            bytes: [0x30, 0x05] + mqttString("a/#"),
            expected: .topicNameInvalid
        ),
        Case(
            name: "§3.3.2.1 topic name with +",
            version: .v5,
            bytes: [0x30, 0x06] + mqttString("+/b") + [0x00],
            expected: .topicNameInvalid
        ),
        Case(
            name: "§4.7.3 empty topic name on 3.1.1",
            version: .v3_1_1,
            bytes: [0x30, 0x02, 0x00, 0x00],
            expected: .topicNameInvalid
        ),
        Case(
            name: "§3.3.2.3.4 empty topic name without Topic Alias",
            version: .v5,
            bytes: [0x30, 0x03, 0x00, 0x00, 0x00],
            expected: .protocolError
        ),
        Case(
            name: "§2.2.1 QoS 1 PUBLISH with packet identifier 0",
            version: .v5,
            bytes: [0x32, 0x06] + mqttString("t") + [0x00, 0x00, 0x00],
            expected: .protocolError
        ),
        Case(
            name: "§1.5.4 topic with overlong UTF-8",
            version: .v5,
            bytes: [0x30, 0x05, 0x00, 0x02, 0xC0, 0x80, 0x00],
            expected: .malformedPacket
        ),
        Case(
            name: "§1.5.4 topic with U+0000",
            version: .v3_1_1,
            bytes: [0x30, 0x05, 0x00, 0x03, 0x61, 0x00, 0x62],
            expected: .malformedPacket
        ),
        Case(
            name: "§1.5.4 topic with a surrogate",
            version: .v3_1_1,
            bytes: [0x30, 0x05, 0x00, 0x03, 0xED, 0xA0, 0x80],
            expected: .malformedPacket
        ),
        Case(
            name: "§1.5.4 topic length beyond the packet",
            version: .v3_1_1,
            bytes: [0x30, 0x03, 0x00, 0x05, 0x74],
            expected: .malformedPacket
        ),
        Case(
            name: "§2.2.2.1 property length beyond the packet",
            version: .v5,
            bytes: [0x30, 0x05] + mqttString("t") + [0x09, 0x00],
            expected: .malformedPacket
        ),
        Case(
            name: "§2.2.2.2 Session Expiry Interval in PUBLISH",
            version: .v5,
            bytes: publish(properties: [0x11, 0, 0, 0, 1]),
            expected: .malformedPacket
        ),
        Case(
            name: "§2.2.2.2 unknown property identifier",
            version: .v5,
            bytes: publish(properties: [0x7F, 0x00]),
            expected: .malformedPacket
        ),
        Case(
            name: "§2.2.2.2 property value cut short",
            version: .v5,
            bytes: publish(properties: [0x02, 0x00, 0x00]),
            expected: .malformedPacket
        ),
        Case(
            name: "§3.3.2.3.3 Message Expiry Interval twice",
            version: .v5,
            bytes: publish(properties: [0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 2]),
            expected: .protocolError
        ),
        Case(
            name: "§3.3.2.3.4 Topic Alias 0",
            version: .v5,
            bytes: publish(properties: [0x23, 0x00, 0x00]),
            expected: .topicAliasInvalid
        ),
        Case(
            name: "§3.3.2.3.2 Payload Format Indicator 2",
            version: .v5,
            bytes: publish(properties: [0x01, 0x02]),
            expected: .protocolError
        ),
        Case(
            name: "§3.3.2.3.5 Response Topic with a wildcard",
            version: .v5,
            bytes: publish(properties: [0x08] + mqttString("r/#")),
            expected: .protocolError
        ),
        Case(
            name: "§3.3.2.3.8 Subscription Identifier 0",
            version: .v5,
            bytes: publish(properties: [0x0B, 0x00]),
            expected: .protocolError
        ),
        Case(
            name: "§1.5.7 User Property with invalid UTF-8",
            version: .v5,
            bytes: publish(properties: [0x26, 0x00, 0x01, 0xFF] + mqttString("v")),
            expected: .malformedPacket
        ),

        // CONNECT (§3.1)
        Case(
            name: "§3.1.2.1 unknown protocol name",
            version: nil,
            bytes: [0x10, 0x0D] + mqttString("MQTX") + [0x05, 0x02, 0x00, 0x3C, 0x00] + mqttString(""),
            expected: .unsupportedProtocolVersion
        ),
        Case(
            name: "§3.1.2.2 protocol level 6",
            version: nil,
            bytes: [0x10, 0x0D] + mqttString("MQTT") + [0x06, 0x02, 0x00, 0x3C, 0x00] + mqttString(""),
            expected: .unsupportedProtocolVersion
        ),
        Case(
            name: "3.1 protocol name with level 4",
            version: nil,
            bytes: [0x10, 0x0E] + mqttString("MQIsdp") + [0x04, 0x02, 0x00, 0x3C] + mqttString(""),
            expected: .unsupportedProtocolVersion
        ),
        Case(
            name: "§3.1.2.3 reserved CONNECT flag",
            version: nil,
            bytes: connect(flags: 0x03),
            expected: .malformedPacket
        ),
        Case(
            name: "§3.1.2.6 will QoS 3",
            version: nil,
            bytes: connect(flags: 0x1E, payload: mqttString("c") + [0x00] + mqttString("w") + mqttString("x")),
            expected: .malformedPacket
        ),
        Case(
            name: "§3.1.2.7 will retain without a will",
            version: nil,
            bytes: connect(flags: 0x22),
            expected: .malformedPacket
        ),
        Case(
            name: "§3.1.2.6 will QoS without a will",
            version: nil,
            bytes: connect(flags: 0x0A),
            expected: .malformedPacket
        ),
        Case(
            name: "3.1.1 §3.1.2.9 password without user name",
            version: nil,
            bytes: legacyConnect(flags: 0x42, payload: mqttString("c") + mqttString("p")),
            expected: .malformedPacket
        ),
        Case(
            name: "§3.1 bytes after the last CONNECT field",
            version: nil,
            bytes: connect(payload: mqttString("c") + [0x00]),
            expected: .malformedPacket
        ),
        Case(
            name: "§3.1.3.1 client identifier cut short",
            version: nil,
            bytes: connect(payload: [0x00, 0x05, 0x61]),
            expected: .malformedPacket
        ),
        Case(
            name: "§3.1.2.11.3 Receive Maximum 0",
            version: nil,
            bytes: connect(properties: [0x21, 0x00, 0x00]),
            expected: .protocolError
        ),
        Case(
            name: "§3.1.2.11.4 Maximum Packet Size 0",
            version: nil,
            bytes: connect(properties: [0x27, 0, 0, 0, 0]),
            expected: .protocolError
        ),
        Case(
            name: "§3.1.2.11.7 Request Problem Information 2",
            version: nil,
            bytes: connect(properties: [0x17, 0x02]),
            expected: .protocolError
        ),
        Case(
            name: "§3.1.2.11.10 Authentication Data without Method",
            version: nil,
            bytes: connect(properties: [0x16, 0x00, 0x01, 0x00]),
            expected: .protocolError
        ),
        Case(
            name: "§3.1.2.11.2 Session Expiry Interval twice",
            version: nil,
            bytes: connect(properties: [0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1]),
            expected: .protocolError
        ),
        Case(
            name: "§2.2.2.2 Will Delay Interval among CONNECT properties",
            version: nil,
            bytes: connect(properties: [0x18, 0, 0, 0, 1]),
            expected: .malformedPacket
        ),
        Case(
            name: "§3.1.3.3 will topic with a wildcard",
            version: nil,
            bytes: connect(flags: 0x06, payload: mqttString("c") + [0x00] + mqttString("w/+") + mqttString("x")),
            expected: .topicNameInvalid
        ),

        // SUBSCRIBE and UNSUBSCRIBE (§3.8, §3.10)
        Case(
            name: "§2.2.1 SUBSCRIBE with packet identifier 0",
            version: .v3_1_1,
            bytes: [0x82, 0x06, 0x00, 0x00] + mqttString("a") + [0x00],
            expected: .protocolError
        ),
        Case(
            name: "§3.8.3 SUBSCRIBE with no filter",
            version: .v5,
            bytes: [0x82, 0x03, 0x00, 0x01, 0x00],
            expected: .protocolError
        ),
        Case(
            name: "3.1.1 §3.8.3.1 reserved subscription option bits",
            version: .v3_1_1,
            bytes: subscribe("a", options: 0x04, v5: false),
            expected: .malformedPacket
        ),
        Case(
            name: "3.1.1 §3.8.3.1 requested QoS 3",
            version: .v3_1_1,
            bytes: subscribe("a", options: 0x03, v5: false),
            expected: .malformedPacket
        ),
        Case(
            name: "§3.8.3.1 requested QoS 3",
            version: .v5,
            bytes: subscribe("a", options: 0x03, v5: true),
            expected: .protocolError
        ),
        Case(
            name: "§3.8.3.1 Retain Handling 3",
            version: .v5,
            bytes: subscribe("a", options: 0x30, v5: true),
            expected: .protocolError
        ),
        Case(
            name: "§3.8.3.1 reserved bits 6 and 7",
            version: .v5,
            bytes: subscribe("a", options: 0x40, v5: true),
            expected: .malformedPacket
        ),
        Case(
            name: "§4.7.1.2 filter with # not last",
            version: .v5,
            bytes: subscribe("a/#/b", options: 0, v5: true),
            expected: .malformedPacket
        ),
        Case(
            name: "§4.7.1.3 filter with + inside a level",
            version: .v3_1_1,
            bytes: subscribe("a+", options: 0, v5: false),
            expected: .malformedPacket
        ),
        Case(
            name: "§4.8.2 shared subscription without a filter",
            version: .v5,
            bytes: subscribe("$share/g", options: 0, v5: true),
            expected: .malformedPacket
        ),
        Case(
            name: "§3.8.3.1 No Local on a shared subscription",
            version: .v5,
            bytes: subscribe("$share/g/a", options: 0x04, v5: true),
            expected: .protocolError
        ),
        Case(
            name: "§3.8.2.1.2 Subscription Identifier 0",
            version: .v5,
            bytes: subscribe("a", options: 0, v5: true, properties: [0x0B, 0x00]),
            expected: .protocolError
        ),
        Case(
            name: "§3.8.2.1.2 two Subscription Identifiers",
            version: .v5,
            bytes: subscribe("a", options: 0, v5: true, properties: [0x0B, 0x01, 0x0B, 0x02]),
            expected: .protocolError
        ),
        Case(
            name: "§3.10.3 UNSUBSCRIBE with no filter",
            version: .v3_1_1,
            bytes: [0xA2, 0x02, 0x00, 0x01],
            expected: .protocolError
        ),

        // Acknowledgements, DISCONNECT, AUTH
        Case(
            name: "3.1.1 §3.4 PUBACK with a third byte",
            version: .v3_1_1,
            bytes: [0x40, 0x03, 0x00, 0x01, 0x00],
            expected: .malformedPacket
        ),
        Case(name: "§3.4 PUBACK cut short", version: .v5, bytes: [0x40, 0x01, 0x00], expected: .malformedPacket),
        Case(
            name: "§2.2.2.2 Session Expiry Interval in PUBACK",
            version: .v5,
            bytes: [0x40, 0x09, 0x00, 0x01, 0x00, 0x05, 0x11, 0, 0, 0, 1],
            expected: .malformedPacket
        ),
        Case(
            name: "§2.2.1 PUBREL with packet identifier 0",
            version: .v5,
            bytes: [0x62, 0x02, 0x00, 0x00],
            expected: .protocolError
        ),
        Case(
            name: "3.1.1 §3.14 DISCONNECT with a body",
            version: .v3_1_1,
            bytes: [0xE0, 0x01, 0x00],
            expected: .malformedPacket
        ),
        Case(
            name: "3.1.1 §2.2.1 packet type 15 is forbidden",
            version: .v3_1_1,
            bytes: [0xF0, 0x00],
            expected: .malformedPacket
        ),
        Case(
            name: "§3.15.2.1 AUTH with reason code 0x80",
            version: .v5,
            bytes: [0xF0, 0x02, 0x80, 0x00],
            expected: .protocolError
        ),
        Case(
            name: "§3.15.2.2.2 AUTH continue without method",
            version: .v5,
            bytes: [0xF0, 0x02, 0x18, 0x00],
            expected: .protocolError
        ),
        Case(
            name: "3.1.1 §3.2.2.1 CONNACK reserved flags",
            version: .v3_1_1,
            bytes: [0x20, 0x02, 0x02, 0x00],
            expected: .malformedPacket
        ),
        Case(
            name: "3.1.1 §3.2.2.3 CONNACK return code 6",
            version: .v3_1_1,
            bytes: [0x20, 0x02, 0x00, 0x06],
            expected: .malformedPacket
        ),
        Case(
            name: "§3.2.2.1.1 refusing CONNACK with session present",
            version: .v5,
            bytes: [0x20, 0x03, 0x01, 0x87, 0x00],
            expected: .protocolError
        ),
        Case(
            name: "3.1.1 §3.9.3 SUBACK return code 3",
            version: .v3_1_1,
            bytes: [0x90, 0x03, 0x00, 0x01, 0x03],
            expected: .malformedPacket
        ),
        Case(
            name: "§3.9.3 SUBACK with no reason code",
            version: .v5,
            bytes: [0x90, 0x03, 0x00, 0x01, 0x00],
            expected: .protocolError
        ),
        Case(
            name: "3.1.1 §3.11 UNSUBACK with a payload",
            version: .v3_1_1,
            bytes: [0xB0, 0x03, 0x00, 0x01, 0x00],
            expected: .malformedPacket
        ),
    ]

    @Test("is refused with its reason code", arguments: cases)
    func refused(testCase: Case) {
        do {
            let packet = try decode(testCase.bytes, version: testCase.version)
            Issue.record("decoded \(String(describing: packet)) instead of failing")
        } catch {
            #expect(error.reasonCode == testCase.expected, "\(error)")
        }
    }

    @Test("the table covers at least forty inputs")
    func tableSize() { #expect(Self.cases.count >= 40) }

    @Test("a packet over the maximum size is refused from its header alone (§3.1.2.11.4)")
    func tooLargeFromHeader() {
        // Only the fixed header of a 1,000,000-byte PUBLISH has arrived: no body is buffered.
        var header = ByteBuffer(bytes: [0x30, 0xC0, 0x84, 0x3D])
        var decoder = MQTTPacketDecoder(protocolVersion: .v5, maximumPacketSize: 1024)
        do {
            _ = try decoder.decodePacket(from: &header)
            Issue.record("accepted")
        } catch {
            #expect(error.reasonCode == .packetTooLarge)
        }
    }

    @Test("a packet exactly at the maximum size is accepted")
    func exactlyMaximum() throws {
        let bytes: [UInt8] = [0x30, 0x03] + mqttString("t")
        #expect(try decode(bytes, version: .v3_1_1, maximumPacketSize: 5) != nil)
        #expect(throws: TernError.self) { try decode(bytes, version: .v3_1_1, maximumPacketSize: 4) }
    }

    @Test("an incomplete packet is not an error and consumes nothing")
    func incompleteIsNotAnError() throws {
        let full: [UInt8] = [0x32, 0x09] + mqttString("a/b") + [0x00, 0x0A] + ascii("hi")
        for length in 0..<full.count {
            var buffer = ByteBuffer(bytes: full[0..<length])
            var decoder = MQTTPacketDecoder(protocolVersion: .v3_1_1)
            #expect(try decoder.decodePacket(from: &buffer) == nil)
            #expect(buffer.readableBytes == length)
        }
    }
}
