public import TernCodec

/// One bridge to another broker: Mosquitto's `connection NAME` block, with its option names.
public struct BridgeConfiguration: Sendable, Hashable {
    /// `connection NAME`.
    public var name: String
    /// `address host[:port] [host[:port] ...]`: tried in order; the first is the main one.
    public var addresses: [Address]
    /// `topic` lines.
    public var topics: [Topic] = []
    /// `bridge_protocol_version mqttv311|mqttv50`; Mosquitto's default is mqttv311.
    public var protocolVersion: ProtocolVersion = .v3_1_1
    /// `remote_clientid`; Mosquitto's default is `HOSTNAME.NAME`.
    public var remoteClientID: String
    /// `local_clientid`: the bridge's session in this broker; `local.` + the remote one by default.
    public var localClientID: String
    public var remoteUsername: String?
    public var remotePassword: String?
    /// `cleansession`: false (the default) keeps the bridge's session on the remote broker, so
    /// that messages for it wait there while the bridge is down.
    public var cleanSession = false
    /// `keepalive_interval`, seconds.
    public var keepAlive: UInt16 = 60
    /// `restart_timeout BASE [CAP]`: seconds before reconnecting, growing to CAP.
    public var restartBase: Duration = .seconds(5)
    public var restartCap: Duration = .seconds(30)
    /// `bridge_cafile`, `bridge_certfile`, `bridge_keyfile`, `bridge_insecure`: TLS to the remote.
    public var caFile: String?
    public var certificateFile: String?
    public var keyFile: String?
    public var insecure = false
    /// `notifications`: publish 1/0 on ``notificationTopic`` (retained) when the bridge connects
    /// and disconnects, locally and on the remote broker (through a will there).
    public var notifications = true
    /// `notification_topic`; `$SYS/broker/connection/REMOTE_CLIENTID/state` by default.
    public var notificationTopic: String?
    /// `try_private`: announce the bridge to a 3.1.1 remote (Mosquitto's bridge bit), so that it
    /// does not send back what the bridge published.
    public var tryPrivate = true
    /// `bridge_max_packet_size`: the largest packet accepted from the remote (0: no limit).
    public var maximumPacketSize: UInt32 = 0

    public init(name: String, addresses: [Address], hostname: String = "tern") {
        self.name = name
        self.addresses = addresses
        self.remoteClientID = "\(hostname).\(name)"
        self.localClientID = "local.\(hostname).\(name)"
    }

    /// The topic the state notifications go to.
    public var stateTopic: String { notificationTopic ?? "$SYS/broker/connection/\(remoteClientID)/state" }

    /// A remote broker's address.
    public struct Address: Sendable, Hashable, CustomStringConvertible {
        public var host: String
        public var port: Int

        public init(host: String, port: Int = 1883) {
            self.host = host
            self.port = port
        }

        public var description: String { "\(host):\(port)" }
    }

    /// Which way a topic goes.
    public enum Direction: String, Sendable, Hashable {
        /// From this broker to the remote one.
        case out
        /// From the remote broker to this one.
        case `in`
        case both

        var goesOut: Bool { self != .in }
        var comesIn: Bool { self != .out }
    }

    /// `topic PATTERN [in|out|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]`.
    ///
    /// A message on `LOCAL_PREFIX` + a topic matching `PATTERN` goes out as `REMOTE_PREFIX` + that
    /// topic, and the other way round, as in Mosquitto.
    public struct Topic: Sendable, Hashable {
        public var pattern: String
        public var direction: Direction = .out
        public var qos: QoS = .atMostOnce
        public var localPrefix = ""
        public var remotePrefix = ""

        public init(
            pattern: String,
            direction: Direction = .out,
            qos: QoS = .atMostOnce,
            localPrefix: String = "",
            remotePrefix: String = ""
        ) {
            self.pattern = pattern
            self.direction = direction
            self.qos = qos
            self.localPrefix = localPrefix
            self.remotePrefix = remotePrefix
        }

        /// What the bridge subscribes to in this broker.
        public var localFilter: String { localPrefix + pattern }
        /// What the bridge subscribes to on the remote broker.
        public var remoteFilter: String { remotePrefix + pattern }

        /// The remote topic of a message from this broker.
        public func remoteTopic(forLocal topic: String) -> String {
            remotePrefix + (topic.hasPrefix(localPrefix) ? String(topic.dropFirst(localPrefix.count)) : topic)
        }

        /// The local topic of a message from the remote broker.
        public func localTopic(forRemote topic: String) -> String {
            localPrefix + (topic.hasPrefix(remotePrefix) ? String(topic.dropFirst(remotePrefix.count)) : topic)
        }
    }
}
