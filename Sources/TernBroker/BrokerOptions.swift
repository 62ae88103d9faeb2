public import TernBrokerCore
public import TernStore

/// Everything an embedded or command-line broker is started with.
public struct BrokerOptions: Sendable {
    /// One place to accept MQTT connections: a TCP address and port or a Unix socket, speaking
    /// MQTT or MQTT over WebSockets, with or without TLS (Mosquitto's `listener` block).
    public struct Listener: Sendable, Hashable {
        /// What the bytes on the connection carry.
        public enum Transport: String, Sendable, Hashable {
            /// MQTT packets directly (`protocol mqtt`).
            case mqtt
            /// MQTT packets in binary WebSocket frames, subprotocol `mqtt` (`protocol websockets`).
            case webSockets = "websockets"
        }

        /// Every address, IPv6 and IPv4 alike (`listener PORT` without an address): the IPv6
        /// wildcard, which Linux shares with IPv4 unless `net.ipv6.bindv6only` is set. Where IPv6 is
        /// not available at all, the broker listens on every IPv4 address instead.
        public static let allAddresses = "::"

        public var host: String
        public var port: Int
        /// A Unix socket path to listen on instead of `host` and `port`.
        public var unixSocketPath: String?
        public var transport: Transport = .mqtt
        /// TLS on this listener, when set.
        public var tls: TLSSettings?
        /// This listener's own `allow_anonymous`, `password_file` and `acl_file`
        /// (`per_listener_settings true`); `nil` uses the broker-wide ones.
        public var security: ListenerSecurity?
        /// `max_connections`: connections open at once on this listener; one more is closed as it
        /// is accepted. -1 (the default) is no limit.
        public var maxConnections: Int = -1
        /// `mount_point`: a prefix for every topic of this listener's clients, taken off again in
        /// what they are sent; `nil` (the default) is none.
        public var mountPoint: String?

        public init(
            host: String,
            port: Int,
            transport: Transport = .mqtt,
            tls: TLSSettings? = nil,
            security: ListenerSecurity? = nil
        ) {
            self.host = host
            self.port = port
            self.transport = transport
            self.tls = tls
            self.security = security
        }

        /// A listener on a Unix socket (Mosquitto's `listener 0 /path/to/socket`).
        public init(unixSocketPath: String, transport: Transport = .mqtt, security: ListenerSecurity? = nil) {
            self.init(host: "", port: 0, transport: transport, security: security)
            self.unixSocketPath = unixSocketPath
        }

        /// How logs name it.
        public var name: String {
            let scheme = (transport == .webSockets ? "ws" : "mqtt") + (tls == nil ? "" : "s")
            if let unixSocketPath { return "\(scheme) unix:\(unixSocketPath)" }
            return "\(scheme) \(host):\(port)"
        }
    }

    /// An HTTP listener for `/metrics` (Prometheus' text format), `/health` and `/ready`: Tern's
    /// own `metrics_listener PORT [ADDRESS]`, on loopback unless an address is given.
    public struct MetricsListener: Sendable, Hashable {
        public var host: String
        public var port: Int

        public init(host: String = "127.0.0.1", port: Int) {
            self.host = host
            self.port = port
        }
    }

    /// The metrics and health listener; none by default.
    public var metricsListener: MetricsListener?

    /// `memory_limit`: above this many bytes of resident memory, new connections are refused
    /// (CONNACK 0x97, 3.1.1: 3) and new PUBLISH packets are not taken in (PUBACK/PUBREC 0x97 on
    /// MQTT 5). 0 (the default) is no limit. Checked every ``memoryCheckInterval``.
    public var memoryLimit: Int = 0
    public var memoryCheckInterval: Duration = .milliseconds(100)
    /// How much memory the broker uses now, for ``memoryLimit``: the process's resident set by
    /// default. Tests replace it.
    public var memoryUsage: @Sendable () -> Int = { ProcessFigures.read()?.residentBytes ?? 0 }

    /// The listeners. Mosquitto 2's default with no configuration: port 1883 on loopback only.
    public var listeners: [Listener] = [Listener(host: "127.0.0.1", port: 1883), Listener(host: "::1", port: 1883)]
    /// The protocol limits and switches, with Mosquitto's names.
    public var broker = BrokerConfiguration()
    /// How long a new connection may take to complete its TLS handshake, WebSocket upgrade and
    /// CONNECT, in seconds.
    public var connectTimeout: Int64 = 10
    /// `sys_interval`: seconds between `$SYS` updates; 0 turns them off.
    public var sysInterval: Int64 = 10
    /// MQTT 5 enhanced authentication methods offered to clients (MQTT 5.0 §4.12). A client that
    /// names another method is refused with 0x8C (Bad authentication method).
    public var authenticators: [any EnhancedAuthentication] = []
    /// `password_file`: the users allowed to connect, in mosquitto_passwd's format.
    public var passwordFile: PasswordFile?
    /// Where ``passwordFile`` was read from, so that ``MQTTBroker/reloadSecurity()`` (SIGHUP) can
    /// read it again.
    public var passwordFilePath: String?
    /// `acl_file`: who may publish, subscribe and receive where. `nil` allows everything.
    public var accessControl: AccessControlList?
    /// Where ``accessControl`` was read from, for ``MQTTBroker/reloadSecurity()``.
    public var accessControlPath: String?
    /// Where sessions with a non-zero Session Expiry Interval, their subscriptions, queued and
    /// in-flight messages, retained messages and wills are kept across restarts. `nil` keeps
    /// everything in memory only (`persistence false`). The broker loads it before it listens,
    /// writes every change to it, and closes it when it stops.
    public var store: (any TernStore)?

    /// The cluster this broker is a node of (`cluster_store`, `cluster_node`), or `nil` for a
    /// broker on its own. Its ``store`` must then be the cluster's (a ``TernStore`` on the same
    /// database, serving this node): the node keeps only its connected clients' sessions in
    /// memory, and finds the others there.
    public var cluster: (any ClusterTransport)?

    public init() {}
}

/// One listener's own authentication and authorization (`per_listener_settings true`).
public struct ListenerSecurity: Sendable, Hashable {
    /// `allow_anonymous`; Mosquitto 2's default for a configured listener is `false`.
    public var allowAnonymous: Bool = false
    public var passwordFile: PasswordFile?
    public var passwordFilePath: String?
    public var accessControl: AccessControlList?
    public var accessControlPath: String?

    public init(
        allowAnonymous: Bool = false,
        passwordFile: PasswordFile? = nil,
        accessControl: AccessControlList? = nil
    ) {
        self.allowAnonymous = allowAnonymous
        self.passwordFile = passwordFile
        self.accessControl = accessControl
    }
}
