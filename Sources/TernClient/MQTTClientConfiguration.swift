public import NIOCore
public import NIOSSL
public import TernCodec

/// How long the broker keeps the session after the connection closes (MQTT 5.0 §3.1.2.11.2).
public enum SessionExpiry: Sendable, Hashable {
    /// The session ends with the connection (interval 0, the MQTT 5 default).
    case none
    /// The session is kept this many seconds after disconnect.
    case seconds(UInt32)
    /// The session never expires (0xFFFFFFFF).
    case never

    /// The Session Expiry Interval sent on the wire.
    public var interval: UInt32 {
        switch self {
        case .none: return 0
        case .seconds(let seconds): return seconds
        case .never: return .max
        }
    }

    public init(interval: UInt32) {
        switch interval {
        case 0: self = .none
        case .max: self = .never
        default: self = .seconds(interval)
        }
    }
}

/// Every CONNECT property of MQTT 5 (§3.1.2.11), as one value, in the spirit of rumqttc's
/// `ConnectProperties`.
public struct ConnectProperties: Sendable, Hashable {
    public var sessionExpiryInterval: UInt32?
    /// How many QoS 1/2 messages the client accepts unacknowledged.
    public var receiveMaximum: UInt16?
    /// The largest packet the client accepts.
    public var maximumPacketSize: UInt32?
    /// The highest Topic Alias the client accepts from the server.
    public var topicAliasMaximum: UInt16?
    public var requestResponseInformation: Bool?
    public var requestProblemInformation: Bool?
    public var userProperties: [(name: String, value: String)] = []
    public var authenticationMethod: String?
    public var authenticationData: ByteBuffer?

    public init() {}

    public static func == (lhs: ConnectProperties, rhs: ConnectProperties) -> Bool {
        (try? lhs.properties()) == (try? rhs.properties())
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(try? properties()) }

    /// The wire form.
    func properties() throws(TernError) -> Properties {
        var properties = Properties()
        properties.sessionExpiryInterval = sessionExpiryInterval
        properties.receiveMaximum = receiveMaximum
        properties.maximumPacketSize = maximumPacketSize
        properties.topicAliasMaximum = topicAliasMaximum
        if let requestResponseInformation {
            try properties.append(.requestResponseInformation(requestResponseInformation))
        }
        if let requestProblemInformation {
            try properties.append(.requestProblemInformation(requestProblemInformation))
        }
        for (name, value) in userProperties { try properties.append(.userProperty(name: name, value: value)) }
        if let authenticationMethod { try properties.append(.authenticationMethod(authenticationMethod)) }
        if let authenticationData { try properties.append(.authenticationData(authenticationData)) }
        return properties
    }
}

/// Everything an ``MQTTClient`` needs to connect and to keep its session.
///
/// Asking for a persistent session is one line:
///
/// ```swift
/// var configuration = MQTTClientConfiguration(clientID: "sensor-17")
/// configuration.sessionExpiry = .never
/// ```
///
/// ``sessionExpiry`` and ``connectProperties``'s `sessionExpiryInterval` are the same value seen
/// two ways: setting either sets both, so whichever is set last wins.
public struct MQTTClientConfiguration: Sendable {
    public var host: String
    public var port: Int
    /// More servers of the same service (the nodes of a Tern cluster, say), tried in turn after
    /// ``host``:``port`` when a connection cannot be made or is refused: the client connects to
    /// the first that accepts, and after losing a connection starts again from the one it had.
    /// TLS and WebSocket settings apply to each.
    public var alternateServers: [ServerAddress] = []
    public var clientID: String
    public var protocolVersion: ProtocolVersion = .v5
    /// Clean Start (5.0) or Clean Session (3.1.1) on the first connection. Automatic reconnects of
    /// a session that outlives its connection use Clean Start 0, so that the session resumes.
    public var cleanStart: Bool = true
    /// Keep alive in seconds; 0 turns it off.
    public var keepAlive: UInt16 = 60
    public var connectProperties = ConnectProperties()
    public var username: String?
    public var password: ByteBuffer?
    public var will: Connect.Will?
    /// How long to wait for the TCP connection and CONNACK.
    public var connectTimeout: Duration = .seconds(10)
    /// Reconnect automatically after the connection drops; `nil` turns it off.
    public var reconnect: ReconnectPolicy? = ReconnectPolicy()
    /// What happens to unfinished outbound messages when the server no longer has the session.
    public var sessionLostPolicy: ClientSessionState.SessionLostPolicy = .dropInflight
    /// Publishes made while offline wait in a queue of at most this many; more fail at once.
    public var offlineQueueLimit: Int = 1000
    /// When received QoS 1/2 messages are acknowledged.
    public var acknowledgement: Acknowledgement = .automatic
    /// Where in-flight state is kept beyond the client itself. By default nowhere: the client
    /// keeps it across reconnects, and a restart of the process loses it. `FileClientStore` keeps
    /// it across restarts; `InMemoryClientStore` hands it to another client in the same process
    /// (at the cost of a copy of the in-flight list on every change).
    public var store: any ClientStore = TransientClientStore()
    /// TLS for the connection (`mqtts://`, `wss://`); `nil` connects in the clear. Start from
    /// `TLSConfiguration.makeClientConfiguration()` and set `trustRoots` (a private CA, like
    /// mosquitto_pub's `--cafile`), `certificateChain` and `privateKey` (a client certificate),
    /// or `certificateVerification = .none` (`--insecure`).
    public var tls: TLSConfiguration?
    /// The name the server certificate is checked against and sent as SNI; `host` by default.
    public var tlsServerName: String?
    /// Announce the client as a bridge from another broker in a 3.1/3.1.1 CONNECT (the protocol
    /// level's high bit, Mosquitto's `try_private`): a broker that knows it does not send the
    /// client the messages it published. MQTT 5 bridges subscribe with No Local instead.
    public var isBridge = false
    /// The HTTP path of MQTT over WebSocket (`ws://`, `wss://`), usually `/mqtt`; `nil` speaks
    /// MQTT over TCP.
    public var webSocketPath: String?

