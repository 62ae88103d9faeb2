import Synchronization
public import TernCodec

/// What the broker's states share across event loops: the subscription index, the retained
/// messages, the directory of sessions, and the counters that number stored rows.
///
/// Each event loop has a ``BrokerState`` of its own for the sessions of the clients connected to
/// it; they meet only here and in the mailboxes of ``SessionReference``. A state made alone (as
/// the tests of the rules make it) has a `BrokerShared` of its own.
public final class BrokerShared: Sendable {
    public let subscriptions = SubscriptionIndex()
    public let retained = RetainedMessages()
    public let directory = SessionDirectory()
    /// Whether this broker is a node of a cluster: its sessions and subscriptions are known to
    /// the other nodes through the store (``ClusterChange``), a session not held here may be held
    /// by another node, and a detached session is left to the store rather than kept in memory.
    public let clustered: Bool
    /// Keys are `keyOffset` plus a multiple of `keyStride`, so that the nodes of a cluster, which
    /// share one store, never hand out the same one.
    let keyStride: UInt64
    let keyOffset: UInt64
    /// The highest store key of a session, message and delivery handed out so far.
    let lastStoreKey: Atomic<UInt64>
    let lastMessageID: Atomic<UInt64>
    let lastDeliverySequence: Atomic<UInt64>
    /// Numbers the client identifiers the broker assigns.
    let assignedIdentifierCounter = Atomic<UInt64>(0)
    /// Client identifiers of restored sessions whose deliveries the store has not brought in yet
    /// (``BrokerState/restoreQueues(_:)``), and whether there are any (read on every CONNECT).
    let sessionsAwaitingQueues = Mutex<Set<String>>([])
    let queuesPending = Atomic<Bool>(false)
    /// The subscriptions the store reported for sessions held by other nodes, by client identifier.
    let remoteSubscriptions = Mutex<[String: [SessionSubscription]]>([:])

    /// - Parameters:
    ///   - clustered: Whether the broker is a node of a cluster.
    ///   - keyStride: How far apart the keys this broker hands out are (a cluster's node count
    ///     bound, 1 for a broker on its own).
    ///   - keyOffset: The remainder of every key this broker hands out, modulo `keyStride` (its
    ///     node number in a cluster).
    public init(clustered: Bool = false, keyStride: UInt64 = 1, keyOffset: UInt64 = 0) {
        precondition(keyStride > 0 && keyOffset < keyStride, "a key offset must be below the stride")
        self.clustered = clustered
        self.keyStride = keyStride
        self.keyOffset = keyOffset
        lastStoreKey = Atomic(keyOffset)
        lastMessageID = Atomic(keyOffset)
        lastDeliverySequence = Atomic(keyOffset)
    }

    /// Whether a CONNECT must wait for the store's queues: its session was restored and its
    /// deliveries are not in yet (``BrokerState/restoreQueues(_:last:)``).
    public func connectWaitsForQueues(_ packet: Connect, useUsernameAsClientID: Bool) -> Bool {
        guard queuesPending.load(ordering: .acquiring) else { return false }
        let clientID = useUsernameAsClientID ? packet.username ?? "" : packet.clientIdentifier
        return sessionsAwaitingQueues.withLock { $0.contains(clientID) }
    }

    /// The subscriptions of a session another node of the cluster holds, or none does, as the
    /// store reports them: they replace what this broker routed to it by. Ignored while a state
    /// of this broker holds or claims the session (its own view counts then).
    /// - Parameter sessionKey: the session's key in the store, 0 when it is not stored.
    public func applyRemoteSubscriptions(clientID: String, sessionKey: UInt64, subscriptions: [SessionSubscription]) {
        guard let reference = directory.remoteReference(clientID) else { return }
        reference.storeKey.store(sessionKey, ordering: .relaxed)
        let old = remoteSubscriptions.withLock { current in
            let old = current[clientID] ?? []
            current[clientID] = subscriptions.isEmpty ? nil : subscriptions
            return old
        }
        let kept = Set(subscriptions.map(\.filter))
        self.subscriptions.unsubscribe(old.map(\.filter).filter { !kept.contains($0) }, session: reference)
        for subscription in subscriptions {
            self.subscriptions.subscribe(
                subscription.filter,
                entry: TopicTree.Entry(
                    session: reference,
                    options: subscription.options,
                    identifier: subscription.identifier
                )
            )
        }
        if subscriptions.isEmpty, sessionKey == 0 { directory.forgetRemote(clientID) }
    }

    /// Remembers the subscriptions of a session this broker no longer holds, which stay in the
    /// index under its reference: the store's next report of them replaces them.
    func keepAsRemote(_ clientID: String, subscriptions: [SessionSubscription]) {
        remoteSubscriptions.withLock { $0[clientID] = subscriptions.isEmpty ? nil : subscriptions }
    }

    /// Puts a session that a state of this broker takes now from the store in the index with
    /// `subscriptions`, in place of what the store reported for it while another node held it,
    /// in one change of the index: the filters both name route to it throughout, so a message
    /// published on another loop meanwhile is not missed.
    func takeFromRemote(_ reference: SessionReference, subscriptions: [SessionSubscription]) {
        let old = remoteSubscriptions.withLock { $0.removeValue(forKey: reference.clientID) } ?? []
        let kept = Set(subscriptions.map(\.filter))
        self.subscriptions.replace(
            reference,
            removing: old.map(\.filter).filter { !kept.contains($0) },
            adding: subscriptions.map { subscription in
                (
                    subscription.filter,
                    TopicTree.Entry(
                        session: reference,
                        options: subscription.options,
                        identifier: subscription.identifier
                    )
                )
            }
        )
    }

    /// Removes from the index what the store reported for a session that a state of this broker
    /// takes now.
    func dropRemoteSubscriptions(_ clientID: String) {
        guard let old = remoteSubscriptions.withLock({ $0.removeValue(forKey: clientID) }),
            let reference = directory.reference(clientID)
        else { return }
        subscriptions.unsubscribe(old.map(\.filter), session: reference)
    }

    /// The next key of `counter` (``lastStoreKey``, ``lastMessageID`` or ``lastDeliverySequence``).
    func nextKey(_ counter: borrowing Atomic<UInt64>) -> UInt64 {
        counter.wrappingAdd(keyStride, ordering: .relaxed).newValue
    }

    /// Raises `counter` so that the next key is above `value` (keys read back from a store).
    func raiseKey(_ counter: borrowing Atomic<UInt64>, to value: UInt64) {
        // The smallest key of this broker's own at or above `value`.
        let aligned = value + (keyOffset % keyStride + keyStride - value % keyStride) % keyStride
        var current = counter.load(ordering: .relaxed)
        while current < aligned {
            let (exchanged, original) = counter.compareExchange(
                expected: current,
                desired: aligned,
                ordering: .relaxed
            )
            if exchanged { return }
            current = original
        }
    }

    /// The next number of a plain counter.
    static func next(_ counter: borrowing Atomic<UInt64>) -> UInt64 {
        counter.wrappingAdd(1, ordering: .relaxed).newValue
    }
}
