import Foundation
public import TernBridge
public import TernBroker
import TernBrokerCore
import TernCodec

/// Reads `mosquitto.conf`-style configuration: one `option value...` per line, `#` comments.
///
/// Options keep Mosquitto's meaning. An option Tern does not know is a warning naming the file and
/// line; a value that does not fit its option stops start-up with the file, the line and what was
/// expected.
public struct MosquittoConfiguration: Sendable {
    /// Where logs go, from `log_dest`.
    public enum LogDestination: Sendable, Hashable {
        case stdout, stderr
        case file(String)
    }

    public var options = BrokerOptions()
    public var warnings: [String] = []
    public var logDestinations: [LogDestination] = []
    /// `log_type` values, as written.
    public var logTypes: [String] = []
    /// `persistence` and the options that go with it.
    public var persistence = PersistenceSettings()
    /// `cluster_store` and the options that go with it.
    public var cluster = ClusterSettings()

    /// `file:line` of `cluster_store`, for a problem found with it after parsing.
    public var clusterOrigin: String { "\(cluster.storeFile):\(cluster.storeLine)" }
    /// The `connection` blocks: bridges to other brokers.
    public var bridges: [BridgeConfiguration] = []
    /// The file and line that made each of `options.listeners`, in the same order (line 0: the
    /// built-in default), so that a check of a listener's files can say where it was configured.
    public var listenerOrigins: [(file: String, line: Int)] = []

    public init() {}