    public init(host: String = "127.0.0.1", port: Int = 1883, clientID: String) {
        self.host = host
        self.port = port
        self.clientID = clientID
    }

    /// A configuration for a broker URL: `mqtt://host[:1883]`, `mqtts://host[:8883]`,
    /// `ws://host[:80][/path]` or `wss://host[:443][/path]`. The WebSocket path defaults to
    /// `/mqtt`; TLS starts from the system's trust roots.
    public init(url: String, clientID: String) throws(MQTTClientError) {
        let parts = url.split(separator: "://", maxSplits: 1, omittingEmptySubsequences: false)
        guard parts.count == 2 else {
            throw MQTTClientError(
                .invalidArgument,
                reasonString: "'\(url)' is not a broker URL such as mqtt://host:1883"
            )
        }
        let scheme = parts[0].lowercased()
        var rest = parts[1]
        var path: Substring = ""
        if let slash = rest.firstIndex(of: "/") {
            path = rest[slash...]
            rest = rest[..<slash]
        }
        let defaults: [String: Int] = ["mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883, "ws": 80, "wss": 443]
        guard let defaultPort = defaults[scheme] else {
            throw MQTTClientError(
                .invalidArgument,
                reasonString: "unknown scheme '\(scheme)': use mqtt, mqtts, ws or wss"
            )
        }
        var host = rest
        var port = defaultPort
        if rest.hasPrefix("["), let close = rest.firstIndex(of: "]") {  // [::1]:1883
            host = rest[rest.index(after: rest.startIndex)..<close]
            let after = rest[rest.index(after: close)...]
            if after.hasPrefix(":") { port = Int(after.dropFirst()) ?? -1 }
        } else if let colon = rest.lastIndex(of: ":") {
            host = rest[..<colon]
            port = Int(rest[rest.index(after: colon)...]) ?? -1
        }
        guard !host.isEmpty, (1...65535).contains(port) else {
            throw MQTTClientError(.invalidArgument, reasonString: "'\(url)' has no valid host and port")
        }
        self.init(host: String(host), port: port, clientID: clientID)
        if scheme == "mqtts" || scheme == "ssl" || scheme == "wss" { tls = .makeClientConfiguration() }
        if scheme == "ws" || scheme == "wss" { webSocketPath = path.isEmpty ? "/mqtt" : String(path) }
    }

    /// Every server the client may connect to, in order: ``host``:``port``, then
    /// ``alternateServers``.
    public var servers: [ServerAddress] { [ServerAddress(host: host, port: port)] + alternateServers }

    /// A configuration for several broker URLs of one service, tried in turn (see
    /// ``alternateServers``); TLS and the WebSocket path come from the first.
    public init(urls: [String], clientID: String) throws(MQTTClientError) {
        guard let first = urls.first else {
            throw MQTTClientError(.invalidArgument, reasonString: "no broker URL given")
        }
        try self.init(url: first, clientID: clientID)
        for url in urls.dropFirst() {
            let other = try MQTTClientConfiguration(url: url, clientID: clientID)
            alternateServers.append(ServerAddress(host: other.host, port: other.port))
        }
    }

    /// The Session Expiry Interval, spelled as a Swift value.
    public var sessionExpiry: SessionExpiry {
        get { SessionExpiry(interval: connectProperties.sessionExpiryInterval ?? 0) }
        set { connectProperties.sessionExpiryInterval = newValue == .none ? nil : newValue.interval }
    }

    /// When the client acknowledges a received QoS 1/2 message.
    public enum Acknowledgement: Sendable, Hashable {
        /// As soon as it arrives.
        case automatic
        /// When the application calls ``MQTTMessage/acknowledge()``, after it has processed it.
        case manual
    }

    /// Exponential backoff with jitter between reconnection attempts.
    public struct ReconnectPolicy: Sendable, Hashable {
        public var initialDelay: Duration = .milliseconds(100)
        public var maximumDelay: Duration = .seconds(30)
        public var multiplier: Double = 2
        /// Each delay is drawn from `delay × (1 − jitter) … delay`.
        public var jitter: Double = 0.5

        public init() {}

        /// The delay before attempt `attempt` (0-based), without jitter.
        public func delay(attempt: Int) -> Duration {
            let seconds = min(maximumDelay.inSeconds, initialDelay.inSeconds * pow(multiplier, Double(attempt)))
            return .milliseconds(Int64(seconds * 1000))
        }

        /// The delay before attempt `attempt`, with jitter drawn from `generator`.
        public func jitteredDelay(attempt: Int, using generator: inout some RandomNumberGenerator) -> Duration {
            let full = delay(attempt: attempt)
            let factor = 1 - Double.random(in: 0...jitter, using: &generator)
            return full * factor
        }
    }
}

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
