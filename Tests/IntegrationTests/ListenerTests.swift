import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import TernBroker
import TernBrokerCore
import TernBrokerTesting
import TernClient
import TernCodec
import Testing

/// Listener blocks over real sockets: TLS (with and without client certificates), MQTT over
/// WebSockets (MQTT 5.0 §6, 3.1.1 §6), and what hostile peers get. Certificates are made by
/// `openssl` for each test.
@Suite("Listeners: TLS and WebSockets")
struct ListenerTests {
    /// A broker with, in order: plain MQTT, TLS, TLS that requires a client certificate and uses
    /// its Common Name as the user name, WebSocket, and WebSocket over TLS. `acl` applies to all.
    static func withListeners(
        acl: String? = nil,
        connectTimeout: Int64 = 30,
        _ body: (MQTTBroker, _ ports: [Int], FixtureCertificates) async throws -> Void
    ) async throws {
        let certificates = try await FixtureCertificates.make()
        defer { certificates.remove() }
        let tls = certificates.serverTLS
        let identity = certificates.clientCertificateTLS
        try await withTestBroker({ options in
            options.connectTimeout = connectTimeout
            options.listeners = [
                .init(host: "127.0.0.1", port: 0),
                .init(host: "127.0.0.1", port: 0, tls: tls),
                .init(host: "127.0.0.1", port: 0, tls: identity),
                .init(host: "127.0.0.1", port: 0, transport: .webSockets),
                .init(host: "127.0.0.1", port: 0, transport: .webSockets, tls: tls),
            ]
            if let acl { options.accessControl = try! AccessControlList(parsing: acl, file: "acl") }
        }) { broker, _ in
            let ports = try await broker.waitUntilListening().map { $0.port! }
            try await body(broker, ports, certificates)
        }
    }

    /// Connecting fails because TLS refused it, and says so: the connection closed with the TLS
    /// error as its reason. A refused TCP connect (a timeout) or a broker crash does not pass.
    /// `alert` is BoringSSL's name for the failure (an alert the peer sent, or the local check).
    static func expectTLSRefusal(_ what: String, alert: String, _ connect: () async throws -> Void) async {
        let error = await #expect(throws: MQTTClientError.self, "\(what)") { try await connect() }
        guard let error else { return }
        #expect(error.code == .connectionClosed, "\(what): \(error)")
        #expect(error.reasonString?.contains(alert) == true, "\(what): expected \(alert), got \(error)")
    }

