/// An error that carries the MQTT reason code a peer must be told and a sentence a person understands.
///
/// Every failure to decode a packet is a `TernError`: the broker sends ``reasonCode`` in its
/// DISCONNECT (or CONNACK) and closes the connection; the ``reason`` goes to the log. On MQTT 3.1.1
/// connections, which have no reason codes, the code still tells the caller which rule was broken.
public struct TernError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The MQTT 5 reason code that describes the failure.
    public var reasonCode: ReasonCode
    /// What went wrong, for logs and error messages.
    public var reason: String

    /// Creates an error with a reason code and a human-readable reason.
    public init(_ reasonCode: ReasonCode, _ reason: String) {
        self.reasonCode = reasonCode
        self.reason = reason
    }

    /// The packet does not follow the encoding rules (0x81).
    public static func malformedPacket(_ reason: String) -> TernError { TernError(.malformedPacket, reason) }
    /// The packet is well formed but breaks a protocol rule (0x82).
    public static func protocolError(_ reason: String) -> TernError { TernError(.protocolError, reason) }

    public var description: String { "\(reasonCode): \(reason)" }
}
