import Glibc
import TernCodec
import Testing

@testable import TernBrokerCore

/// What a change to the subscriptions costs as they grow: a session that ends removes its
/// subscriptions, and many sessions with a filter of their own under one level (one topic per
/// device, say) must not make each removal cost as much as all of them together. A broker that
/// restarts after its sessions expired ends every one of them before it listens.
@Suite("Topic tree scaling")
struct TopicTreeScalingTests {
    /// The CPU time of this thread: tests running beside this one do not add to it.
    static func threadCPUTime() -> Duration {
        var now = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now)
        return .seconds(now.tv_sec) + .nanoseconds(now.tv_nsec)
    }

    /// Subscribes `count` sessions, each to `devices/<n>/cmd`, then removes them one by one.
    /// - Returns: the CPU time the removals took.
    static func removalCost(_ count: Int) throws -> Duration {
        var tree = TopicTree()
        var subscriptions: [(TopicFilter, TopicTree.Entry)] = []
        for index in 0..<count {
            let filter = try TopicFilter("devices/\(index)/cmd")
            let entry = TopicTree.Entry(clientID: "device-\(index)", options: .init(), identifier: nil)
            tree.subscribe(filter, entry: entry)
            subscriptions.append((filter, entry))
        }
        let started = threadCPUTime()
        var removed = 0
        for (filter, entry) in subscriptions where tree.unsubscribe(filter, session: entry.session) { removed += 1 }
        let cost = threadCPUTime() - started
        #expect(removed == count)
        #expect(tree.count == 0)
        #expect(tree.match("devices/0/cmd") { _ in true }.isEmpty)
        return cost
    }

    @Test("removing subscriptions under one level costs the same per subscription whether there are 500 or 8,000")
    func removalIsLinear() throws {
        // The least of three runs of each size: what the removals cost, not what the machine did meanwhile.
        let small = try (0..<3).map { _ in try Self.removalCost(500) }.min()!
        let large = try (0..<3).map { _ in try Self.removalCost(8_000) }.min()!
        // 16 times the subscriptions: 16 times the cost if each removal is constant, 256
        // times if each one copies its siblings.
        let ratio = large / small
        #expect(ratio < 48, "8,000 removals cost \(large), 500 cost \(small): \(ratio)×")
    }
}
