import Synchronization

/// Packet and byte counts across all connections, for `$SYS/broker/messages/...` and `bytes/...`.
/// Handlers add to them once per read burst and once per flush.
final class TrafficCounters: Sendable {
    let packetsReceived = Atomic<UInt64>(0)
    let packetsSent = Atomic<UInt64>(0)
    let bytesReceived = Atomic<UInt64>(0)
    let bytesSent = Atomic<UInt64>(0)
}
