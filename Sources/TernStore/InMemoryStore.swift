import Synchronization
public import TernBrokerCore

/// A ``TernStore`` that keeps everything in memory: it survives a broker stopped and started
/// again in the same process, not the process itself. Changes are applied as they are submitted,
/// so nothing ever waits for a commit.
///
/// `persistence false` needs no store at all; this one serves embedders that restart a broker
/// in-process, and tests that hold both stores to the same rules.
public final class InMemoryStore: TernStore {
    private let contents = Mutex(StoreContents())

    public init() {}

    public func load() throws -> StoreSnapshot {
        contents.withLock { $0.snapshot() }
    }

    public func start(onCommit: @escaping @Sendable (StoreCommit) -> Void) {}

    public func submit(_ changes: [StoreChange]) -> UInt64? {
        contents.withLock { contents in
            for change in changes { contents.apply(change) }
        }
        return nil
    }

    public func close() {}

    public var statistics: StoreStatistics {
        contents.withLock { contents in
            var statistics = StoreStatistics()
            statistics.sessions = contents.sessions.count
            statistics.messages = contents.messages.count
            return statistics
        }
    }
}

/// The store's rows as plain values, with the reference counts that decide when a message goes.
/// Shared by the in-memory store and by tests that check what a store would hold.
public struct StoreContents: Sendable {
    public private(set) var sessions: [UInt64: StoredSession] = [:]
    public private(set) var messages: [UInt64: (message: ApplicationMessage, references: Int)] = [:]
    public private(set) var retained: [String: UInt64] = [:]
    /// Which session each delivery belongs to.
    private var deliveryOwners: [UInt64: UInt64] = [:]

    public init() {}

    public mutating func apply(_ change: StoreChange) {
        switch change {
        case .putSession(let header):
            sessions[header.key, default: StoredSession(header: header)].header = header
        case .deleteSession(let key, _):
            guard let session = sessions.removeValue(forKey: key) else { return }
            for delivery in session.deliveries {
                deliveryOwners[delivery.sequence] = nil
                release(delivery.messageID)
            }
        case .putSubscription(let key, let subscription):
            sessions[key]?.subscriptions.removeAll { $0.filter == subscription.filter }
            sessions[key]?.subscriptions.append(subscription)
        case .deleteSubscription(let key, let filter):
            sessions[key]?.subscriptions.removeAll { $0.filter.string == filter }
        case .putMessage(let id, let message):
            if messages[id] == nil { messages[id] = (message, 0) }
        case .putDelivery(let key, let delivery):
            guard sessions[key] != nil else { return }
            sessions[key]!.deliveries.append(delivery)
            deliveryOwners[delivery.sequence] = key
            messages[delivery.messageID]?.references += 1
        case .deliverySent(let sequence, let packetIdentifier):
            guard let key = deliveryOwners[sequence],
                let index = sessions[key]?.deliveries.firstIndex(where: { $0.sequence == sequence })
            else { return }
            sessions[key]!.deliveries[index].packetIdentifier = packetIdentifier
        case .deleteDelivery(let sequence, let messageID):
            guard let key = deliveryOwners.removeValue(forKey: sequence) else { return }
            sessions[key]?.deliveries.removeAll { $0.sequence == sequence }
            release(messageID)
        case .putRelease(let key, let packetIdentifier):
            sessions[key]?.releases.append(packetIdentifier)
        case .deleteRelease(let key, let packetIdentifier):
            sessions[key]?.releases.removeAll { $0 == packetIdentifier }
        case .putInboundQoS2(let key, let packetIdentifier):
            sessions[key]?.inboundQoS2.append(packetIdentifier)
        case .deleteInboundQoS2(let key, let packetIdentifier):
            sessions[key]?.inboundQoS2.removeAll { $0 == packetIdentifier }
        case .putRetained(let topic, let messageID):
            messages[messageID]?.references += 1
            if let old = retained.updateValue(messageID, forKey: topic) { release(old) }
        case .deleteRetained(let topic):
            if let old = retained.removeValue(forKey: topic) { release(old) }
        case .cluster:
            break  // memory serves one broker: there is no cluster to tell
        }
    }

    private mutating func release(_ messageID: UInt64) {
        guard let entry = messages[messageID] else { return }
        if entry.references <= 1 {
            messages[messageID] = nil
        } else {
            messages[messageID]!.references -= 1
        }
    }

    public func snapshot() -> StoreSnapshot {
        StoreSnapshot(
            sessions: sessions.values.sorted { $0.header.key < $1.header.key },
            messages: messages.mapValues(\.message),
            retained: retained
        )
    }
}
