import Foundation
import NIOCore
import TernBrokerTesting
import TernCodec
import Testing

/// A `tern serve --data DIR` child process that a test starts, stops gracefully (SIGTERM) or
/// kills (SIGKILL), and starts again on the same port and directory. Only this PID is signalled.
final class TernServer: @unchecked Sendable {
    // @unchecked: used by one test at a time; `process` is replaced only between its runs.
    let directory: String
    let extraArguments: [String]
    /// Where the server keeps its state: `--data DIR` by default, or a cluster's database.
    let storeArguments: [String]
    private(set) var port = 0
    private var process: Peers.Running?

    init(extraArguments: [String] = [], storeArguments: [String]? = nil) throws {
        directory =
            FileManager.default.temporaryDirectory.appendingPathComponent("tern-restart-\(UUID().uuidString)").path
        self.extraArguments = extraArguments
        self.storeArguments = storeArguments ?? ["--data", directory]
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    deinit {
        process?.killNow()
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func arguments(_ port: Int) -> [String] {
        ["serve", "-p", "\(port)"] + storeArguments + extraArguments
    }

    func start() async throws {
        let tern = try #require(ternExecutable)
        let (running, port) = try await Peers.startOnFreePort { port in (tern, self.arguments(port)) }
        process = running
        self.port = port
        try await waitUntilAccepting()
    }

    /// Starts again on the same port; the store is read before the listener opens.
    func startAgain() async throws {
        let tern = try #require(ternExecutable)
        process = try Peers.Running(tern, arguments(port))
        try await waitUntilAccepting()
    }

    private func waitUntilAccepting() async throws {
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if let process, !process.process.isRunning {
                throw PeerTimeout(what: "tern serve exited: \(await process.finish(timeout: 1).stderr)")
            }
            // Started when it answers a CONNECT, not merely when the port accepts.
            if var client = try? await TestClient.connect(port: port) {
                let answered = try? await client.handshake(Connect(clientIdentifier: "start-probe-\(port)"))
                await client.close()
                if answered?.reasonCode == .success { return }
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw PeerTimeout(what: "tern serve accepting on \(port)")
    }

    /// SIGTERM, then waits for a graceful exit (on a thread of its own, see ``Peers/Running/finish(timeout:)``).
    @discardableResult
    func terminate() async -> Peers.Output? {
        guard let process else { return nil }
        kill(process.process.processIdentifier, SIGTERM)
        self.process = nil
        return await process.finish(timeout: 30)
    }

    /// SIGHUP: reload the password and ACL files.
    func hangUp() {
        guard let process else { return }
        kill(process.process.processIdentifier, SIGHUP)
    }

    /// SIGKILL now, from synchronous code (a `deinit`).
    func killNow() {
        process?.killNow()
        _ = process?.finishBlocking(timeout: 10)
        process = nil
    }

    /// SIGKILL: no chance to save anything.
    func crash() async {
        guard let process else { return }
        process.killNow()
        _ = await process.finish(timeout: 10)
        self.process = nil
    }

    /// `tern sessions --store DIR/tern.db`, read while the server runs.
    func sessionsListing(format: String = "tsv") async throws -> String {
        try await Peers.run(
            try #require(ternExecutable),
            ["sessions", "--store", directory + "/tern.db", "--format", format]
        ).stdout
    }
}

/// Packets for the raw test client.
enum Packets {
    static func connect(
        _ id: String,
        version: ProtocolVersion = .v5,
        cleanStart: Bool,
        expiry: UInt32? = nil,
        will: Connect.Will? = nil
    ) -> Connect {
        var properties = Properties()
        if version == .v5 { properties.sessionExpiryInterval = expiry }
        return Connect(
            protocolVersion: version,
            clientIdentifier: id,
            cleanStart: cleanStart,
            keepAlive: 0,
            properties: properties,
            will: will
        )
    }

    static func subscribe(_ filter: String, qos: QoS) -> MQTTPacket {
        .subscribe(
            Subscribe(
                packetIdentifier: 1,
                subscriptions: [.init(filter: try! TopicFilter(filter), options: SubscriptionOptions(qos: qos))]
            )
        )
    }

    static func publish(_ topic: String, _ payload: String, qos: QoS, id: UInt16, retain: Bool = false) -> MQTTPacket {
        .publish(
            Publish(
                topic: try! TopicName(topic),
                payload: ByteBuffer(string: payload),
                qos: qos,
                retain: retain,
                packetIdentifier: qos == .atMostOnce ? 0 : id
            )
        )
    }
}

extension TestClient {
    /// Sends CONNECT, checks the CONNACK and returns whether a session was present.
    @discardableResult
    mutating func open(_ connect: Connect) async throws -> Bool {
        let ack = try await handshake(connect)
        guard ack.reasonCode == .success else { throw UnexpectedPacket(description: "CONNACK \(ack.reasonCode)") }
        return ack.sessionPresent
    }

    mutating func subscribeAndWait(_ filter: String, qos: QoS) async throws {
        try await send(Packets.subscribe(filter, qos: qos))
        guard case .suback? = try await nextIgnoringSys() else { throw UnexpectedPacket(description: "no SUBACK") }
    }

    /// Publishes and waits for the end of its flow (PUBACK, or PUBREC then PUBCOMP).
    mutating func publishAndWait(_ topic: String, _ payload: String, qos: QoS, id: UInt16, retain: Bool = false)
        async throws
    {
        try await send(Packets.publish(topic, payload, qos: qos, id: id, retain: retain))
        switch qos {
        case .atMostOnce: return
        case .atLeastOnce:
            guard case .puback? = try await nextIgnoringSys() else { throw UnexpectedPacket(description: "no PUBACK") }
        case .exactlyOnce:
            guard case .pubrec? = try await nextIgnoringSys() else { throw UnexpectedPacket(description: "no PUBREC") }
            try await send(.pubrel(PublishAcknowledgement(packetIdentifier: id)))
            guard case .pubcomp? = try await nextIgnoringSys() else {
                throw UnexpectedPacket(description: "no PUBCOMP")
            }
        }
    }

    /// Receives `count` application PUBLISH packets, acknowledging each as its QoS asks.
    mutating func receive(_ count: Int, acknowledge: Bool = true) async throws -> [Publish] {
        var received: [Publish] = []
        while received.count < count {
            guard let packet = try await nextIgnoringSys() else {
                throw UnexpectedPacket(description: "closed after \(received.count) of \(count)")
            }
            switch packet {
            case .publish(let publish):
                received.append(publish)
                guard acknowledge else { continue }
                if publish.qos == .atLeastOnce {
                    try await send(.puback(PublishAcknowledgement(packetIdentifier: publish.packetIdentifier)))
                }
                if publish.qos == .exactlyOnce {
                    try await send(.pubrec(PublishAcknowledgement(packetIdentifier: publish.packetIdentifier)))
                }
            case .pubrel(let release):
                try await send(.pubcomp(PublishAcknowledgement(packetIdentifier: release.packetIdentifier)))
            default:
                continue
            }
        }
        return received
    }
}

extension Publish {
    var text: String { String(buffer: payload) }
}

@Suite(
    "Durable store: tern serve restarted",
    .enabled(if: ternExecutable != nil, "the tern executable is missing"),
    .serialized
)
struct RestartTests {
    @Test(
        "A graceful restart (SIGTERM) keeps every kind of session, the queues in order, in-flight with DUP, retained and pending wills"
    )
    func gracefulRestartKeepsEverything() async throws {
        let server = try TernServer()
        try await server.start()
        let port = server.port

        // Sessions of every kind, each subscribed and then away.
        let kinds:
            [(id: String, version: ProtocolVersion, cleanStart: Bool, expiry: UInt32?, topic: String, qos: QoS)] = [
                ("v5-clean-start", .v5, true, 600, "r/cs1", .atLeastOnce),
                ("v5-resume", .v5, false, 600, "r/cs0", .exactlyOnce),
                ("v311", .v3_1_1, false, nil, "r/311", .atLeastOnce),
            ]
        for kind in kinds {
            var client = try await TestClient.connect(port: port, version: kind.version)
            try await client.open(
                Packets.connect(kind.id, version: kind.version, cleanStart: kind.cleanStart, expiry: kind.expiry)
            )
            try await client.subscribeAndWait(kind.topic, qos: kind.qos)
            try await client.send(.disconnect(Disconnect()))
            await client.close()
        }
        // A session that received two QoS 1 messages and never acknowledged them.
        var inflight = try await TestClient.connect(port: port, version: .v5)
        try await inflight.open(Packets.connect("inflight", cleanStart: true, expiry: 600))
        try await inflight.subscribeAndWait("r/inf", qos: .atLeastOnce)
        // A client whose will (delay 4 s, QoS 1) is pending when the broker stops.
        var willProperties = Properties()
        willProperties.willDelayInterval = 4
        let will = Connect.Will(
            topic: try TopicName("r/cs1"),
            payload: ByteBuffer(string: "will"),
            qos: .atLeastOnce,
            properties: willProperties
        )
        var willClient = try await TestClient.connect(port: port, version: .v5)
        try await willClient.open(Packets.connect("will", cleanStart: true, expiry: 600, will: will))

        var publisher = try await TestClient.connect(port: port, version: .v5)
        try await publisher.open(Packets.connect("publisher", cleanStart: true))
        try await publisher.publishAndWait("r/inf", "i1", qos: .atLeastOnce, id: 1)
        try await publisher.publishAndWait("r/inf", "i2", qos: .atLeastOnce, id: 2)
        let unacknowledged = try await inflight.receive(2, acknowledge: false)
        await inflight.close()
        await willClient.close()
        try await publisher.publishAndWait("r/cs1", "a1", qos: .atLeastOnce, id: 3)
        try await publisher.publishAndWait("r/cs1", "a2", qos: .atLeastOnce, id: 4)
        try await publisher.publishAndWait("r/cs0", "b1", qos: .exactlyOnce, id: 5)
        try await publisher.publishAndWait("r/cs0", "b2", qos: .exactlyOnce, id: 6)
        try await publisher.publishAndWait("r/311", "c1", qos: .atLeastOnce, id: 7)
        try await publisher.publishAndWait("r/ret", "R", qos: .atLeastOnce, id: 8, retain: true)
        await publisher.close()

        let listing = try await server.sessionsListing()
        #expect(listing.contains("v5-clean-start") && listing.contains("v311") && listing.contains("inflight"))
        #expect(listing.split(separator: "\n").first?.split(separator: "\t").count == 8)
        // The aligned table, as on a terminal: every row's last column starts where WILL does.
        let table = try await server.sessionsListing(format: "table").split(separator: "\n").dropLast().map(String.init)
        let willColumn = try #require(table.first?.range(of: "WILL")?.lowerBound.utf16Offset(in: table[0]))
        #expect(table.count >= 4 && !table.joined().contains("\t"))
        for row in table.dropFirst() {
            let last = row.range(of: " ", options: .backwards).map {
                row.distance(from: row.startIndex, to: $0.upperBound)
            }
            #expect(last == willColumn, "\(row)")
        }
        let stopped = try #require(await server.terminate())
        #expect(stopped.status == 0, "tern serve exit status after SIGTERM: \(stopped.stderr)")
        try await server.startAgain()

        var cleanStart = try await TestClient.connect(port: port, version: .v5)
        let present1 = try await cleanStart.open(Packets.connect("v5-clean-start", cleanStart: false, expiry: 600))
        #expect(present1)
        #expect(try await cleanStart.receive(2).map(\.text) == ["a1", "a2"])
        var resume = try await TestClient.connect(port: port, version: .v5)
        let present2 = try await resume.open(Packets.connect("v5-resume", cleanStart: false, expiry: 600))
        #expect(present2)
        let qos2 = try await resume.receive(2)
        #expect(qos2.map(\.text) == ["b1", "b2"] && qos2.allSatisfy { $0.qos == .exactlyOnce })
        var old = try await TestClient.connect(port: port, version: .v3_1_1)
        let present3 = try await old.open(Packets.connect("v311", version: .v3_1_1, cleanStart: false))
        #expect(present3)
        #expect(try await old.receive(1).map(\.text) == ["c1"])
        var resumed = try await TestClient.connect(port: port, version: .v5)
        let present4 = try await resumed.open(Packets.connect("inflight", cleanStart: false, expiry: 600))
        #expect(present4)
        let again = try await resumed.receive(2)
        #expect(again.map(\.text) == ["i1", "i2"])
        #expect(again.allSatisfy { $0.duplicate })
        #expect(again.map(\.packetIdentifier) == unacknowledged.map(\.packetIdentifier))
        var fresh = try await TestClient.connect(port: port, version: .v5)
        try await fresh.open(Packets.connect("fresh", cleanStart: true))
        try await fresh.send(Packets.subscribe("r/ret", qos: .atLeastOnce))
        #expect(try await fresh.receive(1).map(\.text) == ["R"])
        // The pending will goes out once its delay has passed, after the restart.
        #expect(try await cleanStart.receive(1, acknowledge: true).map(\.text) == ["will"])
        await cleanStart.close()
        await resume.close()
        await old.close()
        await resumed.close()
        await fresh.close()
        await server.terminate()
    }

    @Test(
        "Interop: paho-mqtt and mosquitto_sub -c -x 3600 resume their sessions across a restart and receive what was queued",
        .enabled(if: Peers.pahoAvailable && Peers.mosquittoAvailable, "paho-mqtt or mosquitto-clients is missing")
    )
    func peersResumeAcrossRestart() async throws {
        let server = try TernServer()
        try await server.start()
        let port = server.port
        let opened = try await Peers.run(
            "/usr/bin/python3",
            [Peers.script("paho_restart.py"), "\(port)", "subscribe"],
            timeout: 30
        )
        #expect(opened.status == 0, "\(opened.stdout)\(opened.stderr)")
        let mosquittoSub = try #require(Peers.which("mosquitto_sub"))
        let session = [
            "-h", "127.0.0.1", "-p", "\(port)", "-V", "mqttv5", "-c", "-i", "mq-restart", "-x", "3600", "-q", "1", "-t",
            "mq/restart",
        ]
        let subscribed = try await Peers.run(mosquittoSub, session + ["-E"], timeout: 30)
        #expect(subscribed.status == 0, "\(subscribed.stderr)")

        var publisher = try await TestClient.connect(port: port)
        try await publisher.open(Packets.connect("restart-publisher", cleanStart: true))
        for n in 1...3 {
            try await publisher.publishAndWait("paho/restart", "p\(n)", qos: .atLeastOnce, id: UInt16(n))
            try await publisher.publishAndWait("mq/restart", "q\(n)", qos: .atLeastOnce, id: UInt16(10 + n))
        }
        await publisher.close()
        await server.terminate()
        try await server.startAgain()

        let resumed = try await Peers.run(
            "/usr/bin/python3",
            [Peers.script("paho_restart.py"), "\(port)", "resume", "3"],
            timeout: 40
        )
        #expect(resumed.status == 0, "\(resumed.stdout)\(resumed.stderr)")
        #expect(resumed.stdout.contains("session_present=True"))
        #expect(
            resumed.stdout.components(separatedBy: "\n").filter { $0.hasPrefix("message ") } == [
                "message p1", "message p2", "message p3",
            ]
        )
        let drained = try await Peers.run(mosquittoSub, session + ["-C", "3"], timeout: 30)
        #expect(
            drained.stdout.components(separatedBy: "\n").filter { !$0.isEmpty } == ["q1", "q2", "q3"],
            "\(drained.stderr)"
        )
        await server.terminate()
    }

    @Test(
        "Crash test: SIGKILL at 20 random moments loses no acknowledged QoS 1/2 message and duplicates no QoS 2 message"
    )
    func crashLosesNothingAcknowledged() async throws {
        let rounds = 20
        var totalAcknowledged = 0
        for round in 1...rounds {
            let server = try TernServer()
            var step = "start"
            do {
                try await server.start()
                step = "subscribe"
                let port = server.port
                let subscribers = ["crash-a", "crash-b"]
                for id in subscribers {
                    var client = try await TestClient.connect(port: port, version: .v5)
                    try await client.open(Packets.connect(id, cleanStart: true, expiry: 3600))
                    try await client.subscribeAndWait("crash/#", qos: .exactlyOnce)
                    try await client.send(.disconnect(Disconnect()))
                    await client.close()
                }
                // crash-a stays connected while messages flow; crash-b is away. The kill comes
                // after crash-a's CONNACK: a kill before it would test nothing of the store, and
                // on a busy machine the shortest pause ended before the handshake did.
                let (connected, signal) = AsyncStream<Void>.makeStream()
                let live = Task { try await CrashSubscriber.run(port: port, id: "crash-a", connected: signal) }
                for await _ in connected { break }
                let acknowledged = Task { await CrashPublisher.run(port: port) }
                try await Task.sleep(for: .milliseconds(Int.random(in: 50...600)))
                await server.crash()
                let sent = await acknowledged.value
                let beforeCrash = try await live.value
                step = "start again"
                try await server.startAgain()
                step = "drain"

                var delivered: [String: CrashSubscriber.Received] = [
                    "crash-a": beforeCrash, "crash-b": CrashSubscriber.Received(),
                ]
                for id in subscribers {
                    var state = delivered[id]!
                    try await CrashSubscriber.drain(port: port, id: id, until: sent, into: &state)
                    delivered[id] = state
                }
                await server.terminate()
                for id in subscribers {
                    let state = delivered[id]!
                    let missing = sent.subtracting(state.payloads)
                    #expect(
                        missing.isEmpty,
                        "round \(round): \(id) is missing \(missing.count) of \(sent.count) acknowledged messages"
                    )
                    #expect(
                        state.qos2Duplicates.isEmpty,
                        "round \(round): \(id) got QoS 2 messages twice: \(state.qos2Duplicates)"
                    )
                }
                totalAcknowledged += sent.count
            } catch {
                // The server's own account of the round goes with the failure.
                let output = await server.terminate()
                Issue.record("round \(round), \(step): \(error); tern serve wrote: \(output?.stderr ?? "nothing")")
                throw error
            }
        }
        #expect(totalAcknowledged > 0)
    }
}

