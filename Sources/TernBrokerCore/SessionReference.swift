import Synchronization

/// A session as every event loop sees it: who it is, whether its client is connected, and the
/// mailbox through which the other loops hand it messages.
///
/// A session's state (``Session``) belongs to one ``BrokerState`` at a time, the one of the event
/// loop its client is connected to, and only that loop touches it. The subscription index names
/// sessions by this reference, so that a PUBLISH on another loop can reach one without a lock on
/// the session: it posts the deliveries to the mailbox, and the owning loop takes them in the
/// order they were posted (so each publisher's messages keep their order, MQTT-4.6.0-6).
public final class SessionReference: Sendable, Hashable, CustomStringConvertible {
    public let clientID: String
    let mailbox: Mutex<Mailbox>
    /// Whether a client is attached now: a shared subscription prefers members that are.
    let connected = Atomic<Bool>(false)
    /// The session's key in the store, or 0 while it is not stored. A loop that routes a message
    /// to this session from elsewhere stores the delivery under it before its PUBACK goes out.
    let storeKey = Atomic<UInt64>(0)
    /// Whether another node of the cluster holds the session, or none does (it is detached and
    /// left to the store): messages for it go through the store (``ClusterChange/transit``).
    let elsewhere = Atomic<Bool>(false)

    /// The owner of a session another node holds, or no node does.
    public static let elsewhereOwner = -1

    /// - Parameters:
    ///   - clientID: The client identifier.
    ///   - owner: The number of the ``BrokerState`` that holds the session.
    public init(clientID: String, owner: Int = 0) {
        self.clientID = clientID
        self.mailbox = Mutex(Mailbox(owner: owner))
        elsewhere.store(owner == Self.elsewhereOwner, ordering: .relaxed)
    }

    /// Whether another node of the cluster holds the session, or none does.
    public var isElsewhere: Bool { elsewhere.load(ordering: .acquiring) }

    /// Hands the session to `owner` (a state of this broker, or ``elsewhereOwner``). Posts not
    /// taken yet stay for a new owner of this broker; leaving it for another node drops them:
    /// that node reads the session's stored deliveries from the store.
    func move(to owner: Int) {
        mailbox.withLock { mailbox in
            mailbox.owner = owner
            // Whatever is posted from now on wakes the new owner; it takes what is here when the
            // session arrives.
            mailbox.drainScheduled = false
            if owner == Self.elsewhereOwner { mailbox.entries = [] }
            elsewhere.store(owner == Self.elsewhereOwner, ordering: .releasing)
        }
    }

    /// Whether the session's client is connected now.
    public var isConnected: Bool { connected.load(ordering: .relaxed) }

    public var description: String { "session \(clientID)" }

    public static func == (lhs: SessionReference, rhs: SessionReference) -> Bool { lhs === rhs }
    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }

    /// Hands deliveries to the session, behind those posted before them.
    /// - Parameters:
    ///   - storeKey: The session's store key the deliveries were stored under (0: not stored).
    ///   - ticket: The store commit the deliveries were recorded in (0: none); a QoS 2 delivery
    ///     is not sent before it.
    /// - Returns: what became of them: refused when the session has ended (the caller finishes
    ///   their stored copies); otherwise the state that owns the session, if it must be woken to
    ///   take them.
    public func post(_ deliveries: [Delivery], storeKey: UInt64, ticket: UInt64) -> MailboxPost {
        mailbox.withLock { mailbox in
            guard !mailbox.closed else { return .refused }
            guard mailbox.owner != Self.elsewhereOwner else { return .elsewhere }
            mailbox.entries.append(MailboxEntry(deliveries: deliveries, storeKey: storeKey, ticket: ticket))
            if mailbox.drainScheduled { return .accepted(wake: nil) }
            mailbox.drainScheduled = true
            return .accepted(wake: mailbox.owner)
        }
    }
}

/// What ``SessionReference/post(_:storeKey:ticket:)`` did.
public enum MailboxPost: Sendable, Equatable {
    /// Taken; `wake` is the state to wake so that it takes them, or `nil` if a wake-up is due already.
    case accepted(wake: Int?)
    /// The session has ended.
    case refused
    /// Another node holds the session now, or none does: send them through the store.
    case elsewhere
}

/// Deliveries handed to a session by other event loops, in the order they were posted.
struct Mailbox: Sendable {
    /// The ``BrokerState`` that holds the session now; it takes the entries.
    var owner: Int
    var entries: [MailboxEntry] = []
    /// Whether the owner has been asked to take the entries and has not yet done so.
    var drainScheduled = false
    /// The session has ended: nothing more is taken.
    var closed = false
}

/// Deliveries posted together, with the store commit they wait for.
struct MailboxEntry: Sendable {
    var deliveries: [Delivery]
    /// The session's store key they were stored under (0: not stored).
    var storeKey: UInt64
    var ticket: UInt64
}
