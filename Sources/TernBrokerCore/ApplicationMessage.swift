public import NIOCore
public import TernCodec

/// A message as the broker routes and stores it: what a PUBLISH carried, with its expiry made absolute.
public struct ApplicationMessage: Sendable, Hashable {
    public var topic: TopicName
    public var payload: ByteBuffer
    /// The QoS it was published with.
    public var qos: QoS
    public var retain: Bool
    /// The PUBLISH properties to forward: Topic Alias and Subscription Identifiers removed, Message
    /// Expiry Interval rewritten on each delivery.
    public var properties: Properties
    /// When the message expires, from its Message Expiry Interval.
    public var expiresAt: BrokerInstant?
    /// The client that published it, for No Local.
    public var publisherClientID: String?
    /// Its key in the store, or 0 when it is not stored. Copies share it, so it is stored once.
    public var storeID: UInt64 = 0

    public init(
        topic: TopicName,
        payload: ByteBuffer,
        qos: QoS,
        retain: Bool,
        properties: Properties = Properties(),
        expiresAt: BrokerInstant? = nil,
        publisherClientID: String? = nil,
        storeID: UInt64 = 0
    ) {
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.retain = retain
        self.properties = properties
        self.expiresAt = expiresAt
        self.publisherClientID = publisherClientID
        self.storeID = storeID
    }

    /// Whether the message has expired at `now` (MQTT 5.0 §3.3.2.3.3).
    public func isExpired(at now: BrokerInstant) -> Bool {
        guard let expiresAt else { return false }
        return now >= expiresAt
    }

    /// The PUBLISH that delivers this message to a subscriber.
    func publishPacket(
        qos: QoS,
        packetIdentifier: UInt16,
        retain: Bool,
        duplicate: Bool,
        subscriptionIdentifiers: [UInt32],
        now: BrokerInstant,
        version: ProtocolVersion
    ) -> Publish {
        var properties = Properties()
        if version == .v5 {
            properties = self.properties
            if let expiresAt {
                // §3.3.2.3.3: the interval sent on is the time the message has left.
                properties.messageExpiryInterval = now.seconds(until: expiresAt)
            }
            for identifier in subscriptionIdentifiers {
                try? properties.append(.subscriptionIdentifier(identifier))
            }
        }
        return Publish(
            topic: topic,
            payload: payload,
            qos: qos,
            retain: retain,
            duplicate: duplicate,
            packetIdentifier: packetIdentifier,
            properties: properties
        )
    }
}
