import Testing

@testable import TernCodec

/// MQTT 5.0 §1.5.4: UTF-8 Encoded Strings must be well-formed and must not contain U+0000.
@Suite("UTF-8 Encoded String rules (§1.5.4)")
struct UTF8ValidationTests {
    static let valid: [[UInt8]] = [
        [],
        Array("sensors/room-1/temperature".utf8),
        Array("température/温度/🌡".utf8),
        [0xC2, 0x80],  // U+0080, the first two-byte code point
        [0xEF, 0xBB, 0xBF],  // U+FEFF must not be skipped or stripped [MQTT-1.5.4-3]
        [0xED, 0x9F, 0xBF],  // U+D7FF, just below the surrogates
        [0xEE, 0x80, 0x80],  // U+E000, just above them
        [0xF4, 0x8F, 0xBF, 0xBF],  // U+10FFFF, the last code point
        [0x01, 0x1F, 0x7F],  // control characters are discouraged, not forbidden
    ]

    static let invalid: [(String, [UInt8])] = [
        ("U+0000 [MQTT-1.5.4-2]", [0x61, 0x00, 0x62]),
        ("a UTF-16 surrogate [MQTT-1.5.4-1]", [0xED, 0xA0, 0x80]),
        ("the last surrogate", [0xED, 0xBF, 0xBF]),
        ("overlong two-byte NUL", [0xC0, 0x80]),
        ("overlong two-byte", [0xC1, 0xBF]),
        ("overlong three-byte", [0xE0, 0x80, 0xAF]),
        ("overlong four-byte", [0xF0, 0x80, 0x80, 0xAF]),
        ("above U+10FFFF", [0xF4, 0x90, 0x80, 0x80]),
        ("lead byte 0xF5", [0xF5, 0x80, 0x80, 0x80]),
        ("lead byte 0xFF", [0xFF]),
        ("a lone continuation byte", [0x80]),
        ("a truncated two-byte sequence", [0xC3]),
        ("a truncated three-byte sequence", [0xE2, 0x82]),
        ("a truncated four-byte sequence", [0xF0, 0x9F, 0x8C]),
        ("a bad continuation", [0xE2, 0x28, 0xA1]),
    ]

    @Test("accepts well-formed strings", arguments: valid)
    func acceptsValid(bytes: [UInt8]) {
        #expect(bytes.withUnsafeBytes { UTF8Validation.isValidMQTTString($0) })
    }

    @Test("refuses ill-formed strings", arguments: invalid)
    func refusesInvalid(name: String, bytes: [UInt8]) {
        #expect(!bytes.withUnsafeBytes { UTF8Validation.isValidMQTTString($0) }, "\(name)")
    }

    @Test("agrees with the standard library on every two-byte input")
    func agreesWithStandardLibrary() {
        for high in 0...255 {
            for low in 0...255 {
                let bytes: [UInt8] = [UInt8(high), UInt8(low)]
                let standard = String(validating: bytes, as: UTF8.self) != nil && !bytes.contains(0)
                let ours = bytes.withUnsafeBytes { UTF8Validation.isValidMQTTString($0) }
                #expect(ours == standard, "\(bytes)")
            }
        }
    }
}
