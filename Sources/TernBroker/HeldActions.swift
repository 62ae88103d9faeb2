import DequeModule
import TernBrokerCore

/// Actions held back until the store has committed the changes they depend on.
///
/// Of the actions produced together with store changes, those that promise the change wait for
/// its commit (write-ahead):
/// - everything but CONNACK and a QoS 0/1 PUBLISH sent back to the client whose packet made the
///   change: its PUBACK or PUBREC says the message is safe, its SUBACK that the subscription is;
/// - a QoS 2 PUBLISH or PUBREL to anyone: a QoS 2 delivery must never be repeated as new after a
///   restart, so the state that remembers it must be on disk before the subscriber sees it.
///
/// A QoS 0/1 PUBLISH to a subscriber leaves at once: if the broker dies before the commit, the
/// publisher was not acknowledged and sends again, and a QoS 1 duplicate is allowed (§4.3.2).
/// Actions for a connection that already has held actions wait behind them, so each connection
/// sees its packets in the order the state produced them.
struct HeldActions {
    private static func mustWait(_ action: BrokerAction, current: ConnectionID?) -> Bool {
        switch action {
        case .send(_, .publish(let publish)): return publish.qos == .exactlyOnce
        case .send(_, .pubrel): return true
        // CONNACK's Session Present is true of the state it answers; if that state is lost to a
        // crash, the next CONNACK says so. Holding it would add a commit to every connect.
        case .send(_, .connack): return false
        case .send(let id, _), .close(let id): return id == current
        }
    }

    private var entries: Deque<(ticket: UInt64, id: ConnectionID, action: BrokerAction)> = []
    private var heldPerConnection: [ConnectionID: Int] = [:]

    /// The ticket `action` must wait for: the last held one if its connection already has held
    /// actions, else `ticket` (the commit of this event's changes, if any) when the action promises
    /// them; `nil` when it may leave now.
    func wait(for action: BrokerAction, ticket: UInt64?, current: ConnectionID?) -> UInt64? {
        // The usual case, and the only one without a store: nothing held, nothing to commit.
        if entries.isEmpty, ticket == nil { return nil }
        switch action {
        case .send(let id, _), .close(let id):
            if heldPerConnection[id] != nil { return entries.last?.ticket }
        }
        guard let ticket, Self.mustWait(action, current: current) else { return nil }
        return ticket
    }

    mutating func hold(_ action: BrokerAction, for id: ConnectionID, until ticket: UInt64) {
        // Tickets only grow, so the deque stays sorted and releases stay in order.
        let ticket = max(ticket, entries.last?.ticket ?? 0)
        entries.append((ticket, id, action))
        heldPerConnection[id, default: 0] += 1
    }

    /// Removes and returns, in order, every action whose changes are committed.
    mutating func release(upTo ticket: UInt64) -> [(ConnectionID, BrokerAction)] {
        var released: [(ConnectionID, BrokerAction)] = []
        while let first = entries.first, first.ticket <= ticket {
            entries.removeFirst()
            released.append((first.id, first.action))
            let remaining = (heldPerConnection[first.id] ?? 1) - 1
            heldPerConnection[first.id] = remaining > 0 ? remaining : nil
        }
        return released
    }
}
