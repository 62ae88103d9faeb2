import Foundation
import NIOCore
import TernBroker
import TernBrokerTesting
import TernCodec
import Testing

/// Broken and hostile clients: each gets the right reason code and a closed connection, and the
/// broker keeps serving everyone else.
@Suite("Hostile clients")
struct HostileClientTests {
    /// Checks that a fresh client can still connect and ping after the hostile one.
    func brokerStillServes(port: Int) async throws {
        var client = try await TestClient.connect(port: port)
        #expect(try await client.handshake(Connect(clientIdentifier: "bystander")).reasonCode == .success)
        try await client.send(.pingreq)
        #expect(try await client.next() == .pingresp)
        await client.close()
    }

    @Test("garbage after CONNECT gets DISCONNECT 0x81 (§4.13)")
    func garbageAfterConnect() async throws {
        try await withTestBroker { _, port in
            var client = try await TestClient.connect(port: port)
            _ = try await client.handshake(Connect(clientIdentifier: "c"))
            try await client.sendRaw([0x00, 0x00])
            #expect(try await client.next() == .disconnect(Disconnect(reasonCode: .malformedPacket)))
            #expect(try await client.next() == nil)
            try await brokerStillServes(port: port)
        }
    }

    @Test("a second CONNECT gets DISCONNECT 0x82 ([MQTT-3.1.0-2])")
    func secondConnect() async throws {
        try await withTestBroker { _, port in
            var client = try await TestClient.connect(port: port)
            _ = try await client.handshake(Connect(clientIdentifier: "c"))
            try await client.send(.connect(Connect(clientIdentifier: "c")))
            #expect(try await client.next() == .disconnect(Disconnect(reasonCode: .protocolError)))
            #expect(try await client.next() == nil)
            try await brokerStillServes(port: port)
        }
    }

    @Test("a PUBLISH before CONNECT closes the connection ([MQTT-3.1.0-1])")
    func publishBeforeConnect() async throws {
        try await withTestBroker { _, port in
            var client = try await TestClient.connect(port: port)
            try await client.sendRaw([0x30, 0x04, 0x00, 0x01, 0x74, 0x78])
            #expect(try await client.next() == nil)
            try await brokerStillServes(port: port)
        }
    }

    @Test("a Remaining Length over max_packet_size gets DISCONNECT 0x95 before the body arrives")
    func oversizedPacket() async throws {
        try await withTestBroker({ $0.broker.maxPacketSize = 1024 }) { _, port in
            var client = try await TestClient.connect(port: port)
            let ack = try await client.handshake(Connect(clientIdentifier: "c"))
            #expect(ack.properties.maximumPacketSize == 1024)
            try await client.sendRaw([0x30, 0xC0, 0x84, 0x3D])  // announces 1,000,000 bytes, sends none
            #expect(try await client.next() == .disconnect(Disconnect(reasonCode: .packetTooLarge)))
            #expect(try await client.next() == nil)
            try await brokerStillServes(port: port)
        }
    }

    @Test("an unknown protocol level gets a CONNACK 'unacceptable protocol version' and a close (§3.1.2.2)")
    func unknownProtocolLevel() async throws {
        try await withTestBroker { _, port in
            var client = try await TestClient.connect(port: port, version: .v3_1_1)
            try await client.sendRaw(
                [0x10, 0x0D] + [0x00, 0x04] + Array("MQTT".utf8) + [0x07, 0x02, 0x00, 0x3C, 0x00, 0x00, 0x00]
            )
            #expect(try await client.next() == .connack(ConnAck(reasonCode: .unsupportedProtocolVersion)))
            #expect(try await client.next() == nil)
        }
    }

    @Test("10,000 connect/disconnect cycles leave no session and no file descriptor behind")
    func connectDisconnectCycles() async throws {
        try await withTestBroker { broker, port in
            let before = openFileDescriptors()
            // Two rounds of 5,000: the first warms up allocators and caches (the test's clients
            // live in this process too); a leak keeps growing in the second round, warm-up does not.
            func round(_ label: Int) async throws {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for worker in 0..<8 {
                        group.addTask {
                            for cycle in 0..<625 {
                                var client = try await TestClient.connect(port: port)
                                _ = try await client.handshake(
                                    Connect(clientIdentifier: "cycle-\(label)-\(worker)-\(cycle)")
                                )
                                try await client.send(.disconnect(Disconnect()))
                                _ = try await client.next()
                                await client.close()
                            }
                        }
                    }
                    try await group.waitForAll()
                }
            }
            try await round(1)
            try await round(2)
            // The broker closes its side as it processes each DISCONNECT; give the last ones a moment.
            var after = openFileDescriptors()
            for _ in 0..<50 where after > before {
                try await Task.sleep(for: .milliseconds(20))
                after = openFileDescriptors()
            }
            #expect(after <= before)
            // Memory is not measured here: this process also runs the other suites, whose
            // allocations would blur the figure. It is checked on a `tern serve` in a process of its
            // own (InteropTests, "Broker memory" and "Stalled subscriber").
            #expect(broker.statistics.connectionsTotal == 10_000)
            #expect(broker.sessionCount == 0)
            try await brokerStillServes(port: port)
        }
    }
}

/// The number of open file descriptors of this process.
func openFileDescriptors() -> Int {
    var count = 0
    if let directory = opendir("/proc/self/fd") {
        while readdir(directory) != nil { count += 1 }
        closedir(directory)
    }
    return count
}

#if canImport(Glibc)
    import Glibc
#endif
