public import TernBrokerCore
public import TernStore

/// Everything an embedded or command-line broker is started with.
public struct BrokerOptions: Sendable {
    /// One address and port to accept MQTT connections on.
    public struct Listener: Sendable, Hashable {
        public var host: String
        public var port: Int
        public init(host: String, port: Int) {
            self.host = host
            self.port = port
        }
    }

    /// The listeners. Mosquitto 2's default with no configuration: port 1883 on loopback only.
    public var listeners: [Listener] = [Listener(host: "127.0.0.1", port: 1883), Listener(host: "::1", port: 1883)]
    /// The protocol limits and switches, with Mosquitto's names.
    public var broker = BrokerConfiguration()
    /// How long a new connection may take to complete its CONNECT, in seconds.
    public var connectTimeout: Int64 = 10
    /// `sys_interval`: seconds between `$SYS` updates; 0 turns them off.
    public var sysInterval: Int64 = 10
    /// MQTT 5 enhanced authentication methods offered to clients (MQTT 5.0 §4.12). A client that
    /// names another method is refused with 0x8C (Bad authentication method).
    public var authenticators: [any EnhancedAuthentication] = []
    /// `password_file`: the users allowed to connect, in mosquitto_passwd's format.
    public var passwordFile: PasswordFile?
    /// Where sessions with a non-zero Session Expiry Interval, their subscriptions, queued and
    /// in-flight messages, retained messages and wills are kept across restarts. `nil` keeps
    /// everything in memory only (`persistence false`). The broker loads it before it listens,
    /// writes every change to it, and closes it when it stops.
    public var store: (any TernStore)?

    public init() {}
}
