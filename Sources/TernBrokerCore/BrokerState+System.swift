import NIOCore
import TernCodec

extension BrokerState {
    /// Publishes the `$SYS/broker/...` topics as retained messages, with Mosquitto's names, and
    /// Tern's own `$SYS/broker/store/...` when there is a store.
    public mutating func publishSystemTopics(now: BrokerInstant, version: String, store: StoreStatistics? = nil) -> [BrokerAction] {
        var actions: [BrokerAction] = []
        let connected = connections.count
        let total = sessions.count
        var values: [(String, String)] = [
            ("version", version),
            ("uptime", "\(startedAt.seconds(until: now)) seconds"),
            ("clients/connected", "\(connected)"),
            ("clients/disconnected", "\(total - connected)"),
            ("clients/total", "\(total)"),
            ("messages/received", "\(statistics.publishMessagesReceived)"),
            ("messages/sent", "\(statistics.publishMessagesSent)"),
            ("publish/messages/received", "\(statistics.publishMessagesReceived)"),
            ("publish/messages/sent", "\(statistics.publishMessagesSent)"),
            ("publish/messages/dropped", "\(statistics.publishMessagesDropped + statistics.publishMessagesDroppedTooLarge)"),
            ("publish/messages/expired", "\(statistics.publishMessagesExpired)"),
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
            ]
        }
        for (name, value) in values {
            guard let topic = try? TopicName("$SYS/broker/\(name)") else { continue }
            let message = ApplicationMessage(topic: topic, payload: ByteBuffer(string: value), qos: .atMostOnce, retain: true)
            route(message, now: now, into: &actions)
        }
        return actions
    }
}
