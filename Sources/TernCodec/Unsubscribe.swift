import NIOCore

/// UNSUBSCRIBE: topic filters to remove (MQTT 5.0 §3.10, MQTT 3.1.1 §3.10).
public struct Unsubscribe: Sendable, Hashable {
    public var packetIdentifier: UInt16
    /// UNSUBSCRIBE properties (MQTT 5 only): User Properties.
    public var properties: Properties
    /// The filters to remove, in order; never empty on the wire.
    public var filters: [TopicFilter]

    public init(packetIdentifier: UInt16, filters: [TopicFilter], properties: Properties = Properties()) {
        self.packetIdentifier = packetIdentifier
        self.filters = filters
        self.properties = properties
    }
}

extension Unsubscribe {
    static func read(from body: inout ByteBuffer, version: ProtocolVersion) throws(TernError) -> Unsubscribe {
        let packetIdentifier = try body.readPacketIdentifier(.unsubscribe)
        let properties =
            version.hasProperties ? try Properties.read(from: &body, context: .unsubscribe) : Properties()
        var filters: [TopicFilter] = []
        while body.readableBytes > 0 {
            filters.append(try TopicFilter(body.readMQTTString("topic filter")))
        }
        guard !filters.isEmpty else {
            throw .protocolError("an UNSUBSCRIBE has no topic filter")  // [MQTT-3.10.3-2]
        }
        return Unsubscribe(packetIdentifier: packetIdentifier, filters: filters, properties: properties)
    }

    func bodyLength(version: ProtocolVersion) -> Int {
        var length = 2
        if version.hasProperties { length += properties.encodedLength }
        for filter in filters { length += filter.string.mqttEncodedLength }
        return length
    }

    func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(TernError) {
        buffer.writeInteger(packetIdentifier)
        if version.hasProperties { properties.write(to: &buffer) }
        for filter in filters { try buffer.writeMQTTString(filter.string, "topic filter") }
    }
}
