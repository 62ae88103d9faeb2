import Foundation
import NIOCore
import NIOSSL
import TernBrokerTesting
import TernClient
import TernCodec
import Testing

/// One Mosquitto deployment — its mosquitto.conf, a password file made by mosquitto_passwd, an ACL
/// file and certificates — run once by Mosquitto and once by `tern serve`, with the same clients:
/// the same logins pass and fail, and the same messages arrive.
@Suite(
    "Interop: the same deployment files in Mosquitto and in Tern",
    .enabled(
        if: Peers.mosquittoAvailable && Peers.which("mosquitto") != nil && Peers.which("mosquitto_passwd") != nil
            && ternExecutable != nil,
        "mosquitto, mosquitto-clients or the tern executable is missing"
    )
)
struct SameConfigurationTests {
    struct Outcome: Equatable {
        var received: [String]
        var wrongPasswordRefused: Bool
        var anonymousRefused: Bool
        var outsideACLRefused: Bool
    }

    @Test("TLS listener, password_file, acl_file: same logins, same deliveries")
    func sameBehaviour() async throws {
        let certificates = try await FixtureCertificates.make()
        defer { certificates.remove() }
        let directory = certificates.directory
        let passwd = try #require(Peers.which("mosquitto_passwd"))
        try await Peers.run(passwd, ["-c", "-b", directory + "/passwd", "alice", "apw"])
        try await Peers.run(passwd, ["-b", directory + "/passwd", "bob", "bpw"])
        try "user alice\ntopic readwrite alice/#\n\nuser bob\ntopic read alice/news\n".write(
            toFile: directory + "/acl",
            atomically: true,
            encoding: .utf8
        )
        func configuration(port: Int) throws -> String {
            let path = directory + "/broker-\(port).conf"
            // `user root` lets Mosquitto run as root here; Tern warns that it does not know it.
            let text = """
                user root
                allow_anonymous false
                password_file \(directory)/passwd
                acl_file \(directory)/acl
                listener \(port) 127.0.0.1
                certfile \(certificates.serverCertificate)
                keyfile \(certificates.serverKey)
                """
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            return path
        }
        let mosquitto = try #require(Peers.which("mosquitto"))
        let tern = try #require(ternExecutable)
        var outcomes: [Outcome] = []
        for command in [
            { (port: Int) in (mosquitto, ["-c", try configuration(port: port)]) },
            { (port: Int) in (tern, ["serve", "-c", try configuration(port: port)]) },
        ] {
            let (server, port) = try await Peers.startOnFreePort(command)
            defer {
                server.killNow()
                _ = server.finishBlocking(timeout: 5)
            }
            outcomes.append(try await Self.scenario(port: port, certificates: certificates))
        }
        #expect(outcomes[0] == outcomes[1], "Mosquitto: \(outcomes[0]), Tern: \(outcomes[1])")
        #expect(
            outcomes[1]
                == Outcome(
                    received: ["alice/1 a1", "alice/2 a2"],
                    wrongPasswordRefused: true,
                    anonymousRefused: true,
                    outsideACLRefused: true
                )
        )
    }

    /// alice subscribes to alice/#; bob (read-only there) and alice publish; logins that must fail.
    static func scenario(port: Int, certificates: FixtureCertificates) async throws -> Outcome {
        let pub = try #require(Peers.which("mosquitto_pub"))
        var configuration = MQTTClientConfiguration(host: "localhost", port: port, clientID: "alice-sub")
        configuration.tls = .makeClientConfiguration()
        configuration.tls?.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(certificates.caFile))
        configuration.username = "alice"
        configuration.password = ByteBuffer(string: "apw")
        configuration.reconnect = nil
        let subscriber = MQTTClient(configuration: configuration)
        try await subscriber.connect()
        let messages = try await subscriber.subscribe(to: "alice/#", qos: .atLeastOnce)
        func publish(_ user: String?, _ password: String?, _ topic: String, _ message: String) async throws -> Int32 {
            var arguments = [
                "-h", "localhost", "-p", "\(port)", "--cafile", certificates.caFile, "-V", "mqttv5", "-t", topic, "-m",
                message, "-q", "1",
            ]
            if let user { arguments += ["-u", user] }
            if let password { arguments += ["-P", password] }
            return try await Peers.run(pub, arguments).status
        }
        // mosquitto_pub exits 0 even when PUBACK says 0x87.
        _ = try await publish("bob", "bpw", "alice/news", "from bob")
        _ = try await publish("alice", "apw", "alice/1", "a1")
        let wrongPassword = try await publish("alice", "wrong", "alice/2", "never")
        let anonymous = try await publish(nil, nil, "alice/2", "never")
        _ = try await publish("alice", "apw", "alice/2", "a2")
        let collector = Task {
            var received: [String] = []
            for await message in messages {
                received.append("\(message.topic) \(String(buffer: message.payload))")
                if received.count == 2 { break }
            }
            return received
        }
        let timer = Task {
            try await Task.sleep(for: .seconds(20))
            collector.cancel()  // ends the stream's iteration: the wait is bounded
        }
        let received = await collector.value
        timer.cancel()
        await subscriber.disconnect()
        return Outcome(
            received: received,
            wrongPasswordRefused: wrongPassword != 0,
            anonymousRefused: anonymous != 0,
            outsideACLRefused: !received.contains { $0.hasPrefix("alice/news") }
        )
    }
}