    static func client(
        _ id: String,
        url: String,
        certificates: FixtureCertificates,
        clientCertificate: (String, String)? = nil
    ) throws -> MQTTClient {
        var configuration = try MQTTClientConfiguration(url: url, clientID: id)
        configuration.reconnect = nil
        // Generous: with the whole suite running on two cores, a TLS handshake and CONNECT have been
        // seen to take more than 5 s. A refusal still comes at once; only a hang waits this long.
        configuration.connectTimeout = .seconds(30)
        if configuration.tls != nil {
            configuration.tls?.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(certificates.caFile))
            if let (certificate, key) = clientCertificate {
                configuration.tls?.certificateChain = try NIOSSLCertificate.fromPEMFile(certificate).map {
                    .certificate($0)
                }
                configuration.tls?.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            }
        }
        return MQTTClient(configuration: configuration)
    }

    /// Subscribes through one URL, publishes through another, and returns what arrived.
    static func roundTrip(subscriber: MQTTClient, publisher: MQTTClient, topic: String, payload: String) async throws
        -> String?
    {
        try await subscriber.connect()
        try await publisher.connect()
        let subscription = try await subscriber.subscribe(to: topic, qos: .atLeastOnce)
        _ = try await publisher.publish(to: topic, payload: ByteBuffer(string: payload), qos: .atLeastOnce)
        let message = try await withDeadline(seconds: 10) {
            var iterator = subscription.makeAsyncIterator()
            return await iterator.next()
        }
        await publisher.disconnect()
        await subscriber.disconnect()
        return message.map { String(buffer: $0.payload) }
    }

    @Test("TLS and TLS-over-WebSocket clients reach each other and plain clients, in both directions")
    func tlsRoundTrips() async throws {
        try await Self.withListeners { _, ports, certificates in
            let urls = [
                "mqtts://localhost:\(ports[1])", "ws://127.0.0.1:\(ports[3])/mqtt", "wss://localhost:\(ports[4])/mqtt",
                "mqtt://127.0.0.1:\(ports[0])",
            ]
            for (index, url) in urls.enumerated() {
                let next = urls[(index + 1) % urls.count]
                let received = try await Self.roundTrip(
                    subscriber: try Self.client("s\(index)", url: url, certificates: certificates),
                    publisher: try Self.client("p\(index)", url: next, certificates: certificates),
                    topic: "t/\(index)",
                    payload: "\(next) -> \(url)"
                )
                #expect(received == "\(next) -> \(url)")
            }
        }
    }

    @Test("use_identity_as_username: the certificate's Common Name is the user the ACL sees")
    func identityAsUsername() async throws {
        try await Self.withListeners(acl: "user alice\ntopic readwrite alice/#\n") { _, ports, certificates in
            let alice = try Self.client(
                "a",
                url: "mqtts://localhost:\(ports[2])",
                certificates: certificates,
                clientCertificate: (certificates.clientCertificate, certificates.clientKey)
            )
            try await alice.connect()
            let granted = try await alice.subscribe(to: "alice/#", qos: .atLeastOnce)
            #expect(granted.reasonCodes == [.grantedQoS1])
            // MQTT 5.0 §3.9.3: a filter outside the ACL is refused with 0x87.
            await #expect(throws: MQTTClientError(.refused, reasonCode: .notAuthorized)) {
                try await alice.subscribe(to: "bob/#", qos: .atLeastOnce)
            }
            await alice.disconnect()
        }
    }

    @Test("expired, untrusted and missing client certificates are refused; everyone else is still served")
    func badClientCertificates() async throws {
        try await Self.withListeners { _, ports, certificates in
            let attempts: [(String, (String, String)?, alert: String)] = [
                (
                    "expired", (certificates.expiredCertificate, certificates.expiredKey),
                    "SSLV3_ALERT_CERTIFICATE_EXPIRED"
                ),
                ("stranger", (certificates.strangerCertificate, certificates.strangerKey), "TLSV1_ALERT_UNKNOWN_CA"),
                ("none", nil, "TLSV1_ALERT_CERTIFICATE_REQUIRED"),
            ]
            for (name, certificate, alert) in attempts {
                let client = try Self.client(
                    name,
                    url: "mqtts://localhost:\(ports[2])",
                    certificates: certificates,
                    clientCertificate: certificate
                )
                await Self.expectTLSRefusal("\(name) certificate", alert: alert) { try await client.connect() }
            }
            let alice = try Self.client(
                "a",
                url: "mqtts://localhost:\(ports[2])",
                certificates: certificates,
                clientCertificate: (certificates.clientCertificate, certificates.clientKey)
            )
            try await alice.connect()
            #expect(await alice.isConnected)
            await alice.disconnect()
        }
    }

    @Test("a client that does not trust the server's CA cannot connect")
    func untrustedServer() async throws {
        try await Self.withListeners { _, ports, certificates in
            var configuration = try MQTTClientConfiguration(url: "mqtts://localhost:\(ports[1])", clientID: "doubter")
            configuration.reconnect = nil
            configuration.connectTimeout = .seconds(5)
            configuration.tls?.trustRoots = .certificates(
                try NIOSSLCertificate.fromPEMFile(certificates.strangerCertificate)
            )
            let client = MQTTClient(configuration: configuration)
            await Self.expectTLSRefusal("untrusted server", alert: "CERTIFICATE_VERIFY_FAILED") {
                try await client.connect()
            }
        }
    }

    @Test("a TLS handshake that never finishes is dropped at the connect timeout; others connect meanwhile")
    func stalledHandshake() async throws {
        // A 10 s timeout: the other client's own TLS handshake and CONNECT must fit in it too, and a
        // debug build on a machine busy with the load suites may take seconds over them.
        try await Self.withListeners(connectTimeout: 10) { _, ports, certificates in
            var stalled = try await RawSocket.connect(port: ports[1])
            // The start of a ClientHello, and then nothing. (Under load the broker may already have
            // given up on the socket, so a failed write is fine too.)
            try? await stalled.send([0x16, 0x03, 0x01, 0x00, 0x40])
            let client = try Self.client("ok", url: "mqtts://localhost:\(ports[1])", certificates: certificates)
            try await client.connect()
            #expect(try await stalled.closed())  // closed by the broker, not by this test
            #expect(await client.isConnected)
            await client.disconnect()
        }
    }

    @Test("plain MQTT sent to a TLS listener is closed without harm")
    func plainToTLS() async throws {
        try await Self.withListeners { _, ports, _ in
            var confused = try await TestClient.connect(port: ports[1])
            try await confused.send(
                .connect(Connect(protocolVersion: .v5, clientIdentifier: "plain", cleanStart: true, keepAlive: 10))
            )
            #expect(try await confused.next(seconds: 5) == nil)
        }
    }

    // MARK: WebSocket framing

    @Test("§6.0 a packet split across frames and several packets in one frame are both read")
    func framing() async throws {
        try await Self.withListeners { _, ports, _ in
            var socket = try await RawSocket.connect(port: ports[3])
            let response = try await socket.upgrade(subprotocol: "mqtt")
            #expect(response.hasPrefix("HTTP/1.1 101"))
            #expect(response.lowercased().contains("sec-websocket-protocol: mqtt"))

            let connect = try encode(
                .connect(Connect(protocolVersion: .v3_1_1, clientIdentifier: "framed", cleanStart: true, keepAlive: 30))
            )
            let half = connect.count / 2
            try await socket.send(frame(opcode: 0x2, fin: false, Array(connect[..<half])))
            try await socket.send(frame(opcode: 0x0, fin: true, Array(connect[half...])))
            let together =
                try encode(
                    .subscribe(
                        Subscribe(
                            packetIdentifier: 1,
                            subscriptions: [.init(filter: try TopicFilter("ws/t"), options: .init())]
                        )
                    )
                )
                + encode(
                    .publish(
                        Publish(
                            topic: try TopicName("ws/t"),
                            payload: ByteBuffer(string: "hi"),
                            qos: .atMostOnce,
                            retain: false,
                            packetIdentifier: 0
                        )
                    )
                )
                + encode(.pingreq)
            try await socket.send(frame(opcode: 0x2, fin: true, together))

            let packets = try await socket.mqttPackets(count: 4)
            #expect(packets.map(\.type) == [.connack, .suback, .publish, .pingresp])
        }
    }

    @Test("a WebSocket upgrade with a wrong subprotocol gets 400, and the listener keeps serving")
    func wrongSubprotocol() async throws {
        try await Self.withListeners { _, ports, certificates in
            var socket = try await RawSocket.connect(port: ports[3])
            let response = try await socket.upgrade(subprotocol: "chat")
            #expect(response.hasPrefix("HTTP/1.1 400"))
            #expect(try await socket.closed())
            let client = try Self.client("after", url: "ws://127.0.0.1:\(ports[3])/mqtt", certificates: certificates)
            try await client.connect()
            await client.disconnect()
        }
    }

    @Test("a text frame is a protocol error: the broker closes the WebSocket")
    func textFrame() async throws {
        try await Self.withListeners { _, ports, _ in
            var socket = try await RawSocket.connect(port: ports[3])
            _ = try await socket.upgrade(subprotocol: "mqtt")
            try await socket.send(frame(opcode: 0x1, fin: true, Array("hello".utf8)))
            #expect(try await socket.closed())
        }
    }

    @Test("listener 0 /path: MQTT over a Unix socket")
    func unixSocket() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent(
            "tern-\(UUID().uuidString.prefix(8)).sock"
        ).path
        defer { try? FileManager.default.removeItem(atPath: path) }
        try await withTestBroker({ options in
            options.listeners = [.init(unixSocketPath: path)]
        }) { _, _ in
            var socket = try await RawSocket.connect(unixSocketPath: path)
            try await socket.send(
                encode(
                    .connect(
                        Connect(protocolVersion: .v3_1_1, clientIdentifier: "local", cleanStart: true, keepAlive: 30)
                    )
                )
            )
            while socket.pending.readableBytes < 4 {
                guard try await socket.fill() else { break }
            }
            // CONNACK, accepted (3.1.1 §3.2)
            #expect(Array(socket.pending.readableBytesView) == [0x20, 0x02, 0x00, 0x00])
        }
    }

    @Test("a WebSocket upgrade that never comes is dropped at the connect timeout")
    func stalledUpgrade() async throws {
        try await Self.withListeners(connectTimeout: 1) { _, ports, _ in
            var silent = try await RawSocket.connect(port: ports[3])
            try? await silent.send(Array("GET /mqtt HTTP/1.1\r\n".utf8))  // and never the rest
            #expect(try await silent.closed())
        }
    }

    @Test("tls_version tlsv1.3 refuses a client that stops at TLS 1.2, and accepts one that does not")
    func minimumVersion() async throws {
        let certificates = try await FixtureCertificates.make()
        defer { certificates.remove() }
        var tls = certificates.serverTLS
        tls.minimumVersion = .tls1_3
        try await withTestBroker({ options in
            options.listeners = [.init(host: "127.0.0.1", port: 0, tls: tls)]
        }) { _, port in
            let old = try Self.client("old", url: "mqtts://localhost:\(port)", certificates: certificates)
            var configuration = old.configuration
            configuration.tls?.maximumTLSVersion = .tlsv12
            await Self.expectTLSRefusal("TLS 1.2 client", alert: "TLSV1_ALERT_PROTOCOL_VERSION") {
                try await MQTTClient(configuration: configuration).connect()
            }
            let current = try Self.client("current", url: "mqtts://localhost:\(port)", certificates: certificates)
            try await current.connect()
            await current.disconnect()
        }
    }

    @Test("capath: a directory of CA certificates checks client certificates as cafile does")
    func caPath() async throws {
        let certificates = try await FixtureCertificates.make()
        defer { certificates.remove() }
        let directory = certificates.directory + "/cas"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        try FileManager.default.copyItem(atPath: certificates.caFile, toPath: directory + "/ca.pem")
        try "not a certificate\n".write(toFile: directory + "/README", atomically: true, encoding: .utf8)
        var tls = certificates.clientCertificateTLS
        tls.caFile = nil
        tls.caPath = directory
        try await withTestBroker({ options in
            options.listeners = [.init(host: "127.0.0.1", port: 0, tls: tls)]
        }) { _, port in
            let alice = try Self.client(
                "a",
                url: "mqtts://localhost:\(port)",
                certificates: certificates,
                clientCertificate: (certificates.clientCertificate, certificates.clientKey)
            )
            try await alice.connect()
            await alice.disconnect()
            let stranger = try Self.client(
                "m",
                url: "mqtts://localhost:\(port)",
                certificates: certificates,
                clientCertificate: (certificates.strangerCertificate, certificates.strangerKey)
            )
            await Self.expectTLSRefusal("stranger certificate", alert: "TLSV1_ALERT_UNKNOWN_CA") {
                try await stranger.connect()
            }
        }
    }

    @Test("per_listener_settings: each listener's allow_anonymous and password file apply to its own clients")
    func perListenerLogins() async throws {
        var passwords = PasswordFile()
        passwords.set(username: "bob", password: Array("pw".utf8))
        try await withTestBroker({ options in
            options.listeners = [
                .init(host: "127.0.0.1", port: 0, security: ListenerSecurity(allowAnonymous: true)),
                .init(
                    host: "127.0.0.1",
                    port: 0,
                    security: ListenerSecurity(allowAnonymous: false, passwordFile: passwords)
                ),
            ]
        }) { broker, _ in
            let ports = try await broker.waitUntilListening().map { $0.port! }
            func login(port: Int, user: String?, password: String?) async throws -> ReasonCode {
                var client = try await TestClient.connect(port: port)
                var connect = Connect(
                    protocolVersion: .v5,
                    clientIdentifier: "c\(port)\(user ?? "-")\(password ?? "-")",
                    cleanStart: true,
                    keepAlive: 30
                )
                connect.username = user
                connect.password = password.map { ByteBuffer(string: $0) }
                let code = try await client.handshake(connect).reasonCode
                await client.close()
                return code
            }
            #expect(try await login(port: ports[0], user: nil, password: nil) == .success)
            #expect(try await login(port: ports[1], user: nil, password: nil) == .notAuthorized)
            #expect(try await login(port: ports[1], user: "bob", password: "pw") == .success)
            #expect(try await login(port: ports[1], user: "bob", password: "nope") == .badUserNameOrPassword)
            // The first listener has no password file: a user name is not checked there.
            #expect(try await login(port: ports[0], user: "bob", password: "nope") == .success)
        }
    }

    // MARK: Reloading

    @Test(
        "reloadSecurity (SIGHUP) applies a changed ACL and password file without dropping connections; a broken file keeps the old rules"
    )
    func reload() async throws {
        let directory = try TemporaryDirectory(prefix: "reload")
        let aclPath = directory.file("acl")
        let passwordPath = directory.file("passwd")
        try "topic readwrite old/#\n".write(toFile: aclPath, atomically: true, encoding: .utf8)
        try "".write(toFile: passwordPath, atomically: true, encoding: .utf8)
        try await withTestBroker({ options in
            options.accessControl = try! AccessControlList.load(path: aclPath)
            options.accessControlPath = aclPath
            options.passwordFile = try! PasswordFile.load(path: passwordPath)
            options.passwordFilePath = passwordPath
        }) { broker, port in
            var client = try await TestClient.connect(port: port)
            _ = try await client.handshake(
                Connect(protocolVersion: .v5, clientIdentifier: "stays", cleanStart: true, keepAlive: 30)
            )
            func subscribe(_ filter: String, id: UInt16) async throws -> ReasonCode? {
                try await client.send(
                    .subscribe(
                        Subscribe(
                            packetIdentifier: id,
                            subscriptions: [.init(filter: try TopicFilter(filter), options: .init())]
                        )
                    )
                )
                guard case .suback(let ack)? = try await client.next() else { return nil }
                return ack.reasonCodes.first
            }
            #expect(try await subscribe("new/x", id: 1) == .notAuthorized)

            try "topic readwrite new/#\n".write(toFile: aclPath, atomically: true, encoding: .utf8)
            var file = PasswordFile()
            file.set(username: "bob", password: Array("pw".utf8))
            try file.text.write(toFile: passwordPath, atomically: true, encoding: .utf8)
            #expect(broker.reloadSecurity().isEmpty)
            #expect(try await subscribe("new/x", id: 2) == .success)  // the same connection, new rules
            var bob = try await TestClient.connect(port: port)
            var login = Connect(protocolVersion: .v5, clientIdentifier: "bob", cleanStart: true, keepAlive: 30)
            login.username = "bob"
            login.password = ByteBuffer(string: "pw")
            #expect(try await bob.handshake(login).reasonCode == .success)

            try "subscribe everything\n".write(toFile: aclPath, atomically: true, encoding: .utf8)
            let errors = broker.reloadSecurity()
            #expect(errors.count == 1)
            #expect(errors.first?.contains("acl:1") == true)
            #expect(try await subscribe("new/y", id: 3) == .success)  // the old rules stand
            await bob.close()
            await client.close()
        }
        _ = directory.path  // the files are needed until the broker has stopped
    }
}

