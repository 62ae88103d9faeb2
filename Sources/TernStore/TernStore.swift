public import TernBrokerCore

/// Where the broker keeps what must survive a restart: sessions, subscriptions with their options
/// and identifiers, queued messages, in-flight state in both directions, retained messages, and
/// wills with their deadlines.
///
/// The broker hands over ``StoreChange``s in the order its state made them, from its event loops,
/// and must not block there: ``submit(_:)`` only queues. A store that writes to disk commits them
/// in batches on its own thread and reports each commit to the handler given to ``start(onCommit:)``;
/// the broker holds back acknowledgements that depend on a batch until it is committed.
public protocol TernStore: AnyObject, Sendable {
    /// Reads what the broker needs before it accepts connections: everything stored, or, when
    /// the snapshot says ``StoreSnapshot/queuesFollow``, everything but the queued deliveries.
    /// Called once.
    func load() throws -> StoreSnapshot

    /// Reads the queued and in-flight deliveries that ``load()`` left out. Called once, on a
    /// thread of its own, after the listeners opened and before ``start(onCommit:)``: the store
    /// has changed nothing since ``load()``.
    func loadQueues() throws -> StoredQueues

    /// Begins accepting changes. `onCommit` is called, on the store's own thread, after each
    /// commit, with the ticket of the last change it made durable.
    func start(onCommit: @escaping @Sendable (StoreCommit) -> Void)

    /// Queues changes without blocking, and starts a commit.
    /// - Returns: the ticket to wait for before the changes are durable, or `nil` if they already are.
    func submit(_ changes: [StoreChange]) -> UInt64?

    /// Queues changes like ``submit(_:)``, but only starts a commit if `startingCommit`; otherwise
    /// the next ``startCommit()`` does. A connection's read burst queues each packet's changes
    /// and starts one commit when the burst ends, so the packets of a burst share a transaction
    /// instead of waking the writer once each.
    func submit(_ changes: [StoreChange], startingCommit: Bool) -> UInt64?

    /// Starts a commit of what ``submit(_:startingCommit:)`` queued.
    func startCommit()

    /// Commits everything submitted, then stops.
    func close()

    /// Figures for `$SYS/broker/store/...`.
    var statistics: StoreStatistics { get }
}

/// One commit of a store: how far it reached, and how long it took (for the commit-latency
/// histogram of the metrics endpoint).
public struct StoreCommit: Sendable, Hashable {
    /// The ticket of the last change the commit made durable.
    public var ticket: UInt64
    /// From the start of the transaction to the end of its sync to disk.
    public var duration: Duration

    public init(ticket: UInt64, duration: Duration) {
        self.ticket = ticket
        self.duration = duration
    }
}

extension TernStore {
    /// A store whose ``load()`` brings everything has no queues to bring later.
    public func loadQueues() throws -> StoredQueues { StoredQueues() }

    /// A store that applies changes as they come has no commit to start or put off.
    public func submit(_ changes: [StoreChange], startingCommit: Bool) -> UInt64? { submit(changes) }
    public func startCommit() {}
}
