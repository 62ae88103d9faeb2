import NIOCore

/// The control packet type in the high nibble of the fixed header (MQTT 5.0 §2.1.2).
public enum PacketType: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    case connect = 1
    case connack = 2
    case publish = 3
    case puback = 4
    case pubrec = 5
    case pubrel = 6
    case pubcomp = 7
    case subscribe = 8
    case suback = 9
    case unsubscribe = 10
    case unsuback = 11
    case pingreq = 12
    case pingresp = 13
    case disconnect = 14
    /// MQTT 5 only; reserved in 3.1.1.
    case auth = 15

    /// The fixed header flags every packet but PUBLISH must carry (§2.1.3, Table 2-2).
    var requiredFlags: UInt8 {
        switch self {
        case .pubrel, .subscribe, .unsubscribe: return 0b0010
        default: return 0
        }
    }

    public var description: String {
        switch self {
        case .connect: return "CONNECT"
        case .connack: return "CONNACK"
        case .publish: return "PUBLISH"
        case .puback: return "PUBACK"
        case .pubrec: return "PUBREC"
        case .pubrel: return "PUBREL"
        case .pubcomp: return "PUBCOMP"
        case .subscribe: return "SUBSCRIBE"
        case .suback: return "SUBACK"
        case .unsubscribe: return "UNSUBSCRIBE"
        case .unsuback: return "UNSUBACK"
        case .pingreq: return "PINGREQ"
        case .pingresp: return "PINGRESP"
        case .disconnect: return "DISCONNECT"
        case .auth: return "AUTH"
        }
    }
}

extension ByteBuffer {
    /// Reads a Packet Identifier, which must not be 0 (MQTT 5.0 §2.2.1, [MQTT-2.2.1-3]).
    mutating func readPacketIdentifier(_ packet: PacketType) throws(TernError) -> UInt16 {
        let identifier = try readMQTTUInt16("packet identifier")
        guard identifier != 0 else { throw .protocolError("a \(packet) has packet identifier 0") }
        return identifier
    }

    /// Throws when a packet body has bytes its fields did not account for.
    func expectFullyRead(_ packet: PacketType) throws(TernError) {
        guard readableBytes == 0 else {
            throw .malformedPacket("a \(packet) has \(readableBytes) bytes after its last field")
        }
    }
}
