import Foundation
import NIOCore
import NIOSSL
import Synchronization
import TernBridge
import TernBroker
import TernBrokerTesting
import TernClient
import TernCodec
import TernStoreSQLite
import Testing

/// A Mosquitto broker run by a test, on a port of its own, optionally with persistence so that
/// a subscriber's session survives its restart.
final class MosquittoPeer: Sendable {
    let port: Int
    let directory: String
    let persistent: Bool
    let running: Peers.Running

    static func start(persistent: Bool = false, port: Int? = nil, directory: String? = nil, extra: String = "")
        async throws -> MosquittoPeer
    {
        let directory =
            directory
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("tern-mosquitto-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        func configuration(_ port: Int) throws -> (String, [String]) {
            // user root: a mosquitto started as root otherwise runs as user mosquitto, which cannot
            // write the test's directory.
            var text = "listener \(port) 127.0.0.1\nallow_anonymous true\nuser root\n"
            if persistent { text += "persistence true\npersistence_location \(directory)/\nautosave_interval 1\n" }
            text += extra + "\n"
            let path = "\(directory)/mosquitto-\(port).conf"
            try text.write(toFile: path, atomically: true, encoding: .utf8)
            // Started through Python so that SIGTERM is unblocked again: children of the test runner
            // inherit its blocked signals, and a mosquitto that cannot see SIGTERM cannot save.
            let mosquitto = Peers.which("mosquitto") ?? "/usr/sbin/mosquitto"
            let unblock =
                "import os, signal; signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT}); os.execv(\"\(mosquitto)\", [\"mosquitto\", \"-c\", \"\(path)\"])"
            return ("/usr/bin/python3", ["-c", unblock])
        }
        if let port {
            let (path, arguments) = try configuration(port)
            let running = try Peers.Running(path, arguments)
            let deadline = Date().addingTimeInterval(10)
            while !(await Peers.accepts(port: port)) {
                guard Date() < deadline, running.process.isRunning else {
                    throw PeerTimeout(what: "mosquitto on \(port)")
                }
                try await Task.sleep(for: .milliseconds(10))
            }
            return MosquittoPeer(port: port, directory: directory, persistent: persistent, running: running)
        }
        let (running, port) = try await Peers.startOnFreePort(configuration)
        return MosquittoPeer(port: port, directory: directory, persistent: persistent, running: running)
    }

    private init(port: Int, directory: String, persistent: Bool, running: Peers.Running) {
        self.port = port
        self.directory = directory
        self.persistent = persistent
        self.running = running
    }

    /// Stops it with SIGTERM (it saves its sessions first) and waits for it to exit.
    func stop() {
        if running.process.isRunning { kill(running.process.processIdentifier, SIGTERM) }
        let output = running.finishBlocking(timeout: 10)
        stoppedCleanly.withLock { $0 = output.status == 0 }
    }

    /// Whether the last ``stop()`` ended with exit status 0, not the SIGKILL after the timeout.
    let stoppedCleanly = Mutex(false)

    /// The same broker again, on the same port, with what it saved.
    func restart() async throws -> MosquittoPeer {
        try await Self.start(persistent: persistent, port: port, directory: directory)
    }
}

/// Records what an ``MQTTClient`` subscription receives, as load deliveries.
final class LoadRecorder: Sendable {
    let deliveries = Mutex<[SequencedDelivery]>([])
    let topics = Mutex<[String]>([])

    func record(_ message: MQTTMessage) {
        guard let (publisher, sequence) = SequencedLoad.read(message.payload) else { return }
        deliveries.withLock {
            $0.append(
                SequencedDelivery(
                    publisher: publisher,
                    sequence: sequence,
                    qos: message.qos,
                    duplicate: message.duplicate
                )
            )
        }
        topics.withLock { $0.append(message.topic) }
    }

