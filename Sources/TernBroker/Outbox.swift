import NIOCore
import TernBrokerCore
import TernStore

/// The connections whose queues received actions during one read burst (or one event that belongs
/// to no connection), woken once per event loop when it ends, so a publisher's burst costs one hop
/// per subscriber loop instead of one per message.
///
/// It also holds the store whose commit the burst put off: the commit starts when the burst ends,
/// so that the burst's packets share one transaction.
struct Outbox {
    private var handles: [MQTTBroker.Handle] = []
    private var storeToCommit: (any TernStore)?

    mutating func wake(_ handle: MQTTBroker.Handle) {
        handles.append(handle)
    }

    /// Starts a commit of `store` when the burst ends.
    mutating func commitAtEnd(_ store: any TernStore) {
        storeToCommit = store
    }

    /// Starts the commit put off, wakes every connection collected, with one task per event
    /// loop, and empties the outbox.
    mutating func dispatch() {
        if let store = storeToCommit.take() { store.startCommit() }
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
