public import NIOCore
public import TernCodec

/// A message as the broker routes and stores it: what a PUBLISH carried, with its expiry made absolute.
///
/// A value with copy-on-write storage: every delivery of a message (one per subscriber, queued
/// or in flight) holds the same storage, so that a copy costs one reference, not a copy of the
/// topic, payload and properties with a reference to each.
public struct ApplicationMessage: Sendable, Hashable {
    // @unchecked Sendable: the fields change only through `mutate`, which first makes sure the
    // storage is referenced by the one value changing it (copy-on-write, as Array does); a storage
    // that two values or two threads can see is never changed.
    //
    // The fields are laid out to fit 120 bytes with the object's header, which malloc serves from
    // 128-byte chunks (it was 136, served from 144): a restored queue holds one per message. A
    // `ByteBuffer` is 23 bytes, so a one-byte field after each uses its last byte, and the
    // expiry is stored without an Optional's extra byte.
    private final class Storage: @unchecked Sendable {
        var topic: TopicName
        var qos: QoS
        var payload: ByteBuffer
        var retain: Bool
        var properties: Properties
        var storeID: UInt64
        /// ``ApplicationMessage/expiresAt`` in milliseconds, ``noExpiry`` for none.
        var expiresAtMilliseconds: Int64
        var publisherClientID: String?

        static let noExpiry = Int64.min

        var expiresAt: BrokerInstant? {
            get {
                expiresAtMilliseconds == Self.noExpiry
                    ? nil : BrokerInstant(millisecondsSinceEpoch: expiresAtMilliseconds)
            }
            set { expiresAtMilliseconds = newValue?.millisecondsSinceEpoch ?? Self.noExpiry }
        }

        init(
            topic: TopicName,
            payload: ByteBuffer,
            qos: QoS,
            retain: Bool,
            properties: Properties,
            expiresAt: BrokerInstant?,
            publisherClientID: String?,
            storeID: UInt64
        ) {
            self.topic = topic
            self.qos = qos
            self.payload = payload
            self.retain = retain
            self.properties = properties
            self.storeID = storeID
            self.expiresAtMilliseconds = expiresAt?.millisecondsSinceEpoch ?? Self.noExpiry
            self.publisherClientID = publisherClientID
        }

        func copy() -> Storage {
            Storage(
                topic: topic,
                payload: payload,
                qos: qos,
                retain: retain,
                properties: properties,
                expiresAt: expiresAt,
                publisherClientID: publisherClientID,
                storeID: storeID
            )
        }
    }

    private var storage: Storage

    /// The shared storage, for tests of its size.
    var storageObject: AnyObject { storage }

    /// Changes the storage in place if this value is its only owner, or a copy of it otherwise.
    private mutating func mutate(_ change: (Storage) -> Void) {
        if !isKnownUniquelyReferenced(&storage) { storage = storage.copy() }
        change(storage)
    }

    public var topic: TopicName {
        get { storage.topic }
        set { mutate { $0.topic = newValue } }
    }
    public var payload: ByteBuffer {
        get { storage.payload }
        set { mutate { $0.payload = newValue } }
    }
    /// The QoS it was published with.
    public var qos: QoS {
        get { storage.qos }
        set { mutate { $0.qos = newValue } }
    }
    public var retain: Bool {
        get { storage.retain }
        set { mutate { $0.retain = newValue } }
    }
    /// The PUBLISH properties to forward: Topic Alias and Subscription Identifiers removed, Message
    /// Expiry Interval rewritten on each delivery.
    public var properties: Properties {
        get { storage.properties }
        set { mutate { $0.properties = newValue } }
    }
    /// When the message expires, from its Message Expiry Interval.
    public var expiresAt: BrokerInstant? {
        get { storage.expiresAt }
        set { mutate { $0.expiresAt = newValue } }
    }
    /// The client that published it, for No Local.
    public var publisherClientID: String? {
        get { storage.publisherClientID }
        set { mutate { $0.publisherClientID = newValue } }
    }
    /// Its key in the store, or 0 when it is not stored. Copies share it, so it is stored once.
    public var storeID: UInt64 {
        get { storage.storeID }
        set { mutate { $0.storeID = newValue } }
    }

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
        storage = Storage(
            topic: topic,
            payload: payload,
            qos: qos,
            retain: retain,
            properties: properties,
            expiresAt: expiresAt,
            publisherClientID: publisherClientID,
            storeID: storeID
        )
    }

    public static func == (lhs: ApplicationMessage, rhs: ApplicationMessage) -> Bool {
        if lhs.storage === rhs.storage { return true }
        return lhs.topic == rhs.topic && lhs.payload == rhs.payload && lhs.qos == rhs.qos
            && lhs.retain == rhs.retain && lhs.properties == rhs.properties && lhs.expiresAt == rhs.expiresAt
            && lhs.publisherClientID == rhs.publisherClientID && lhs.storeID == rhs.storeID
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(topic)
        hasher.combine(payload)
        hasher.combine(qos)
        hasher.combine(retain)
        hasher.combine(properties)
        hasher.combine(expiresAt)
        hasher.combine(publisherClientID)
        hasher.combine(storeID)
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
