import NIOCore

/// PUBACK, PUBREC, PUBREL or PUBCOMP: the steps of the QoS 1 and QoS 2 flows
/// (MQTT 5.0 §3.4–§3.7). The four share one layout; ``MQTTPacket`` tells them apart.
public struct PublishAcknowledgement: Sendable, Hashable {
    public var packetIdentifier: UInt16
    /// The result (MQTT 5 only; always success on 3.1.1).
    public var reasonCode: ReasonCode
    /// Properties (MQTT 5 only): a Reason String and User Properties.
    public var properties: Properties

    public init(packetIdentifier: UInt16, reasonCode: ReasonCode = .success, properties: Properties = Properties()) {
        self.packetIdentifier = packetIdentifier
        self.reasonCode = reasonCode
        self.properties = properties
    }
}

extension PublishAcknowledgement {
    static func read(
        from body: inout ByteBuffer,
        type: PacketType,
        version: ProtocolVersion
    ) throws(TernError) -> PublishAcknowledgement {
        let packetIdentifier = try body.readPacketIdentifier(type)
        var acknowledgement = PublishAcknowledgement(packetIdentifier: packetIdentifier)
        // §3.4.2.1: a remaining length of 2 means success with no properties.
        if version.hasProperties, body.readableBytes > 0 {
            acknowledgement.reasonCode = ReasonCode(rawValue: try body.readMQTTByte("reason code"))
            if body.readableBytes > 0 {
                acknowledgement.properties = try Properties.read(from: &body, context: type.propertyContext)
            }
        }
        try body.expectFullyRead(type)
        return acknowledgement
    }

    func bodyLength(version: ProtocolVersion) -> Int {
        guard version.hasProperties else { return 2 }
        if properties.isEmpty { return reasonCode == .success ? 2 : 3 }
        return 3 + properties.encodedLength
    }

    func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) {
        buffer.writeInteger(packetIdentifier)
        guard version.hasProperties else { return }
        if properties.isEmpty {
            if reasonCode != .success { buffer.writeInteger(reasonCode.rawValue) }
        } else {
            buffer.writeInteger(reasonCode.rawValue)
            properties.write(to: &buffer)
        }
    }
}

extension PacketType {
    var propertyContext: PropertyContext {
        switch self {
        case .connect: return .connect
        case .connack: return .connack
        case .publish: return .publish
        case .puback: return .puback
        case .pubrec: return .pubrec
        case .pubrel: return .pubrel
        case .pubcomp: return .pubcomp
        case .subscribe: return .subscribe
        case .suback: return .suback
        case .unsubscribe: return .unsubscribe
        case .unsuback: return .unsuback
        case .disconnect: return .disconnect
        case .auth: return .auth
        case .pingreq, .pingresp: return []
        }
    }
}
