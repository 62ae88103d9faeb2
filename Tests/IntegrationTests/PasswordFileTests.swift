import NIOCore
import TernBroker
import TernBrokerTesting
import TernCodec
import Testing

/// A line written by Debian's `mosquitto_passwd -b` (Mosquitto 2.0.11) for alice / "secret".
let mosquittoLine =
    "alice:$7$101$AOqb5dH1PcykpmTi$BtjGV5gk2gvbvg0ngJn77e4f1caoDPqB/yCDxkKhF/b/Ha2EfEmsaeaqCf+g0/Hgv07dICjmuZ7Uv9SgYyCiXw=="

@Suite("Password files")
struct PasswordFileTests {
    @Test("a hash written by mosquitto_passwd verifies, and nothing else does")
    func mosquittoHash() throws {
        let file = try PasswordFile(parsing: "# users\n\(mosquittoLine)\n", file: "pw")
        #expect(file.verify(username: "alice", password: Array("secret".utf8)))
        #expect(!file.verify(username: "alice", password: Array("Secret".utf8)))
        #expect(!file.verify(username: "alice", password: []))
        #expect(!file.verify(username: "bob", password: Array("secret".utf8)))
    }

    @Test("set, verify, replace, remove, and plain-text upgrade (mosquitto_passwd -U)")
    func editing() throws {
        var file = try PasswordFile(parsing: "carol:plain\n", file: "pw")
        file.set(username: "bob", password: Array("hunter2".utf8))
        #expect(file.verify(username: "bob", password: Array("hunter2".utf8)))
        #expect(file.entries.first { $0.username == "bob" }?.hash.hasPrefix("$7$101$") == true)
        file.set(username: "bob", password: Array("new".utf8))
        #expect(!file.verify(username: "bob", password: Array("hunter2".utf8)))
        // Plain text is never accepted as a hash.
        #expect(!file.verify(username: "carol", password: Array("plain".utf8)))
        file.hashPlainTextPasswords()
        #expect(file.verify(username: "carol", password: Array("plain".utf8)))
        let removed = file.remove(username: "bob")
        let removedAgain = file.remove(username: "bob")
        #expect(removed)
        #expect(!removedAgain)
        let reread = try PasswordFile(parsing: file.text, file: "pw")
        #expect(reread == file)
    }

    @Test("a line without a colon names the file and the line")
    func parseError() {
        #expect(throws: PasswordFile.ParseError(file: "pw", line: 2, reason: "expected username:password-hash")) {
            try PasswordFile(parsing: "\(mosquittoLine)\nnonsense\n", file: "pw")
        }
    }

    static func broker(_ options: inout BrokerOptions) {
        options.passwordFile = try! PasswordFile(parsing: mosquittoLine, file: "pw")
        options.broker.allowAnonymous = false
    }

    @Test("the broker accepts the right password and refuses others with 0x86, anonymous with 0x87 (MQTT 5)")
    func brokerAnswers() async throws {
        try await withTestBroker(Self.broker) { _, port in
            var codes: [ReasonCode] = []
            for (username, password) in [("alice", "secret"), ("alice", "wrong"), ("mallory", "secret"), (nil, nil)]
                as [(String?, String?)]
            {
                var client = try await TestClient.connect(port: port)
                let ack = try await client.handshake(
                    Connect(
                        clientIdentifier: "c",
                        username: username,
                        password: password.map { ByteBuffer(string: $0) }
                    )
                )
                await client.close()
                codes.append(ack.reasonCode)
            }
            #expect(codes == [.success, .badUserNameOrPassword, .badUserNameOrPassword, .notAuthorized])
        }
    }

    @Test("MQTT 3.1.1 gets return code 4 for a bad password and 5 when anonymous")
    func legacyAnswers() async throws {
        try await withTestBroker(Self.broker) { _, port in
            var wrong = try await TestClient.connect(port: port, version: .v3_1_1)
            try await wrong.send(
                .connect(
                    Connect(
                        protocolVersion: .v3_1_1,
                        clientIdentifier: "c",
                        username: "alice",
                        password: ByteBuffer(string: "nope")
                    )
                )
            )
            let refused = try await wrong.next()
            var raw = ByteBuffer()
            try refused?.write(to: &raw, version: .v3_1_1)
            #expect(Array(raw.readableBytesView) == [0x20, 0x02, 0x00, 0x04])
            #expect(try await wrong.next() == nil)

            var anonymous = try await TestClient.connect(port: port, version: .v3_1_1)
            try await anonymous.send(.connect(Connect(protocolVersion: .v3_1_1, clientIdentifier: "c")))
            var rawAnonymous = ByteBuffer()
            try (try await anonymous.next())?.write(to: &rawAnonymous, version: .v3_1_1)
            #expect(Array(rawAnonymous.readableBytesView) == [0x20, 0x02, 0x00, 0x05])
        }
    }
}
