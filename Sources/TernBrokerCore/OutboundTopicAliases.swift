public import TernCodec

/// Topic Aliases the broker assigns to the messages it sends a client (MQTT 5.0 §3.3.2.3.4).
///
/// When a client announces a Topic Alias Maximum, the first message on a topic carries the name
/// and a new alias; later messages on that topic carry only the alias, which saves the name's
/// bytes on every delivery. Aliases are handed out first come, first served until the client's
/// maximum is reached; topics after that are sent by name.
public struct OutboundTopicAliases: Sendable {
    public let maximum: UInt16
    var assigned: [TopicName: UInt16] = [:]

    /// - Parameter maximum: the client's Topic Alias Maximum; 0 turns aliases off.
    public init(maximum: UInt16) {
        self.maximum = maximum
    }

    /// Rewrites `publish` to use an alias where one exists or can be assigned.
    public mutating func apply(to publish: inout Publish) {
        guard maximum > 0, !publish.topic.isEmpty else { return }
        if let alias = assigned[publish.topic] {
            publish.properties.topicAlias = alias
            publish.topic = .aliasOnly
        } else if assigned.count < Int(maximum) {
            let alias = UInt16(assigned.count + 1)
            assigned[publish.topic] = alias
            publish.properties.topicAlias = alias
        }
    }
}