// MARK: - Helpers

func encode(_ packet: MQTTPacket, version: ProtocolVersion = .v3_1_1) throws -> [UInt8] {
    var buffer = ByteBuffer()
    try packet.write(to: &buffer, version: version)
    return Array(buffer.readableBytesView)
}

/// A client WebSocket frame (masked, as RFC 6455 §5.3 requires of clients).
func frame(opcode: UInt8, fin: Bool, _ payload: [UInt8]) -> [UInt8] {
    var bytes: [UInt8] = [(fin ? 0x80 : 0) | opcode]
    if payload.count < 126 {
        bytes.append(0x80 | UInt8(payload.count))
    } else {
        bytes.append(0x80 | 126)
        bytes += [UInt8(payload.count >> 8), UInt8(payload.count & 0xFF)]
    }
    let mask: [UInt8] = [0x12, 0x34, 0x56, 0x78]
    bytes += mask
    bytes += payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
    return bytes
}

struct PeerSilence: Error {}

/// Waits for `body` at most `seconds`.
func withDeadline<T: Sendable>(seconds: Int, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await withThrowingTaskGroup(of: T.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: .seconds(seconds))
            throw CancellationError()
        }
        let result = try await group.next()!
        group.cancelAll()
        return result
    }
}

/// Bytes over a TCP socket, with bounded waits: for speaking WebSocket by hand.
struct RawSocket: ~Copyable {
    enum Event: Sendable {
        case data(ByteBuffer)
        case closed
        case timeout(UInt64)
    }

