import TernBroker
import TernBrokerCore
import TernCodec
import Testing

@testable import TernConfig

@Suite("mosquitto.conf")
struct MosquittoConfigurationTests {
    @Test("every supported option keeps Mosquitto's meaning")
    func options() throws {
        let text = """
            # a comment
            listener 1884 127.0.0.1
            allow_anonymous true
            max_inflight_messages 50
            max_queued_messages 500
            max_queued_bytes 1048576
            max_packet_size 65536
            message_size_limit 1000
            max_keepalive 300
            retain_available false
            max_qos 1
            sys_interval 30
            persistent_client_expiration 2w
            log_type all
            log_dest stdout
            log_dest file /tmp/tern.log
            """
        let configuration = try MosquittoConfiguration.parse(text, file: "tern.conf")
        let options = configuration.options
        #expect(options.listeners == [.init(host: "127.0.0.1", port: 1884)])
        #expect(options.broker.allowAnonymous)
        #expect(options.broker.maxInflightMessages == 50)
        #expect(options.broker.maxQueuedMessages == 500)
        #expect(options.broker.maxQueuedBytes == 1_048_576)
        #expect(options.broker.maxPacketSize == 65536)
        #expect(options.broker.messageSizeLimit == 1000)
        #expect(options.broker.maxKeepalive == 300)
        #expect(!options.broker.retainAvailable)
        #expect(options.broker.maxQoS == .atLeastOnce)
        #expect(options.sysInterval == 30)
        #expect(options.broker.persistentClientExpiration == UInt32(14 * 86_400))
        #expect(configuration.logTypes == ["all"])
        #expect(configuration.logDestinations == [.stdout, .file("/tmp/tern.log")])
        #expect(configuration.warnings.isEmpty)
    }

    @Test("no listener: Mosquitto 2's local-only default on 1883 with anonymous access")
    func defaults() throws {
        let options = try MosquittoConfiguration.parse("", file: "empty.conf").options
        #expect(options.listeners.map(\.port) == [1883, 1883])
        #expect(Set(options.listeners.map(\.host)) == ["127.0.0.1", "::1"])
        #expect(options.broker.allowAnonymous)
    }

    @Test("once a listener is configured, anonymous access must be asked for (Mosquitto 2)")
    func listenerDisablesAnonymous() throws {
        let options = try MosquittoConfiguration.parse("listener 1883", file: "a.conf").options
        #expect(options.listeners == [.init(host: BrokerOptions.Listener.allAddresses, port: 1883)])
        #expect(!options.broker.allowAnonymous)
    }

    @Test("port and bind_address make the default listener")
    func portAndBindAddress() throws {
        let options = try MosquittoConfiguration.parse("port 1999\nbind_address 127.0.0.2", file: "a.conf").options
        #expect(options.listeners == [.init(host: "127.0.0.2", port: 1999)])
    }

