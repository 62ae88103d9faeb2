/// The sequences of the stored deliveries that hold their message in their own row.
///
/// The writer needs to know, when a delivery goes, whether its message goes with its row or
/// loses a reference to a row of its own. Asking SQLite (`RETURNING`) doubled the cost of each
/// delete, and a `Set` of sequences costs 8 bytes and a random memory access per queued message.
/// Sequences are handed out in order, so the deliveries of a queue are close together: kept as
/// 64-bit masks, one per 64 consecutive sequences, a million queued deliveries take about 16,000
/// words. Written by hand because none of the allowed packages has a sparse bit set.
struct InlineDeliveries {
    private var words: [UInt64: UInt64] = [:]
    /// How many sequences are in the set.
    private(set) var count = 0

    mutating func insert(_ sequence: UInt64) {
        let bit: UInt64 = 1 << (sequence & 63)
        let word = words[sequence >> 6, default: 0]
        guard word & bit == 0 else { return }
        words[sequence >> 6] = word | bit
        count += 1
    }

    /// Removes `sequence`.
    /// - Returns: whether it was in the set.
    mutating func remove(_ sequence: UInt64) -> Bool {
        let key = sequence >> 6
        let bit: UInt64 = 1 << (sequence & 63)
        guard let word = words[key], word & bit != 0 else { return false }
        let left = word & ~bit
        words[key] = left == 0 ? nil : left
        count -= 1
        return true
    }

    func contains(_ sequence: UInt64) -> Bool {
        (words[sequence >> 6] ?? 0) & (1 << (sequence & 63)) != 0
    }
}
