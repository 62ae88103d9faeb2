import Foundation
import NIOCore
import TernBroker
import TernBrokerCore
import TernBrokerTesting
import TernCodec
import Testing

/// Clients nobody here wrote, over TLS and WebSockets, with client certificates and ACLs; and
/// SIGHUP to a running `tern serve`.
@Suite("Interop: TLS, WebSockets, ACLs")
struct SecurityInteropTests {
    static let acl = """
        user alice
        topic readwrite alice/#
        topic read news/#
        """

    /// A broker with a TLS listener (server certificate only), a TLS listener that requires a
    /// client certificate and takes its Common Name as the user, a WebSocket listener and a TLS
    /// WebSocket listener, all under `acl`. The body gets their ports in that order.
    static func withSecureBroker(_ body: (MQTTBroker, [Int], FixtureCertificates) async throws -> Void) async throws {
        let certificates = try await FixtureCertificates.make()
        defer { certificates.remove() }
        let tls = certificates.serverTLS
        let identity = certificates.clientCertificateTLS
        try await withTestBroker({ options in
            options.listeners = [
                .init(host: "127.0.0.1", port: 0, tls: tls),
                .init(host: "127.0.0.1", port: 0, tls: identity),
                .init(host: "127.0.0.1", port: 0, transport: .webSockets),
                .init(host: "127.0.0.1", port: 0, transport: .webSockets, tls: tls),
            ]
            options.accessControl = try! AccessControlList(parsing: acl, file: "acl")
        }) { broker, _ in
            try await body(broker, try await broker.waitUntilListening().map { $0.port! }, certificates)
        }
    }

    @Test(
        "mosquitto_sub and mosquitto_pub over TLS: --cafile, and a client certificate whose CN the ACL knows",
        .enabled(if: Peers.mosquittoAvailable, "mosquitto-clients is not installed"),
        arguments: ["mqttv311", "mqttv5"]
    )
    func mosquittoOverTLS(version: String) async throws {
        let sub = try #require(Peers.which("mosquitto_sub"))
        let pub = try #require(Peers.which("mosquitto_pub"))
        try await Self.withSecureBroker { broker, ports, certificates in
            let asAlice = [
                "--cafile", certificates.caFile, "--cert", certificates.clientCertificate, "--key",
                certificates.clientKey,
            ]
            // The subscriber authenticates with a password-less user name over server-only TLS…
            let subscriber = try Peers.Running(
                sub,
                [
                    "-h", "localhost", "-p", "\(ports[0])", "--cafile", certificates.caFile, "-u", "alice", "-V",
                    version,
                    "-t", "alice/#", "-q", "1", "-C", "2", "-v",
                ]
            )
            try await Peers.waitForSubscriptions(broker, count: 1)
            // …the publisher with its certificate; bob/x is outside alice's ACL and never arrives.
            for (topic, message) in [("alice/1", "first"), ("bob/x", "denied"), ("alice/2", "second")] {
                let result = try await Peers.run(
                    pub,
                    ["-h", "localhost", "-p", "\(ports[1])"] + asAlice + [
                        "-V", version, "-t", topic, "-m", message, "-q", "1",
                    ]
                )
                #expect(result.status == 0, "\(result.stderr)")
            }
            let output = await subscriber.finish(timeout: 30)
            #expect(output.stdout.split(separator: "\n") == ["alice/1 first", "alice/2 second"])
        }
    }

    @Test(
        "mosquitto clients with an expired or untrusted certificate, or none, are refused; the broker keeps serving",
        .enabled(if: Peers.mosquittoAvailable, "mosquitto-clients is not installed")
    )
    func mosquittoBadCertificates() async throws {
        let pub = try #require(Peers.which("mosquitto_pub"))
        try await Self.withSecureBroker { _, ports, certificates in
            let attempts: [[String]] = [
                ["--cert", certificates.expiredCertificate, "--key", certificates.expiredKey],
                ["--cert", certificates.strangerCertificate, "--key", certificates.strangerKey],
                [],
            ]
            for extra in attempts {
                let result = try await Peers.run(
                    pub,
                    ["-h", "localhost", "-p", "\(ports[1])", "--cafile", certificates.caFile] + extra + [
                        "-t", "alice/x", "-m", "m",
                    ]
                )
                #expect(result.status != 0, "\(extra)")
            }
            let good = try await Peers.run(
                pub,
                [
                    "-h", "localhost", "-p", "\(ports[1])", "--cafile", certificates.caFile,
                    "--cert", certificates.clientCertificate, "--key", certificates.clientKey, "-t", "alice/x", "-m",
                    "m",
                ]
            )
            #expect(good.status == 0, "\(good.stderr)")
        }
    }

