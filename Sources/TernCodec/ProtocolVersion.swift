/// The MQTT protocol level a connection speaks, as carried in the CONNECT packet.
///
/// The level decides the wire format of every later packet on the connection: version 5 adds
/// reason codes and properties to most packets, 3.1 and 3.1.1 have neither.
public enum ProtocolVersion: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// MQTT 3.1, protocol name `MQIsdp`.
    case v3_1 = 3
    /// MQTT 3.1.1, protocol name `MQTT`.
    case v3_1_1 = 4
    /// MQTT 5.0, protocol name `MQTT`.
    case v5 = 5

    /// The protocol name the CONNECT packet carries for this level (MQTT 5.0 §3.1.2.1, MQTT 3.1 §3.1).
    public var protocolName: String {
        switch self {
        case .v3_1: return "MQIsdp"
        case .v3_1_1, .v5: return "MQTT"
        }
    }

    /// Whether packets on this level carry reason codes and properties.
    @inlinable
    public var hasProperties: Bool { self == .v5 }

    public var description: String {
        switch self {
        case .v3_1: return "3.1"
        case .v3_1_1: return "3.1.1"
        case .v5: return "5.0"
        }
    }
}