    /// Waits, polling every 10 ms for at most `seconds`, until `count` deliveries arrived.
    func wait(for count: Int, seconds: Double = 60) async throws {
        let deadline = Date().addingTimeInterval(seconds)
        while deliveries.withLock({ $0.count }) < count {
            guard Date() < deadline else { throw PeerTimeout(what: "\(count) deliveries") }
            try await Task.sleep(for: .milliseconds(10))
        }
    }
}

/// Bridges, configured as in Mosquitto, against Debian's Mosquitto as the remote broker and
/// against another Tern. Every load is numbered and checked for order and loss.
@Suite(
    "Bridges",
    .enabled(if: Peers.which("mosquitto") != nil && Peers.mosquittoAvailable, "mosquitto is missing")
)
struct BridgeInteropTests {
    static func bridge(
        to port: Int,
        _ topics: [BridgeConfiguration.Topic],
        version: ProtocolVersion,
        name: String = "b-\(UUID().uuidString.prefix(8))"
    ) -> BridgeConfiguration {
        var bridge = BridgeConfiguration(
            name: name,
            addresses: [.init(host: "127.0.0.1", port: port)],
            hostname: "test"
        )
        bridge.topics = topics
        bridge.protocolVersion = version
        bridge.restartBase = .milliseconds(200)
        bridge.restartCap = .seconds(1)
        return bridge
    }

    /// Runs `bridge` against `broker` for the duration of `body`.
    static func withBridge<T>(
        _ bridge: BridgeConfiguration,
        on broker: MQTTBroker,
        _ body: (MQTTBridge) async throws -> T
    ) async throws -> T {
        let running = try MQTTBridge(configuration: bridge, broker: broker)
        let task = Task { try await running.run() }
        defer { task.cancel() }
        let deadline = Date().addingTimeInterval(30)
        while !running.isBridging {
            guard Date() < deadline else { throw PeerTimeout(what: "the bridge to connect") }
            try await Task.sleep(for: .milliseconds(10))
        }
        let result = try await body(running)
        task.cancel()
        _ = await task.result
        return result
    }

    static func publication(_ topic: String, count: Int, publisher: UInt32 = 1) -> SequencedLoad.Publication {
        SequencedLoad.Publication(
            clientID: "load-\(publisher)-\(UUID().uuidString.prefix(6))",
            publisher: publisher,
            topic: topic,
            count: count,
            qos: { _ in .atLeastOnce }
        )
    }

    @Test(
        "QoS 1 both ways through a bridge to Mosquitto, topics remapped by prefix, in order and complete",
        arguments: [ProtocolVersion.v3_1_1, .v5]
    )
    func bothWays(version: ProtocolVersion) async throws {
        let mosquitto = try await MosquittoPeer.start()
        defer { mosquitto.stop() }
        try await withTestBroker { broker, port in
            let bridge = Self.bridge(
                to: mosquitto.port,
                [
                    .init(
                        pattern: "sensors/#",
                        direction: .out,
                        qos: .atLeastOnce,
                        localPrefix: "site/",
                        remotePrefix: "plant/site/"
                    ),
                    .init(
                        pattern: "commands/#",
                        direction: .in,
                        qos: .atLeastOnce,
                        localPrefix: "local/",
                        remotePrefix: "remote/"
                    ),
                ],
                version: version
            )
            try await Self.withBridge(bridge, on: broker) { _ in
                let far = try await SequencedLoad.subscribe(
                    port: mosquitto.port,
                    clientID: "far",
                    filter: "plant/site/sensors/#",
                    qos: .atLeastOnce
                )
                let near = try await SequencedLoad.subscribe(
                    port: port,
                    clientID: "near",
                    filter: "local/commands/#",
                    qos: .atLeastOnce
                )
                try await SequencedLoad.publish(
                    port: port,
                    Self.publication("site/sensors/a", count: 500, publisher: 1)
                )
                try await SequencedLoad.publish(
                    port: mosquitto.port,
                    Self.publication("remote/commands/b", count: 500, publisher: 2)
                )
                try await far.wait { $0.count >= 500 }
                try await near.wait { $0.count >= 500 }
                let out = SequenceCheck(far.deliveries, published: [1: 500], qos: { _ in .atLeastOnce })
                let into = SequenceCheck(near.deliveries, published: [2: 500], qos: { _ in .atLeastOnce })
                #expect(out.outOfOrder == 0 && out.lost == 0 && out.duplicates == 0, "\(out)")
                #expect(into.outOfOrder == 0 && into.lost == 0 && into.duplicates == 0, "\(into)")
                // The bridge's figures are on the broker's /metrics.
                let metrics = String(decoding: broker.scrapeMetrics(), as: UTF8.self)
                #expect(metrics.contains("tern_bridge_connected{bridge=\"\(bridge.name)\"} 1.0"), "\(metrics)")
                #expect(metrics.contains("tern_bridge_messages_total{bridge=\"\(bridge.name)\",direction=\"out\"} 500"))
                await far.close()
                await near.close()
            }
        }
    }

