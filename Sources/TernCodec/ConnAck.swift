import NIOCore

/// CONNACK: the server's answer to CONNECT (MQTT 5.0 §3.2, MQTT 3.1.1 §3.2).
public struct ConnAck: Sendable, Hashable {
    /// Whether the server resumed a session it already held for this client.
    public var sessionPresent: Bool
    /// The result. On 3.1/3.1.1 this is sent as the nearest return code (``ReasonCode/connectReturnCode``).
    public var reasonCode: ReasonCode
    /// CONNACK properties (MQTT 5 only).
    public var properties: Properties

    public init(sessionPresent: Bool = false, reasonCode: ReasonCode = .success, properties: Properties = Properties())
    {
        self.sessionPresent = sessionPresent
        self.reasonCode = reasonCode
        self.properties = properties
    }
}

extension ConnAck {
    static func read(from body: inout ByteBuffer, version: ProtocolVersion) throws(TernError) -> ConnAck {
        let flags = try body.readMQTTByte("acknowledge flags")
        // §3.2.2.1: bits 7-1 are reserved. MQTT 3.1 reserved the whole byte, so only 3.1.1 and 5 read bit 0.
        if version != .v3_1, flags & 0xFE != 0 { throw .malformedPacket("reserved CONNACK flags are set") }
        let code = try body.readMQTTByte("connect reason code")
        let reasonCode: ReasonCode
        var properties = Properties()
        if version.hasProperties {
            reasonCode = ReasonCode(rawValue: code)
            properties = try Properties.read(from: &body, context: .connack)
        } else {
            guard let mapped = ReasonCode(connectReturnCode: code) else {
                throw .malformedPacket("CONNACK return code \(code) is reserved")
            }
            reasonCode = mapped
        }
        try body.expectFullyRead(.connack)
        let sessionPresent = version != .v3_1 && flags & 0x01 != 0
        if sessionPresent, reasonCode.isFailure {
            throw .protocolError("a refusing CONNACK sets session present")  // [MQTT-3.2.2-6]
        }
        return ConnAck(sessionPresent: sessionPresent, reasonCode: reasonCode, properties: properties)
    }

    func bodyLength(version: ProtocolVersion) -> Int {
        version.hasProperties ? 2 + properties.encodedLength : 2
    }

    func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) {
        buffer.writeInteger(UInt8(sessionPresent && version != .v3_1 ? 1 : 0))
        if version.hasProperties {
            buffer.writeInteger(reasonCode.rawValue)
            properties.write(to: &buffer)
        } else {
            buffer.writeInteger(reasonCode.connectReturnCode)
        }
    }
}
