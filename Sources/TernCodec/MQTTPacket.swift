public import NIOCore

/// Any MQTT control packet.
///
/// Packets are plain values; which protocol level they are written in is a property of the
/// connection, passed to ``write(to:version:)`` and held by ``MQTTPacketDecoder``. The rare, large
/// packets are `indirect` so that the common ones stay small on their way through a pipeline.
public enum MQTTPacket: Sendable, Hashable {
    indirect case connect(Connect)
    case connack(ConnAck)
    case publish(Publish)
    case puback(PublishAcknowledgement)
    case pubrec(PublishAcknowledgement)
    case pubrel(PublishAcknowledgement)
    case pubcomp(PublishAcknowledgement)
    indirect case subscribe(Subscribe)
    case suback(SubscribeAcknowledgement)
    indirect case unsubscribe(Unsubscribe)
    case unsuback(SubscribeAcknowledgement)
    case pingreq
    case pingresp
    case disconnect(Disconnect)
    case auth(Auth)

    /// The packet's type.
    public var type: PacketType {
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
        case .pingreq: return .pingreq
        case .pingresp: return .pingresp
        case .disconnect: return .disconnect
        case .auth: return .auth
        }
    }
}

// MARK: - Encoding

extension MQTTPacket {
    /// The Remaining Length of this packet: everything after the fixed header.
    public func remainingLength(version: ProtocolVersion) -> Int {
        switch self {
        case .connect(let connect): return connect.bodyLength()
        case .connack(let connack): return connack.bodyLength(version: version)
        case .publish(let publish): return publish.bodyLength(version: version)
        case .puback(let ack), .pubrec(let ack), .pubrel(let ack), .pubcomp(let ack):
            return ack.bodyLength(version: version)
        case .subscribe(let subscribe): return subscribe.bodyLength(version: version)
        case .suback(let ack), .unsuback(let ack): return ack.bodyLength(type: type, version: version)
        case .unsubscribe(let unsubscribe): return unsubscribe.bodyLength(version: version)
        case .pingreq, .pingresp: return 0
        case .disconnect(let packet), .auth(let packet): return packet.bodyLength(version: version)
        }
    }

    /// The size of the whole packet on the wire, fixed header included. Compare it with a peer's
    /// Maximum Packet Size before sending.
    public func encodedSize(version: ProtocolVersion) -> Int {
        let remaining = remainingLength(version: version)
        return 1 + ByteBuffer.variableByteIntegerSize(UInt32(clamping: remaining)) + remaining
    }

    /// Writes the packet in the wire format of `version`. A CONNECT always uses its own level.
    ///
    /// - Throws: ``TernError`` when a field cannot be encoded (a string over 65,535 bytes or with
    ///   U+0000, a packet over 268,435,455 bytes, AUTH before MQTT 5). Nothing is written then.
    public func write(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(TernError) {
        if case .auth = self, !version.hasProperties {
            throw TernError(.protocolError, "AUTH does not exist before MQTT 5")
        }
        let remaining = remainingLength(version: version)
        guard remaining <= Int(ByteBuffer.maximumVariableByteInteger) else {
            throw TernError(.packetTooLarge, "a \(type) of \(remaining) bytes exceeds the MQTT limit")
        }
        let start = buffer.writerIndex
        buffer.reserveCapacity(minimumWritableBytes: remaining + 5)
        let flags: UInt8
        if case .publish(let publish) = self { flags = publish.flags } else { flags = type.requiredFlags }
        buffer.writeInteger(type.rawValue << 4 | flags)
        buffer.writeVariableByteInteger(UInt32(remaining))
        do {
            switch self {
            case .connect(let connect): try connect.writeBody(to: &buffer)
            case .connack(let connack): connack.writeBody(to: &buffer, version: version)
            case .publish(let publish): publish.writeBody(to: &buffer, version: version)
            case .puback(let ack), .pubrec(let ack), .pubrel(let ack), .pubcomp(let ack):
                ack.writeBody(to: &buffer, version: version)
            case .subscribe(let subscribe): try subscribe.writeBody(to: &buffer, version: version)
            case .suback(let ack), .unsuback(let ack): ack.writeBody(to: &buffer, type: type, version: version)
            case .unsubscribe(let unsubscribe): try unsubscribe.writeBody(to: &buffer, version: version)
            case .pingreq, .pingresp: break
            case .disconnect(let packet), .auth(let packet): packet.writeBody(to: &buffer, version: version)
            }
        } catch {
            buffer.moveWriterIndex(to: start)
            throw error
        }
        assert(buffer.writerIndex - start == encodedSize(version: version), "\(type) length mismatch")
    }
}

// MARK: - Decoding

extension MQTTPacket {
    /// Decodes the body of one packet whose fixed header has been read.
    static func read(
        typeAndFlags: UInt8,
        body: inout ByteBuffer,
        version: ProtocolVersion
    ) throws(TernError) -> MQTTPacket {
        guard let type = PacketType(rawValue: typeAndFlags >> 4) else {
            throw .malformedPacket("packet type 0 is reserved")
        }
        let flags = typeAndFlags & 0x0F
        if type != .publish, flags != type.requiredFlags {
            throw .malformedPacket("a \(type) has fixed header flags \(flags), not \(type.requiredFlags)")  // §2.1.3
        }
        switch type {
        case .connect: return .connect(try Connect.read(from: &body))
        case .connack: return .connack(try ConnAck.read(from: &body, version: version))
        case .publish: return .publish(try Publish.read(from: &body, flags: flags, version: version))
        case .puback: return .puback(try PublishAcknowledgement.read(from: &body, type: type, version: version))
        case .pubrec: return .pubrec(try PublishAcknowledgement.read(from: &body, type: type, version: version))
        case .pubrel: return .pubrel(try PublishAcknowledgement.read(from: &body, type: type, version: version))
        case .pubcomp: return .pubcomp(try PublishAcknowledgement.read(from: &body, type: type, version: version))
        case .subscribe: return .subscribe(try Subscribe.read(from: &body, version: version))
        case .suback: return .suback(try SubscribeAcknowledgement.read(from: &body, type: type, version: version))
        case .unsubscribe: return .unsubscribe(try Unsubscribe.read(from: &body, version: version))
        case .unsuback: return .unsuback(try SubscribeAcknowledgement.read(from: &body, type: type, version: version))
        case .pingreq, .pingresp:
            try body.expectFullyRead(type)
            return type == .pingreq ? .pingreq : .pingresp
        case .disconnect: return .disconnect(try ReasonedPacket.read(from: &body, type: type, version: version))
        case .auth: return .auth(try ReasonedPacket.read(from: &body, type: type, version: version))
        }
    }
}
