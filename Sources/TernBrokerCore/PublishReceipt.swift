import Synchronization

/// Who waits for a ``PublishReceipt``: the publisher's connection, which the I/O layer wakes when
/// the receipt completes. Opaque to the broker's logic.
public protocol PublishReceiptWaiter: AnyObject, Sendable {}

/// The PUBACK of a QoS 1 message that may leave before the store commits: once every stored copy
/// of the message has been acknowledged by its subscriber, nothing of it is left to store, so
/// nothing acknowledged can be lost by acknowledging it then.
///
/// A durable 1 → 1 flow otherwise waits twice for the disk per message window: the subscriber
/// usually acknowledges its copy well before the commit that stored it ends, and the publisher,
/// limited by the broker's Receive Maximum, waits for that commit to send more.
///
/// The count is shared by the event loops holding the copies, hence atomic. It starts at one, for
/// the routing in progress; each stored copy adds one and takes it back when it ends. A copy that
/// has to wait in a session's queue (the client is away, or its window is full) keeps the receipt
/// from completing: the commit releases the PUBACK then, as it does every other.
public final class PublishReceipt: Sendable, Hashable {
    private let pending = Atomic<Int>(1)
    /// The publisher's connection.
    public let waiter: any PublishReceiptWaiter

    /// Added to the count by a copy that waits in a queue: the count never reaches zero again.
    private static let waitsForCommit = 1 << 40

    public init(waiter: any PublishReceiptWaiter) {
        self.waiter = waiter
    }

    /// Whether the PUBACK may leave without waiting for the commit.
    public var isComplete: Bool { pending.load(ordering: .acquiring) == 0 }

    /// A stored copy of the message now waits for its subscriber.
    func hold() {
        pending.wrappingAdd(1, ordering: .relaxed)
    }

    /// A copy waits in a queue, for longer than a commit takes.
    func waitForCommit() {
        pending.wrappingAdd(Self.waitsForCommit, ordering: .relaxed)
    }

    /// A stored copy ended (or the routing did).
    /// - Returns: whether the receipt is complete now; the caller wakes the publisher then.
    func release() -> Bool {
        pending.wrappingSubtract(1, ordering: .acquiringAndReleasing).newValue == 0
    }

    public static func == (lhs: PublishReceipt, rhs: PublishReceipt) -> Bool { lhs === rhs }
    public func hash(into hasher: inout Hasher) { hasher.combine(ObjectIdentifier(self)) }
}
