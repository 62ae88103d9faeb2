public import TernCodec

/// One change to what a store must keep, in the order ``BrokerState`` made it.
///
/// Only sessions with a non-zero Session Expiry Interval produce changes (MQTT 5.0 §3.1.2.11.2):
/// a session that ends with its connection never touches the store. Rows are keyed by small
/// integers the state hands out (``Session/storeKey``, ``ApplicationMessage/storeID``,
/// ``Delivery/sequence``), so that a message is stored once however many sessions queue it.
public enum StoreChange: Sendable, Hashable {
    /// Creates or replaces a session's own row: expiry, deadline, attachment and will.
    case putSession(StoredSessionHeader)
    /// Ends a session: its subscriptions, deliveries and QoS 2 state go with it. `deliveries`
    /// are the stored deliveries the broker holds for it, so that a store can find their rows
    /// by key rather than by searching for the session's.
    case deleteSession(key: UInt64, deliveries: [StoredDeliveryKey])
    case putSubscription(session: UInt64, SessionSubscription)
    case deleteSubscription(session: UInt64, filter: String)
    /// A message that at least one stored delivery or the retained set refers to.
    case putMessage(id: UInt64, ApplicationMessage)
    /// A delivery queued for a session, or already sent when `packetIdentifier` is set.
    case putDelivery(session: UInt64, StoredDelivery)
    /// A queued delivery was sent with `packetIdentifier` and now awaits its acknowledgement.
    case deliverySent(sequence: UInt64, packetIdentifier: UInt16)
    /// A delivery is finished (acknowledged, expired or dropped); its message loses a reference.
    case deleteDelivery(sequence: UInt64, messageID: UInt64)
    /// A PUBREL was sent for `packetIdentifier` and awaits PUBCOMP.
    case putRelease(session: UInt64, packetIdentifier: UInt16)
    case deleteRelease(session: UInt64, packetIdentifier: UInt16)
    /// An inbound QoS 2 packet identifier awaiting PUBREL, so a re-sent PUBLISH is not delivered twice.
    case putInboundQoS2(session: UInt64, packetIdentifier: UInt16)
    case deleteInboundQoS2(session: UInt64, packetIdentifier: UInt16)
    /// The retained message of `topic` is now message `messageID`.
    case putRetained(topic: String, messageID: UInt64)
    case deleteRetained(topic: String)
    /// What the other nodes of a cluster must learn (``BrokerShared/clustered``). A store that
    /// serves one broker ignores it.
    case cluster(ClusterChange)
}

/// A change the nodes of a cluster share through their store, made in the same transaction as
/// the broker's other changes: a PUBACK that waits for the commit waits for these too.
public enum ClusterChange: Sendable, Hashable {
    /// A message for a session another node holds, or none: it reaches the node its client is
    /// connected to when the transaction commits, if any. `delivery.sequence` is the delivery
    /// stored for the session (0 when the session is not stored).
    case transit(clientID: String, sessionKey: UInt64, delivery: StoredDelivery, message: ApplicationMessage)
    /// A subscription of any session (stored or not), so that every node routes to it.
    case subscribe(clientID: String, sessionKey: UInt64, SessionSubscription)
    case unsubscribe(clientID: String, filter: String)
    /// The session ended: its subscriptions and its place in the cluster go.
    case sessionEnded(clientID: String)
    /// A client connected here: its will, so that another node publishes it if this one dies.
    case attached(clientID: String, will: ApplicationMessage?, willDelay: UInt32, expiryInterval: UInt32)
    /// A client left; its session, if stored, stays in the store, held by no node.
    case detached(clientID: String)
}

/// A stored session's own row.
public struct StoredSessionHeader: Sendable, Hashable {
    public var key: UInt64
    public var clientID: String
    public var protocolVersion: ProtocolVersion
    public var expiryInterval: UInt32
    /// When the detached session ends; `nil` while attached or when it never expires.
    public var expiresAt: BrokerInstant?
    /// Whether a connection was attached when this row was written. A session still attached after
    /// a crash is treated at start-up as if its connection had just closed: its will is due.
    public var attached: Bool
    /// The will of the attached connection (its expiry not yet made absolute), or the pending
    /// will of a detached session.
    public var will: ApplicationMessage?
    /// The Will Delay Interval of an attached connection's will.
    public var willDelay: UInt32
    /// When a pending will is published; `nil` while the connection is attached.
    public var willDeadline: BrokerInstant?

    public init(
        key: UInt64,
        clientID: String,
        protocolVersion: ProtocolVersion,
        expiryInterval: UInt32,
        expiresAt: BrokerInstant?,
        attached: Bool,
        will: ApplicationMessage? = nil,
        willDelay: UInt32 = 0,
        willDeadline: BrokerInstant? = nil
    ) {
        self.key = key
        self.clientID = clientID
        self.protocolVersion = protocolVersion
        self.expiryInterval = expiryInterval
        self.expiresAt = expiresAt
        self.attached = attached
        self.will = will
        self.willDelay = willDelay
        self.willDeadline = willDeadline
    }
}

