import Foundation
import NIOCore
import Synchronization
import TernBrokerTesting
import TernClient
import TernCodec
import TernStorePostgres
import Testing

/// The PostgreSQL server the cluster tests run against (`.ci/run` starts a private one).
let clusterDatabaseURL = ProcessInfo.processInfo.environment["TERN_TEST_POSTGRES_URL"]

/// `tern serve` nodes sharing one PostgreSQL database, in a schema of this cluster's own, so
/// that tests running at once never meet. Only the nodes' own PIDs are signalled.
final class TernCluster: @unchecked Sendable {
    // @unchecked: used by one test at a time; `nodes` is only read once they are started.
    let url: String
    let database: PostgresStoreConfiguration
    private(set) var nodes: [TernServer] = []

    init(nodes count: Int) async throws {
        let base = try #require(clusterDatabaseURL)
        let schema = "cluster_\(UInt32.random(in: 0...UInt32.max))"
        url = base + (base.contains("?") ? "&" : "?") + "schema=\(schema)"
        database = try PostgresStoreConfiguration(url: url)
        for index in 1...count {
            let node = try TernServer(storeArguments: ["--cluster-store", url, "--cluster-node", "node\(index)"])
            try await node.start()
            nodes.append(node)
        }
    }

    deinit {
        for node in nodes { node.killNow() }
        try? PostgresStore.removeSchema(database)
    }

    subscript(index: Int) -> TernServer { nodes[index] }
}

extension TestClient {
    /// Publishes QoS 0 probes on `topic` from `publisher` until `self` receives one (the nodes
    /// learn a subscription from the database a moment after its SUBACK), then lets any probe
    /// still on its way arrive. `self` must be subscribed to `topic`.
    mutating func awaitRouting(from publisher: borrowing TestClient, topic: String) async throws {
        let deadline = Date().addingTimeInterval(20)
        while Date() < deadline {
            try await publisher.send(Packets.publish(topic, "probe", qos: .atMostOnce, id: 0))
            if case .publish(let publish)? = try? await nextIgnoringSys(seconds: 1), publish.topic.string == topic {
                while case .publish? = try? await nextIgnoringSys(seconds: 1) {}
                return
            }
        }
        throw PeerTimeout(what: "a probe on \(topic) reaching the subscriber")
    }

    /// Receives `count` PUBLISH packets whose topic starts with `prefix` (acknowledging every
    /// PUBLISH as its QoS asks), skipping others.
    mutating func receive(_ count: Int, under prefix: String, acknowledge: Bool = true) async throws -> [Publish] {
        var received: [Publish] = []
        while received.count < count {
            let batch = try await receive(1, acknowledge: acknowledge)
            received += batch.filter { $0.topic.string.hasPrefix(prefix) }
        }
        return received
    }

    /// The payloads of the PUBLISH packets on `topic` that arrive until 2 s pass without one,
    /// acknowledged.
    mutating func drain(topic: String) async throws -> [String] {
        var received: [String] = []
        while let packet = try? await nextIgnoringSys(seconds: 2) {
            guard case .publish(let publish) = packet, publish.topic.string == topic else { continue }
            received.append(publish.text)
            if publish.qos == .atLeastOnce {
                try await send(.puback(PublishAcknowledgement(packetIdentifier: publish.packetIdentifier)))
            }
        }
        return received
    }

    /// The next PUBLISH to arrive within `seconds`, `nil` when none does.
    mutating func nextPublish(seconds: Int64) async -> Publish? {
        while true {
            switch try? await nextIgnoringSys(seconds: seconds) {
            case .publish(let publish)?: return publish
            case nil: return nil
            default: continue
            }
        }
    }
}