    @Test("a bridge over TLS (bridge_cafile, bridge_certfile, bridge_keyfile) to a Mosquitto TLS listener")
    func overTLS() async throws {
        let certificates = try await FixtureCertificates.make()
        defer { certificates.remove() }
        let tls = try await MosquittoPeer.start(
            extra: """
                cafile \(certificates.caFile)
                certfile \(certificates.serverCertificate)
                keyfile \(certificates.serverKey)
                require_certificate true
                """
        )
        defer { tls.stop() }
        try await withTestBroker { broker, port in
            var bridge = Self.bridge(
                to: tls.port,
                [.init(pattern: "secure/#", direction: .out, qos: .atLeastOnce)],
                version: .v5
            )
            bridge.caFile = certificates.caFile
            bridge.certificateFile = certificates.clientCertificate
            bridge.keyFile = certificates.clientKey
            bridge.insecure = true  // the fixture certificate names localhost, the bridge dials 127.0.0.1
            try await Self.withBridge(bridge, on: broker) { _ in
                let recorder = LoadRecorder()
                var configuration = MQTTClientConfiguration(host: "127.0.0.1", port: tls.port, clientID: "far-tls")
                var client = TLSConfiguration.makeClientConfiguration()
                client.trustRoots = .file(certificates.caFile)
                client.certificateChain = try NIOSSLCertificate.fromPEMFile(certificates.clientCertificate).map {
                    .certificate($0)
                }
                client.privateKey = .privateKey(try NIOSSLPrivateKey(file: certificates.clientKey, format: .pem))
                client.certificateVerification = .noHostnameVerification
                configuration.tls = client
                let far = MQTTClient(configuration: configuration)
                try await far.connect()
                let subscription = try await far.subscribe(to: "secure/#", qos: .atLeastOnce)
                let reader = Task { for await message in subscription { recorder.record(message) } }
                try await SequencedLoad.publish(port: port, Self.publication("secure/a", count: 100))
                try await recorder.wait(for: 100)
                let check = SequenceCheck(
                    recorder.deliveries.withLock { $0 },
                    published: [1: 100],
                    qos: { _ in .atLeastOnce }
                )
                #expect(check.outOfOrder == 0 && check.lost == 0, "\(check)")
                await far.disconnect()
                reader.cancel()
            }
        }
    }