/// Publishes QoS 1 and QoS 2 messages one after another until the connection breaks, and returns
/// the payloads whose flow completed (PUBACK, or PUBCOMP).
enum CrashPublisher {
    static func run(port: Int) async -> Set<String> {
        var acknowledged: Set<String> = []
        guard var client = try? await TestClient.connect(port: port) else { return acknowledged }
        do {
            try await client.open(Packets.connect("crash-publisher", cleanStart: true))
        } catch {
            await client.close()
            return acknowledged
        }
        var id: UInt16 = 0
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            id = id == .max ? 1 : id + 1
            let qos: QoS = id % 2 == 0 ? .exactlyOnce : .atLeastOnce
            let payload = "m\(id)-q\(qos.rawValue)"
            do {
                try await client.publishAndWait("crash/\(id % 4)", payload, qos: qos, id: id)
                acknowledged.insert(payload)
            } catch {
                break
            }
        }
        await client.close()
        return acknowledged
    }
}

/// A QoS 2 receiver as the specification describes it (§4.3.3): a packet identifier stays known
/// from PUBREC until PUBREL, so a PUBLISH sent again with it is not a new message.
enum CrashSubscriber {
    struct Received: Sendable {
        var payloads: Set<String> = []
        var qos2Seen: Set<String> = []
        var qos2Duplicates: [String] = []
        var awaitingRelease: Set<UInt16> = []

