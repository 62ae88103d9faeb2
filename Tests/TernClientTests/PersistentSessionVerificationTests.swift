import Foundation
import NIOCore
import NIOPosix
import Synchronization
import TernBrokerTesting
import TernCodec
import Testing

@testable import TernClient

/// Collects the messages of a subscription in the background, so that tests can wait for them
/// with a deadline.
final class MessageCollector: Sendable {
    final class Storage: Sendable {
        let messages = Mutex<[MQTTMessage]>([])
    }
    private let storage = Storage()
    private let task: Task<Void, Never>

    init(_ subscription: MQTTSubscription) {
        let storage = self.storage
        task = Task {
            for await message in subscription { storage.messages.withLock { $0.append(message) } }
        }
    }

    deinit { task.cancel() }

    var received: [MQTTMessage] { storage.messages.withLock { $0 } }

    /// Waits until `count` messages have arrived, at most `seconds`.
    func wait(for count: Int, seconds: Double = 30) async throws -> [MQTTMessage] {
        let deadline = Date().addingTimeInterval(seconds)
        while received.count < count {
            guard Date() < deadline else {
                throw MQTTClientError(
                    .timeout,
                    reasonString: "\(received.count) of \(count) messages after \(seconds) s"
                )
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        return received
    }
}

/// Waits for a condition on the client, at most `seconds`.
func eventually(seconds: Double = 30, _ condition: () async -> Bool) async throws {
    let deadline = Date().addingTimeInterval(seconds)
    while await !condition() {
        guard Date() < deadline else {
            throw MQTTClientError(.timeout, reasonString: "condition not met in \(seconds) s")
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}

/// The source documents' verification: a persistent session, a message received but not
/// acknowledged, the network dropped, more published meanwhile, then the reconnect. The broker
/// must answer session present = 1, send the unacknowledged message again with DUP = 1, then
/// every other message, none missing.
func verifyPersistentSession(port: Int, version: ProtocolVersion) async throws {
    let id = "verify-\(UInt32.random(in: 0...UInt32.max))"
    var configuration = MQTTClientConfiguration(port: port, clientID: id)
    configuration.protocolVersion = version
    configuration.sessionExpiry = .never
    configuration.cleanStart = version == .v5  // 3.1.1 keeps a session only with Clean Session 0
    configuration.acknowledgement = .manual
    configuration.reconnect?.initialDelay = .milliseconds(50)
    let subscriber = MQTTClient(configuration: configuration)
    let first = try await subscriber.connect()
    #expect(first.sessionPresent == false)
    let collector = MessageCollector(try await subscriber.subscribe(to: "verify/\(id)/#", qos: .atLeastOnce))

    var publisherConfiguration = MQTTClientConfiguration(port: port, clientID: "\(id)-publisher")
    publisherConfiguration.protocolVersion = version
    let publisher = MQTTClient(configuration: publisherConfiguration)
    try await publisher.connect()
    try await publisher.publish(to: "verify/\(id)/t", "m0", qos: .atLeastOnce)
    let before = try await collector.wait(for: 1)
    #expect(before[0].string == "m0")
    #expect(!before[0].duplicate)

    // Not acknowledged; the network goes away.
    await subscriber.dropConnection()
    for n in 1...5 { try await publisher.publish(to: "verify/\(id)/t", "m\(n)", qos: .atLeastOnce) }

    try await eventually { await subscriber.connectionCount == 2 }
    #expect(await subscriber.lastConnectResult?.sessionPresent == true)
    let all = try await collector.wait(for: 7)
    let again = all[1]
    #expect(again.string == "m0")
    #expect(again.duplicate)
    #expect(all.dropFirst(2).map(\.string) == ["m1", "m2", "m3", "m4", "m5"])
    for message in all.dropFirst() { await message.acknowledge() }
    await subscriber.disconnect(sessionExpiry: .none)
    await publisher.disconnect()
}

@Suite("Persistent session verification")
struct PersistentSessionVerificationTests {
    @Test("against Tern: session present, DUP redelivery, nothing missing", arguments: [ProtocolVersion.v5, .v3_1_1])
    func againstTern(version: ProtocolVersion) async throws {
        try await withTestBroker { _, port in
            try await verifyPersistentSession(port: port, version: version)
        }
    }

    @Test(
        "against Mosquitto: session present, DUP redelivery, nothing missing",
        .enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/sbin/mosquitto"), "mosquitto is not installed"),
        arguments: [ProtocolVersion.v5, .v3_1_1]
    )
    func againstMosquitto(version: ProtocolVersion) async throws {
        try await withMosquitto { port in
            try await verifyPersistentSession(port: port, version: version)
        }
    }
}

/// Starts Debian's mosquitto on a free loopback port for the duration of `body`, and stops it by
/// its own PID afterwards.
///
/// Ports come from 30000…32699, below Linux's ephemeral range (32768…60999), so that the client
/// sockets of tests running in parallel cannot take the port first, and apart from the interop
/// suites' 20000…29999; if mosquitto exits at start anyway (address in use), another port is tried.
func withMosquitto<T>(_ body: (Int) async throws -> T) async throws -> T {
    for _ in 0..<10 {
        let port = Int.random(in: 30_000...32_699)
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "tern-mosquitto-\(port)-\(UUID().uuidString)"
        )
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let config = directory.appendingPathComponent("mosquitto.conf")
        try "listener \(port) 127.0.0.1\nallow_anonymous true\n".write(to: config, atomically: true, encoding: .utf8)
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/mosquitto")
        process.arguments = ["-c", config.path]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        defer {
            // SIGKILL: the test runner's children inherit a signal mask in which SIGTERM may be blocked.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        // Wait (bounded) until it accepts connections, or until it has given up on this port.
        let deadline = Date().addingTimeInterval(20)
        var listening = false
        while process.isRunning, Date() < deadline {
            if let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(
                host: "127.0.0.1",
                port: port
            ).get() {
                try? await channel.close()
                listening = true
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        if listening { return try await body(port) }
    }
    throw MQTTClientError(.timeout, reasonString: "mosquitto did not start on any of 10 ports")
}

@Suite("Resumed sessions")
struct ResumedSessionTests {
    @Test("messages the broker sends right after CONNACK reach the subscription made afterwards")
    func messagesBeforeResubscribe() async throws {
        try await withTestBroker { broker, port in
            var configuration = MQTTClientConfiguration(port: port, clientID: "early-bird")
            configuration.sessionExpiry = .seconds(300)
            let first = MQTTClient(configuration: configuration)
            try await first.connect()
            _ = try await first.subscribe(to: "early/#", qos: .atLeastOnce)
            await first.disconnect()

            let publisher = MQTTClient(configuration: MQTTClientConfiguration(port: port, clientID: "early-publisher"))
            try await publisher.connect()
            try await publisher.publish(to: "early/x", "queued", qos: .atLeastOnce)
            await publisher.disconnect()

            configuration.cleanStart = false
            let second = MQTTClient(configuration: configuration)
            #expect(try await second.connect().sessionPresent)
            // The queued message may arrive before this call; it must not be lost.
            let collector = MessageCollector(try await second.subscribe(to: "early/#", qos: .atLeastOnce))
            #expect(try await collector.wait(for: 1).map(\.string) == ["queued"])
            await second.disconnect(sessionExpiry: .none)
        }
    }
}
