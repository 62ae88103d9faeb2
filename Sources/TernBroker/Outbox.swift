import NIOCore
import TernBrokerCore

/// The connections whose queues received actions during one read burst (or one event that belongs
/// to no connection), woken once per event loop when it ends, so a publisher's burst costs one hop
/// per subscriber loop instead of one per message.
struct Outbox {
    private var handles: [MQTTBroker.Handle] = []

    mutating func wake(_ handle: MQTTBroker.Handle) {
        handles.append(handle)
    }

    /// Wakes every connection collected, with one task per event loop, and empties the outbox.
    mutating func dispatch() {
        guard !handles.isEmpty else { return }
        if handles.count == 1 {
            let handle = handles.removeFirst()
            Self.run([handle], on: handle.eventLoop)
            return
        }
        var perLoop: [ObjectIdentifier: (loop: any EventLoop, handles: [MQTTBroker.Handle])] = [:]
        for handle in handles {
            perLoop[ObjectIdentifier(handle.eventLoop), default: (handle.eventLoop, [])].handles.append(handle)
        }
        handles.removeAll(keepingCapacity: true)
        for (_, entry) in perLoop { Self.run(entry.handles, on: entry.loop) }
    }

    private static func run(_ handles: [MQTTBroker.Handle], on loop: any EventLoop) {
        if loop.inEventLoop {
            for handle in handles { handle.handler.value.drainOutbound(flush: true) }
        } else {
            loop.execute {
                for handle in handles { handle.handler.value.drainOutbound(flush: true) }
            }
        }
    }
}