    /// Parses configuration text. `file` names it in errors and warnings.
    public static func parse(_ text: String, file: String) throws(ConfigurationError) -> MosquittoConfiguration {
        var parser = Parser(file: file)
        var lines: [(number: Int, words: [String])] = []
        var lineNumber = 0
        for rawLine in text.split(separator: "\n", omittingEmptySubsequences: false) {
            lineNumber += 1
            let line = rawLine.trimmingSpaces
            if line.isEmpty || line.hasPrefix("#") { continue }
            lines.append((lineNumber, line.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)))
        }
        // Read first, wherever it is: it decides where allow_anonymous, password_file and acl_file go.
        for (number, words) in lines where words[0] == "per_listener_settings" {
            parser.perListenerSettings = try parser.boolean(words[0], Array(words.dropFirst()), number)
        }
        for (number, words) in lines {
            try parser.apply(option: words[0], arguments: Array(words.dropFirst()), line: number)
        }
        return try parser.finish()
    }

    struct Parser {
        let file: String
        var result = MosquittoConfiguration()
        /// The listener made by `port` and `bind_address`, and what the lines before the first
        /// `listener` set for it.
        var defaultListener = ListenerDraft(line: 0)
        var listeners: [ListenerDraft] = []
        var defaultPort: Int?
        var allowAnonymousSet = false
        var perListenerSettings = false
        /// The `connection` blocks so far, with the line each began on; bridge options apply to the last.
        var bridges: [(configuration: BridgeConfiguration, line: Int, localClientIDSet: Bool)] = []

        /// Bridge options Tern does not have yet: accepted with a warning.
        static let unsupportedBridgeOptions: Set<String> = [
            "local_cleansession", "idle_timeout", "bridge_capath", "bridge_alpn", "bridge_identity", "bridge_psk",
            "bridge_require_ocsp", "bridge_tls_version", "bridge_attempt_unsubscribe", "bridge_outgoing_retain",
            "bridge_bind_address", "bridge_reload_type", "notifications_local_only", "round_robin", "threshold",
            "bridge_receive_maximum", "bridge_session_expiry_interval", "bridge_max_topic_alias", "local_username",
            "local_password",
        ]

        /// The listener that listener-specific lines apply to: the last `listener` so far, or the
        /// default one before the first.
        var current: ListenerDraft {
            get { listeners.last ?? defaultListener }
            set {
                if listeners.isEmpty { defaultListener = newValue } else { listeners[listeners.count - 1] = newValue }
            }
        }

        init(file: String) { self.file = file }

        func error(_ line: Int, _ reason: String) -> ConfigurationError {
            ConfigurationError(file: file, line: line, reason: reason)
        }

        func one(_ option: String, _ arguments: [String], _ line: Int) throws(ConfigurationError) -> String {
            guard arguments.count == 1 else { throw error(line, "\(option) takes exactly one value") }
            return arguments[0]
        }

        func integer(_ option: String, _ arguments: [String], _ line: Int, in range: ClosedRange<Int>)
            throws(ConfigurationError) -> Int
        {
            let text = try one(option, arguments, line)
            guard let value = Int(text), range.contains(value) else {
                throw error(
                    line,
                    "\(option) expects a whole number from \(range.lowerBound) to \(range.upperBound), not '\(text)'"
                )
            }
            return value
        }

        func boolean(_ option: String, _ arguments: [String], _ line: Int) throws(ConfigurationError) -> Bool {
            switch try one(option, arguments, line) {
            case "true": return true
            case "false": return false
            case let other: throw error(line, "\(option) expects true or false, not '\(other)'")
            }
        }

        func port(_ text: String, _ line: Int) throws(ConfigurationError) -> Int {
            guard let value = Int(text), (0...65535).contains(value) else {
                throw error(line, "a port must be a number from 0 to 65535, not '\(text)'")
            }
            return value
        }

        /// Reads a file an option names; a bad line in it is reported with its own file and line
        /// after this option's.
        func load<Value>(_ option: String, _ path: String, _ line: Int, kind: String, _ read: (String) throws -> Value)
            throws(ConfigurationError) -> Value
        {
            do {
                return try read(path)
            } catch  where error is PasswordFile.ParseError || error is AccessControlList.ParseError {
                throw self.error(line, "\(option) \(path) is not \(kind): \(error)")
            } catch {
                throw self.error(line, "cannot read \(option) \(path): \(error.localizedDescription)")
            }
        }

        /// Puts a file's contents and path on the current listener under `per_listener_settings
        /// true`, otherwise on the whole broker.
        mutating func assign<Value>(
            _ value: Value,
            path: String,
            listener: (WritableKeyPath<ListenerSecurity, Value?>, WritableKeyPath<ListenerSecurity, String?>),
            broker: (WritableKeyPath<BrokerOptions, Value?>, WritableKeyPath<BrokerOptions, String?>)
        ) {
            if perListenerSettings {
                current.security[keyPath: listener.0] = value
                current.security[keyPath: listener.1] = path
            } else {
                result.options[keyPath: broker.0] = value
                result.options[keyPath: broker.1] = path
            }
        }

        /// Mosquitto's durations: a number and one of h, d, w, m (months) or y; seconds when bare.
        func duration(_ option: String, _ arguments: [String], _ line: Int) throws(ConfigurationError) -> UInt32 {
            let text = try one(option, arguments, line)
            let units: [Character: UInt64] = ["h": 3600, "d": 86_400, "w": 604_800, "m": 2_592_000, "y": 31_536_000]
            var digits = Substring(text)
            var multiplier: UInt64 = 1
            if let last = text.last, let unit = units[last] {
                multiplier = unit
                digits = text.dropLast()
            }
            guard let count = UInt64(digits), count > 0 else {
                throw error(line, "\(option) expects a duration such as 3600, 12h, 7d, 2w, 6m or 1y, not '\(text)'")
            }
            return UInt32(clamping: count * multiplier)
        }

        mutating func apply(option: String, arguments: [String], line: Int) throws(ConfigurationError) {
            var broker = result.options.broker
            defer { result.options.broker = broker }
            switch option {
            case "listener":
                guard (1...2).contains(arguments.count) else {
                    throw error(line, "listener expects a port and an optional address")
                }
                let port = try port(arguments[0], line)
                var draft = ListenerDraft(line: line)
                if arguments.count == 2, port == 0, arguments[1].contains("/") {
                    draft.listener = BrokerOptions.Listener(unixSocketPath: arguments[1])
                } else {
                    draft.listener = BrokerOptions.Listener(
                        host: arguments.count == 2 ? arguments[1] : BrokerOptions.Listener.allAddresses,
                        port: port
                    )
                }
                listeners.append(draft)
            case "metrics_listener":
                guard (1...2).contains(arguments.count) else {
                    throw error(line, "metrics_listener expects a port and an optional address")
                }
                result.options.metricsListener = BrokerOptions.MetricsListener(
                    host: arguments.count == 2 ? arguments[1] : "127.0.0.1",
                    port: try port(arguments[0], line)
                )
            case "port":
                defaultPort = try port(try one(option, arguments, line), line)
                defaultListener.line = line
            case "bind_address":
                defaultListener.listener.host = try one(option, arguments, line)
            case "per_listener_settings":
                break  // read before every other line
            case "protocol":
                switch try one(option, arguments, line) {
                case "mqtt": current.listener.transport = .mqtt
                case "websockets": current.listener.transport = .webSockets
                case let other: throw error(line, "protocol expects mqtt or websockets, not '\(other)'")
                }
            case "certfile", "keyfile", "cafile", "capath":
                let path = try one(option, arguments, line)
                guard FileManager.default.isReadableFile(atPath: path) else {
                    throw error(line, "\(option) \(path) cannot be read")
                }
                current.tls[option] = (path, line)
            case "ciphers", "tls_version":
                let value = try one(option, arguments, line)
                if option == "tls_version", TLSSettings.Version(rawValue: value) == nil {
                    throw error(line, "tls_version expects tlsv1.3, tlsv1.2 or tlsv1.1, not '\(value)'")
                }
                current.tls[option] = (value, line)
            case "require_certificate", "use_identity_as_username":
                current.tls[option] = (String(try boolean(option, arguments, line)), line)
            case "allow_anonymous":
                let allow = try boolean(option, arguments, line)
                if perListenerSettings {
                    current.security.allowAnonymous = allow
                } else {
                    broker.allowAnonymous = allow
                    allowAnonymousSet = true
                }
            case "max_inflight_messages":
                let value = try integer(option, arguments, line, in: 0...65535)
                broker.maxInflightMessages = value == 0 ? 65535 : value
            case "max_queued_messages":
                broker.maxQueuedMessages = try integer(option, arguments, line, in: 0...Int(Int32.max))
            case "max_queued_bytes":
                broker.maxQueuedBytes = try integer(option, arguments, line, in: 0...Int(Int32.max))
            case "max_packet_size":
                broker.maxPacketSize = try integer(
                    option,
                    arguments,
                    line,
                    in: 0...MQTTPacketDecoder.protocolMaximumPacketSize
                )
                if broker.maxPacketSize > 0, broker.maxPacketSize < 20 {
                    throw error(line, "max_packet_size must be 0 or at least 20 bytes")
                }
            case "message_size_limit":
                broker.messageSizeLimit = try integer(option, arguments, line, in: 0...268_435_455)
            case "max_keepalive":
                broker.maxKeepalive = UInt16(try integer(option, arguments, line, in: 0...65535))
            case "retain_available":
                broker.retainAvailable = try boolean(option, arguments, line)
            case "max_qos":
                broker.maxQoS = QoS(rawValue: UInt8(try integer(option, arguments, line, in: 0...2)))!
            case "max_topic_alias":
                broker.maxTopicAlias = UInt16(try integer(option, arguments, line, in: 0...65535))
            case "allow_zero_length_clientid":
                broker.allowZeroLengthClientID = try boolean(option, arguments, line)
            case "auto_id_prefix":
                broker.autoIDPrefix = try one(option, arguments, line)
            case "queue_qos0_messages":
                broker.queueQoS0Messages = try boolean(option, arguments, line)
            case "persistent_client_expiration":
                broker.persistentClientExpiration = try duration(option, arguments, line)
            case "sys_interval":
                result.options.sysInterval = Int64(try integer(option, arguments, line, in: 0...Int(Int32.max)))
            case "log_type":
                result.logTypes.append(try one(option, arguments, line))
            case "log_dest":
                guard let kind = arguments.first else {
                    throw error(line, "log_dest expects stdout, stderr or file PATH")
                }
                switch kind {
                case "stdout": result.logDestinations.append(.stdout)
                case "stderr": result.logDestinations.append(.stderr)
                case "file":
                    guard arguments.count == 2 else { throw error(line, "log_dest file expects a path") }
                    result.logDestinations.append(.file(arguments[1]))
                case "syslog", "topic", "none", "dlt":
                    result.warnings.append("\(file):\(line): log_dest \(kind) is not supported; ignored")
                default:
                    throw error(line, "log_dest expects stdout, stderr or file PATH, not '\(kind)'")
                }
            case "password_file":
                let path = try one(option, arguments, line)
                let file = try load(option, path, line, kind: "a password file", PasswordFile.load(path:))
                assign(
                    file,
                    path: path,
                    listener: (\.passwordFile, \.passwordFilePath),
                    broker: (\.passwordFile, \.passwordFilePath)
                )
            case "acl_file":
                let path = try one(option, arguments, line)
                let acl = try load(option, path, line, kind: "an ACL file", AccessControlList.load(path:))
                assign(
                    acl,
                    path: path,
                    listener: (\.accessControl, \.accessControlPath),
                    broker: (\.accessControl, \.accessControlPath)
                )
            case "persistence":
                result.persistence.enabled = try boolean(option, arguments, line)
            case "persistence_location":
                result.persistence.location = try one(option, arguments, line)
            case "persistence_file":
                let name = try one(option, arguments, line)
                guard !name.contains("/") else {
                    throw error(line, "persistence_file is a file name; put the directory in persistence_location")
                }
                result.persistence.file = name
            case "autosave_interval":
                result.persistence.autosaveInterval = try integer(option, arguments, line, in: 0...Int(Int32.max))
            case "autosave_on_changes":
                result.persistence.autosaveOnChanges = try boolean(option, arguments, line)
            case "persistence_durability":
                switch try one(option, arguments, line) {
                case "commit": result.persistence.durability = .commit
                case "loss_window": result.persistence.durability = .lossWindow
                case let other:
                    throw error(line, "persistence_durability expects commit or loss_window, not '\(other)'")
                }
            case "cluster_store":
                let url = try one(option, arguments, line)
                guard url.hasPrefix("postgresql://") || url.hasPrefix("postgres://") else {
                    throw error(line, "cluster_store expects a postgresql:// URL")
                }
                result.cluster.storeURL = url
                result.cluster.storeLine = line
                result.cluster.storeFile = file
            case "cluster_node":
                let name = try one(option, arguments, line)
                guard name.utf8.count <= 200 else { throw error(line, "cluster_node is at most 200 bytes") }
                result.cluster.node = name
            case "cluster_password_file":
                result.cluster.passwordFile = try one(option, arguments, line)
            case "max_connections":
                current.listener.maxConnections = try integer(option, arguments, line, in: -1...Int(Int32.max))
            case "mount_point":
                let prefix = try one(option, arguments, line)
                guard !prefix.contains("+"), !prefix.contains("#") else {
                    throw error(line, "mount_point cannot contain the wildcards + or #")
                }
                current.listener.mountPoint = prefix
            case "memory_limit":
                result.options.memoryLimit = try integer(option, arguments, line, in: 0...Int.max)
            case "use_username_as_clientid":
                broker.useUsernameAsClientID = try boolean(option, arguments, line)
            case "socket_domain", "http_dir", "use_subject_as_username", "crlfile", "psk_hint", "psk_file",
                "dhparamfile", "websockets_log_level":
                result.warnings.append("\(file):\(line): \(option) is not supported yet; ignored")
            case "connection":
                let name = try one(option, arguments, line)
                guard !bridges.contains(where: { $0.configuration.name == name }) else {
                    throw error(line, "a second connection named \(name)")
                }
                let host = ProcessInfo.processInfo.hostName.split(separator: ".").first.map(String.init) ?? "tern"
                bridges.append((BridgeConfiguration(name: name, addresses: [], hostname: host), line, false))
            case "address", "addresses", "topic", "bridge_protocol_version", "remote_clientid", "clientid",
                "local_clientid", "remote_username", "username", "remote_password", "password", "cleansession",
                "keepalive_interval", "restart_timeout", "bridge_cafile", "bridge_certfile", "bridge_keyfile",
                "bridge_insecure", "notifications", "notification_topic", "try_private", "bridge_max_packet_size",
                "start_type":
                guard !bridges.isEmpty else { throw error(line, "\(option) belongs in a connection block") }
                try applyBridge(option: option, arguments: arguments, line: line)
            case _ where Self.unsupportedBridgeOptions.contains(option):
                guard !bridges.isEmpty else { throw error(line, "\(option) belongs in a connection block") }
                result.warnings.append("\(file):\(line): \(option) is not supported yet; ignored")
            default:
                result.warnings.append("\(file):\(line): unknown option '\(option)'; ignored")
            }
        }

        /// One option of the current `connection` block.
        mutating func applyBridge(option: String, arguments: [String], line: Int) throws(ConfigurationError) {
            var bridge = bridges[bridges.count - 1].configuration
            defer { bridges[bridges.count - 1].configuration = bridge }
            switch option {
            case "address", "addresses":
                guard !arguments.isEmpty else { throw error(line, "\(option) expects host[:port] ...") }
                for text in arguments {
                    var host = Substring(text)
                    var port = 1883
                    if let colon = text.lastIndex(of: ":"), !text.hasSuffix("]") {
                        host = text[..<colon]
                        port = try self.port(String(text[text.index(after: colon)...]), line)
                    }
                    host = host.trimmingCharacters(in: CharacterSet(charactersIn: "[]"))[...]
                    guard !host.isEmpty else { throw error(line, "\(option) expects host[:port], not '\(text)'") }
                    bridge.addresses.append(.init(host: String(host), port: port))
                }
            case "topic":
                bridge.topics.append(try bridgeTopic(arguments, line))
            case "bridge_protocol_version":
                switch try one(option, arguments, line) {
                case "mqttv31": bridge.protocolVersion = .v3_1
                case "mqttv311": bridge.protocolVersion = .v3_1_1
                case "mqttv50": bridge.protocolVersion = .v5
                case let other:
                    throw error(line, "bridge_protocol_version expects mqttv31, mqttv311 or mqttv50, not '\(other)'")
                }
            case "remote_clientid", "clientid":
                bridge.remoteClientID = try one(option, arguments, line)
                if !bridges[bridges.count - 1].localClientIDSet {
                    bridge.localClientID = "local." + bridge.remoteClientID
                }
            case "local_clientid":
                bridge.localClientID = try one(option, arguments, line)
                bridges[bridges.count - 1].localClientIDSet = true
            case "remote_username", "username": bridge.remoteUsername = try one(option, arguments, line)
            case "remote_password", "password": bridge.remotePassword = try one(option, arguments, line)
            case "cleansession": bridge.cleanSession = try boolean(option, arguments, line)
            case "keepalive_interval":
                bridge.keepAlive = UInt16(try integer(option, arguments, line, in: 0...65535))
            case "restart_timeout":
                guard (1...2).contains(arguments.count), let base = Int(arguments[0]), base > 0,
                    arguments.count == 1 || Int(arguments[1]).map({ $0 >= base }) == true
                else {
                    throw error(line, "restart_timeout expects BASE [CAP] in seconds, CAP at least BASE")
                }
                bridge.restartBase = .seconds(base)
                bridge.restartCap = .seconds(arguments.count == 2 ? Int(arguments[1])! : base)
            case "bridge_cafile", "bridge_certfile", "bridge_keyfile":
                let path = try one(option, arguments, line)
                guard FileManager.default.isReadableFile(atPath: path) else {
                    throw error(line, "\(option) \(path) cannot be read")
                }
                switch option {
                case "bridge_cafile": bridge.caFile = path
                case "bridge_certfile": bridge.certificateFile = path
                default: bridge.keyFile = path
                }
            case "bridge_insecure": bridge.insecure = try boolean(option, arguments, line)
            case "notifications": bridge.notifications = try boolean(option, arguments, line)
            case "notification_topic":
                let topic = try one(option, arguments, line)
                guard (try? TopicName(topic)) != nil else {
                    throw error(line, "notification_topic '\(topic)' is not a topic name")
                }
                bridge.notificationTopic = topic
            case "try_private": bridge.tryPrivate = try boolean(option, arguments, line)
            case "bridge_max_packet_size":
                bridge.maximumPacketSize = UInt32(try integer(option, arguments, line, in: 0...268_435_460))
            case "start_type":
                let kind = try one(option, arguments, line)
                guard ["automatic", "lazy", "once"].contains(kind) else {
                    throw error(line, "start_type expects automatic, lazy or once, not '\(kind)'")
                }
                if kind != "automatic" {
                    result.warnings.append(
                        "\(file):\(line): start_type \(kind) is not supported yet; the bridge starts automatically"
                    )
                }
            default:
                break
            }
        }

        /// `topic PATTERN [in|out|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]`; `""` is an empty word.
        func bridgeTopic(_ arguments: [String], _ line: Int) throws(ConfigurationError) -> BridgeConfiguration.Topic {
            let words = arguments.map { $0 == "\"\"" ? "" : $0 }
            guard [1, 2, 3, 5].contains(words.count) else {
                throw error(line, "topic expects PATTERN [in|out|both [QOS [LOCAL_PREFIX REMOTE_PREFIX]]]")
            }
            var topic = BridgeConfiguration.Topic(pattern: words[0])
            if words.count >= 2 {
                guard let direction = BridgeConfiguration.Direction(rawValue: words[1]) else {
                    throw error(line, "topic direction must be in, out or both, not '\(words[1])'")
                }
                topic.direction = direction
            }
            if words.count >= 3 {
                guard let value = UInt8(words[2]), let qos = QoS(rawValue: value) else {
                    throw error(line, "topic QoS must be 0, 1 or 2, not '\(words[2])'")
                }
                topic.qos = qos
            }
            if words.count == 5 {
                topic.localPrefix = words[3]
                topic.remotePrefix = words[4]
            }
            for filter in [topic.localFilter, topic.remoteFilter] {
                guard (try? TopicFilter(filter)) != nil else {
                    throw error(line, "topic '\(filter)' is not a valid topic filter")
                }
            }
            for prefix in [topic.localPrefix, topic.remotePrefix]
            where prefix.contains("+") || prefix.contains("#") {
                throw error(line, "a topic prefix cannot contain the wildcards + or #")
            }
            return topic
        }

        func finish() throws(ConfigurationError) -> MosquittoConfiguration {
            var result = self.result
            if result.cluster.isEnabled, result.cluster.node == nil {
                throw error(result.cluster.storeLine, "cluster_store needs cluster_node NAME, this node's name")
            }
            if result.cluster.isEnabled, result.persistence.enabled {
                result.warnings.append(
                    "\(file):\(result.cluster.storeLine): a cluster node keeps its sessions in cluster_store; persistence and persistence_location are ignored"
                )
            }
            for (bridge, line, _) in bridges {
                guard !bridge.addresses.isEmpty else {
                    throw error(line, "connection \(bridge.name) has no address")
                }
                guard !bridge.topics.isEmpty else {
                    throw error(line, "connection \(bridge.name) has no topic")
                }
                if (bridge.certificateFile == nil) != (bridge.keyFile == nil) {
                    throw error(line, "connection \(bridge.name) needs both bridge_certfile and bridge_keyfile")
                }
                result.bridges.append(bridge)
            }
            var drafts = listeners
            if let defaultPort {
                var draft = defaultListener
                draft.listener.port = defaultPort
                drafts.insert(draft, at: 0)
            } else if defaultListener.isConfigured {
                result.warnings.append(
                    "\(file): listener options before the first listener line apply to no listener without 'port'; ignored"
                )
            }
            var all: [BrokerOptions.Listener] = []
            for draft in drafts {
                var listener = draft.listener
                listener.tls = try draft.tlsSettings(file: file)
                if perListenerSettings { listener.security = draft.security }
                all.append(listener)
            }
            result.listenerOrigins = result.options.listeners.map { _ in (file, 0) }
            if !all.isEmpty {
                result.listenerOrigins = drafts.map { (file, $0.line) }
                result.options.listeners = all
                // Mosquitto 2: once a listener is configured, anonymous access must be asked for.
                if !allowAnonymousSet { result.options.broker.allowAnonymous = false }
            }
            return result
        }
    }

    /// One `listener` block as it is read: the TLS lines are checked together at the end, when
    /// it is known which of them the block has.
    struct ListenerDraft {
        var line: Int
        var listener = BrokerOptions.Listener(host: BrokerOptions.Listener.allAddresses, port: 1883)
        /// The TLS options given, by name, with their values and lines.
        var tls: [String: (value: String, line: Int)] = [:]
        var security = ListenerSecurity()

        init(line: Int) { self.line = line }

        var isConfigured: Bool {
            !tls.isEmpty || listener.transport != .mqtt || listener.maxConnections >= 0 || listener.mountPoint != nil
        }

        func tlsSettings(file: String) throws(ConfigurationError) -> TLSSettings? {
            guard !tls.isEmpty else { return nil }
            func error(_ option: String, _ reason: String) -> ConfigurationError {
                ConfigurationError(file: file, line: tls[option]?.line ?? line, reason: reason)
            }
            guard let certificate = tls["certfile"]?.value, let key = tls["keyfile"]?.value else {
                let given = tls.min { $0.value.line < $1.value.line }!.key
                throw error(given, "\(given) needs certfile and keyfile in the same listener")
            }
            var settings = TLSSettings(certificateFile: certificate, privateKeyFile: key)
            settings.caFile = tls["cafile"]?.value
            settings.caPath = tls["capath"]?.value
            settings.requireCertificate = tls["require_certificate"]?.value == "true"
            settings.useIdentityAsUsername = tls["use_identity_as_username"]?.value == "true"
            settings.ciphers = tls["ciphers"]?.value
            if let version = tls["tls_version"]?.value {
                settings.minimumVersion = TLSSettings.Version(rawValue: version)!
            }
            if settings.verifiesClients, settings.caFile == nil, settings.caPath == nil {
                let option = settings.requireCertificate ? "require_certificate" : "use_identity_as_username"
                throw error(option, "\(option) needs cafile or capath to check client certificates against")
            }
            return settings
        }
    }
}

extension Substring {
    var trimmingSpaces: Substring {
        var text = self
        while let first = text.first, first == " " || first == "\t" || first == "\r" { text = text.dropFirst() }
        while let last = text.last, last == " " || last == "\t" || last == "\r" { text = text.dropLast() }
        return text
    }
}
