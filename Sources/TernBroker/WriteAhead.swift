import TernBrokerCore
import TernCodec

/// Which actions wait for the store to commit the changes made with them (write-ahead).
///
/// Of the actions produced together with store changes, those that promise the change wait for
/// its commit:
/// - everything but CONNACK and a QoS 0/1 PUBLISH sent back to the client whose packet made the
///   change: its PUBACK or PUBREC says the message is safe, its SUBACK that the subscription is;
/// - a QoS 2 PUBLISH or PUBREL to anyone: a QoS 2 delivery must never be repeated as new after a
///   restart, so the state that remembers it must be on disk before the subscriber sees it.
///
/// A QoS 0/1 PUBLISH to a subscriber leaves at once: if the broker dies before the commit, the
/// publisher was not acknowledged and sends again, and a QoS 1 duplicate is allowed (§4.3.2).
/// A waiting action holds back whatever follows it on the same connection, and nothing else: see
/// ``OutboundQueue``.
enum WriteAhead {
    /// Whether `action`, produced by a packet from `current` (or by no connection), must wait for
    /// the commit of the changes made with it.
    static func mustWait(_ action: BrokerAction, current: ConnectionID?) -> Bool {
        switch action {
        case .send(_, .publish(let publish)): return publish.qos == .exactlyOnce
        case .send(_, .pubrel): return true
        // CONNACK's Session Present is true of the state it answers; if that state is lost to a
        // crash, the next CONNACK says so. Holding it would add a commit to every connect.
        case .send(_, .connack): return false
        case .send(let id, _), .acknowledge(let id, _, _), .close(let id): return id == current
        case .awaitSession: return false
        }
    }
}
