import NIOCore
import NIOEmbedded
import NIOTestUtils
import Testing

@testable import TernCodec

/// The decoder under NIO's hostile chunking, and both codec halves in a channel pipeline.
@Suite("Decoder in a pipeline")
struct DecoderPipelineTests {
    @Test(
        "ByteToMessageDecoderVerifier: byte by byte, in bursts and with leftovers",
        arguments: ProtocolVersion.allCases
    )
    func verifier(version: ProtocolVersion) throws {
        let packets = try PacketRoundTripTests.samples(for: version).filter { $0.type != .connect }
        let pairs = try packets.map { packet -> (ByteBuffer, [MQTTPacket]) in
            var buffer = ByteBuffer()
            try packet.write(to: &buffer, version: version)
            return (buffer, [packet])
        }
        // Byte by byte costs the square of a packet's size: the 70 KB sample (a four-byte Remaining
        // Length) took 12 s of a debug build's CPU per version, holding a thread every async test
        // shares. It is left to the round-trip tests; the rest go through the verifier together.
        let small = pairs.filter { $0.0.readableBytes <= 4096 }
        #expect(small.count >= pairs.count - 1)
        try ByteToMessageDecoderVerifier.verifyDecoder(inputOutputPairs: small) {
            MQTTPacketDecoder(protocolVersion: version)
        }
    }

    @Test("several packets in one read come out one by one")
    func severalPacketsInOneRead() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(MQTTPacketDecoder(protocolVersion: .v5)))
        var stream = ByteBuffer()
        let packets: [MQTTPacket] = [
            .publish(Publish(topic: topic("a"), payload: buffer("1"), qos: .atLeastOnce, packetIdentifier: 1)),
            .pingreq,
            .publish(Publish(topic: topic("b"), payload: buffer("2"))),
        ]
        for packet in packets { try packet.write(to: &stream, version: .v5) }
        // The last packet is split across two reads.
        let split = stream.readableBytes - 2
        try channel.writeInbound(stream.getSlice(at: 0, length: split)!)
        #expect(try channel.readInbound(as: MQTTPacket.self) == packets[0])
        #expect(try channel.readInbound(as: MQTTPacket.self) == packets[1])
        #expect(try channel.readInbound(as: MQTTPacket.self) == nil)
        try channel.writeInbound(stream.getSlice(at: split, length: 2)!)
        #expect(try channel.readInbound(as: MQTTPacket.self) == packets[2])
        _ = try channel.finish()
    }

    @Test("the encoder writes packets in the channel's protocol level")
    func encoderInPipeline() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(
            MessageToByteHandler(MQTTPacketEncoder(protocolVersion: .v3_1_1))
        )
        try channel.writeOutbound(MQTTPacket.puback(PublishAcknowledgement(packetIdentifier: 7, reasonCode: .success)))
        let written = try #require(try channel.readOutbound(as: ByteBuffer.self))
        #expect(Array(written.readableBytesView) == [0x40, 0x02, 0x00, 0x07])
        _ = try channel.finish()
    }

    @Test("a decoding error reaches the pipeline as a TernError with its reason code")
    func errorsReachThePipeline() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(MQTTPacketDecoder(protocolVersion: .v5)))
        #expect(throws: TernError(.malformedPacket, "packet type 0 is reserved")) {
            try channel.writeInbound(ByteBuffer(bytes: [0x00, 0x00]))
        }
        _ = try? channel.finish()
    }
}
