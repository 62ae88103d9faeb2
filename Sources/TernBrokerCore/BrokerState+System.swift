import NIOCore
import TernCodec

extension BrokerState {
    /// Publishes the `$SYS/broker/...` topics as retained messages, with Mosquitto's names, and
    /// Tern's own `$SYS/broker/store/...` when there is a store.
    public mutating func publishSystemTopics(now: BrokerInstant, version: String, store: StoreStatistics? = nil)
        -> [BrokerAction]
    {
        var actions: [BrokerAction] = []
        let connected = connections.count
        let total = sessions.count
        var values: [(String, String)] = [
            ("version", version),
            ("uptime", "\(startedAt.seconds(until: now)) seconds"),
            ("clients/connected", "\(connected)"),
            ("clients/disconnected", "\(total - connected)"),
            ("clients/total", "\(total)"),
            // Mosquitto's meanings: every packet here, PUBLISH packets under publish/.
            ("messages/received", "\(statistics.messagesReceived)"),
            ("messages/sent", "\(statistics.messagesSent)"),
            ("publish/messages/received", "\(statistics.publishMessagesReceived)"),
            ("publish/messages/sent", "\(statistics.publishMessagesSent)"),
            (
                "publish/messages/dropped",
                "\(statistics.publishMessagesDropped + statistics.publishMessagesDroppedTooLarge)"
            ),
            ("publish/messages/expired", "\(statistics.publishMessagesExpired)"),
            // Tern's own: backpressure, as it happens (see writabilityChanged).
            ("publish/messages/dropped/backpressure", "\(statistics.publishMessagesDroppedBackpressure)"),
            ("clients/backpressured", "\(backpressuredCount)"),
            ("clients/backpressure events", "\(statistics.backpressureEvents)"),
            ("bytes/received", "\(statistics.bytesReceived)"),
            ("bytes/sent", "\(statistics.bytesSent)"),
            ("subscriptions/count", "\(topics.count)"),
            ("retained messages/count", "\(retained.count)"),
        ]
        if let store {
            values += [
                ("store/file size", "\(store.fileSize)"),
                ("store/sessions", "\(store.sessions)"),
                ("store/messages", "\(store.messages)"),
                ("store/commits", "\(store.commits)"),
                ("store/commit latency/last", "\(store.lastCommitMicroseconds) us"),
                ("store/commit latency/average", "\(store.averageCommitMicroseconds) us"),
                ("store/commit latency/maximum", "\(store.maximumCommitMicroseconds) us"),
                ("store/batch size/last", "\(store.lastBatchChanges)"),
                ("store/batch size/average", "\(store.averageBatchChanges)"),
                ("store/batch size/maximum", "\(store.maximumBatchChanges)"),
            ]
        }
        for (name, value) in values {
            guard let topic = try? TopicName("$SYS/broker/\(name)") else { continue }
            let message = ApplicationMessage(
                topic: topic,
                payload: ByteBuffer(string: value),
                qos: .atMostOnce,
                retain: true
            )
            route(message, now: now, into: &actions)
        }
        return actions
    }
}

extension BrokerState {
    /// How many connected clients are not keeping up with what they are sent now.
    var backpressuredCount: Int {
        sessions.values.reduce(0) { $0 + ($1.connection != nil && !$1.writable ? 1 : 0) }
    }
}

/// What the broker holds now, for the metrics endpoint's gauges.
public struct BrokerGauges: Sendable, Hashable {
    public var clientsConnected = 0
    /// Sessions, connected or not.
    public var sessions = 0
    public var subscriptions = 0
    public var retainedMessages = 0
    /// Messages waiting in session queues, for connected and disconnected sessions alike.
    public var queuedMessages = 0
    /// QoS 1/2 messages sent and not yet acknowledged.
    public var inflightMessages = 0
    public var clientsBackpressured = 0

    public init() {}
}

extension BrokerState {
    /// The gauges now. Walks every session: meant for a scrape, not for the publish path.
    public var gauges: BrokerGauges {
        var gauges = BrokerGauges()
        gauges.clientsConnected = connections.count
        gauges.sessions = sessions.count
        gauges.subscriptions = topics.count
        gauges.retainedMessages = retained.count
        for session in sessions.values {
            gauges.queuedMessages += session.queue.count
            gauges.inflightMessages += session.inflight.count
            if session.connection != nil, !session.writable { gauges.clientsBackpressured += 1 }
        }
        return gauges
    }
}
