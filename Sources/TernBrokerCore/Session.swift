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
    public var subscriptionIdentifiers: [UInt32]
    /// The publisher's PUBACK that waits for this copy, while it is on its way to a connected
    /// subscriber (``PublishReceipt``); `nil` once it waits in a queue, and for most copies.
    public var receipt: PublishReceipt?
    /// The sequence (low 61 bits), retain (bit 61) and QoS (bits 62–63), in one word: a queue may
    /// hold millions of deliveries, and this keeps each at 32 bytes with its receipt.
    private var packed: UInt64

    private static let sequenceMask: UInt64 = (1 << 61) - 1
    private static let retainBit: UInt64 = 1 << 61
    private static let qosShift: UInt64 = 62

    public var qos: QoS {
        get { QoS(rawValue: UInt8(truncatingIfNeeded: packed >> Self.qosShift)) ?? .atMostOnce }
        set { packed = packed & ~(3 << Self.qosShift) | UInt64(newValue.rawValue) << Self.qosShift }
    }

    public var retain: Bool {
        get { packed & Self.retainBit != 0 }
        set { packed = newValue ? packed | Self.retainBit : packed & ~Self.retainBit }
    }

    /// Its key in the store, or 0 when it is not stored.
    public var sequence: UInt64 {
        get { packed & Self.sequenceMask }
        set {
            precondition(newValue <= Self.sequenceMask, "delivery sequence \(newValue) out of range")
            packed = packed & ~Self.sequenceMask | newValue
        }
    }

    public init(
        message: ApplicationMessage,
        qos: QoS,
        retain: Bool,
        subscriptionIdentifiers: [UInt32],
        sequence: UInt64 = 0,
        receipt: PublishReceipt? = nil
    ) {
        self.message = message
        self.subscriptionIdentifiers = subscriptionIdentifiers
        self.receipt = receipt
        self.packed = 0
        self.qos = qos
        self.retain = retain
        self.sequence = sequence
    }

    /// The PUBLISH that carries this delivery.
    func publish(packetIdentifier: UInt16, duplicate: Bool, now: BrokerInstant, version: ProtocolVersion) -> Publish {
        message.publishPacket(
            qos: qos,
            packetIdentifier: packetIdentifier,
            retain: retain,
            duplicate: duplicate,
            subscriptionIdentifiers: subscriptionIdentifiers,
            now: now,
            version: version
        )
    }
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

    public init(filter: TopicFilter, options: SubscriptionOptions, identifier: UInt32?) {
        self.filter = filter
        self.options = options
        self.identifier = identifier
    }
}

/// What an acknowledgement did to a session's in-flight list, so that the store can follow.
struct AcknowledgementOutcome {
    /// The packet to send back (PUBREL), if any.
    var reply: MQTTPacket?
    /// The delivery the acknowledgement finished or moved on to its PUBREL step.
    var finished: Delivery?
    /// Whether a PUBREL step began (PUBREC) for the packet identifier.
    var released = false
    /// Whether a PUBREL step ended (PUBCOMP) for the packet identifier.
    var completed = false
}

/// The state the broker keeps for one client identifier (MQTT 5.0 §4.1): subscriptions, the
/// outbound in-flight window and queue, inbound QoS 2 identifiers awaiting PUBREL, and the will.
public struct Session: Sendable {
    public let clientID: String
    /// How the broker's other states name this session (its mailbox, its subscriptions).
    public let reference: SessionReference
    public internal(set) var protocolVersion: ProtocolVersion
    /// The Session Expiry Interval in force, in seconds; `UInt32.max` never expires.
    public internal(set) var expiryInterval: UInt32
    /// The connection the session is attached to, or `nil` while the client is away.
    public internal(set) var connection: ConnectionID?
    /// When a detached session ends; `nil` while connected or when it never expires.
    public internal(set) var expiresAt: BrokerInstant?
    public internal(set) var subscriptions: [String: SessionSubscription] = [:]
    /// In send order; acknowledgements usually come in that order too, so the front goes first.
    public internal(set) var inflight: Deque<InflightMessage> = []
    public internal(set) var queue: Deque<Delivery> = []
    /// Deliveries restored from the store, in front of ``queue``, kept as stored bytes until each
    /// is taken to be sent (``popQueued()``).
    public internal(set) var restoredQueue = RestoredQueue()
    public internal(set) var inboundQoS2Pending: Set<UInt16> = []
    /// The will registered by the current (or last) connection.
    public internal(set) var will: Connect.Will? {
        get { willStorage?.will }
        set { willStorage = newValue.map(WillStorage.init) }
    }
    /// Out of line: most sessions have no will, and every session is stored in a dictionary
    /// whose entries are as wide as the widest.
    private var willStorage: WillStorage?
    /// Its key in the store, or 0 while it is not stored (Session Expiry Interval 0).
    public internal(set) var storeKey: UInt64 = 0 {
        // Other states store what they route to this session under the key they read there.
        didSet { reference.storeKey.store(storeKey, ordering: .relaxed) }
    }
    /// Payload bytes of the queued deliveries, restored ones included (`max_queued_bytes`).
    var queuedBytes = 0
    var nextPacketIdentifier: UInt16 = 1
    /// The client's Receive Maximum: how many QoS 1/2 PUBLISH may await acknowledgement.
    var sendWindow: Int = 20
    /// Whether the connection's socket keeps up. While it does not, QoS 1/2 messages stay in the
    /// queue and QoS 0 messages are dropped (backpressure); it is reset by every CONNECT.
    public internal(set) var writable = true
    /// The client's Maximum Packet Size, if it set one.
    var clientMaximumPacketSize: Int?
    /// Who the ACLs see: set by each CONNECT, unknown for a session restored from the store until
    /// its client comes back (its messages are queued, then checked when it does).
    var identity: ClientIdentity?
    /// The stored deliveries a cluster node read with the session when it took it from the
    /// store: the same deliveries arriving through the store afterwards are taken once.
    var loadedSequences: Set<UInt64>?
    /// The client announced itself as a bridge (`try_private`, the protocol level's high bit):
    /// its subscriptions do not send it back what it published, as No Local would.
    var isBridge = false