    @Test(
        "topic # both, over 3.1.1 with try_private and over MQTT 5 with No Local: nothing comes back",
        arguments: [ProtocolVersion.v3_1_1, .v5]
    )
    func noLoop(version: ProtocolVersion) async throws {
        let mosquitto = try await MosquittoPeer.start()
        defer { mosquitto.stop() }
        try await withTestBroker { broker, port in
            let bridge = Self.bridge(
                to: mosquitto.port,
                [.init(pattern: "#", direction: .both, qos: .atLeastOnce)],
                version: version
            )
            try await Self.withBridge(bridge, on: broker) { _ in
                let far = try await SequencedLoad.subscribe(
                    port: mosquitto.port,
                    clientID: "far",
                    filter: "loop/#",
                    qos: .atLeastOnce
                )
                let near = try await SequencedLoad.subscribe(
                    port: port,
                    clientID: "near",
                    filter: "loop/#",
                    qos: .atLeastOnce
                )
                try await SequencedLoad.publish(port: port, Self.publication("loop/a", count: 50, publisher: 1))
                try await SequencedLoad.publish(
                    port: mosquitto.port,
                    Self.publication("loop/b", count: 50, publisher: 2)
                )
                try await far.wait { $0.count >= 100 }
                try await near.wait { $0.count >= 100 }
                // A loop would keep sending the same messages round: watch both sides a while longer.
                try await Task.sleep(for: .milliseconds(500))
                for side in [far, near] {
                    let check = SequenceCheck(side.deliveries, published: [1: 50, 2: 50], qos: { _ in .atLeastOnce })
                    #expect(check.received == 100 && check.lost == 0 && check.duplicates == 0, "\(check)")
                }
                await far.close()
                await near.close()
            }
        }
    }

    @Test("QoS 1 published while Mosquitto is down arrives, in order, once it is back")
    func remoteDown() async throws {
        var mosquitto = try await MosquittoPeer.start(persistent: true)
        defer { mosquitto.stop() }
        let far = try await Self.persistentSubscriber(port: mosquitto.port, filter: "queued/#")
        await far.client.disconnect()
        try await withTestBroker { broker, port in
            let bridge = Self.bridge(
                to: mosquitto.port,
                [.init(pattern: "queued/#", direction: .out, qos: .atLeastOnce)],
                version: .v3_1_1
            )
            try await Self.withBridge(bridge, on: broker) { running in
                #expect(try await Self.localState(port: port, bridge) == "1")
                mosquitto.stop()
                #expect(mosquitto.stoppedCleanly.withLock { $0 }, "mosquitto did not save on SIGTERM")
                let deadline = Date().addingTimeInterval(20)
                while running.isBridging {
                    guard Date() < deadline else { throw PeerTimeout(what: "the bridge to see Mosquitto go") }
                    try await Task.sleep(for: .milliseconds(10))
                }
                // notifications: the retained state says 0 while the remote is gone.
                var state = try await Self.localState(port: port, bridge)
                while state != "0", Date() < deadline {
                    try await Task.sleep(for: .milliseconds(10))
                    state = try await Self.localState(port: port, bridge)
                }
                #expect(state == "0")
                try await SequencedLoad.publish(port: port, Self.publication("queued/a", count: 300))
                mosquitto = try await mosquitto.restart()
                let recorder = LoadRecorder()
                let resumed = try await Self.persistentSubscriber(
                    port: mosquitto.port,
                    filter: "queued/#",
                    recorder: recorder
                )
                try await recorder.wait(for: 300)
                let check = SequenceCheck(
                    recorder.deliveries.withLock { $0 },
                    published: [1: 300],
                    qos: { _ in .atLeastOnce }
                )
                #expect(check.outOfOrder == 0 && check.lost == 0, "\(check)")
                await resumed.client.disconnect()
            }
        }
    }

