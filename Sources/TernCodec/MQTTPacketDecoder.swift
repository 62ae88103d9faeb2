public import NIOCore

/// Splits a byte stream into MQTT packets.
///
/// A `NIOSingleStepByteToMessageDecoder`, so the same value serves a `ByteToMessageHandler`, a
/// `NIOSingleStepByteToMessageProcessor` inside another handler, or a test.
///
/// - An incomplete packet is not an error: `decode` returns `nil` and waits for more bytes.
/// - A packet whose Remaining Length makes it larger than ``maximumPacketSize`` is refused with
///   *Packet too large* (0x95) as soon as the length has been read, before any of its body is
///   buffered (MQTT 5.0 §3.1.2.11.4).
/// - Every other failure throws ``TernError`` with the reason code the peer must be sent.
///
/// A server-side decoder starts with no protocol version: the first packet must be CONNECT, and
/// its protocol level then fixes the format of every later packet.
public struct MQTTPacketDecoder: NIOSingleStepByteToMessageDecoder, Sendable {
    public typealias InboundOut = MQTTPacket

    /// The largest packet MQTT can express: a 268,435,455-byte body after a 5-byte fixed header.
    public static let protocolMaximumPacketSize = 268_435_460

    /// The protocol level of the connection, once known.
    public var protocolVersion: ProtocolVersion?
    /// The largest packet accepted, fixed header included.
    public var maximumPacketSize: Int

    /// - Parameters:
    ///   - protocolVersion: The connection's level, or `nil` on a server before CONNECT.
    ///   - maximumPacketSize: The largest packet accepted, fixed header included.
    public init(protocolVersion: ProtocolVersion? = nil, maximumPacketSize: Int = Self.protocolMaximumPacketSize) {
        self.protocolVersion = protocolVersion
        self.maximumPacketSize = maximumPacketSize
    }

    public mutating func decode(buffer: inout ByteBuffer) throws -> MQTTPacket? {
        try decodePacket(from: &buffer)
    }

    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> MQTTPacket? {
        try decodePacket(from: &buffer)
    }

    /// The typed core of ``decode(buffer:)``.
    public mutating func decodePacket(from buffer: inout ByteBuffer) throws(TernError) -> MQTTPacket? {
        let start = buffer.readerIndex
        guard let typeAndFlags = buffer.getInteger(at: start, as: UInt8.self) else { return nil }
        // A server refuses a first packet that is not CONNECT from its first byte (§3.1 [MQTT-3.1.0-1]).
        let version: ProtocolVersion
        if let known = protocolVersion {
            version = known
        } else if typeAndFlags >> 4 == PacketType.connect.rawValue {
            version = .v5  // CONNECT carries its own level; this value is not used to read it.
        } else {
            throw .protocolError("the first packet is not CONNECT")
        }
        // The Remaining Length is read in place so that an incomplete packet consumes nothing.
        var remainingLength = 0
        var lengthBytes = 0
        while true {
            guard let byte = buffer.getInteger(at: start + 1 + lengthBytes, as: UInt8.self) else { return nil }
            remainingLength |= Int(byte & 0x7F) << (7 * lengthBytes)
            lengthBytes += 1
            if byte & 0x80 == 0 { break }
            if lengthBytes == 4 {
                throw .malformedPacket("the Remaining Length is longer than four bytes")  // §1.5.5
            }
        }
        let packetSize = 1 + lengthBytes + remainingLength
        guard packetSize <= maximumPacketSize else {
            throw TernError(
                .packetTooLarge,
                "a packet of \(packetSize) bytes exceeds the maximum packet size of \(maximumPacketSize)"
            )
        }
        guard buffer.readableBytes >= packetSize else { return nil }

        buffer.moveReaderIndex(forwardBy: 1 + lengthBytes)
        var body = buffer.readSlice(length: remainingLength)!
        let packet = try MQTTPacket.read(typeAndFlags: typeAndFlags, body: &body, version: version)
        if case .connect(let connect) = packet, protocolVersion == nil {
            protocolVersion = connect.protocolVersion
        }
        return packet
    }
}

/// Writes ``MQTTPacket`` values in the connection's protocol format.
public struct MQTTPacketEncoder: MessageToByteEncoder, Sendable {
    public typealias OutboundIn = MQTTPacket

    /// The protocol level packets are written in. A CONNECT always uses its own.
    public var protocolVersion: ProtocolVersion

    public init(protocolVersion: ProtocolVersion) {
        self.protocolVersion = protocolVersion
    }

    public func encode(data: MQTTPacket, out: inout ByteBuffer) throws {
        try data.write(to: &out, version: protocolVersion)
    }
}
