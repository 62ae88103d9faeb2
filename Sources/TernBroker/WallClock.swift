public import TernBrokerCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

extension BrokerInstant {
    /// The current wall-clock time. Only the I/O layer reads the clock; the core is handed `now`.
    public static func now() -> BrokerInstant {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return BrokerInstant(millisecondsSinceEpoch: Int64(spec.tv_sec) * 1000 + Int64(spec.tv_nsec) / 1_000_000)
    }
}