    @Test(
        "paho-mqtt over transport=\"websockets\", plain and TLS, MQTT 3.1.1 and 5",
        .enabled(if: Peers.pahoAvailable, "python3-paho-mqtt is not installed"),
        arguments: [false, true]
    )
    func pahoWebSockets(tls: Bool) async throws {
        // An ACL-free broker: paho connects without a user name.
        let certificates = try await FixtureCertificates.make()
        defer { certificates.remove() }
        let settings = certificates.serverTLS
        try await withTestBroker({ options in
            options.listeners = [.init(host: "127.0.0.1", port: 0, transport: .webSockets, tls: tls ? settings : nil)]
        }) { _, port in
            let result = try await Peers.run(
                "/usr/bin/python3",
                [Peers.script("paho_websocket.py"), "\(port)"] + (tls ? [certificates.caFile] : []),
                timeout: 60
            )
            #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
            #expect(result.stdout.contains("v311 ok") && result.stdout.contains("v5 ok"))
        }
    }

    @Test(
        "tern sub over wss:// and ws:// receives what tern pub sends over TLS with a client certificate, and mosquitto_sub over TLS too",
        .enabled(
            if: Peers.mosquittoAvailable && ternExecutable != nil,
            "mosquitto-clients or the tern executable is missing"
        )
    )
    func ternCLIOverTLSAndWebSockets() async throws {
        let tern = try #require(ternExecutable)
        let sub = try #require(Peers.which("mosquitto_sub"))
        try await Self.withSecureBroker { broker, ports, certificates in
            let secure = try Peers.Running(
                tern,
                [
                    "sub", "--url", "wss://localhost:\(ports[3])/mqtt", "--cafile", certificates.caFile, "-u", "alice",
                    "-t", "alice/#", "-C", "1", "-v",
                ]
            )
            let plain = try Peers.Running(
                tern,
                [
                    "sub", "--url", "ws://127.0.0.1:\(ports[2])/mqtt", "-u", "alice", "-V", "mqttv5", "-t", "alice/#",
                    "-C", "1", "-v",
                ]
            )
            let mosquitto = try Peers.Running(
                sub,
                [
                    "-h", "localhost", "-p", "\(ports[0])", "--cafile", certificates.caFile, "-u", "alice", "-t",
                    "alice/#", "-C", "1", "-v",
                ]
            )
            try await Peers.waitForSubscriptions(broker, count: 3)
            let published = try await Peers.run(
                tern,
                [
                    "pub", "-h", "localhost", "-p", "\(ports[1])", "--cafile", certificates.caFile,
                    "--cert", certificates.clientCertificate, "--key", certificates.clientKey, "-t", "alice/cli", "-m",
                    "hello", "-q", "1",
                ]
            )
            #expect(published.status == 0, "\(published.stderr)")
            for running in [secure, plain, mosquitto] {
                let output = await running.finish(timeout: 30)
                #expect(output.stdout == "alice/cli hello\n", "\(output.stderr)")
            }
            let refused = try await Peers.run(
                tern,
                [
                    "pub", "-h", "localhost", "-p", "\(ports[0])", "--cafile", certificates.strangerCertificate, "-t",
                    "alice/x", "-m", "m",
                ]
            )
            #expect(refused.status != 0)
            // --insecure skips the check that just failed (and nothing else changes).
            let insecure = try await Peers.run(
                tern,
                [
                    "pub", "-h", "localhost", "-p", "\(ports[0])", "--insecure", "-u", "alice", "-t", "alice/x", "-m",
                    "m",
                ]
            )
            #expect(insecure.status == 0, "\(insecure.stderr)")
        }
    }

    @Test("SIGHUP to tern serve reloads the ACL file; a connected client stays connected and gets the new rules")
    func sighupReloads() async throws {
        let directory = try TemporaryDirectory(prefix: "hup")
        let aclPath = directory.file("acl")
        try "topic readwrite old/#\n".write(toFile: aclPath, atomically: true, encoding: .utf8)
        try "listener 1883 127.0.0.1\nallow_anonymous true\nacl_file \(aclPath)\n".write(
            toFile: directory.file("tern.conf"),
            atomically: true,
            encoding: .utf8
        )
        let server = try TernServer(extraArguments: ["-c", directory.file("tern.conf")])
        try await server.start()
        var client = try await TestClient.connect(port: server.port)
        _ = try await client.handshake(Packets.connect("stays", cleanStart: true))
        func subscribe(_ filter: String) async throws -> ReasonCode? {
            try await client.send(Packets.subscribe(filter, qos: .atMostOnce))
            guard case .suback(let ack)? = try await client.next() else { return nil }
            return ack.reasonCodes.first
        }
        #expect(try await subscribe("new/x") == .notAuthorized)
        try "topic readwrite new/#\n".write(toFile: aclPath, atomically: true, encoding: .utf8)
        server.hangUp()
        // The reload happens on the broker's own time: ask again (bounded) until it has.
        var code: ReasonCode?
        for _ in 0..<100 {
            code = try await subscribe("new/x")
            if code == .success { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(code == .success)
        await client.close()
        #expect(await server.terminate()?.status == 0)
        _ = directory.path  // the files are needed until the server has stopped
    }
}
