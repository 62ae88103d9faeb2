public import TernCodec

/// What the broker's logic asks the I/O layer to do.
public enum BrokerAction: Sendable, Hashable {
    /// Write a packet to a connection. Writes to one connection keep their order.
    case send(ConnectionID, MQTTPacket)
    /// Write a publisher's PUBACK that waits for the store commit of the changes made with it
    /// (``WriteAhead``), or for `receipt` to complete, whichever comes first.
    case acknowledge(ConnectionID, MQTTPacket, receipt: PublishReceipt)
    /// Close a connection once the packets sent to it before this action are written.
    case close(ConnectionID)
    /// The CONNECT of this connection waits for its session, which another state holds or is
    /// about to: ask state `fetchFrom` to release it (``BrokerState/release(_:to:now:)``), unless
    /// `nil` (it is on its way already), and run the CONNECT again once it has arrived
    /// (``BrokerState/adopt(_:clientID:now:)``).
    case awaitSession(ConnectionID, clientID: String, fetchFrom: Int?)
}

/// Counters behind `$SYS/broker/...` and the metrics, with Mosquitto's meanings.
public struct BrokerStatistics: Sendable, Hashable {
    public var messagesReceived: UInt64 = 0
    public var messagesSent: UInt64 = 0
    public var publishMessagesReceived: UInt64 = 0
    public var publishMessagesSent: UInt64 = 0
    public var bytesReceived: UInt64 = 0
    public var bytesSent: UInt64 = 0
    /// Messages dropped because of a limit: a queue was full (`max_queued_messages`,
    /// `max_queued_bytes`), a payload over `message_size_limit`, an ACL, or backpressure.
    public var publishMessagesDropped: UInt64 = 0
    /// Of those, QoS 0 messages dropped because the client's connection was not keeping up.
    public var publishMessagesDroppedBackpressure: UInt64 = 0
    /// How many times a connection stopped keeping up with what it was sent.
    public var backpressureEvents: UInt64 = 0
    /// Messages not sent because they exceeded the client's Maximum Packet Size.
    public var publishMessagesDroppedTooLarge: UInt64 = 0
    /// Messages discarded because their Message Expiry Interval passed.
    public var publishMessagesExpired: UInt64 = 0
    public var connectionsTotal: UInt64 = 0
    /// PUBLISH packets received from clients and sent to them, by QoS, and their payload bytes.
    public var publishReceivedByQoS = CountsByQoS()
    public var publishSentByQoS = CountsByQoS()
    public var payloadBytesReceivedByQoS = CountsByQoS()
    public var payloadBytesSentByQoS = CountsByQoS()

    public init() {}
}

/// One counter for each QoS.
public struct CountsByQoS: Sendable, Hashable {
    public var atMostOnce: UInt64 = 0
    public var atLeastOnce: UInt64 = 0
    public var exactlyOnce: UInt64 = 0

    public init() {}

    public subscript(qos: QoS) -> UInt64 {
        get {
            switch qos {
            case .atMostOnce: atMostOnce
            case .atLeastOnce: atLeastOnce
            case .exactlyOnce: exactlyOnce
            }
        }
        set {
            switch qos {
            case .atMostOnce: atMostOnce = newValue
            case .atLeastOnce: atLeastOnce = newValue
            case .exactlyOnce: exactlyOnce = newValue
            }
        }
    }
}

extension BrokerStatistics {
    /// Counts one PUBLISH sent to a client.
    mutating func countSent(_ publish: Publish) {
        publishMessagesSent += 1
        publishSentByQoS[publish.qos] += 1
        payloadBytesSentByQoS[publish.qos] += UInt64(publish.payload.readableBytes)
    }
}

extension BrokerStatistics {
    /// Adds another state's counters, for the figures of the whole broker.
    public mutating func add(_ other: BrokerStatistics) {
        messagesReceived += other.messagesReceived
        messagesSent += other.messagesSent
        publishMessagesReceived += other.publishMessagesReceived
        publishMessagesSent += other.publishMessagesSent
        bytesReceived += other.bytesReceived
        bytesSent += other.bytesSent
        publishMessagesDropped += other.publishMessagesDropped
        publishMessagesDroppedBackpressure += other.publishMessagesDroppedBackpressure
        backpressureEvents += other.backpressureEvents
        publishMessagesDroppedTooLarge += other.publishMessagesDroppedTooLarge
        publishMessagesExpired += other.publishMessagesExpired
        connectionsTotal += other.connectionsTotal
        for qos in [QoS.atMostOnce, .atLeastOnce, .exactlyOnce] {
            publishReceivedByQoS[qos] += other.publishReceivedByQoS[qos]
            publishSentByQoS[qos] += other.publishSentByQoS[qos]
            payloadBytesReceivedByQoS[qos] += other.payloadBytesReceivedByQoS[qos]
            payloadBytesSentByQoS[qos] += other.payloadBytesSentByQoS[qos]
        }
    }
}
