/// A point in wall-clock time, in milliseconds since the Unix epoch.
///
/// The broker's logic never reads a clock: every event carries `now`, so tests drive time by
/// hand. Wall-clock rather than monotonic time, because deadlines (session expiry, message expiry,
/// will delay) are stored and must keep counting while the broker is stopped.
public struct BrokerInstant: Comparable, Hashable, Sendable, CustomStringConvertible {
    public var millisecondsSinceEpoch: Int64

    public init(millisecondsSinceEpoch: Int64) { self.millisecondsSinceEpoch = millisecondsSinceEpoch }

    public static func < (lhs: Self, rhs: Self) -> Bool { lhs.millisecondsSinceEpoch < rhs.millisecondsSinceEpoch }

    /// This instant plus a number of seconds, saturating instead of overflowing.
    public func adding(seconds: UInt32) -> BrokerInstant {
        let (sum, overflow) = millisecondsSinceEpoch.addingReportingOverflow(Int64(seconds) * 1000)
        return BrokerInstant(millisecondsSinceEpoch: overflow ? .max : sum)
    }

    /// Whole seconds from this instant until `later`, rounded up, never negative.
    public func seconds(until later: BrokerInstant) -> UInt32 {
        let milliseconds = later.millisecondsSinceEpoch - millisecondsSinceEpoch
        guard milliseconds > 0 else { return 0 }
        return UInt32(clamping: (milliseconds + 999) / 1000)
    }

    public var description: String { "\(millisecondsSinceEpoch)ms" }
}
