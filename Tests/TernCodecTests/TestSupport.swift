import NIOCore
import Testing

@testable import TernCodec

/// Encodes `packet` in `version`, decodes it back with a decoder that knows the version, and
/// checks that the decoder used every byte.
func roundTrip(_ packet: MQTTPacket, version: ProtocolVersion) throws -> MQTTPacket {
    var buffer = ByteBuffer()
    try packet.write(to: &buffer, version: version)
    #expect(buffer.readableBytes == packet.encodedSize(version: version))
    var decoder = MQTTPacketDecoder(protocolVersion: version)
    let decoded = try decoder.decodePacket(from: &buffer)
    #expect(buffer.readableBytes == 0, "decoder left \(buffer.readableBytes) bytes")
    return try #require(decoded)
}

/// Decodes one packet from raw bytes; `version` nil means a server that has not seen CONNECT.
func decode(_ bytes: [UInt8], version: ProtocolVersion?, maximumPacketSize: Int? = nil) throws(TernError)
    -> MQTTPacket?
{
    var buffer = ByteBuffer(bytes: bytes)
    var decoder = MQTTPacketDecoder(
        protocolVersion: version,
        maximumPacketSize: maximumPacketSize ?? MQTTPacketDecoder.protocolMaximumPacketSize
    )
    return try decoder.decodePacket(from: &buffer)
}

/// The bytes `packet` encodes to.
func encode(_ packet: MQTTPacket, version: ProtocolVersion) throws -> [UInt8] {
    var buffer = ByteBuffer()
    try packet.write(to: &buffer, version: version)
    return Array(buffer.readableBytesView)
}

/// Bytes of an ASCII string, for building vectors by hand.
func ascii(_ string: String) -> [UInt8] { Array(string.utf8) }

/// An MQTT UTF-8 string: two-byte length, then the bytes.
func mqttString(_ string: String) -> [UInt8] {
    let bytes = Array(string.utf8)
    return [UInt8(bytes.count >> 8), UInt8(bytes.count & 0xFF)] + bytes
}

func topic(_ string: String) -> TopicName { try! TopicName(string) }
func filter(_ string: String) -> TopicFilter { try! TopicFilter(string) }
func buffer(_ string: String) -> ByteBuffer { ByteBuffer(string: string) }
