import Synchronization
import TernCodec

/// The retained message of each topic (MQTT 5.0 §3.3.1.3), shared by every event loop.
///
/// A retained PUBLISH on any loop replaces the topic's message here, and the store changes it
/// makes are kept in one log, in the order the replacements happened: a store must apply them in
/// that order, or two loops retaining on one topic at once could leave it holding the older
/// message. ``takeChanges(_:)`` hands the log over under the same lock, so that it reaches the
/// store in that order too.
public final class RetainedMessages: Sendable {
    private struct State: Sendable {
        var messages: [String: ApplicationMessage] = [:]
        var changes: [StoreChange] = []
    }

    private let state = Mutex(State())
    /// Whether the log holds changes: read without the lock on every state change.
    private let changed = Atomic<Bool>(false)

    public init() {}

    /// How many topics have a retained message.
    public var count: Int { state.withLock { $0.messages.count } }

    /// The retained message of `topic`, if any.
    public subscript(topic: String) -> ApplicationMessage? { state.withLock { $0.messages[topic] } }

    /// Replaces the retained message of `topic`, or deletes it when `message` is `nil`.
    /// - Parameter record: whether to log the change for a store (`message` carries its store id).
    /// - Returns: whether a message was deleted.
    @discardableResult
    func set(_ topic: String, _ message: ApplicationMessage?, record: Bool) -> Bool {
        state.withLock { state in
            guard let message else {
                guard state.messages.removeValue(forKey: topic) != nil else { return false }
                if record { log(.deleteRetained(topic: topic), in: &state) }
                return true
            }
            state.messages[topic] = message
            if record {
                log(.putMessage(id: message.storeID, message), in: &state)
                log(.putRetained(topic: topic, messageID: message.storeID), in: &state)
            }
            return false
        }
    }

    /// Replaces the retained message of `topic` as another node of a cluster did, in the store
    /// this broker shares with it: nothing is logged, the store holds it already.
    public func applyFromCluster(_ topic: String, _ message: ApplicationMessage?) {
        set(topic, message, record: false)
    }

    /// Deletes the retained message of `topic` if it has expired at `now` (and was not replaced
    /// by one that has not).
    func removeIfExpired(_ topic: String, now: BrokerInstant, record: Bool) {
        state.withLock { state in
            guard let message = state.messages[topic], message.isExpired(at: now) else { return }
            state.messages[topic] = nil
            if record { log(.deleteRetained(topic: topic), in: &state) }
        }
    }

    /// The retained messages whose topic matches `filter`, by topic.
    func matching(_ filter: TopicFilter) -> [(topic: String, message: ApplicationMessage)] {
        state.withLock { state in
            state.messages.filter { filter.matches($0.key) }.map { ($0.key, $0.value) }.sorted { $0.topic < $1.topic }
        }
    }

    /// Every retained message (for a restore or a test).
    var all: [String: ApplicationMessage] { state.withLock { $0.messages } }

    /// Hands the logged store changes to `body`, under the lock, and empties the log.
    public func takeChanges<Result>(_ body: ([StoreChange]) -> Result) -> Result? {
        guard changed.load(ordering: .acquiring) else { return nil }
        return state.withLock { state in
            changed.store(false, ordering: .relaxed)
            let changes = state.changes
            state.changes.removeAll(keepingCapacity: true)
            return body(changes)
        }
    }

    private func log(_ change: StoreChange, in state: inout State) {
        state.changes.append(change)
        changed.store(true, ordering: .releasing)
    }
}