    /// What stands in a session's place while it is moved out to be changed
    /// (``BrokerState/takeSession(at:)``): allocates nothing.
    static let placeholder = Session(
        clientID: "",
        protocolVersion: .v5,
        expiryInterval: 0,
        reference: SessionReference(clientID: "")
    )

    init(clientID: String, protocolVersion: ProtocolVersion, expiryInterval: UInt32, reference: SessionReference) {
        self.clientID = clientID
        self.reference = reference
        self.protocolVersion = protocolVersion
        self.expiryInterval = expiryInterval
    }

    /// How many deliveries wait to be sent, restored ones included (`max_queued_messages`).
    public var queuedCount: Int { restoredQueue.count + queue.count }

    /// Every delivery waiting to be sent, in order, restored ones decoded (for inspection: the
    /// session keeps the restored ones as bytes).
    public var queuedDeliveries: [Delivery] { restoredQueue.deliveries() + queue }

    /// Whether nothing waits to be sent.
    var queueIsEmpty: Bool { queue.isEmpty && restoredQueue.isEmpty }

    /// Takes the next delivery to send: the restored ones first (§4.6), decoded one at a time.
    mutating func popQueued() -> Delivery? {
        restoredQueue.popFirst() ?? queue.popFirst()
    }

    /// Decodes the restored deliveries into the front of ``queue``, for judging them one by one.
    /// Their payload bytes are counted already.
    mutating func unpackRestoredQueue() {
        guard !restoredQueue.isEmpty else { return }
        let restored = restoredQueue.deliveries()
        restoredQueue = RestoredQueue()
        queue.prepend(contentsOf: restored)
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

    /// Applies PUBACK, PUBREC or PUBCOMP to the outbound in-flight list (MQTT 5.0 §4.3).
    mutating func acknowledge(_ type: PacketType, _ packet: PublishAcknowledgement) -> AcknowledgementOutcome {
        let id = packet.packetIdentifier
        let index = inflight.firstIndex { $0.packetIdentifier == id }
        var outcome = AcknowledgementOutcome()
        switch type {
        case .puback:
            if let index, case .publish(_, let delivery) = inflight[index], delivery.qos == .atLeastOnce {
                inflight.remove(at: index)
                outcome.finished = delivery
            }
        case .pubrec:
            if let index, case .publish(_, let delivery) = inflight[index], delivery.qos == .exactlyOnce {
                outcome.finished = delivery
                if packet.reasonCode.isFailure {
                    inflight.remove(at: index)  // §4.3.3: the flow ends at a failed PUBREC
                    return outcome
                }
                inflight[index] = .release(packetIdentifier: id)
                outcome.released = true
                outcome.reply = .pubrel(PublishAcknowledgement(packetIdentifier: id))
            } else if let index, case .release = inflight[index] {
                outcome.reply = .pubrel(PublishAcknowledgement(packetIdentifier: id))
            } else {
                let code: ReasonCode = protocolVersion == .v5 ? .packetIdentifierNotFound : .success
                outcome.reply = .pubrel(PublishAcknowledgement(packetIdentifier: id, reasonCode: code))
            }
        case .pubcomp:
            if let index, case .release = inflight[index] {
                inflight.remove(at: index)
                outcome.completed = true
            }
        default:
            break
        }
        return outcome
    }

    /// The packets that resume this session's in-flight flows (§4.4): each unacknowledged PUBLISH
    /// again with DUP=1 and its packet identifier, each uncompleted PUBREL again. Expired messages
    /// are dropped from the list.
    /// - Returns: the packets, and the expired deliveries that were dropped.
    mutating func redeliver(now: BrokerInstant) -> (packets: [MQTTPacket], expired: [Delivery]) {
        var packets: [MQTTPacket] = []
        var expired: [Delivery] = []
        inflight.removeAll { entry in
            switch entry {
            case .publish(let id, let delivery):
                if delivery.message.isExpired(at: now) {
                    expired.append(delivery)
                    return true
                }
                packets.append(
                    .publish(
                        delivery.publish(packetIdentifier: id, duplicate: true, now: now, version: protocolVersion)
                    )
                )
                return false
            case .release(let id):
                packets.append(.pubrel(PublishAcknowledgement(packetIdentifier: id)))
                return false
            }
        }
        return (packets, expired)
    }
}

extension Session {
    /// The stored deliveries this session holds, queued and in flight.
    var storedDeliveryKeys: [StoredDeliveryKey] {
        var keys: [StoredDeliveryKey] = []
        restoredQueue.forEachKey { keys.append($0) }
        for delivery in queue where delivery.sequence != 0 {
            keys.append(StoredDeliveryKey(sequence: delivery.sequence, messageID: delivery.message.storeID))
        }
        for case .publish(_, let delivery) in inflight where delivery.sequence != 0 {
            keys.append(StoredDeliveryKey(sequence: delivery.sequence, messageID: delivery.message.storeID))
        }
        return keys
    }
}

/// A session's will, out of line (``Session/will``).
private final class WillStorage: Sendable {
    let will: Connect.Will
    init(_ will: Connect.Will) { self.will = will }
}
