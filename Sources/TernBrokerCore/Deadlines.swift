import HeapModule

/// The broker's timed work, earliest first: wills waiting for their Will Delay Interval, detached
/// sessions waiting to expire, and retained messages with a Message Expiry Interval.
///
/// A min-heap, so that ``BrokerState/tick(now:)`` touches only what is due and
/// ``BrokerState/nextDeadline`` is one read, however many sessions the broker holds. Entries are
/// not removed when their reason goes away (a client comes back, a retained message is
/// replaced): each is checked against the state when it comes due, and a stale one is dropped.
/// ``needsCompaction(live:)`` tells the state when stale entries outnumber live ones, so that a
/// client that reconnects again and again cannot grow the heap without bound.
struct Deadlines: Sendable {
    enum Kind: Sendable, Hashable {
        /// The pending will of this client identifier.
        case will(String)
        /// The end of this client identifier's detached session.
        case sessionExpiry(String)
        /// The expiry of the retained message on this topic.
        case retainedExpiry(String)
    }

    struct Entry: Sendable, Comparable {
        var at: BrokerInstant
        var kind: Kind

        static func < (lhs: Self, rhs: Self) -> Bool { lhs.at < rhs.at }
        static func == (lhs: Self, rhs: Self) -> Bool { lhs.at == rhs.at && lhs.kind == rhs.kind }
    }

    private var heap = Heap<Entry>()

    /// How many entries are held, stale ones included.
    var count: Int { heap.count }

    /// The earliest entry's time, which may be stale: waking for it is harmless.
    var earliest: BrokerInstant? { heap.min?.at }

    mutating func schedule(_ kind: Kind, at instant: BrokerInstant) {
        heap.insert(Entry(at: instant, kind: kind))
    }

    /// Removes and returns every entry due at `now`, earliest first.
    mutating func popDue(now: BrokerInstant) -> [Entry] {
        var due: [Entry] = []
        while let first = heap.min, first.at <= now {
            due.append(heap.removeMin())
        }
        return due
    }

    /// Whether stale entries are so many that the heap should be rebuilt from `live` entries.
    func needsCompaction(live: Int) -> Bool { heap.count > 2 * live + 1024 }

    /// Replaces every entry with `entries`.
    mutating func rebuild(_ entries: [Entry]) { heap = Heap(entries) }
}
