import NIOCore
import Synchronization
import TernBrokerCore

/// One event loop's part of the broker: the ``BrokerState`` of the sessions its connections hold,
/// and those connections.
///
/// Every packet of a connection is handled on its own loop, against its own shard, so two loops
/// never wait for each other on the publish path. The state sits behind a `Mutex` all the same:
/// the loop takes it uncontended for each packet, and the rare callers from elsewhere (a timer,
/// the store's queue loader, a metrics scrape) take it safely. Shards meet through the shared
/// parts of the state (``BrokerShared``) and the mailboxes of sessions, never by locking each
/// other.
final class BrokerShard: Sendable {
    struct State: ~Copyable {
        var broker: BrokerState
        var handles: [ConnectionID: MQTTBroker.Handle] = [:]
        /// The wake-up armed for the state's next deadline, while the broker runs.
        var deadlineTimer: (at: BrokerInstant, task: Scheduled<Void>)?
        /// Connections whose CONNECT waits for its session to arrive from another shard, by
        /// client identifier.
        var awaitingSession: [String: [MQTTBroker.Handle]] = [:]
        /// The buffer the state's actions are appended to, kept between packets.
        var spareActions: [BrokerAction] = []
    }

    /// The largest action buffer a shard keeps for the next packet; a larger one (a restore, a
    /// long queue released at once) is let go.
    static let keptActions = 1024

    /// The shard's number: the ``BrokerState/shard`` of its state.
    let index: Int
    let eventLoop: any EventLoop
    let state: Mutex<State>

    init(index: Int, eventLoop: any EventLoop, state: consuming BrokerState) {
        self.index = index
        self.eventLoop = eventLoop
        self.state = Mutex(State(broker: state))
    }

    /// Runs `work` on the shard's event loop: at once when called there.
    func run(_ work: @escaping @Sendable () -> Void) {
        if eventLoop.inEventLoop {
            work()
        } else {
            eventLoop.execute(work)
        }
    }
}

/// The broker's shards: one per event loop of its group, made up front so that a restored session
/// has somewhere to live, and one more for any other loop a connection turns up on (a test's
/// `EmbeddedEventLoop`).
final class BrokerShards: Sendable {
    private struct Table {
        var all: [BrokerShard]
        var byLoop: [ObjectIdentifier: BrokerShard]
    }

    /// The shards of the group's loops, read without a lock.
    let fixed: [BrokerShard]
    private let table: Mutex<Table>
    private let makeState: @Sendable (Int) -> BrokerState

    init(loops: [any EventLoop], makeState: @escaping @Sendable (Int) -> BrokerState) {
        let shards = loops.enumerated().map {
            BrokerShard(index: $0.offset, eventLoop: $0.element, state: makeState($0.offset))
        }
        fixed = shards
        self.makeState = makeState
        var byLoop: [ObjectIdentifier: BrokerShard] = [:]
        for shard in shards { byLoop[ObjectIdentifier(shard.eventLoop)] = shard }
        table = Mutex(Table(all: shards, byLoop: byLoop))
    }

    /// The shard of `loop`, made on first use.
    func shard(for loop: any EventLoop) -> BrokerShard {
        table.withLock { table in
            if let shard = table.byLoop[ObjectIdentifier(loop)] { return shard }
            let shard = BrokerShard(index: table.all.count, eventLoop: loop, state: makeState(table.all.count))
            table.all.append(shard)
            table.byLoop[ObjectIdentifier(loop)] = shard
            return shard
        }
    }

    /// The shard numbered `index`.
    subscript(index: Int) -> BrokerShard {
        if index < fixed.count { return fixed[index] }
        return table.withLock { $0.all[index] }
    }

    /// Every shard, in order.
    var all: [BrokerShard] { table.withLock { $0.all } }
}

/// What every shard's state starts with: the configuration, and the ACLs and memory flag in
/// force, kept here so that a shard made after a reload or a memory warning starts with them.
final class StateSettings: Sendable {
    private struct Access: Sendable {
        var control: AccessControlList?
        var listenerPolicies: [Int: AccessPolicy]
    }

    let configuration: BrokerConfiguration
    let recordsChanges: Bool
    let startedAt: BrokerInstant
    private let access: Mutex<Access>
    let overMemoryLimit = Atomic<Bool>(false)

    init(
        configuration: BrokerConfiguration,
        recordsChanges: Bool,
        accessControl: AccessControlList?,
        listenerPolicies: [Int: AccessPolicy],
        startedAt: BrokerInstant
    ) {
        self.configuration = configuration
        self.recordsChanges = recordsChanges
        self.startedAt = startedAt
        self.access = Mutex(Access(control: accessControl, listenerPolicies: listenerPolicies))
    }

    /// The ACLs in force.
    var accessControl: (control: AccessControlList?, listenerPolicies: [Int: AccessPolicy]) {
        access.withLock { ($0.control, $0.listenerPolicies) }
    }

    /// Replaces the ACLs (a reload).
    func setAccessControl(_ control: AccessControlList?, listenerPolicies: [Int: AccessPolicy]) {
        access.withLock { $0 = Access(control: control, listenerPolicies: listenerPolicies) }
    }

    func makeState(shard: Int, shared: BrokerShared) -> BrokerState {
        var state = BrokerState(configuration: configuration, now: startedAt, shared: shared, shard: shard)
        state.recordsChanges = recordsChanges
        let (control, policies) = accessControl
        state.accessControl = control
        state.listenerPolicies = policies
        state.overMemoryLimit = overMemoryLimit.load(ordering: .relaxed)
        return state
    }
}
