public import NIOCore
import Synchronization
import TernCodec

/// Every session's subscriptions, shared by the event loops: matched by each PUBLISH under a read
/// lock, so loops match at the same time, and changed by SUBSCRIBE, UNSUBSCRIBE and the end of a
/// session under the write lock. A SUBACK is sent after the change, so a message published
/// anywhere after it reaches the new subscription.
///
/// Every change moves ``generation`` on, so that a loop may keep what a topic matched
/// (``MatchCache``) and know, with one atomic load, when that is out of date.
public final class SubscriptionIndex: Sendable {
    private let tree = ReadWriteLock(TopicTree())
    private let changes = Atomic<UInt64>(0)

    public init() {}

    /// Moves on with every change of the subscriptions.
    public var generation: UInt64 { changes.load(ordering: .acquiring) }

    /// What the topic whose UTF-8 bytes are `topic` matches; see ``TopicTree/matchSet(_:)``.
    public func matchSet(_ topic: ByteBuffer) -> TopicTree.MatchSet {
        tree.withReadLock { $0.matchSet(topic) }
    }

    /// Adds or replaces a subscription. - Returns: whether one to the same filter existed.
    @discardableResult
    func subscribe(_ filter: TopicFilter, entry: TopicTree.Entry) -> Bool {
        tree.withWriteLock { tree in
            changes.wrappingAdd(1, ordering: .releasing)
            return tree.subscribe(filter, entry: entry)
        }
    }

    /// Removes a subscription. - Returns: whether it existed.
    @discardableResult
    func unsubscribe(_ filter: TopicFilter, session: SessionReference) -> Bool {
        tree.withWriteLock { tree in
            changes.wrappingAdd(1, ordering: .releasing)
            return tree.unsubscribe(filter, session: session)
        }
    }

    /// Removes several subscriptions of one session at once.
    func unsubscribe(_ filters: some Sequence<TopicFilter>, session: SessionReference) {
        tree.withWriteLock { tree in
            changes.wrappingAdd(1, ordering: .releasing)
            for filter in filters { tree.unsubscribe(filter, session: session) }
        }
    }

    /// Replaces some of one session's subscriptions by others in one change: a PUBLISH matched
    /// meanwhile on another loop sees either the old set or the new one, never a filter that both
    /// hold missing in between.
    func replace(
        _ session: SessionReference,
        removing removed: some Sequence<TopicFilter>,
        adding added: [(filter: TopicFilter, entry: TopicTree.Entry)]
    ) {
        tree.withWriteLock { tree in
            changes.wrappingAdd(1, ordering: .releasing)
            for filter in removed { tree.unsubscribe(filter, session: session) }
            for (filter, entry) in added { tree.subscribe(filter, entry: entry) }
        }
    }

    /// How many subscriptions the index holds.
    public var count: Int { tree.withReadLock { $0.count } }
}

/// What topics matched lately, kept by one ``BrokerState`` for its own PUBLISH packets: a topic
/// seen again is matched with one dictionary lookup and no lock, until the subscriptions change.
struct MatchCache: Sendable {
    /// How many topics are kept at most; past it the cache starts again.
    static let capacity = 4096

    private var generation: UInt64 = .max
    private var sets: [ByteBuffer: TopicTree.MatchSet] = [:]

    /// What `topic` matches in `index` now.
    mutating func matchSet(_ topic: ByteBuffer, in index: SubscriptionIndex) -> TopicTree.MatchSet {
        let current = index.generation
        if current != generation {
            sets.removeAll(keepingCapacity: true)
            generation = current
        }
        if let cached = sets[topic] { return cached }
        let found = index.matchSet(topic)
        if sets.count >= Self.capacity { sets.removeAll(keepingCapacity: true) }
        // A copy of the bytes: the topic is a slice of a receive buffer, which the key would keep.
        sets[ByteBuffer(bytes: topic.readableBytesView)] = found
        return found
    }
}