@Suite(
    "Cluster: tern serve nodes on one PostgreSQL",
    .enabled(if: ternExecutable != nil, "the tern executable is missing"),
    .enabled(if: clusterDatabaseURL != nil, "TERN_TEST_POSTGRES_URL names no PostgreSQL server"),
    .serialized
)
struct ClusterTests {
    @Test(
        "A v5 session subscribed on node 1 resumes on node 3 with the 1,000 QoS 1 messages published on node 2: session present, in order, none twice (MQTT 5.0 §3.1.2.11.2, §4.6)"
    )
    func sessionResumesOnAnotherNode() async throws {
        let cluster = try await TernCluster(nodes: 3)
        var subscriber = try await TestClient.connect(port: cluster[0].port)
        try await subscriber.open(Packets.connect("resumer", cleanStart: true, expiry: 600))
        try await subscriber.subscribeAndWait("seq/#", qos: .atLeastOnce)
        try await subscriber.subscribeAndWait("probe", qos: .atMostOnce)
        var publisher = try await TestClient.connect(port: cluster[1].port)
        try await publisher.open(Packets.connect("publisher", cleanStart: true))
        try await subscriber.awaitRouting(from: publisher, topic: "probe")
        try await subscriber.send(.disconnect(Disconnect()))
        await subscriber.close()

        for sequence in 0..<1000 {
            try await publisher.publishAndWait("seq/a", "\(sequence)", qos: .atLeastOnce, id: UInt16(sequence + 1))
        }
        var resumed = try await TestClient.connect(port: cluster[2].port)
        let present = try await resumed.open(Packets.connect("resumer", cleanStart: false, expiry: 600))
        #expect(present)
        let received = try await resumed.receive(1000, under: "seq/")
        #expect(received.map(\.text) == (0..<1000).map { "\($0)" })
        let extra = await resumed.nextPublish(seconds: 1)
        #expect(extra == nil, "\(extra.map { "\($0.topic.string) \($0.text)" } ?? "") arrived again")
        await resumed.close()
        await publisher.close()
        // SIGTERM: each node disconnects its clients, commits, leaves the cluster and exits 0
        // (within the 30 s `terminate` allows before it kills).
        for index in 0..<3 {
            let stopped = await cluster[index].terminate()
            #expect(
                stopped?.status == 0,
                "node \(index + 1) did not stop on SIGTERM: \(stopped?.stderr.suffix(500) ?? "")"
            )
        }
    }

    @Test(
        "Takeover across nodes: node 1's connection gets DISCONNECT 0x8E, node 2 answers session present and sends the unacknowledged messages again with DUP and their packet identifiers (§3.1.4-3, §4.4)"
    )
    func takeoverAcrossNodes() async throws {
        let cluster = try await TernCluster(nodes: 2)
        var first = try await TestClient.connect(port: cluster[0].port)
        try await first.open(Packets.connect("taken", cleanStart: true, expiry: 600))
        try await first.subscribeAndWait("t/#", qos: .atLeastOnce)
        var publisher = try await TestClient.connect(port: cluster[1].port)
        try await publisher.open(Packets.connect("takeover-publisher", cleanStart: true))
        try await first.awaitRouting(from: publisher, topic: "t/probe")
        for (index, text) in ["a", "b", "c"].enumerated() {
            try await publisher.publishAndWait("t/x", text, qos: .atLeastOnce, id: UInt16(index + 1))
        }
        let unacknowledged = try await first.receive(3, under: "t/x", acknowledge: false)
        #expect(unacknowledged.map(\.text) == ["a", "b", "c"])

        var second = try await TestClient.connect(port: cluster[1].port)
        let claimed = ContinuousClock.now
        let present = try await second.open(Packets.connect("taken", cleanStart: false, expiry: 600))
        print("cluster: takeover CONNECT to CONNACK on another node: \(ContinuousClock.now - claimed)")
        #expect(present)
        var sawTakeover = false
        while let packet = try await first.next(seconds: 10) {
            if case .disconnect(let disconnect) = packet { sawTakeover = disconnect.reasonCode == .sessionTakenOver }
        }
        #expect(sawTakeover, "node 1's connection was closed without DISCONNECT 0x8E")
        let again = try await second.receive(3, under: "t/x")
        #expect(again.map(\.text) == ["a", "b", "c"])
        #expect(again.allSatisfy { $0.duplicate })
        #expect(again.map(\.packetIdentifier) == unacknowledged.map(\.packetIdentifier))
        let extra = await second.nextPublish(seconds: 1)
        #expect(
            extra == nil,
            "\(extra.map { "\($0.topic.string) \($0.text) dup \($0.duplicate)" } ?? "") arrived again"
        )
        await second.close()
        await publisher.close()
    }

    @Test(
        "Cross-node delivery keeps each publisher's order at QoS 0, 1 and 2, with nothing lost at QoS 1 and 2 (MQTT-4.6.0-6)"
    )
    func crossNodeOrder() async throws {
        let cluster = try await TernCluster(nodes: 2)
        var subscriber = try await TestClient.connect(port: cluster[0].port)
        try await subscriber.open(Packets.connect("order-subscriber", cleanStart: true))
        try await subscriber.subscribeAndWait("o/#", qos: .exactlyOnce)
        var publisher = try await TestClient.connect(port: cluster[1].port)
        try await publisher.open(Packets.connect("order-publisher", cleanStart: true))
        try await subscriber.awaitRouting(from: publisher, topic: "o/probe")
        // Published first, received afterwards: the subscriber's node queues what its window
        // holds back, in order.
        let count = 300
        var identifier: UInt16 = 0
        for sequence in 0..<count {
            for qos in [QoS.atMostOnce, .atLeastOnce, .exactlyOnce] {
                identifier += 1
                try await publisher.publishAndWait(
                    "o/q\(qos.rawValue)",
                    "q\(qos.rawValue)-\(sequence)",
                    qos: qos,
                    id: identifier
                )
            }
        }
        var state = CrashSubscriber.Received()
        var order: [String: [Int]] = [:]
        while state.payloads.filter({ !$0.hasPrefix("q0") }).count < 2 * count {
            guard let packet = try await subscriber.next(seconds: 10) else { break }
            if case .publish(let publish) = packet {
                let parts = publish.text.split(separator: "-")
                if parts.count == 2, let sequence = Int(parts[1]), !state.payloads.contains(publish.text) {
                    order[String(parts[0]), default: []].append(sequence)
                }
            }
            try await CrashSubscriber.handle(packet, client: subscriber, state: &state)
        }
        await subscriber.close()
        #expect(order["q1"] == Array(0..<count))
        #expect(order["q2"] == Array(0..<count))
        let qos0 = order["q0"] ?? []
        #expect(qos0 == qos0.sorted(), "QoS 0 messages overtook each other")
        #expect(state.qos2Duplicates.isEmpty)
        await publisher.close()
    }

    @Test(
        "Retained messages and $share groups are cluster-wide: a retained message set on node 1 reaches a subscriber on node 2; a group with members on two nodes gets each of node 3's messages once (§4.8.2)"
    )
    func retainedAndSharedAcrossNodes() async throws {
        let cluster = try await TernCluster(nodes: 3)
        var retainer = try await TestClient.connect(port: cluster[0].port)
        try await retainer.open(Packets.connect("retainer", cleanStart: true))
        try await retainer.publishAndWait("r/1", "kept", qos: .atLeastOnce, id: 1, retain: true)
        await retainer.close()
        // Node 2 learns of the retained message from its notification, a moment after the PUBACK.
        var retained: Publish?
        let deadline = Date().addingTimeInterval(20)
        while retained == nil, Date() < deadline {
            var late = try await TestClient.connect(port: cluster[1].port)
            try await late.open(Packets.connect("late-subscriber", cleanStart: true))
            try await late.send(Packets.subscribe("r/#", qos: .atLeastOnce))
            while let packet = try? await late.nextIgnoringSys(seconds: 1) {
                if case .publish(let publish) = packet { retained = publish }
                if retained != nil { break }
            }
            await late.close()
        }
        #expect(retained?.text == "kept")
        #expect(retained?.retain == true)

        func member(_ index: Int) async throws -> TestClient {
            var member = try await TestClient.connect(port: cluster[index].port)
            try await member.open(Packets.connect("member-\(index)", cleanStart: true))
            try await member.subscribeAndWait("$share/g/s/#", qos: .atLeastOnce)
            try await member.subscribeAndWait("probe/\(index)", qos: .atMostOnce)
            return member
        }
        var first = try await member(0)
        var second = try await member(1)
        var publisher = try await TestClient.connect(port: cluster[2].port)
        try await publisher.open(Packets.connect("share-publisher", cleanStart: true))
        // A member's probe arriving means node 3 has read that member's subscriptions, its
        // share among them (the notification names the client; every row of it is read).
        try await first.awaitRouting(from: publisher, topic: "probe/0")
        try await second.awaitRouting(from: publisher, topic: "probe/1")
        let count = 200
        for sequence in 0..<count {
            try await publisher.publishAndWait("s/x", "\(sequence)", qos: .atLeastOnce, id: UInt16(sequence + 1))
        }
        let fromFirst = try await first.drain(topic: "s/x")
        let fromSecond = try await second.drain(topic: "s/x")
        await first.close()
        await second.close()
        let all = fromFirst + fromSecond
        let perMember = [fromFirst.count, fromSecond.count]
        #expect(all.count == count, "the group got \(all.count) deliveries of \(count) messages")
        #expect(Set(all) == Set((0..<count).map { "\($0)" }))
        #expect(perMember.allSatisfy { $0 > 0 }, "one member got everything: \(perMember)")
        await publisher.close()
    }

    @Test(
        "A node killed with SIGKILL: its clients' wills are published once, by one of the others; a delayed will of a stored session after its delay; its clients resume elsewhere (§3.1.2.5)"
    )
    func willsOfAKilledNode() async throws {
        let cluster = try await TernCluster(nodes: 3)
        var watcher = try await TestClient.connect(port: cluster[1].port)
        try await watcher.open(Packets.connect("will-watcher", cleanStart: true, expiry: 600))
        try await watcher.subscribeAndWait("will/#", qos: .atLeastOnce)

        func will(_ text: String, delay: UInt32?) -> Connect.Will {
            var properties = Properties()
            properties.willDelayInterval = delay
            return Connect.Will(
                topic: try! TopicName("will/\(text)"),
                payload: ByteBuffer(string: text),
                qos: .atLeastOnce,
                retain: false,
                properties: properties
            )
        }
        var doomed = try await TestClient.connect(port: cluster[0].port)
        try await doomed.open(Packets.connect("doomed", cleanStart: true, will: will("now", delay: nil)))
        var stored = try await TestClient.connect(port: cluster[0].port)
        try await stored.open(
            Packets.connect("doomed-stored", cleanStart: true, expiry: 600, will: will("later", delay: 2))
        )
        try await stored.subscribeAndWait("back/#", qos: .atLeastOnce)
        try await watcher.awaitRouting(from: doomed, topic: "will/probe")

        let killedAt = ContinuousClock.now
        await cluster[0].crash()
        var wills: [String] = []
        while let packet = try? await watcher.nextIgnoringSys(seconds: 8) {
            guard case .publish(let publish) = packet else { continue }
            wills.append(publish.text)
            try await watcher.send(.puback(PublishAcknowledgement(packetIdentifier: publish.packetIdentifier)))
            if wills.count == 1 {
                print("cluster: first will \(ContinuousClock.now - killedAt) after the kill")
            }
        }
        #expect(wills.sorted() == ["later", "now"], "wills published: \(wills)")

        // The stored session is still there for its client, on another node.
        var back = try await TestClient.connect(port: cluster[2].port)
        let present = try await back.open(Packets.connect("doomed-stored", cleanStart: false, expiry: 600))
        #expect(present)
        await back.close()
        await watcher.close()
    }

    @Test(
        "A claim whose holder died while the database still counted it alive does not wait out the release timeout: it finds the holder dead while it waits (§3.1.4-3)"
    )
    func claimNoticesItsHolderDie() async throws {
        let cluster = try await TernCluster(nodes: 2)
        var held = try await TestClient.connect(port: cluster[0].port)
        try await held.open(Packets.connect("held", cleanStart: true, expiry: 600))
        try await held.subscribeAndWait("held/#", qos: .atLeastOnce)

        // Another connection takes node 1's lock the moment node 1's own goes, and keeps it 2 s,
        // as the server itself does for a moment after a node dies: a claim then finds the holder
        // alive, asks it to let go, and gets no answer.
        let psql = try #require(Peers.which("psql"))
        let server = try #require(clusterDatabaseURL?.components(separatedBy: "?").first)
        let schema = cluster.database.schema
        let marker = FileManager.default.temporaryDirectory.appendingPathComponent("tern-lock-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: marker) }
        let lock = "hashtext('\(schema)'), (SELECT number FROM \"\(schema)\".cluster_nodes WHERE name = 'node1')"
        let holder = try Peers.Running(
            psql,
            [
                server, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-c", "SELECT pg_advisory_lock(\(lock))", "-c",
                "\\! touch \(marker)", "-c", "SELECT pg_sleep(2)",
            ]
        )
        // Node 1 is killed once that connection waits for the lock, so that it is never free.
        let deadline = Date().addingTimeInterval(10)
        var waiting = false
        while !waiting, Date() < deadline {
            let locks = try await Peers.run(
                psql,
                [
                    server, "-X", "-At", "-c",
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted",
                ]
            )
            waiting = locks.stdout.trimmingCharacters(in: .whitespacesAndNewlines) != "0"
        }
        try #require(waiting, "the lock holder never waited for node 1's lock")
        await cluster[0].crash()
        while !FileManager.default.fileExists(atPath: marker), Date() < deadline {
            try await Task.sleep(for: .milliseconds(10))
        }
        try #require(FileManager.default.fileExists(atPath: marker), "the lock holder never got node 1's lock")

        let started = ContinuousClock.now
        var back = try await TestClient.connect(port: cluster[1].port)
        let present = try await back.open(Packets.connect("held", cleanStart: false, expiry: 600))
        let waited = ContinuousClock.now - started
        print("cluster: claim of a session whose holder died under a held lock answered after \(waited)")
        #expect(present)
        // The lock is held 2 s; the release timeout is 10 s.
        #expect(waited < .seconds(6), "the claim waited \(waited) for a node that had died")
        await back.close()
        #expect(await holder.finish(timeout: 10).status == 0)
    }

    @Test(
        "Node crash under load, 10 seeded rounds: one of 3 nodes SIGKILLed at a random moment while publishers and persistent subscribers run on all three; its clients reconnect elsewhere; every acknowledged message reaches every subscriber, in each publisher's order, and no QoS 2 message twice"
    )
    func nodeCrashRounds() async throws {
        let cluster = try await TernCluster(nodes: 3)
        let ports = cluster.nodes.map(\.port)
        var generator = SplitMix(seed: 0x7465_726E)
        var totalAcknowledged = 0
        var failovers: [Duration] = []
        for round in 1...10 {
            let victim = Int.random(in: 0..<3, using: &generator)
            let killAfter = Int.random(in: 200...1200, using: &generator)
            let subscribers = (0..<3).map { ClusterCrashSubscriber(id: "round\(round)-sub\($0)") }
            var receivers: [Task<Void, Never>] = []
            for (index, subscriber) in subscribers.enumerated() {
                let (subscribed, signal) = AsyncStream<Bool>.makeStream()
                receivers.append(
                    Task {
                        await subscriber.run(ports: ports, first: index, filter: "cc/\(round)/#", subscribed: signal)
                    }
                )
                var confirmed = false
                for await success in subscribed {
                    confirmed = success
                    break
                }
                try #require(confirmed, "round \(round): subscriber \(index) could not subscribe")
            }
            // Every node routes to every subscriber before anything counts.
            for port in ports {
                var prober = try await TestClient.connect(port: port)
                try await prober.open(Packets.connect("prober-\(port)", cleanStart: true))
                let deadline = Date().addingTimeInterval(20)
                while !subscribers.allSatisfy({ $0.sawProbe(from: port) }), Date() < deadline {
                    try await prober.send(
                        Packets.publish("cc/\(round)/probe/\(port)", "probe", qos: .atMostOnce, id: 0)
                    )
                    try await Task.sleep(for: .milliseconds(20))
                }
                await prober.close()
                #expect(
                    subscribers.allSatisfy { $0.sawProbe(from: port) },
                    "round \(round): node on \(port) never routed"
                )
            }
            let stop = Date().addingTimeInterval(Double(killAfter) / 1000 + 1.5)
            let publishers = (0..<3).map { index in
                Task {
                    await ClusterCrashPublisher.run(
                        id: "round\(round)-pub\(index)",
                        topic: "cc/\(round)/\(index)",
                        ports: ports,
                        first: (index + 1) % 3,
                        until: stop
                    )
                }
            }
            try await Task.sleep(for: .milliseconds(killAfter))
            let killed = ContinuousClock.now
            await cluster[victim].crash()
            var acknowledged: [String: [Int]] = [:]
            for (index, publisher) in publishers.enumerated() {
                acknowledged["round\(round)-pub\(index)"] = await publisher.value
            }
            let expected = Set(acknowledged.flatMap { id, sequences in sequences.map { "\(id)-\($0)" } })
            for subscriber in subscribers { await subscriber.waitFor(expected, seconds: 30) }
            for receiver in receivers { receiver.cancel() }
            for receiver in receivers { await receiver.value }
            for (index, subscriber) in subscribers.enumerated() {
                let report = subscriber.report()
                let missing = expected.subtracting(report.received)
                // Every arrival is in the message, to tell a message never delivered from one
                // taken for another (a QoS 2 packet identifier reused, logged "r").
                #expect(
                    missing.isEmpty,
                    "round \(round): subscriber \(index) misses \(missing.sorted()) of \(expected.count) (victim \(victim), killed after \(killAfter) ms): \(report.log.sorted { $0.key < $1.key })"
                )
                #expect(report.qos2Duplicates.isEmpty, "round \(round): QoS 2 twice: \(report.qos2Duplicates)")
                for (publisher, sequences) in report.firstArrivals {
                    #expect(
                        sequences == sequences.sorted(),
                        "round \(round): \(publisher) out of order at subscriber \(index) (victim \(victim)): \(report.log[publisher] ?? [])"
                    )
                }
                if let reconnected = report.reconnectedAt { failovers.append(reconnected - killed) }
            }
            totalAcknowledged += expected.count
            try await cluster[victim].startAgain()
        }
        print(
            "cluster crash rounds: \(totalAcknowledged) acknowledged messages, none lost; subscribers back on another node after \(failovers.sorted().map { "\($0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000) ms" })"
        )
        #expect(totalAcknowledged > 0)
    }
}