    let channel: any Channel
    let continuation: AsyncStream<Event>.Continuation
    var iterator: AsyncStream<Event>.Iterator
    var pending = ByteBuffer()
    var timeoutToken: UInt64 = 0

    final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let continuation: AsyncStream<Event>.Continuation
        init(_ continuation: AsyncStream<Event>.Continuation) { self.continuation = continuation }
        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            continuation.yield(.data(unwrapInboundIn(data)))
        }
        func channelInactive(context: ChannelHandlerContext) { continuation.yield(.closed) }
    }

    static func connect(port: Int) async throws -> RawSocket {
        let (stream, continuation) = AsyncStream<Event>.makeStream()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector(continuation))
                }
            }
            .connect(host: "127.0.0.1", port: port).get()
        return RawSocket(channel: channel, continuation: continuation, iterator: stream.makeAsyncIterator())
    }

    static func connect(unixSocketPath: String) async throws -> RawSocket {
        let (stream, continuation) = AsyncStream<Event>.makeStream()
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(Collector(continuation))
                }
            }
            .connect(unixDomainSocketPath: unixSocketPath).get()
        return RawSocket(channel: channel, continuation: continuation, iterator: stream.makeAsyncIterator())
    }

    func send(_ bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes))
    }

    /// Reads more bytes into `pending`; `false` when the connection closed. Throws after 10 s.
    mutating func fill() async throws -> Bool {
        timeoutToken += 1
        let token = timeoutToken
        let continuation = self.continuation
        channel.eventLoop.scheduleTask(in: .seconds(10)) { continuation.yield(.timeout(token)) }
        while let event = await iterator.next() {
            switch event {
            case .data(let chunk):
                pending.writeImmutableBuffer(chunk)
                return true
            case .closed:
                return false
            case .timeout(let fired):
                if fired == token { throw PeerSilence() }
            }
        }
        return false
    }

    /// Sends an upgrade request and returns the response head.
    mutating func upgrade(subprotocol: String) async throws -> String {
        let request =
            "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: \(subprotocol)\r\n\r\n"
        try await send(Array(request.utf8))
        while true {
            let text = String(decoding: pending.readableBytesView, as: UTF8.self)
            if let end = text.range(of: "\r\n\r\n") {
                let head = String(text[..<end.lowerBound])
                pending.moveReaderIndex(forwardBy: text[..<end.upperBound].utf8.count)
                return head
            }
            guard try await fill() else { return text }
        }
    }

    /// Reads server frames until `count` MQTT packets have been decoded from their payloads.
    mutating func mqttPackets(count: Int) async throws -> [MQTTPacket] {
        var stream = ByteBuffer()
        var packets: [MQTTPacket] = []
        var decoder = MQTTPacketDecoder(protocolVersion: .v3_1_1)
        while packets.count < count {
            if let payload = takeFrame() {
                stream.writeBytes(payload)
                while let packet = try decoder.decode(buffer: &stream) { packets.append(packet) }
                continue
            }
            guard try await fill() else { break }
        }
        return packets
    }

    /// One whole unmasked server frame's payload, if `pending` holds one.
    mutating func takeFrame() -> [UInt8]? {
        let bytes = Array(pending.readableBytesView)
        guard bytes.count >= 2 else { return nil }
        var length = Int(bytes[1] & 0x7F)
        var offset = 2
        if length == 126 {
            guard bytes.count >= 4 else { return nil }
            length = Int(bytes[2]) << 8 | Int(bytes[3])
            offset = 4
        }
        guard bytes.count >= offset + length else { return nil }
        pending.moveReaderIndex(forwardBy: offset + length)
        return Array(bytes[offset..<offset + length])
    }

    /// Whether the broker closes the connection (after anything it still sends).
    mutating func closed() async throws -> Bool {
        while try await fill() { pending.clear() }
        return true
    }
}