    @Test(
        "Tern ↔ Tern: 3.1.1 with try_private and MQTT 5, both ways, no loop",
        arguments: [ProtocolVersion.v3_1_1, .v5]
    )
    func ternToTern(version: ProtocolVersion) async throws {
        try await withTestBroker { remote, remotePort in
            try await withTestBroker { broker, port in
                let bridge = Self.bridge(
                    to: remotePort,
                    [.init(pattern: "t/#", direction: .both, qos: .atLeastOnce)],
                    version: version
                )
                try await Self.withBridge(bridge, on: broker) { _ in
                    let far = try await SequencedLoad.subscribe(
                        port: remotePort,
                        clientID: "far",
                        filter: "t/#",
                        qos: .atLeastOnce
                    )
                    let near = try await SequencedLoad.subscribe(
                        port: port,
                        clientID: "near",
                        filter: "t/#",
                        qos: .atLeastOnce
                    )
                    try await SequencedLoad.publish(port: port, Self.publication("t/out", count: 300, publisher: 1))
                    try await SequencedLoad.publish(
                        port: remotePort,
                        Self.publication("t/in", count: 300, publisher: 2)
                    )
                    try await far.wait { $0.count >= 600 }
                    try await near.wait { $0.count >= 600 }
                    try await Task.sleep(for: .milliseconds(300))
                    for side in [far, near] {
                        let check = SequenceCheck(
                            side.deliveries,
                            published: [1: 300, 2: 300],
                            qos: { _ in .atLeastOnce }
                        )
                        #expect(check.received == 600 && check.outOfOrder == 0 && check.lost == 0, "\(check)")
                    }
                    await far.close()
                    await near.close()
                }
                _ = remote
            }
        }
    }

    @Test(
        "SIGKILL of tern serve between the local PUBACK and the remote one loses nothing: the restarted bridge sends the stored messages on",
        .enabled(if: ternExecutable != nil, "the tern executable is missing")
    )
    func killBetweenAcknowledgements() async throws {
        var mosquitto = try await MosquittoPeer.start(persistent: true)
        defer { mosquitto.stop() }
        let far = try await Self.persistentSubscriber(port: mosquitto.port, filter: "durable/#")
        await far.client.disconnect()
        mosquitto.stop()  // remote down: every message is acknowledged locally and not remotely
        #expect(mosquitto.stoppedCleanly.withLock { $0 })

        let directory = try TemporaryDirectory(prefix: "bridge-kill")
        let configuration = directory.file("tern.conf")
        let data = directory.path
        /// tern serve on `port`, bridged to Mosquitto on `remotePort`.
        func serve(bridgingTo remotePort: Int) -> (Int) throws -> (String, [String]) {
            { port in
                try """
                listener \(port) 127.0.0.1
                allow_anonymous true
                persistence true
                persistence_location \(data)
                connection upstream
                address 127.0.0.1:\(remotePort)
                topic durable/# out 1
                restart_timeout 1
                """.write(toFile: configuration, atomically: true, encoding: .utf8)
                return (ternExecutable ?? "", ["serve", "-c", configuration])
            }
        }
        var (tern, port) = try await Peers.startOnFreePort(serve(bridgingTo: mosquitto.port))
        defer { tern.killNow() }
        try await SequencedLoad.publish(port: port, Self.publication("durable/a", count: 300))
        tern.killNow()
        _ = await tern.finish(timeout: 10)

        // Both come back on ports of their own (parallel tests may have taken the old ones); the
        // subscriber's session is in Mosquitto's saved database, the messages in Tern's store.
        mosquitto = try await MosquittoPeer.start(persistent: true, directory: mosquitto.directory)
        (tern, port) = try await Peers.startOnFreePort(serve(bridgingTo: mosquitto.port))
        let recorder = LoadRecorder()
        let resumed = try await Self.persistentSubscriber(port: mosquitto.port, filter: "durable/#", recorder: recorder)
        do {
            try await recorder.wait(for: 300)
        } catch {
            tern.killNow()
            let got = SequenceCheck(
                recorder.deliveries.withLock { $0 },
                published: [1: 300],
                qos: { _ in .atLeastOnce }
            )
            let first = recorder.deliveries.withLock { $0.prefix(5).map(\.sequence) }
            Issue.record(
                "the subscriber got \(got), first \(first); tern serve said: \(await tern.finish(timeout: 5).stderr.suffix(3000))"
            )
            throw error
        }
        let check = SequenceCheck(recorder.deliveries.withLock { $0 }, published: [1: 300], qos: { _ in .atLeastOnce })
        #expect(check.outOfOrder == 0 && check.lost == 0, "\(check)")
        await resumed.client.disconnect()
    }

