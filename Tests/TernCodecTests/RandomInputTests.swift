import NIOCore
import Testing

@testable import TernCodec

/// Deterministic random and mutated input: the decoder must return a packet, ask for more bytes
/// or throw a `TernError`, and never crash, whatever it is fed. The libFuzzer target in `Fuzz/`
/// runs the same check for as long as one likes.
@Suite("Random and mutated input")
struct RandomInputTests {
    /// SplitMix64: a fixed-seed generator, so a failure reproduces exactly.
    struct SplitMix64: RandomNumberGenerator {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
    }

    /// Feeds `bytes` to a decoder until it stops producing packets; returns how many it decoded.
    @discardableResult
    static func drain(_ bytes: [UInt8], version: ProtocolVersion?) -> Int {
        var buffer = ByteBuffer(bytes: bytes)
        var decoder = MQTTPacketDecoder(protocolVersion: version, maximumPacketSize: 1 << 16)
        var decoded = 0
        while true {
            let packet: MQTTPacket
            do {
                guard let next = try decoder.decodePacket(from: &buffer) else { return decoded }
                packet = next
            } catch {
                return decoded  // refused input is the expected outcome for most buffers
            }
            decoded += 1
            // Whatever decodes must encode again: a failure here is a codec bug, not bad input.
            var out = ByteBuffer()
            do {
                try packet.write(to: &out, version: decoder.protocolVersion ?? .v5)
            } catch {
                Issue.record("decoded \(packet.type) does not encode again: \(error)")
                return decoded
            }
        }
    }

    @Test("100,000 random and mutated buffers never crash the decoder")
    func randomAndMutated() throws {
        var random = SplitMix64(state: 0x7E42_2026)
        var seeds: [[UInt8]] = []
        for version in ProtocolVersion.allCases {
            for packet in try PacketRoundTripTests.samples(for: version) {
                seeds.append(try encode(packet, version: version))
            }
        }
        let versions: [ProtocolVersion?] = [nil, .v3_1, .v3_1_1, .v5]
        var decodedTotal = 0
        for iteration in 0..<100_000 {
            var bytes: [UInt8]
            if iteration % 4 == 0 {
                let count = Int.random(in: 0..<64, using: &random)
                bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
            } else {
                bytes = seeds.randomElement(using: &random)!
                for _ in 0..<Int.random(in: 1...4, using: &random) {
                    guard !bytes.isEmpty else { break }
                    let index = Int.random(in: 0..<bytes.count, using: &random)
                    switch Int.random(in: 0..<4, using: &random) {
                    case 0: bytes[index] = UInt8.random(in: 0...255, using: &random)
                    case 1: bytes[index] ^= 1 << UInt8.random(in: 0..<8, using: &random)
                    case 2: bytes.remove(at: index)
                    default: bytes.insert(UInt8.random(in: 0...255, using: &random), at: index)
                    }
                }
            }
            decodedTotal += Self.drain(bytes, version: versions.randomElement(using: &random)!)
        }
        // Mutations that leave a valid packet must still decode; a decoder that refused everything would fail here.
        #expect(decodedTotal > 1_000)
    }
}
