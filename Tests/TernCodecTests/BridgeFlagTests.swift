import NIOCore
import Testing

@testable import TernCodec

/// The bridge bit of Mosquitto's `try_private`: the high bit of a 3.1/3.1.1 CONNECT's protocol
/// level (0x83, 0x84). Not part of the MQTT specifications, which leave levels 0x80 and up unused.
@Suite("Bridge bit in CONNECT")
struct BridgeFlagTests {
    @Test("3.1.1 CONNECT of a bridge: level byte 0x84 on the wire, read back as 3.1.1 with isBridge")
    func level311() throws {
        var connect = Connect(protocolVersion: .v3_1_1, clientIdentifier: "bridge", cleanStart: false)
        connect.isBridge = true
        let bytes = try encode(.connect(connect), version: .v3_1_1)
        // Fixed header (2), protocol name "MQTT" (6), then the level.
        #expect(bytes[8] == 0x84)
        guard case .connect(let decoded)? = try decode(bytes, version: nil) else {
            Issue.record("not a CONNECT")
            return
        }
        #expect(decoded.protocolVersion == .v3_1_1)
        #expect(decoded.isBridge)
    }

    @Test("3.1 bridge: 0x83; MQTT 5 never carries the bit, and 0x85 stays an unknown level")
    func otherLevels() throws {
        var old = Connect(protocolVersion: .v3_1, clientIdentifier: "bridge")
        old.isBridge = true
        let oldBytes = try encode(.connect(old), version: .v3_1)
        #expect(oldBytes.contains(0x83))
        guard case .connect(let decoded)? = try decode(oldBytes, version: nil) else {
            Issue.record("not a CONNECT")
            return
        }
        #expect(decoded.isBridge && decoded.protocolVersion == .v3_1)

        var five = Connect(protocolVersion: .v5, clientIdentifier: "bridge")
        five.isBridge = true
        var bytes = try encode(.connect(five), version: .v5)
        #expect(bytes[8] == 0x05)
        bytes[8] = 0x85
        #expect(throws: TernError.self) { try decode(bytes, version: nil) }
    }
}