/// A small seeded generator, so that a failing round can be run again.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Publishes QoS 1 and 2 messages in turn, numbered, until `until`; when its node dies, goes on
/// from another one. Returns the numbers whose PUBACK or PUBREC came (the broker owns those).
enum ClusterCrashPublisher {
    static func run(id: String, topic: String, ports: [Int], first: Int, until stop: Date) async -> [Int] {
        var acknowledged: [Int] = []
        var sequence = 0
        var node = first
        while Date() < stop {
            guard var client = try? await TestClient.connect(port: ports[node]),
                (try? await client.open(Packets.connect(id, cleanStart: true))) != nil
            else {
                node = (node + 1) % ports.count
                try? await Task.sleep(for: .milliseconds(50))
                continue
            }
            while Date() < stop {
                let qos: QoS = sequence % 2 == 0 ? .atLeastOnce : .exactlyOnce
                let packetID = UInt16(sequence % 60_000 + 1)
                do {
                    try await client.send(
                        Packets.publish(topic, "\(id)-\(sequence)-q\(qos.rawValue)", qos: qos, id: packetID)
                    )
                    switch try await client.nextIgnoringSys(seconds: 10) {
                    case .puback?:
                        acknowledged.append(sequence)
                    case .pubrec?:
                        acknowledged.append(sequence)
                        try await client.send(.pubrel(PublishAcknowledgement(packetIdentifier: packetID)))
                        guard case .pubcomp? = try await client.nextIgnoringSys(seconds: 10) else {
                            throw UnexpectedPacket(description: "no PUBCOMP")
                        }
                    default:
                        throw UnexpectedPacket(description: "no PUBACK or PUBREC")
                    }
                    sequence += 1
                } catch {
                    sequence += 1
                    break
                }
            }
            await client.close()
            node = (node + 1) % ports.count
        }
        return acknowledged
    }
}

