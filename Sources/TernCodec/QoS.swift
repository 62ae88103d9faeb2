/// The quality of service of a message (MQTT 5.0 §4.3).
public enum QoS: UInt8, Sendable, Hashable, CaseIterable, Comparable, CustomStringConvertible {
    /// At most once: fire and forget.
    case atMostOnce = 0
    /// At least once: acknowledged with PUBACK, may be delivered more than once.
    case atLeastOnce = 1
    /// Exactly once: the PUBREC/PUBREL/PUBCOMP handshake.
    case exactlyOnce = 2

    public static func < (lhs: QoS, rhs: QoS) -> Bool { lhs.rawValue < rhs.rawValue }

    public var description: String { "QoS \(rawValue)" }
}