        mutating func take(_ publish: Publish) {
            if publish.qos == .exactlyOnce {
                if awaitingRelease.contains(publish.packetIdentifier) { return }
                awaitingRelease.insert(publish.packetIdentifier)
                if !qos2Seen.insert(publish.text).inserted { qos2Duplicates.append(publish.text) }
            }
            payloads.insert(publish.text)
        }
    }

    /// Receives until the connection breaks; `connected` is told when the CONNACK arrives, and
    /// finished either way.
    static func run(port: Int, id: String, connected: AsyncStream<Void>.Continuation) async throws -> Received {
        defer { connected.finish() }
        var state = Received()
        var client = try await TestClient.connect(port: port, version: .v5)
        try await client.open(Packets.connect(id, cleanStart: false, expiry: 3600))
        connected.yield()
        while let packet = try? await client.next(seconds: 30) {
            try? await handle(packet, client: client, state: &state)
        }
        await client.close()
        return state
    }

    /// Resumes the session and receives until every payload in `expected` is there, or 30 s pass.
    static func drain(port: Int, id: String, until expected: Set<String>, into state: inout Received) async throws {
        var client = try await TestClient.connect(port: port, version: .v5)
        let present = try await client.open(Packets.connect(id, cleanStart: false, expiry: 3600))
        #expect(present, "\(id) lost its session")
        let deadline = Date().addingTimeInterval(30)
        while !expected.isSubset(of: state.payloads), Date() < deadline {
            guard let packet = try? await client.next(seconds: 5) else { break }
            try await handle(packet, client: client, state: &state)
        }
        await client.close()
    }

    static func handle(_ packet: MQTTPacket, client: borrowing TestClient, state: inout Received) async throws {
        switch packet {
        case .publish(let publish):
            state.take(publish)
            if publish.qos == .atLeastOnce {
                try await client.send(.puback(PublishAcknowledgement(packetIdentifier: publish.packetIdentifier)))
            }
            if publish.qos == .exactlyOnce {
                try await client.send(.pubrec(PublishAcknowledgement(packetIdentifier: publish.packetIdentifier)))
            }
        case .pubrel(let release):
            state.awaitingRelease.remove(release.packetIdentifier)
            try await client.send(.pubcomp(PublishAcknowledgement(packetIdentifier: release.packetIdentifier)))
        default:
            break
        }
    }
}
