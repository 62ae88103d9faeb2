import DequeModule
import TernBrokerCore

/// Actions held back until the store has committed the changes they depend on.
///
/// A PUBACK or PUBREC promises that a message is safe; a PUBLISH to a subscriber hands out a
/// packet identifier that a restarted broker must still know. So every action produced together
/// with store changes waits for the commit of those changes (write-ahead). Actions for a
/// connection that already has held actions wait behind them, so each connection sees its
/// packets in the order the state produced them.
struct HeldActions {
    private var entries: Deque<(ticket: UInt64, id: ConnectionID, action: BrokerAction)> = []
    private var heldPerConnection: [ConnectionID: Int] = [:]

    /// The ticket to wait for if `id` already has held actions, else `nil`.
    func ticket(holding id: ConnectionID) -> UInt64? {
        guard heldPerConnection[id] != nil else { return nil }
        return entries.last?.ticket
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
