public import NIOCore
public import TernCodec

/// A message received from the broker.
public struct MQTTMessage: Sendable {
    public var topic: String
    public var payload: ByteBuffer
    public var qos: QoS
    public var retain: Bool
    /// The DUP flag: the broker may have sent this message before (MQTT 5.0 §3.3.1.1). After a
    /// reconnect, applications that must not act twice should check it.
    public var duplicate: Bool
    public var properties: Properties
    /// The Subscription Identifiers of the subscriptions that matched (MQTT 5 only).
    public var subscriptionIdentifiers: [UInt32] { properties.subscriptionIdentifiers }
    /// The packet identifier it arrived with (0 for QoS 0).
    public let packetIdentifier: UInt16
    let acknowledger: Acknowledger?

    /// The payload as UTF-8 text.
    public var string: String { String(buffer: payload) }

    /// Acknowledges the message to the broker. Only needed with manual acknowledgement; with
    /// automatic acknowledgement it does nothing.
    public func acknowledge() async {
        await acknowledger?.acknowledge(packetIdentifier, qos)
    }

    struct Acknowledger: Sendable {
        let acknowledge: @Sendable (UInt16, QoS) async -> Void
    }
}

/// The messages of one subscription, as an `AsyncSequence`. It ends when the client disconnects
/// for good or the subscription is removed.
public struct MQTTSubscription: AsyncSequence, Sendable {
    public typealias Element = MQTTMessage
    /// What the broker granted for each filter (the granted QoS, or a failure code).
    public let reasonCodes: [ReasonCode]
    let stream: AsyncStream<MQTTMessage>

    public func makeAsyncIterator() -> AsyncStream<MQTTMessage>.Iterator { stream.makeAsyncIterator() }
}

/// What CONNACK told the client.
public struct ConnectResult: Sendable, Hashable {
    /// Whether the broker resumed an existing session.
    public var sessionPresent: Bool
    /// The identifier the broker assigned, when the client sent none.
    public var assignedClientIdentifier: String?
    /// The keep alive the broker imposed, if it changed the client's.
    public var serverKeepAlive: UInt16?
    /// How many QoS 1/2 messages the broker accepts unacknowledged.
    public var receiveMaximum: UInt16
    /// The largest packet the broker accepts.
    public var maximumPacketSize: UInt32?
    public var maximumQoS: QoS
    public var retainAvailable: Bool
    public var topicAliasMaximum: UInt16
    /// All CONNACK properties.
    public var properties: Properties
}
