public import TernCodec

/// A failure of an ``MQTTClient`` operation. When the broker refused something, ``reasonCode``
/// and ``reasonString`` carry its answer.
public struct MQTTClientError: Error, Hashable, Sendable, CustomStringConvertible {
    public enum Code: Sendable, Hashable {
        /// CONNACK refused the connection.
        case connectionRefused
        /// No CONNACK, SUBACK or UNSUBACK in time, or the TCP connection could not be made.
        case timeout
        /// The operation needs a connection and there is none.
        case notConnected
        /// The connection closed before the operation finished.
        case connectionClosed
        /// The server no longer had the session, and the message was dropped (see `SessionLostPolicy`).
        case sessionLost
        /// The server refused a subscription or publication.
        case refused
        /// The packet is larger than the server's Maximum Packet Size.
        case packetTooLarge
        /// The offline queue is full.
        case offlineQueueFull
        /// The server sent DISCONNECT.
        case disconnectedByServer
        /// The client was shut down with ``MQTTClient/disconnect(reason:)``.
        case clientDisconnected
        /// A configuration value cannot be used, such as a malformed broker URL.
        case invalidArgument
    }

    public var code: Code
    public var reasonCode: ReasonCode?
    public var reasonString: String?

    public init(_ code: Code, reasonCode: ReasonCode? = nil, reasonString: String? = nil) {
        self.code = code
        self.reasonCode = reasonCode
        self.reasonString = reasonString
    }

    public var description: String {
        var text = "\(code)"
        if let reasonCode { text += " (\(reasonCode))" }
        if let reasonString { text += ": \(reasonString)" }
        return text
    }
}
