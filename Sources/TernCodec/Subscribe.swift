import NIOCore

/// SUBSCRIBE: one or more topic filters with their options (MQTT 5.0 §3.8, MQTT 3.1.1 §3.8).
public struct Subscribe: Sendable, Hashable {
    public var packetIdentifier: UInt16
    /// SUBSCRIBE properties (MQTT 5 only): a Subscription Identifier and User Properties.
    public var properties: Properties
    /// The requested subscriptions, in order; never empty on the wire.
    public var subscriptions: [Subscription]

    public init(packetIdentifier: UInt16, subscriptions: [Subscription], properties: Properties = Properties()) {
        self.packetIdentifier = packetIdentifier
        self.subscriptions = subscriptions
        self.properties = properties
    }

    /// One topic filter and its options.
    public struct Subscription: Sendable, Hashable {
        public var filter: TopicFilter
        public var options: SubscriptionOptions

        public init(filter: TopicFilter, options: SubscriptionOptions = SubscriptionOptions()) {
            self.filter = filter
            self.options = options
        }
    }
}

extension Subscribe {
    static func read(from body: inout ByteBuffer, version: ProtocolVersion) throws(TernError) -> Subscribe {
        let packetIdentifier = try body.readPacketIdentifier(.subscribe)
        let properties = version.hasProperties ? try Properties.read(from: &body, context: .subscribe) : Properties()
        var subscriptions: [Subscription] = []
        while body.readableBytes > 0 {
            let filter = try TopicFilter(body.readMQTTString("topic filter"))
            let options = try SubscriptionOptions(byte: body.readMQTTByte("subscription options"), version: version)
            if options.noLocal, filter.isShared {
                throw .protocolError("No Local is set on shared subscription '\(filter)'")  // [MQTT-3.8.3-4]
            }
            subscriptions.append(Subscription(filter: filter, options: options))
        }
        guard !subscriptions.isEmpty else {
            throw .protocolError("a SUBSCRIBE has no topic filter")  // [MQTT-3.8.3-2]
        }
        return Subscribe(packetIdentifier: packetIdentifier, subscriptions: subscriptions, properties: properties)
    }

    func bodyLength(version: ProtocolVersion) -> Int {
        var length = 2
        if version.hasProperties { length += properties.encodedLength }
        for subscription in subscriptions { length += subscription.filter.string.mqttEncodedLength + 1 }
        return length
    }

    func writeBody(to buffer: inout ByteBuffer, version: ProtocolVersion) throws(TernError) {
        buffer.writeInteger(packetIdentifier)
        if version.hasProperties { properties.write(to: &buffer) }
        for subscription in subscriptions {
            try buffer.writeMQTTString(subscription.filter.string, "topic filter")
            buffer.writeInteger(subscription.options.byte(version: version))
        }
    }
}
