import NIOCore
import TernBroker
import TernBrokerTesting
import TernCodec
import TernStoreSQLite
import Testing

/// [MQTT-4.6.0-6] under load over real sockets: several publishers and subscribers spread over
/// the broker's event loops, QoS 0, 1 and 2 mixed in each publisher's stream, one subscriber with a
/// Receive Maximum of 2. Every subscriber checks, per publisher and QoS, that it received an
/// ordered subsequence of what was published, and at QoS 1/2 the whole of it, once.
@Suite("Ordered delivery under load")
struct SequencedStressTests {
    static let publishers = 3
    static let messagesPerPublisher = 1500
    /// Message n's QoS: QoS 0, 1 and 2 interleaved, ending with QoS 2.
    static let qos: @Sendable (Int) -> QoS = { n in QoS(rawValue: UInt8((n + 1) % 3))! }

    @Test("3 publishers, 3 subscribers, QoS 0/1/2 interleaved", .timeLimit(.minutes(2)), arguments: [false, true])
    func orderUnderLoad(withStore: Bool) async throws {
        let directory = try TemporaryDirectory(prefix: "stress")
        let store: SQLiteStore? = withStore ? try SQLiteStore(path: directory.file("tern.db")) : nil
        try await withTestBroker({ options in
            options.store = store
            options.broker.maxQueuedMessages = 0  // unlimited: nothing may be dropped at QoS 1/2
        }) { _, port in
            // With a store, the subscribers' sessions are stored (expiry > 0): their deliveries
            // and the publishers' acknowledgements go through the write-ahead path.
            let expiry: UInt32? = withStore ? 600 : nil
            var subscribers: [SequencedSubscriber] = []
            for (index, receiveMaximum) in [nil, 2, 20].enumerated() {
                subscribers.append(
                    try await SequencedLoad.subscribe(
                        port: port,
                        clientID: "stress-sub-\(index)",
                        filter: "stress/#",
                        qos: .exactlyOnce,
                        receiveMaximum: receiveMaximum.map { UInt16($0) },
                        sessionExpiry: expiry
                    )
                )
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for publisher in 0..<Self.publishers {
                    var publication = SequencedLoad.Publication(
                        clientID: "stress-pub-\(publisher)",
                        publisher: UInt32(publisher),
                        topic: "stress/\(publisher % 2)",
                        count: Self.messagesPerPublisher,
                        qos: Self.qos
                    )
                    publication.window = 20
                    group.addTask { try await SequencedLoad.publish(port: port, publication) }
                }
                try await group.waitForAll()
            }
            let published = Dictionary(
                uniqueKeysWithValues: (0..<Self.publishers).map { (UInt32($0), Self.messagesPerPublisher) }
            )
            let expected =
                (0..<Self.messagesPerPublisher).filter { Self.qos($0) != .atMostOnce }.count * Self.publishers
            for subscriber in subscribers {
                try await subscriber.wait(timeout: .seconds(60)) { deliveries in
                    Set(deliveries.filter { $0.qos != .atMostOnce }.map { "\($0.publisher)/\($0.sequence)" }).count
                        >= expected
                }
                let check = SequenceCheck(subscriber.deliveries, published: published, qos: Self.qos)
                #expect(check.outOfOrder == 0, "\(check)")
                #expect(check.lost == 0, "\(check)")
                #expect(check.duplicates == 0, "\(check)")
                await subscriber.close()
            }
        }
    }
}
