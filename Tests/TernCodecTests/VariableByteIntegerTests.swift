import NIOCore
import Testing

@testable import TernCodec

/// MQTT 5.0 §1.5.5 (Table 1-1): the size boundaries of the Variable Byte Integer.
@Suite("Variable Byte Integer (§1.5.5)")
struct VariableByteIntegerTests {
    static let boundaries: [(UInt32, [UInt8])] = [
        (0, [0x00]),
        (127, [0x7F]),
        (128, [0x80, 0x01]),
        (16_383, [0xFF, 0x7F]),
        (16_384, [0x80, 0x80, 0x01]),
        (2_097_151, [0xFF, 0xFF, 0x7F]),
        (2_097_152, [0x80, 0x80, 0x80, 0x01]),
        (268_435_455, [0xFF, 0xFF, 0xFF, 0x7F]),
    ]

    @Test("encodes Table 1-1's boundaries byte for byte", arguments: boundaries)
    func encodesBoundaries(value: UInt32, bytes: [UInt8]) throws {
        var buffer = ByteBuffer()
        let written = buffer.writeVariableByteInteger(value)
        #expect(Array(buffer.readableBytesView) == bytes)
        #expect(written == bytes.count)
        #expect(ByteBuffer.variableByteIntegerSize(value) == bytes.count)
        #expect(try buffer.readMQTTVariableByteInteger() == value)
    }

    @Test("accepts a non-minimal encoding when decoding")
    func acceptsNonMinimal() throws {
        var buffer = ByteBuffer(bytes: [0x81, 0x80, 0x00])
        #expect(try buffer.readMQTTVariableByteInteger() == 1)
    }

    @Test("refuses a fifth byte as malformed")
    func refusesFiveBytes() {
        var buffer = ByteBuffer(bytes: [0xFF, 0xFF, 0xFF, 0xFF, 0x01])
        #expect(throws: TernError.self) { try buffer.readMQTTVariableByteInteger() }
        do { _ = try buffer.readMQTTVariableByteInteger() } catch { #expect(error.reasonCode == .malformedPacket) }
    }

    @Test("a truncated integer is malformed")
    func truncated() {
        var buffer = ByteBuffer(bytes: [0x80])
        #expect(throws: TernError.malformedPacket("the packet ends inside a Variable Byte Integer")) {
            try buffer.readMQTTVariableByteInteger()
        }
    }
}