    @Test("address with two brokers: the first refuses, the bridge fails over to the second and bridges there")
    func failover() async throws {
        let mosquitto = try await MosquittoPeer.start()
        defer { mosquitto.stop() }
        try await withTestBroker { broker, port in
            var bridge = Self.bridge(
                to: mosquitto.port,
                [.init(pattern: "fail/#", direction: .out, qos: .atLeastOnce)],
                version: .v5
            )
            // Port 1 on loopback: nothing listens there, the connection is refused.
            bridge.addresses = [.init(host: "127.0.0.1", port: 1), .init(host: "127.0.0.1", port: mosquitto.port)]
            try await Self.withBridge(bridge, on: broker) { _ in
                let far = try await SequencedLoad.subscribe(
                    port: mosquitto.port,
                    clientID: "far",
                    filter: "fail/#",
                    qos: .atLeastOnce
                )
                try await SequencedLoad.publish(port: port, Self.publication("fail/a", count: 100))
                try await far.wait { $0.count >= 100 }
                let check = SequenceCheck(far.deliveries, published: [1: 100], qos: { _ in .atLeastOnce })
                #expect(check.outOfOrder == 0 && check.lost == 0, "\(check)")
                await far.close()
            }
        }
    }

    /// The retained notification of `bridge` in the broker on `port`, read by a new subscriber.
    static func localState(port: Int, _ bridge: BridgeConfiguration) async throws -> String? {
        var client = try await TestClient.connect(port: port)
        _ = try await client.handshake(Connect(clientIdentifier: "state-\(UUID().uuidString.prefix(6))"))
        try await client.send(
            .subscribe(
                Subscribe(
                    packetIdentifier: 1,
                    subscriptions: [.init(filter: try TopicFilter(bridge.stateTopic), options: .init())]
                )
            )
        )
        guard case .suback? = try await client.next() else { throw UnexpectedPacket(description: "no SUBACK") }
        // A retained message follows the SUBACK at once; none within 2 s means there is none.
        var state: String?
        if case .publish(let publish)? = try? await client.next(seconds: 2) { state = String(buffer: publish.payload) }
        await client.close()
        return state
    }

    /// A subscriber whose session Mosquitto keeps (Clean Start 0, never expiring).
    static func persistentSubscriber(port: Int, filter: String, recorder: LoadRecorder = LoadRecorder()) async throws
        -> (client: MQTTClient, recorder: LoadRecorder)
    {
        var configuration = MQTTClientConfiguration(host: "127.0.0.1", port: port, clientID: "far-persistent")
        configuration.cleanStart = false
        configuration.sessionExpiry = .never
        configuration.reconnect = nil
        let client = MQTTClient(configuration: configuration)
        try await client.connect()
        let subscription = try await client.subscribe(to: filter, qos: .atLeastOnce)
        Task {
            for await message in subscription { recorder.record(message) }
        }
        return (client, recorder)
    }
}

/// When the bridge's local side is in place.
@Suite("Bridge start-up")
struct BridgeStartupTests {
    @Test("the listeners open only once the bridge has subscribed locally, even with the remote broker unreachable")
    func subscribedBeforeListening() async throws {
        var options = BrokerOptions()
        options.listeners = [.init(host: "127.0.0.1", port: 0)]
        options.sysInterval = 0
        let broker = MQTTBroker(options: options)
        var configuration = BridgeConfiguration(
            name: "early",
            addresses: [.init(host: "127.0.0.1", port: 1)],
            hostname: "test"
        )
        configuration.topics = [.init(pattern: "early/#", direction: .out, qos: .atLeastOnce)]
        let bridge = try MQTTBridge(configuration: configuration, broker: broker)
        let brokerTask = Task { try await broker.run() }
        let bridgeTask = Task { try await bridge.run() }
        _ = try await broker.waitUntilListening()
        #expect(broker.subscriptionCount == 1)
        #expect(!bridge.isBridging)
        bridgeTask.cancel()
        _ = await bridgeTask.result
        brokerTask.cancel()
        _ = await brokerTask.result
    }
}
