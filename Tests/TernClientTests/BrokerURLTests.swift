import TernClient
import Testing

/// `MQTTClientConfiguration(url:clientID:)`: the schemes, their default ports, TLS and WebSocket paths.
@Suite("Broker URLs")
struct BrokerURLTests {
    @Test(
        "scheme, host, port and path",
        arguments: [
            ("mqtt://broker.example", "broker.example", 1883, false, nil),
            ("mqtts://broker.example", "broker.example", 8883, true, nil),
            ("ws://10.0.0.2:9001", "10.0.0.2", 9001, false, "/mqtt"),
            ("wss://broker.example/ws/mqtt", "broker.example", 443, true, "/ws/mqtt"),
            ("ws://[::1]:8080/x", "::1", 8080, false, "/x"),
            ("mqtt://[::1]", "::1", 1883, false, nil),
            ("MQTTS://h:1", "h", 1, true, nil),
        ] as [(String, String, Int, Bool, String?)]
    )
    func parses(url: String, host: String, port: Int, tls: Bool, path: String?) throws {
        let configuration = try MQTTClientConfiguration(url: url, clientID: "c")
        #expect(configuration.host == host)
        #expect(configuration.port == port)
        #expect((configuration.tls != nil) == tls)
        #expect(configuration.webSocketPath == path)
    }

    @Test(
        "a URL that names no broker is refused with .invalidArgument",
        arguments: ["broker:1883", "http://h", "mqtt://", "mqtt://h:0", "mqtt://h:port", "ws://:80/"]
    )
    func refuses(url: String) {
        #expect(throws: MQTTClientError.self) { try MQTTClientConfiguration(url: url, clientID: "c") }
        do {
            _ = try MQTTClientConfiguration(url: url, clientID: "c")
        } catch {
            #expect(error.code == .invalidArgument)
        }
    }
}
