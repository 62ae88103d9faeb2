import NIOCore
import TernBrokerCore

/// Actions for other connections, collected during one read burst and handed over once per
/// event loop when the burst ends, so a publisher's burst costs one hop per subscriber loop
/// instead of one per message. Each connection's actions keep their order.
struct Outbox {
    private var work: [ConnectionID: (handle: MQTTBroker.Handle, actions: [BrokerAction])] = [:]
    private var order: [ConnectionID] = []

    var isEmpty: Bool { order.isEmpty }

    mutating func add(_ action: BrokerAction, for id: ConnectionID, handle: MQTTBroker.Handle) {
        if work[id] == nil {
            work[id] = (handle, [action])
            order.append(id)
        } else {
            work[id]!.actions.append(action)
        }
    }

    /// Delivers everything collected and empties the outbox.
    mutating func dispatch() {
        guard !order.isEmpty else { return }
        var perLoop: [ObjectIdentifier: (loop: any EventLoop, work: [(MQTTBroker.Handle, [BrokerAction])])] = [:]
        for id in order {
            let entry = work[id]!
            perLoop[ObjectIdentifier(entry.handle.eventLoop), default: (entry.handle.eventLoop, [])].work.append((entry.handle, entry.actions))
        }
        work.removeAll(keepingCapacity: true)
        order.removeAll(keepingCapacity: true)
        for (_, entry) in perLoop {
            if entry.loop.inEventLoop {
                for (handle, actions) in entry.work { handle.handler.value.apply(actions, flush: true) }
            } else {
                let batch = entry.work
                entry.loop.execute {
                    for (handle, actions) in batch { handle.handler.value.apply(actions, flush: true) }
                }
            }
        }
    }
}

/// Packet and byte counts across all connections, for `$SYS/broker/messages/...` and `bytes/...`.
/// Handlers add to them once per read burst and once per flush.
final class TrafficCounters: Sendable {
    let packetsReceived = Atomic<UInt64>(0)
    let packetsSent = Atomic<UInt64>(0)
    let bytesReceived = Atomic<UInt64>(0)
    let bytesSent = Atomic<UInt64>(0)
}

import Synchronization
