import Benchmark
import NIOCore
import TernCodec

/// A QoS 1 PUBLISH with typical MQTT 5 properties and a payload of `payloadSize` bytes.
func samplePublish(payloadSize: Int) -> MQTTPacket {
    var properties = Properties()
    properties.messageExpiryInterval = 3600
    properties.payloadIsUTF8 = false
    try! properties.append(.userProperty(name: "site", value: "plant-7"))
    return .publish(
        Publish(
            topic: try! TopicName("factory/line-3/sensor-42/temperature"),
            payload: ByteBuffer(repeating: 0x5A, count: payloadSize),
            qos: .atLeastOnce,
            packetIdentifier: 4242,
            properties: properties
        )
    )
}

func sampleConnect() -> MQTTPacket {
    var properties = Properties()
    properties.sessionExpiryInterval = .max
    properties.receiveMaximum = 100
    properties.maximumPacketSize = 1 << 20
    return .connect(
        Connect(
            clientIdentifier: "sensor-gateway-0042",
            cleanStart: false,
            keepAlive: 60,
            properties: properties,
            will: .init(topic: try! TopicName("clients/sensor-gateway-0042/status"), payload: ByteBuffer(string: "offline"), qos: .atLeastOnce, retain: true),
            username: "gateway",
            password: ByteBuffer(string: "correct horse battery staple")
        )
    )
}

func encoded(_ packet: MQTTPacket) -> ByteBuffer {
    var buffer = ByteBuffer()
    try! packet.write(to: &buffer, version: .v5)
    return buffer
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .mallocCountTotal, .wallClock],
        warmupIterations: 1_000,
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 1_000_000
    )

    let cases: [(String, MQTTPacket)] = [
        ("PUBLISH QoS 1, 16 B payload, v5 properties", samplePublish(payloadSize: 16)),
        ("PUBLISH QoS 1, 1 KiB payload, v5 properties", samplePublish(payloadSize: 1024)),
        ("CONNECT v5 with will and credentials", sampleConnect()),
    ]

    for (name, packet) in cases {
        let bytes = encoded(packet)

        Benchmark("decode \(name)") { benchmark in
            var decoder = MQTTPacketDecoder(protocolVersion: .v5)
            for _ in benchmark.scaledIterations {
                var input = bytes
                blackHole(try decoder.decodePacket(from: &input))
            }
        }

        Benchmark("encode \(name)") { benchmark in
            var output = ByteBuffer()
            output.reserveCapacity(bytes.readableBytes)
            for _ in benchmark.scaledIterations {
                output.clear()
                try packet.write(to: &output, version: .v5)
                blackHole(output.readableBytes)
            }
        }
    }
}
