import TernCodec

/// Every session's subscriptions, shared by the event loops: matched by each PUBLISH under a read
/// lock, so loops match at the same time, and changed by SUBSCRIBE, UNSUBSCRIBE and the end of a
/// session under the write lock. A SUBACK is sent after the change, so a message published
/// anywhere after it reaches the new subscription.
public final class SubscriptionIndex: Sendable {
    private let tree = ReadWriteLock(TopicTree())

    public init() {}

    /// Every subscription that matches `topic`; see ``TopicTree/match(_:isConnected:)``.
    func match(_ topic: String) -> [TopicTree.Match] {
        tree.withReadLock { $0.match(topic) { $0.isConnected } }
    }

    /// Adds or replaces a subscription. - Returns: whether one to the same filter existed.
    @discardableResult
    func subscribe(_ filter: TopicFilter, entry: TopicTree.Entry) -> Bool {
        tree.withWriteLock { $0.subscribe(filter, entry: entry) }
    }

    /// Removes a subscription. - Returns: whether it existed.
    @discardableResult
    func unsubscribe(_ filter: TopicFilter, session: SessionReference) -> Bool {
        tree.withWriteLock { $0.unsubscribe(filter, session: session) }
    }

    /// Removes several subscriptions of one session at once.
    func unsubscribe(_ filters: some Sequence<TopicFilter>, session: SessionReference) {
        tree.withWriteLock { tree in
            for filter in filters { tree.unsubscribe(filter, session: session) }
        }
    }

    /// How many subscriptions the index holds.
    public var count: Int { tree.withReadLock { $0.count } }
}
