import Foundation
import TernBrokerTesting
import TernCodec
import Testing

/// A subscriber that stops reading its socket while a publisher goes at full speed, against a
/// `tern serve` child: the broker's memory stays bounded, the other subscriber of the same topic
/// gets every message in order, a bystander is still answered, and the memory comes back when the
/// stalled client leaves. Design notes: "Backpressure, never unbounded buffers".
@Suite("Stalled subscriber", .enabled(if: ternExecutable != nil, "the tern executable is missing"), .serialized)
struct StalledSubscriberTests {
    static let maxQueued = 100

    /// Starts `tern serve -c` with `$SYS` every second and a small queue limit.
    func startServer(in directory: borrowing TemporaryDirectory) async throws -> (Peers.Running, port: Int) {
        let configuration = directory.file("tern.conf")
        let (server, port) = try await Peers.startOnFreePort { port in
            try
                "listener \(port) 127.0.0.1\nallow_anonymous true\nsys_interval 1\nmax_queued_messages \(Self.maxQueued)\n"
                .write(toFile: configuration, atomically: true, encoding: .utf8)
            return (ternExecutable ?? "", ["serve", "-c", configuration])
        }
        return (server, port)
    }

    /// A client that connects while the load runs gets CONNACK and PINGRESP.
    func bystanderRoundTrip(port: Int) async throws {
        var client = try await TestClient.connect(port: port)
        #expect(try await client.handshake(Connect(clientIdentifier: "bystander")).reasonCode == .success)
        try await client.send(.pingreq)
        #expect(try await client.next(seconds: 10) == .pingresp)
        await client.close()
    }

    /// The last `$SYS/broker/publish/messages/dropped` value once it reaches `atLeast`.
    func droppedCount(port: Int, atLeast: Int) async throws -> Int {
        var client = try await TestClient.connect(port: port)
        _ = try await client.handshake(Connect(clientIdentifier: "sys-reader"))
        try await client.send(
            .subscribe(
                Subscribe(
                    packetIdentifier: 1,
                    subscriptions: [.init(filter: try TopicFilter("$SYS/broker/publish/messages/dropped"))]
                )
            )
        )
        var value = -1
        let deadline = Date().addingTimeInterval(20)
        while value < atLeast, Date() < deadline {
            guard let packet = try await client.next(seconds: 20) else { break }
            if case .publish(let publish) = packet { value = Int(String(buffer: publish.payload)) ?? -1 }
        }
        await client.close()
        return value
    }

    @Test(
        "QoS 0, 1 KiB, ≥ 5 s at full speed: RSS under 100 MB, the healthy subscriber gets all in order",
        .timeLimit(.minutes(2))
    )
    func qos0() async throws {
        try await stalled(qos: .atMostOnce)
    }

    @Test(
        "QoS 1: the stalled client's queue stops at max_queued_messages; everything past it is counted as dropped",
        .timeLimit(.minutes(2))
    )
    func qos1() async throws {
        try await stalled(qos: .atLeastOnce)
    }

    func stalled(qos: QoS) async throws {
        let directory = try TemporaryDirectory(prefix: "stalled")
        let (server, port) = try await startServer(in: directory)
        defer { server.killNow() }
        let pid = server.process.processIdentifier

        let stalled = try await SequencedLoad.subscribe(port: port, clientID: "stalled", filter: "load/#", qos: qos)
        try await stalled.stopReading()
        let healthy = try await SequencedLoad.subscribe(port: port, clientID: "healthy", filter: "load/#", qos: qos)
        let start = BrokerMemoryTests.residentBytes(of: pid)

        var publication = SequencedLoad.Publication(
            clientID: "loader",
            publisher: 1,
            topic: "load/a",
            count: 50_000_000,
            qos: { _ in qos }
        )
        publication.duration = .seconds(5)
        // At least 25 MB toward the stalled client, however slow the machine is today.
        publication.minimumCount = 25_000
        publication.payloadSize = 1024
        // Closed loop against the healthy subscriber, as a benchmark's window: as fast as the
        // broker delivers to a client that reads.
        publication.pacing = (healthy, 64)
        let sampling = Task {
            var peak = 0
            while !Task.isCancelled {
                peak = max(peak, BrokerMemoryTests.residentBytes(of: pid))
                try? await Task.sleep(for: .milliseconds(50))
            }
            return peak
        }
        async let published = SequencedLoad.publish(port: port, publication)
        try await Task.sleep(for: .seconds(2))
        try await bystanderRoundTrip(port: port)
        let count = try await published
        sampling.cancel()
        let peak = await sampling.value

        try await healthy.wait(timeout: .seconds(30)) { $0.count >= count }
        let check = SequenceCheck(healthy.deliveries, published: [1: count], qos: { _ in qos })
        #expect(check.received == count, "\(check)")
        #expect(check.outOfOrder == 0, "\(check)")
        #expect(check.duplicates == 0, "\(check)")
        #expect(peak < 100_000_000, "tern serve peaked at \(peak) bytes (started at \(start))")
        // Without backpressure the 1 KiB messages pile up in the stalled connection's buffers:
        // 60 MB for 32,000 messages on a debug build here. With it, what waits is bounded by the write buffer.
        #expect(peak - start < 30_000_000, "tern serve grew from \(start) to \(peak) bytes")

        if qos == .atLeastOnce {
            // 20 in flight (max_inflight_messages) and 100 queued; every other message dropped.
            let expected = count - 20 - Self.maxQueued
            #expect(try await droppedCount(port: port, atLeast: expected) == expected)
        } else {
            #expect(try await droppedCount(port: port, atLeast: 1) > 0)
        }

        await stalled.close()
        await healthy.close()
        var after = BrokerMemoryTests.residentBytes(of: pid)
        let deadline = Date().addingTimeInterval(10)
        while after > start + 20_000_000, Date() < deadline {
            try await Task.sleep(for: .milliseconds(100))
            after = BrokerMemoryTests.residentBytes(of: pid)
        }
        #expect(after <= start + 20_000_000, "tern serve: \(start) bytes before, \(peak) at peak, \(after) after")
        print(
            "stalled subscriber QoS \(qos.rawValue): \(count) messages, RSS \(start / 1_000_000) MB before, \(peak / 1_000_000) MB peak, \(after / 1_000_000) MB after"
        )
    }
}
