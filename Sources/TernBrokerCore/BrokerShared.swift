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
    /// The highest store key of a session, message and delivery handed out so far.
    let lastStoreKey = Atomic<UInt64>(0)
    let lastMessageID = Atomic<UInt64>(0)
    let lastDeliverySequence = Atomic<UInt64>(0)
    /// Numbers the client identifiers the broker assigns.
    let assignedIdentifierCounter = Atomic<UInt64>(0)
    /// Client identifiers of restored sessions whose deliveries the store has not brought in yet
    /// (``BrokerState/restoreQueues(_:)``), and whether there are any (read on every CONNECT).
    let sessionsAwaitingQueues = Mutex<Set<String>>([])
    let queuesPending = Atomic<Bool>(false)

    public init() {}

    /// Whether a CONNECT must wait for the store's queues: its session was restored and its
    /// deliveries are not in yet (``BrokerState/restoreQueues(_:last:)``).
    public func connectWaitsForQueues(_ packet: Connect, useUsernameAsClientID: Bool) -> Bool {
        guard queuesPending.load(ordering: .acquiring) else { return false }
        let clientID = useUsernameAsClientID ? packet.username ?? "" : packet.clientIdentifier
        return sessionsAwaitingQueues.withLock { $0.contains(clientID) }
    }

    /// The next number after the highest handed out by `counter`.
    static func next(_ counter: borrowing Atomic<UInt64>) -> UInt64 {
        counter.wrappingAdd(1, ordering: .relaxed).newValue
    }

    /// Raises `counter` to at least `value` (numbers read back from a store).
    static func raise(_ counter: borrowing Atomic<UInt64>, to value: UInt64) {
        var current = counter.load(ordering: .relaxed)
        while current < value {
            let (exchanged, original) = counter.compareExchange(
                expected: current,
                desired: value,
                ordering: .relaxed
            )
            if exchanged { return }
            current = original
        }
    }
}