/// A persistent QoS 2 subscriber that moves to another node when its own dies, and records what
/// it received: every payload, the first arrival of each, QoS 2 duplicates, probes seen.
final class ClusterCrashSubscriber: Sendable {
    struct Report {
        var received: Set<String> = []
        var firstArrivals: [String: [Int]] = [:]
        var qos2Duplicates: [String] = []
        var probesFrom: Set<Int> = []
        var reconnectedAt: ContinuousClock.Instant?
        /// Every arrival, for the account of a failure: sequence, QoS, DUP, connection number.
        var log: [String: [String]] = [:]
        var connections = 1
    }

    let id: String
    private let state = Mutex(Report())

    init(id: String) { self.id = id }

    /// Connects to `ports[first]`, subscribes (telling `subscribed` whether it could), then
    /// receives until cancelled, moving to the next node that accepts when the connection
    /// ends; at the end, ends its session.
    func run(ports: [Int], first: Int, filter: String, subscribed: AsyncStream<Bool>.Continuation) async {
        var node = first
        guard var connection = try? await TestClient.connect(port: ports[node]) else {
            subscribed.yield(false)
            subscribed.finish()
            return
        }
        do {
            try await connection.open(Packets.connect(id, cleanStart: true, expiry: 600))
            try await connection.subscribeAndWait(filter, qos: .exactlyOnce)
            subscribed.yield(true)
        } catch {
            subscribed.yield(false)
        }
        subscribed.finish()
        // The QoS 2 flows of the session: a PUBLISH sent again before its PUBREL is not new.
        var flows = CrashSubscriber.Received()
        var current: TestClient? = consume connection
        while true {
            switch consume current {
            case .some(var connection):
                guard await receiveUntilClosed(&connection, flows: &flows) else {
                    // Cancelled: the session ends, so that the database does not keep it.
                    var properties = Properties()
                    properties.sessionExpiryInterval = 0
                    try? await connection.send(.disconnect(Disconnect(properties: properties)))
                    await connection.close()
                    return
                }
                await connection.close()
                current = await reconnect(ports: ports, node: &node)
            case .none:
                return
            }
        }
    }

