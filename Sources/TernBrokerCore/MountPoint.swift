public import TernCodec

/// Mosquitto's `mount_point`: a prefix put before every topic a listener's clients publish to,
/// subscribe to or name in a will, and taken off the topics sent to them. Clients of such a
/// listener share one part of the topic tree and see only that part.
public struct MountPoint: Sendable, Hashable {
    public let prefix: String

    public init(_ prefix: String) { self.prefix = prefix }

    /// The topic a client's PUBLISH or will goes to.
    public func mount(_ topic: TopicName) -> TopicName {
        (try? TopicName(prefix + topic.string)) ?? topic
    }

    /// The filter a client's SUBSCRIBE or UNSUBSCRIBE means; a shared subscription keeps its
    /// `$share/NAME/` in front.
    public func mount(_ filter: TopicFilter) -> TopicFilter {
        let mounted = filter.shareName.map { "$share/\($0)/\(prefix)\(filter.filter)" } ?? prefix + filter.filter
        return (try? TopicFilter(mounted)) ?? filter
    }

    /// The topic a client is sent: without the prefix. Its subscriptions all carry the prefix, so
    /// every topic it is sent starts with it.
    public func unmount(_ topic: TopicName) -> TopicName {
        let name = topic.string
        guard name.hasPrefix(prefix), name.utf8.count > prefix.utf8.count else { return topic }
        return (try? TopicName(String(name.dropFirst(prefix.count)))) ?? topic
    }

    /// `packet` with its topics mounted, for a packet a client sent.
    public func mount(_ packet: MQTTPacket) -> MQTTPacket {
        switch packet {
        case .publish(var publish):
            publish.topic = mount(publish.topic)
            return .publish(publish)
        case .subscribe(var subscribe):
            for index in subscribe.subscriptions.indices {
                subscribe.subscriptions[index].filter = mount(subscribe.subscriptions[index].filter)
            }
            return .subscribe(subscribe)
        case .unsubscribe(var unsubscribe):
            unsubscribe.filters = unsubscribe.filters.map(mount)
            return .unsubscribe(unsubscribe)
        case .connect(let connect):
            return .connect(mount(connect))
        default:
            return packet
        }
    }

    /// `connect` with its will's topic mounted.
    public func mount(_ connect: Connect) -> Connect {
        var connect = connect
        if let will = connect.will { connect.will?.topic = mount(will.topic) }
        return connect
    }
}
