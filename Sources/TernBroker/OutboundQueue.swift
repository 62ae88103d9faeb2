import DequeModule
import Synchronization
import TernBrokerCore

/// The one ordered path of packets to a connection.
///
/// Every action the broker's state produces for a connection is appended here, under the state's
/// lock, in the order the state produced it: live deliveries from any event loop, queued messages
/// released by an acknowledgement, redeliveries on resume, replies, and actions that must wait for
/// a store commit. The connection's own event loop takes them out in that order and writes them.
///
/// An action that waits for a commit carries the ticket of that commit and blocks what follows it
/// on this connection, and nothing else, until the ticket is committed.
struct OutboundQueue {
    struct Entry {
        var action: BrokerAction
        /// The store commit the action waits for; 0 when it may leave at once.
        var ticket: UInt64
        /// Lets the action leave before its commit once complete (a publisher's PUBACK).
        var receipt: PublishReceipt?

        /// Whether the action may leave now that `committed` is on disk.
        func mayLeave(committed: UInt64) -> Bool {
            ticket <= committed || receipt?.isComplete == true
        }
    }

    private var entries: Deque<Entry> = []
    /// How many entries wait for a commit; while none do, a take empties the queue.
    private var waiting = 0
    /// Whether a wake-up of the connection's event loop is already on its way: producers on other
    /// loops schedule one per burst, not one per action.
    private var wakeScheduled = false

    var isEmpty: Bool { entries.isEmpty }

    /// Appends `action`, which may leave once `ticket` is committed (0: at once).
    /// - Returns: whether the caller must wake the connection's event loop: true for the first
    ///   action since the loop last took from the queue.
    mutating func append(_ action: BrokerAction, after ticket: UInt64, receipt: PublishReceipt? = nil) -> Bool {
        // Tickets only grow, and an entry never leaves before the one ahead of it, so an action
        // behind a held one is not held by a ticket of its own: the queue's order holds it.
        entries.append(Entry(action: action, ticket: ticket, receipt: ticket == 0 ? nil : receipt))
        if ticket != 0 { waiting += 1 }
        if wakeScheduled { return false }
        wakeScheduled = true
        return true
    }

    /// Takes, in order, every action that may leave now that `committed` is on disk, into `ready`
    /// (which must be empty). The caller empties `ready` keeping its capacity, so that the two
    /// buffers take turns and a take allocates nothing.
    /// - Returns: the ticket the first remaining action waits for, if any.
    mutating func take(committed: UInt64, into ready: inout Deque<Entry>) -> UInt64? {
        wakeScheduled = false
        if waiting == 0 {
            swap(&ready, &entries)
            return nil
        }
        while let first = entries.first {
            if !first.mayLeave(committed: committed) { return first.ticket }
            entries.removeFirst()
            if first.ticket != 0 { waiting -= 1 }
            ready.append(first)
        }
        return nil
    }

    /// Takes, in order, every action that may leave now that `committed` is on disk.
    /// - Returns: those actions, and the ticket the first remaining one waits for, if any.
    mutating func take(committed: UInt64) -> (ready: Deque<Entry>, blockedOn: UInt64?) {
        var ready: Deque<Entry> = []
        let blockedOn = take(committed: committed, into: &ready)
        return (ready, blockedOn)
    }

    /// Drops everything, for a connection that is gone.
    mutating func removeAll() {
        entries.removeAll()
        waiting = 0
        wakeScheduled = true  // nothing will take from it again: no wake-up is worth sending
    }
}

/// A connection's ``OutboundQueue``, shared by the event loops that produce for it and the one
/// that writes it. The lock is held only to append one action or to take a batch, never while
/// writing, so producers on other loops never wait for this connection's socket.
final class ConnectionOutbound: Sendable {
    let queue = Mutex(OutboundQueue())
}
