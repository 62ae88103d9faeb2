import NIOCore
import TernCodec

extension BrokerState {
    /// Publishes the `$SYS/broker/...` topics as retained messages, with Mosquitto's names, and
    /// Tern's own `$SYS/broker/store/...` when there is a store.
    /// - Parameter broker: the counters and gauges of the whole broker (all its states); this
    ///   state's own when `nil`.
    public mutating func publishSystemTopics(
        now: BrokerInstant,
        version: String,
        store: StoreStatistics? = nil,
        broker: (statistics: BrokerStatistics, gauges: BrokerGauges)? = nil
    ) -> [BrokerAction] {
        var actions: [BrokerAction] = []
        let statistics = broker?.statistics ?? self.statistics
        let gauges = broker?.gauges ?? self.gauges
        let connected = gauges.clientsConnected
        let total = gauges.sessions
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
            ("clients/backpressured", "\(gauges.clientsBackpressured)"),
            ("clients/backpressure events", "\(statistics.backpressureEvents)"),
            ("bytes/received", "\(statistics.bytesReceived)"),
            ("bytes/sent", "\(statistics.bytesSent)"),
            ("subscriptions/count", "\(gauges.subscriptions)"),
            ("retained messages/count", "\(gauges.retainedMessages)"),
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

    /// Adds another state's gauges of its own sessions; the shared figures are the same in each.
    public mutating func add(_ other: BrokerGauges) {
        clientsConnected += other.clientsConnected
        sessions += other.sessions
        queuedMessages += other.queuedMessages
        inflightMessages += other.inflightMessages
        clientsBackpressured += other.clientsBackpressured
    }
}

extension BrokerState {
    /// The gauges now. Walks every session: meant for a scrape, not for the publish path.
    public var gauges: BrokerGauges {
        var gauges = BrokerGauges()
        gauges.clientsConnected = connections.count
        gauges.sessions = sessions.count
        gauges.subscriptions = shared.subscriptions.count
        gauges.retainedMessages = shared.retained.count
        for session in sessions.values {
            gauges.queuedMessages += session.queuedCount
            gauges.inflightMessages += session.inflight.count
            if session.connection != nil, !session.writable { gauges.clientsBackpressured += 1 }
        }
        return gauges
    }
}
