import TernBridge
import TernCodec
import TernConfig
import Testing

/// Mosquitto's bridge `connection` blocks, read with their option names and defaults.
@Suite("Bridge configuration")
struct BridgeConfigurationTests {
    @Test("a bridge block as Mosquitto's documentation writes one")
    func mosquittoExample() throws {
        let configuration = try MosquittoConfiguration.parse(
            """
            listener 1883
            connection cloud
            address broker.example.com:8883 backup.example.com
            bridge_protocol_version mqttv50
            remote_clientid gateway-7
            remote_username gw
            remote_password secret
            cleansession false
            keepalive_interval 30
            restart_timeout 2 60
            try_private false
            notification_topic gateways/7/bridge
            bridge_max_packet_size 65536
            topic sensors/# out 1 site-7/ plant/site-7/
            topic commands/# in 2 "" devices/
            topic status both
            """,
            file: "bridge.conf"
        )
        #expect(configuration.warnings.isEmpty)
        let bridge = try #require(configuration.bridges.first)
        #expect(bridge.name == "cloud")
        #expect(bridge.addresses == [.init(host: "broker.example.com", port: 8883), .init(host: "backup.example.com")])
        #expect(bridge.protocolVersion == .v5)
        #expect(bridge.remoteClientID == "gateway-7")
        #expect(bridge.localClientID == "local.gateway-7")
        #expect(bridge.remoteUsername == "gw" && bridge.remotePassword == "secret")
        #expect(!bridge.cleanSession && bridge.keepAlive == 30 && !bridge.tryPrivate)
        #expect(bridge.restartBase == .seconds(2) && bridge.restartCap == .seconds(60))
        #expect(bridge.stateTopic == "gateways/7/bridge")
        #expect(bridge.maximumPacketSize == 65536)
        #expect(
            bridge.topics == [
                .init(
                    pattern: "sensors/#",
                    direction: .out,
                    qos: .atLeastOnce,
                    localPrefix: "site-7/",
                    remotePrefix: "plant/site-7/"
                ),
                .init(
                    pattern: "commands/#",
                    direction: .in,
                    qos: .exactlyOnce,
                    localPrefix: "",
                    remotePrefix: "devices/"
                ),
                .init(pattern: "status", direction: .both),
            ]
        )
    }

    @Test(
        "a bad bridge line stops start-up with the file, the line and the reason",
        arguments: [
            ("connection a\ntopic x\n", 1, "connection a has no address"),
            ("connection a\naddress h\n", 1, "connection a has no topic"),
            ("address h\n", 1, "address belongs in a connection block"),
            (
                "connection a\naddress h\ntopic x sideways\n", 3,
                "topic direction must be in, out or both, not 'sideways'"
            ),
            ("connection a\naddress h\ntopic x out 3\n", 3, "topic QoS must be 0, 1 or 2, not '3'"),
            (
                "connection a\naddress h\ntopic x out 1 a/+/ b/\n", 3,
                "a topic prefix cannot contain the wildcards + or #"
            ),
            ("connection a\naddress h\ntopic a/#/b\n", 3, "topic 'a/#/b' is not a valid topic filter"),
            ("connection a\naddress h:99999\ntopic x\n", 2, "a port must be a number from 0 to 65535, not '99999'"),
            (
                "connection a\naddress h\ntopic x\nbridge_protocol_version mqttv6\n", 4,
                "bridge_protocol_version expects mqttv31, mqttv311 or mqttv50, not 'mqttv6'"
            ),
            (
                "connection a\naddress h\ntopic x\nrestart_timeout 10 5\n", 4,
                "restart_timeout expects BASE [CAP] in seconds, CAP at least BASE"
            ),
            ("connection a\naddress h\ntopic x\nconnection a\n", 4, "a second connection named a"),
        ]
    )
    func badLines(text: String, line: Int, reason: String) {
        #expect(throws: ConfigurationError(file: "bad.conf", line: line, reason: reason)) {
            try MosquittoConfiguration.parse(text, file: "bad.conf")
        }
    }

    @Test("bridge options Tern does not have yet are warnings with file and line; start_type lazy runs automatic")
    func unsupported() throws {
        let configuration = try MosquittoConfiguration.parse(
            "connection a\naddress h\ntopic x\nround_robin true\nstart_type lazy\n",
            file: "a.conf"
        )
        #expect(
            configuration.warnings == [
                "a.conf:4: round_robin is not supported yet; ignored",
                "a.conf:5: start_type lazy is not supported yet; the bridge starts automatically",
            ]
        )
    }
}
