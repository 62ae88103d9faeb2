import NIOCore

/// DISCONNECT (MQTT 5.0 §3.14) or AUTH (§3.15): a reason code and properties, both optional on
/// the wire. On 3.1.1 a DISCONNECT is empty; AUTH does not exist there.
public struct ReasonedPacket: Sendable, Hashable {
    public var reasonCode: ReasonCode
    /// DISCONNECT: Session Expiry Interval, Reason String, Server Reference, User Properties.
    /// AUTH: Authentication Method and Data, Reason String, User Properties.
    public var properties: Properties

    public init(reasonCode: ReasonCode = .success, properties: Properties = Properties()) {
        self.reasonCode = reasonCode
        self.properties = properties
    }
}

/// The content of a DISCONNECT packet.
public typealias Disconnect = ReasonedPacket
/// The content of an AUTH packet.
public typealias Auth = ReasonedPacket

extension ReasonedPacket {
    static func read(from body: inout ByteBuffer, type: PacketType, version: ProtocolVersion) throws(TernError) -> Self
    {
        guard version.hasProperties else {
            guard type == .disconnect else { throw .malformedPacket("AUTH does not exist before MQTT 5") }
            try body.expectFullyRead(type)
            return ReasonedPacket()
        }
        var packet = ReasonedPacket()
        // §3.14.2.1 and §3.15.2.1: a remaining length of 0 means success and no properties.
        if body.readableBytes > 0 {
            packet.reasonCode = ReasonCode(rawValue: try body.readMQTTByte("reason code"))
            if body.readableBytes > 0 {
                packet.properties = try Properties.read(from: &body, context: type.propertyContext)
            }
        }
        try body.expectFullyRead(type)
        if type == .auth {
            guard [.success, .continueAuthentication, .reAuthenticate].contains(packet.reasonCode) else {
                throw .protocolError("AUTH carries reason code \(packet.reasonCode)")  // §3.15.2.1
            }
            let isAbbreviated = packet.reasonCode == .success && packet.properties.isEmpty
            if !isAbbreviated, !packet.properties.contains(.authenticationMethod) {
                throw .protocolError("AUTH has no Authentication Method")  // §3.15.2.2.2
            }
        }
        return packet
    }

    func bodyLength(version: ProtocolVersion) -> Int {
        guard version.hasProperties else { return 0 }
        if properties.isEmpty { return reasonCode == .success ? 0 : 1 }
        return 1 + properties.encodedLength
    }

    func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) {
        guard version.hasProperties else { return }
        if properties.isEmpty {
            if reasonCode != .success { buffer.writeInteger(reasonCode.rawValue) }
        } else {
            buffer.writeInteger(reasonCode.rawValue)
            properties.write(to: &buffer)
        }
    }
}
