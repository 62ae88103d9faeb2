public import NIOCore

/// An MQTT 5 enhanced authentication method the broker offers (MQTT 5.0 §4.12), such as a
/// SCRAM or Kerberos implementation supplied by the program that embeds the broker.
///
/// A client names the method in CONNECT's Authentication Method. The broker creates one
/// ``AuthenticationExchange`` for that connection and feeds it the Authentication Data of CONNECT
/// and of each AUTH packet until it succeeds or fails. Re-authentication (AUTH 0x19) starts a new
/// exchange on the same connection.
public protocol EnhancedAuthentication: Sendable {
    /// The Authentication Method name clients use, e.g. `SCRAM-SHA-256`.
    var method: String { get }
    /// A new exchange for one client.
    func makeExchange(clientID: String) -> any AuthenticationExchange
}

/// The state of one authentication conversation with one client.
public protocol AuthenticationExchange: Sendable {
    /// Takes the client's Authentication Data and decides the next step.
    mutating func step(_ data: ByteBuffer?) -> AuthenticationStep
}

/// What an ``AuthenticationExchange`` decides after each message from the client.
public enum AuthenticationStep: Sendable, Hashable {
    /// The client is authenticated; the data, if any, goes back in CONNACK or AUTH.
    case success(ByteBuffer?)
    /// Another round: the data goes to the client in AUTH 0x18 (Continue authentication).
    case challenge(ByteBuffer?)
    /// The client is refused with 0x87 (Not authorized).
    case failure
}
