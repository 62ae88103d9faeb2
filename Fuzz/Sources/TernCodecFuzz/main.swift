import NIOCore
import TernCodec

/// libFuzzer's entry point: decode the input as a stream of packets under every protocol level.
/// Whatever decodes must encode again. Any crash, trap or sanitizer report is a bug.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDecoder(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    for version in [nil, ProtocolVersion.v3_1, .v3_1_1, .v5] {
        var buffer = ByteBuffer(bytes: bytes)
        var decoder = MQTTPacketDecoder(protocolVersion: version, maximumPacketSize: 1 << 20)
        while let packet = try? decoder.decodePacket(from: &buffer) {
            var out = ByteBuffer()
            try? packet.write(to: &out, version: decoder.protocolVersion ?? .v5)
        }
    }
    return 0
}
