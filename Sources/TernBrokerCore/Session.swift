public import DequeModule
public import TernCodec

/// Identifies one network connection for the lifetime of the broker process.
public struct ConnectionID: Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt64
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }
    public var description: String { "#\(rawValue)" }
}

/// One message on its way to one subscriber: the QoS and flags it is delivered with.
public struct Delivery: Sendable, Hashable {
    public var message: ApplicationMessage
    public var qos: QoS
    public var retain: Bool
    public var subscriptionIdentifiers: [UInt32]
}

/// A step of an outbound QoS 1/2 flow that waits for the client.
public enum InflightMessage: Sendable, Hashable {
    /// A PUBLISH sent and not yet acknowledged (PUBACK, or PUBREC for QoS 2).
    case publish(packetIdentifier: UInt16, Delivery)
    /// A PUBREL sent and not yet completed by PUBCOMP.
    case release(packetIdentifier: UInt16)

    public var packetIdentifier: UInt16 {
        switch self {
        case .publish(let id, _), .release(let id): return id
        }
    }
}

/// A subscription as the session remembers it, so that it can be restored and listed.
public struct SessionSubscription: Sendable, Hashable {
    public var filter: TopicFilter
    public var options: SubscriptionOptions
    public var identifier: UInt32?
}

/// The state the broker keeps for one client identifier (MQTT 5.0 §4.1): subscriptions, the
/// outbound in-flight window and queue, inbound QoS 2 identifiers awaiting PUBREL, and the will.
public struct Session: Sendable {
    public let clientID: String
    public internal(set) var protocolVersion: ProtocolVersion
    /// The Session Expiry Interval in force, in seconds; `UInt32.max` never expires.
    public internal(set) var expiryInterval: UInt32
    /// The connection the session is attached to, or `nil` while the client is away.
    public internal(set) var connection: ConnectionID?
    /// When a detached session ends; `nil` while connected or when it never expires.
    public internal(set) var expiresAt: BrokerInstant?
    public internal(set) var subscriptions: [String: SessionSubscription] = [:]
    public internal(set) var inflight: [InflightMessage] = []
    public internal(set) var queue: Deque<Delivery> = []
    public internal(set) var inboundQoS2Pending: Set<UInt16> = []
    /// The will registered by the current (or last) connection.
    public internal(set) var will: Connect.Will?
    var queuedBytes = 0
    var nextPacketIdentifier: UInt16 = 1
    /// The client's Receive Maximum: how many QoS 1/2 PUBLISH may await acknowledgement.
    var sendWindow: Int = 20
    /// The client's Maximum Packet Size, if it set one.
    var clientMaximumPacketSize: Int?

    init(clientID: String, protocolVersion: ProtocolVersion, expiryInterval: UInt32) {
        self.clientID = clientID
        self.protocolVersion = protocolVersion
        self.expiryInterval = expiryInterval
    }

    /// The next packet identifier not in use by an in-flight message (§2.2.1).
    mutating func allocatePacketIdentifier() -> UInt16 {
        while true {
            let candidate = nextPacketIdentifier
            nextPacketIdentifier = nextPacketIdentifier == .max ? 1 : nextPacketIdentifier + 1
            if !inflight.contains(where: { $0.packetIdentifier == candidate }) { return candidate }
        }
    }

    func fitsClient(_ packet: MQTTPacket) -> Bool {
        guard let limit = clientMaximumPacketSize else { return true }
        return packet.encodedSize(version: protocolVersion) <= limit
    }
}
