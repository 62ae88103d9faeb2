public import NIOCore

/// PUBLISH: an application message (MQTT 5.0 §3.3, MQTT 3.1.1 §3.3).
///
/// Decoding a PUBLISH allocates nothing: topic, properties and payload are slices of the receive
/// buffer.
public struct Publish: Sendable, Hashable {
    /// The topic; ``TopicName/aliasOnly`` when an MQTT 5 sender names it by Topic Alias alone.
    public var topic: TopicName
    /// The application payload.
    public var payload: ByteBuffer
    public var qos: QoS
    /// The RETAIN flag.
    public var retain: Bool
    /// The DUP flag: set on a re-delivery of a QoS 1/2 message.
    public var duplicate: Bool
    /// The packet identifier; 0 for QoS 0, non-zero otherwise.
    public var packetIdentifier: UInt16
    /// PUBLISH properties (MQTT 5 only).
    public var properties: Properties

    public init(
        topic: TopicName,
        payload: ByteBuffer,
        qos: QoS = .atMostOnce,
        retain: Bool = false,
        duplicate: Bool = false,
        packetIdentifier: UInt16 = 0,
        properties: Properties = Properties()
    ) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.duplicate = duplicate
        self.packetIdentifier = packetIdentifier
        self.properties = properties
    }
}

extension Publish {
    private enum Flag {
        static let retain: UInt8 = 0x01
        static let qosShift: UInt8 = 1
        static let duplicate: UInt8 = 0x08
    }

    static func read(from body: inout ByteBuffer, flags: UInt8, version: ProtocolVersion) throws(TernError) -> Publish {
        guard let qos = QoS(rawValue: (flags >> Flag.qosShift) & 0b11) else {
            throw .malformedPacket("a PUBLISH has QoS 3")  // §3.3.1.2 [MQTT-3.3.1-4]
        }
        let duplicate = flags & Flag.duplicate != 0
        if duplicate, qos == .atMostOnce {
            throw .malformedPacket("a QoS 0 PUBLISH has the DUP flag set")  // §3.3.1.1 [MQTT-3.3.1-2]
        }
        let topicBytes = try body.readMQTTStringSlice("topic name")
        let packetIdentifier = qos == .atMostOnce ? 0 : try body.readPacketIdentifier(.publish)
        let properties = version.hasProperties ? try Properties.read(from: &body, context: .publish) : Properties()
        let topic: TopicName
        if topicBytes.readableBytes == 0, version.hasProperties {
            // §3.3.2.3.4: an empty name is allowed only together with a Topic Alias.
            guard properties.contains(.topicAlias) else {
                throw .protocolError("a PUBLISH has an empty topic name and no Topic Alias")
            }
            topic = .aliasOnly
        } else {
            topic = try TopicName(decodedUTF8: topicBytes)
        }
        let payload = body.readSlice(length: body.readableBytes)!
        return Publish(
            topic: topic,
            payload: payload,
            qos: qos,
            retain: flags & Flag.retain != 0,
            duplicate: duplicate,
            packetIdentifier: packetIdentifier,
            properties: properties
        )
    }

    var flags: UInt8 {
        var flags = qos.rawValue << Flag.qosShift
        if retain { flags |= Flag.retain }
        if duplicate { flags |= Flag.duplicate }
        return flags
    }

    func bodyLength(version: ProtocolVersion) -> Int {
        var length = 2 + topic.utf8.readableBytes + payload.readableBytes
        if qos != .atMostOnce { length += 2 }
        if version.hasProperties { length += properties.encodedLength }
        return length
    }

    func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) {
        writeBodyHead(to: &buffer, version: version)
        buffer.writeImmutableBuffer(payload)
    }

    private func writeBodyHead(to buffer: inout ByteBuffer, version: ProtocolVersion) {
        buffer.writeMQTTValidatedString(topic.utf8)
        if qos != .atMostOnce { buffer.writeInteger(packetIdentifier) }
        if version.hasProperties { properties.write(to: &buffer) }
    }

    /// Writes the whole packet but its payload: the fixed header (whose Remaining Length counts
    /// the payload), the topic, the packet identifier and the properties. The caller sends
    /// ``payload`` right after, as it is: a large payload delivered to many subscribers is then
    /// shared by all of them instead of copied into each one's packet.
    ///
    /// - Throws: ``TernError`` when the packet would exceed the MQTT size limit. Nothing is written then.
    public func writeHead(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(TernError) {
        let remaining = bodyLength(version: version)
        guard remaining <= Int(ByteBuffer.maximumVariableByteInteger) else {
            throw TernError(.packetTooLarge, "a PUBLISH of \(remaining) bytes exceeds the MQTT limit")
        }
        buffer.writeInteger(PacketType.publish.rawValue << 4 | flags)
        buffer.writeVariableByteInteger(UInt32(remaining))
        writeBodyHead(to: &buffer, version: version)
    }
}