/// A delivery as stored: which message, with which QoS and flags, and its packet identifier once sent.
public struct StoredDelivery: Sendable, Hashable {
    /// Orders a session's deliveries; unique across the store.
    public var sequence: UInt64
    public var messageID: UInt64
    public var qos: QoS
    public var retain: Bool
    public var subscriptionIdentifiers: [UInt32]
    /// Set once the PUBLISH was sent and awaits PUBACK or PUBREC.
    public var packetIdentifier: UInt16?

    public init(
        sequence: UInt64,
        messageID: UInt64,
        qos: QoS,
        retain: Bool,
        subscriptionIdentifiers: [UInt32],
        packetIdentifier: UInt16?
    ) {
        self.sequence = sequence
        self.messageID = messageID
        self.qos = qos
        self.retain = retain
        self.subscriptionIdentifiers = subscriptionIdentifiers
        self.packetIdentifier = packetIdentifier
    }
}

/// A session as read back from a store.
public struct StoredSession: Sendable, Hashable {
    public var header: StoredSessionHeader
    public var subscriptions: [SessionSubscription]
    /// In sequence order.
    public var deliveries: [StoredDelivery]
    /// Packet identifiers whose PUBREL was sent and awaits PUBCOMP.
    public var releases: [UInt16]
    public var inboundQoS2: [UInt16]

    public init(
        header: StoredSessionHeader,
        subscriptions: [SessionSubscription] = [],
        deliveries: [StoredDelivery] = [],
        releases: [UInt16] = [],
        inboundQoS2: [UInt16] = []
    ) {
        self.header = header
        self.subscriptions = subscriptions
        self.deliveries = deliveries
        self.releases = releases
        self.inboundQoS2 = inboundQoS2
    }
}

/// Everything a store holds, as read at start-up; or, when ``queuesFollow``, everything but the
/// sessions' deliveries and the messages only they refer to, which ``StoredQueues`` brings later.
public struct StoreSnapshot: Sendable {
    public var sessions: [StoredSession]
    public var messages: [UInt64: ApplicationMessage]
    /// Topic → message identifier.
    public var retained: [String: UInt64]
    /// Whether the deliveries come separately (``TernStore/loadQueues()``), after the listeners
    /// opened: the broker then holds the CONNECTs of stored sessions until they are in.
    public var queuesFollow = false
    /// The highest delivery sequence and message identifier stored, so that what the broker
    /// stores before the queues are in never takes one of theirs.
    public var lastDeliverySequence: UInt64 = 0
    public var lastMessageID: UInt64 = 0
    /// The highest session key stored, when the sessions themselves are left out (a cluster's
    /// node loads a session only when its client connects).
    public var lastSessionKey: UInt64 = 0

    public init(
        sessions: [StoredSession] = [],
        messages: [UInt64: ApplicationMessage] = [:],
        retained: [String: UInt64] = [:]
    ) {
        self.sessions = sessions
        self.messages = messages
        self.retained = retained
    }

    public var isEmpty: Bool { sessions.isEmpty && retained.isEmpty }
}

/// What a store reports about itself, for `$SYS/broker/store/...`.
public struct StoreStatistics: Sendable, Hashable {
    /// The size of the store on disk (database and write-ahead log), in bytes.
    public var fileSize: Int64 = 0
    public var sessions: Int = 0
    public var messages: Int = 0
    public var commits: UInt64 = 0
    /// The duration of the last commit, fsync included, in microseconds.
    public var lastCommitMicroseconds: UInt64 = 0
    /// The mean commit duration since start-up, in microseconds.
    public var averageCommitMicroseconds: UInt64 = 0
    /// The longest commit since start-up, in microseconds.
    public var maximumCommitMicroseconds: UInt64 = 0
    /// Changes made durable since start-up, over all commits: with ``commits``, the mean batch.
    public var committedChanges: UInt64 = 0
    /// The changes of the last commit, and of the largest one since start-up. Group commit shows
    /// here: the more clients write at once, the more changes share each commit.
    public var lastBatchChanges: Int = 0
    public var maximumBatchChanges: Int = 0

    /// The mean number of changes per commit since start-up.
    public var averageBatchChanges: UInt64 { commits == 0 ? 0 : committedChanges / commits }

    public init() {}
}

/// The sessions' queued and in-flight deliveries, read after the listeners opened.
public struct StoredQueues: Sendable {
    /// Session key → its deliveries, in sequence order.
    public var deliveries: [UInt64: [StoredDelivery]]
    /// The messages they refer to, decoded, by key.
    public var messages: [UInt64: ApplicationMessage]
    /// Messages not in ``messages``, as their stored bytes, by key: those that one delivery
    /// alone refers to. Queued, they stay bytes until each is sent (``RestoredQueue``).
    public var bodies: [UInt64: StoredMessageBytes]

    public init(
        deliveries: [UInt64: [StoredDelivery]] = [:],
        messages: [UInt64: ApplicationMessage] = [:],
        bodies: [UInt64: StoredMessageBytes] = [:]
    ) {
        self.deliveries = deliveries
        self.messages = messages
        self.bodies = bodies
    }
}

/// A stored delivery's key and the message it refers to.
public struct StoredDeliveryKey: Sendable, Hashable {
    public var sequence: UInt64
    public var messageID: UInt64

    public init(sequence: UInt64, messageID: UInt64) {
        self.sequence = sequence
        self.messageID = messageID
    }
}