    @Test("persistence keeps Mosquitto's options and defaults (off), plus persistence_durability")
    func persistence() throws {
        #expect(MosquittoConfiguration().persistence.enabled == false)
        #expect(MosquittoConfiguration().persistence.durability == .commit)
        let configuration = try MosquittoConfiguration.parse(
            """
            persistence true
            persistence_location /var/lib/tern
            persistence_file broker.db
            autosave_interval 30
            autosave_on_changes true
            persistence_durability loss_window
            persistent_client_expiration 2d
            """,
            file: "p.conf"
        )
        let persistence = configuration.persistence
        #expect(persistence.enabled)
        #expect(persistence.path == "/var/lib/tern/broker.db")
        #expect(persistence.autosaveInterval == 30)
        #expect(persistence.autosaveOnChanges)
        #expect(persistence.durability == .lossWindow)
        #expect(configuration.options.broker.persistentClientExpiration == UInt32(172_800))  // 2d
        #expect(configuration.warnings.isEmpty)
        #expect(
            try MosquittoConfiguration.parse("persistence_location data/", file: "p.conf").persistence.path
                == "data/tern.db"
        )
    }

    @Test("metrics_listener PORT [ADDRESS]: loopback unless an address is given; none by default")
    func metricsListener() throws {
        #expect(try MosquittoConfiguration.parse("", file: "a.conf").options.metricsListener == nil)
        let local = try MosquittoConfiguration.parse("metrics_listener 9100", file: "a.conf").options
        #expect(local.metricsListener == .init(host: "127.0.0.1", port: 9100))
        let open = try MosquittoConfiguration.parse("metrics_listener 9100 0.0.0.0", file: "a.conf").options
        #expect(open.metricsListener == .init(host: "0.0.0.0", port: 9100))
    }

    @Test(
        "limits: max_connections and mount_point belong to their listener; memory_limit and use_username_as_clientid to the broker"
    )
    func limits() throws {
        let options = try MosquittoConfiguration.parse(
            """
            memory_limit 104857600
            use_username_as_clientid true
            listener 1883
            max_connections 100
            listener 1884
            mount_point tenant-a/
            """,
            file: "a.conf"
        ).options
        #expect(options.memoryLimit == 104_857_600)
        #expect(options.broker.useUsernameAsClientID)
        #expect(options.listeners.map(\.maxConnections) == [100, -1])
        #expect(options.listeners.map(\.mountPoint) == [nil, "tenant-a/"])
        #expect(try MosquittoConfiguration.parse("", file: "a.conf").warnings.isEmpty)
    }

    @Test("an unknown option is a warning that names the file and line")
    func unknownOption() throws {
        let configuration = try MosquittoConfiguration.parse("\n\nfrobnicate yes\n", file: "/etc/tern.conf")
        #expect(configuration.warnings == ["/etc/tern.conf:3: unknown option 'frobnicate'; ignored"])
    }

    @Test(
        "a bad value stops start-up with the file, the line and what was expected",
        arguments: [
            (
                "max_inflight_messages lots", 1,
                "max_inflight_messages expects a whole number from 0 to 65535, not 'lots'"
            ),
            ("# ok\nmax_qos 3", 2, "max_qos expects a whole number from 0 to 2, not '3'"),
            ("retain_available maybe", 1, "retain_available expects true or false, not 'maybe'"),
            ("listener 70000", 1, "a port must be a number from 0 to 65535, not '70000'"),
            (
                "persistent_client_expiration forever", 1,
                "persistent_client_expiration expects a duration such as 3600, 12h, 7d, 2w, 6m or 1y, not 'forever'"
            ),
            ("\n\nmax_packet_size 10", 3, "max_packet_size must be 0 or at least 20 bytes"),
            ("log_dest carrier-pigeon", 1, "log_dest expects stdout, stderr or file PATH, not 'carrier-pigeon'"),
            ("allow_anonymous", 1, "allow_anonymous takes exactly one value"),
            ("persistence yes", 1, "persistence expects true or false, not 'yes'"),
            ("autosave_interval -5", 1, "autosave_interval expects a whole number from 0 to 2147483647, not '-5'"),
            (
                "persistence_file data/tern.db", 1,
                "persistence_file is a file name; put the directory in persistence_location"
            ),
            (
                "persistence_durability eventually", 1,
                "persistence_durability expects commit or loss_window, not 'eventually'"
            ),
            ("metrics_listener", 1, "metrics_listener expects a port and an optional address"),
            ("max_connections -2", 1, "max_connections expects a whole number from -1 to 2147483647, not '-2'"),
            ("listener 1883\nmount_point a/#", 2, "mount_point cannot contain the wildcards + or #"),
            ("memory_limit lots", 1, "memory_limit expects a whole number from 0 to 9223372036854775807, not 'lots'"),
            ("use_username_as_clientid 1", 1, "use_username_as_clientid expects true or false, not '1'"),
            ("metrics_listener http", 1, "a port must be a number from 0 to 65535, not 'http'"),
        ]
    )
    func badValues(text: String, line: Int, reason: String) {
        #expect(throws: ConfigurationError(file: "bad.conf", line: line, reason: reason)) {
            try MosquittoConfiguration.parse(text, file: "bad.conf")
        }
    }

    @Test("password_file is loaded; a missing one stops start-up at its line")
    func passwordFile() throws {
        #expect(throws: ConfigurationError.self) {
            try MosquittoConfiguration.parse("allow_anonymous false\npassword_file /nonexistent/passwd", file: "a.conf")
        }
        do {
            _ = try MosquittoConfiguration.parse(
                "allow_anonymous false\npassword_file /nonexistent/passwd",
                file: "a.conf"
            )
        } catch {
            #expect(error.line == 2)
            #expect(error.reason.hasPrefix("cannot read password_file /nonexistent/passwd"))
        }
    }

    @Test("the error reads as file:line: reason")
    func errorDescription() {
        #expect("\(ConfigurationError(file: "a.conf", line: 7, reason: "why"))" == "a.conf:7: why")
    }
}