    /// Receives until the connection closes (`true`) or the task is cancelled (`false`).
    private func receiveUntilClosed(_ connection: inout TestClient, flows: inout CrashSubscriber.Received) async -> Bool
    {
        while !Task.isCancelled {
            let packet: MQTTPacket?
            do {
                packet = try await connection.next(seconds: 1)
            } catch {
                continue  // quiet, not closed
            }
            guard let packet else { return true }
            if case .publish(let publish) = packet {
                let repeated = publish.qos == .exactlyOnce && flows.awaitingRelease.contains(publish.packetIdentifier)
                record(publish, repeated: repeated)
            }
            try? await CrashSubscriber.handle(packet, client: connection, state: &flows)
        }
        return false
    }

    /// The session resumed on the next node that accepts, `nil` once cancelled.
    private func reconnect(ports: [Int], node: inout Int) async -> TestClient? {
        while !Task.isCancelled {
            node = (node + 1) % ports.count
            do {
                var fresh = try await TestClient.connect(port: ports[node])
                if (try? await fresh.open(Packets.connect(id, cleanStart: false, expiry: 600))) == true {
                    state.withLock {
                        $0.reconnectedAt = $0.reconnectedAt ?? .now
                        $0.connections += 1
                    }
                    return fresh
                }
                await fresh.close()
            } catch {
                // That node is down: the next one.
            }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return nil
    }

    /// Records an arrival; one `repeated` (a QoS 2 packet identifier still awaiting its PUBREL)
    /// is only logged, marked "r".
    private func record(_ publish: Publish, repeated: Bool) {
        let text = publish.text
        state.withLock { report in
            if text == "probe" {
                let parts = publish.topic.string.split(separator: "/")
                if let port = Int(parts.last ?? "") { report.probesFrom.insert(port) }
                return
            }
            // "<publisher>-<sequence>-q<qos>"
            let parts = text.split(separator: "-")
            guard parts.count >= 3, let sequence = Int(parts[parts.count - 2]) else { return }
            let publisher = parts.dropLast(2).joined(separator: "-")
            let key = "\(publisher)-\(sequence)"
            report.log[publisher, default: []].append(
                "\(sequence)q\(publish.qos.rawValue)\(publish.duplicate ? "d" : "")\(repeated ? "r" : "")#\(publish.packetIdentifier)@\(report.connections)"
            )
            if repeated { return }
            if report.received.insert(key).inserted {
                report.firstArrivals[publisher, default: []].append(sequence)
            } else if publish.qos == .exactlyOnce {
                report.qos2Duplicates.append(key)
            }
        }
    }

    func sawProbe(from port: Int) -> Bool { state.withLock { $0.probesFrom.contains(port) } }

    func report() -> Report { state.withLock { $0 } }

    func waitFor(_ expected: Set<String>, seconds: Double) async {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline, !expected.isSubset(of: state.withLock({ $0.received })) {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}
