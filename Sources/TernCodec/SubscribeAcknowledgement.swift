import NIOCore

/// SUBACK or UNSUBACK: one reason code per requested filter (MQTT 5.0 §3.9, §3.11).
///
/// On 3.1.1 a SUBACK carries the granted QoS or 0x80 for each filter, and an UNSUBACK carries
/// nothing but the packet identifier, so its ``reasonCodes`` are empty.
public struct SubscribeAcknowledgement: Sendable, Hashable {
    public var packetIdentifier: UInt16
    /// Properties (MQTT 5 only): a Reason String and User Properties.
    public var properties: Properties
    /// One code per filter, in the order of the request.
    public var reasonCodes: [ReasonCode]

    public init(packetIdentifier: UInt16, reasonCodes: [ReasonCode], properties: Properties = Properties()) {
        self.packetIdentifier = packetIdentifier
        self.reasonCodes = reasonCodes
        self.properties = properties
    }
}

extension SubscribeAcknowledgement {
    static func read(
        from body: inout ByteBuffer,
        type: PacketType,
        version: ProtocolVersion
    ) throws(TernError) -> SubscribeAcknowledgement {
        let packetIdentifier = try body.readPacketIdentifier(type)
        let properties =
            version.hasProperties ? try Properties.read(from: &body, context: type.propertyContext) : Properties()
        var reasonCodes: [ReasonCode] = []
        reasonCodes.reserveCapacity(body.readableBytes)
        while let byte = body.readInteger(as: UInt8.self) {
            if !version.hasProperties {
                // 3.1.1 §3.9.3: 0x00, 0x01, 0x02 or 0x80; an UNSUBACK has no payload at all.
                guard type == .suback, byte <= 2 || byte == 0x80 else {
                    throw .malformedPacket("a 3.1.1 \(type) carries return code \(byte)")
                }
            }
            reasonCodes.append(ReasonCode(rawValue: byte))
        }
        if type == .suback || version.hasProperties, reasonCodes.isEmpty {
            throw .protocolError("a \(type) carries no reason code")
        }
        return SubscribeAcknowledgement(
            packetIdentifier: packetIdentifier,
            reasonCodes: reasonCodes,
            properties: properties
        )
    }

    func bodyLength(type: PacketType, version: ProtocolVersion) -> Int {
        if version.hasProperties { return 2 + properties.encodedLength + reasonCodes.count }
        return type == .suback ? 2 + reasonCodes.count : 2
    }

    func writeBody(to buffer: inout ByteBuffer, type: PacketType, version: ProtocolVersion) {
        buffer.writeInteger(packetIdentifier)
        if version.hasProperties {
            properties.write(to: &buffer)
            for code in reasonCodes { buffer.writeInteger(code.rawValue) }
        } else if type == .suback {
            // 3.1.1 knows only the granted QoS and "Failure".
            for code in reasonCodes { buffer.writeInteger(code.isFailure ? 0x80 : code.rawValue) }
        }
    }
}
