import NIOCore
import TernBrokerCore
import TernStore

/// What one read burst (or one event that belongs to no connection) leaves for others, handed
/// over once when it ends, so that a publisher's burst costs one hop per event loop it reaches
/// instead of one per message:
/// - the connections of this loop whose queues received actions;
/// - the deliveries for sessions other shards hold, posted to their mailboxes, and those shards
///   woken once each;
/// - sessions to fetch from other shards for CONNECTs that claimed them;
/// - the store whose commit the burst put off: it starts when the burst ends, so that the
///   burst's packets share one transaction.
struct Outbox {
    private var handles: [MQTTBroker.Handle] = []
    private var storeToCommit: (any TernStore)?
    private var posts: [(from: BrokerShard, deliveries: [OutgoingDeliveries], ticket: UInt64)] = []
    private var fetches: [(clientID: String, owner: Int, claimant: BrokerShard)] = []

    mutating func wake(_ handle: MQTTBroker.Handle) {
        handles.append(handle)
    }

    /// Starts a commit of `store` when the burst ends.
    mutating func commitAtEnd(_ store: any TernStore) {
        storeToCommit = store
    }

    /// Deliveries this burst stored for clients that are away, since the last commit it started.
    private var storedForAbsentClients = 0

    /// How many such deliveries start the commit before the burst ends. The writer would
    /// otherwise sit idle while the rest of the burst is handled: a publisher filling offline
    /// queues with at most Receive Maximum messages in flight waits for every commit, so starting
    /// it early takes its time off each round. Deliveries to connected clients do not count:
    /// their acknowledgements usually arrive before the commit, and the delivery is then never
    /// written, which an early commit would spoil.
    static let earlyCommitDeliveries = 4

    /// Counts deliveries stored for clients that are away; once enough wait, starts the commit
    /// put off (see ``earlyCommitDeliveries``).
    mutating func storedForAbsentClients(_ count: Int) {
        guard count > 0 else { return }
        storedForAbsentClients += count
        if storedForAbsentClients >= Self.earlyCommitDeliveries, let store = storeToCommit.take() {
            storedForAbsentClients = 0
            store.startCommit()
        }
    }

    /// Posts deliveries to sessions of other shards when the burst ends. `ticket` is the store
    /// commit that holds their stored copies.
    mutating func post(_ deliveries: [OutgoingDeliveries], ticket: UInt64, from shard: BrokerShard) {
        posts.append((shard, deliveries, ticket))
    }

    /// Asks shard `owner` for `clientID`'s session when the burst ends.
    mutating func fetch(_ clientID: String, from owner: Int, for claimant: BrokerShard) {
        fetches.append((clientID, owner, claimant))
    }

    /// Starts the commit put off, posts the deliveries and wakes the shards that hold their
    /// sessions, asks for the sessions to fetch, and wakes every connection collected, with one
    /// task per event loop; then empties the outbox.
    mutating func dispatch(_ broker: MQTTBroker) {
        storedForAbsentClients = 0
        if let store = storeToCommit.take() { store.startCommit() }
        if !posts.isEmpty { dispatchPosts(broker) }
        if !fetches.isEmpty {
            for (clientID, owner, claimant) in fetches {
                guard owner != SessionReference.elsewhereOwner else {
                    broker.claimFromCluster(clientID, for: claimant)
                    continue
                }
                let shard = broker.shards[owner]
                shard.run { broker.release(clientID, on: shard, to: claimant) }
            }
            fetches.removeAll()
        }
        guard !handles.isEmpty else { return }
        if handles.count == 1 {
            let handle = handles.removeFirst()
            Self.run([handle], on: handle.eventLoop)
            return
        }
        var perLoop: [ObjectIdentifier: (loop: any EventLoop, handles: [MQTTBroker.Handle])] = [:]
        for handle in handles {
            perLoop[ObjectIdentifier(handle.eventLoop), default: (handle.eventLoop, [])].handles.append(handle)
        }
        handles.removeAll(keepingCapacity: true)
        for (_, entry) in perLoop { Self.run(entry.handles, on: entry.loop) }
    }

    private mutating func dispatchPosts(_ broker: MQTTBroker) {
        // One session to post to is the common case (one subscriber on another loop): no grouping.
        if posts.count == 1, posts[0].deliveries.count == 1 {
            let (from, groups, ticket) = posts.removeFirst()
            let group = groups[0]
            switch group.session.post(group.deliveries, storeKey: group.storeKey, ticket: ticket) {
            case .accepted(let owner?):
                let shard = broker.shards[owner]
                shard.run { broker.receivePosted([group.session], on: shard) }
            case .accepted(nil): break
            case .refused where group.storeKey != 0: broker.postsRefused(groups, by: from)
            case .refused: break
            case .elsewhere: broker.postsElsewhere(groups, by: from)
            }
            return
        }
        var wakes: [Int: [SessionReference]] = [:]
        for (from, groups, ticket) in posts {
            var refused: [OutgoingDeliveries] = []
            var elsewhere: [OutgoingDeliveries] = []
            for group in groups {
                switch group.session.post(group.deliveries, storeKey: group.storeKey, ticket: ticket) {
                case .accepted(let owner?): wakes[owner, default: []].append(group.session)
                case .accepted(nil): break
                case .refused where group.storeKey != 0: refused.append(group)
                case .refused: break
                case .elsewhere: elsewhere.append(group)
                }
            }
            if !refused.isEmpty { broker.postsRefused(refused, by: from) }
            if !elsewhere.isEmpty { broker.postsElsewhere(elsewhere, by: from) }
        }
        posts.removeAll()
        for (index, sessions) in wakes {
            let shard = broker.shards[index]
            shard.run { broker.receivePosted(sessions, on: shard) }
        }
    }

    private static func run(_ handles: [MQTTBroker.Handle], on loop: any EventLoop) {
        if loop.inEventLoop {
            for handle in handles { handle.handler.value.drainOutbound(flush: true) }
        } else {
            loop.execute {
                for handle in handles { handle.handler.value.drainOutbound(flush: true) }
            }
        }
    }
}
