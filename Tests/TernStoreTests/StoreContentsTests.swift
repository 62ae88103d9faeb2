import NIOCore
import TernBrokerCore
import TernCodec
import TernStore
import Testing

/// The store's rows as values: what `InMemoryStore` keeps, and the reference counts that decide
/// when a message stored once for many sessions and retained topics may go.
@Suite("Store contents and the in-memory store")
struct StoreContentsTests {
    static func header(_ key: UInt64, _ clientID: String) -> StoredSessionHeader {
        StoredSessionHeader(
            key: key,
            clientID: clientID,
            protocolVersion: .v5,
            expiryInterval: 600,
            expiresAt: nil,
            attached: true
        )
    }

    static func message(_ topic: String, _ text: String, qos: QoS = .atLeastOnce) -> ApplicationMessage {
        ApplicationMessage(topic: try! TopicName(topic), payload: ByteBuffer(string: text), qos: qos, retain: false)
    }

    static func delivery(_ sequence: UInt64, message: UInt64) -> StoredDelivery {
        StoredDelivery(
            sequence: sequence,
            messageID: message,
            qos: .atLeastOnce,
            retain: false,
            subscriptionIdentifiers: [],
            packetIdentifier: nil
        )
    }

    @Test("A message queued for two sessions and retained is stored once and goes with its last reference")
    func messageReferenceCounting() {
        var contents = StoreContents()
        contents.apply(.putSession(Self.header(1, "a")))
        contents.apply(.putSession(Self.header(2, "b")))
        contents.apply(.putMessage(id: 7, Self.message("t", "x")))
        contents.apply(.putMessage(id: 7, Self.message("t", "x")))
        contents.apply(.putDelivery(session: 1, Self.delivery(100, message: 7)))
        contents.apply(.putDelivery(session: 2, Self.delivery(101, message: 7)))
        contents.apply(.putRetained(topic: "t", messageID: 7))
        #expect(contents.messages.count == 1)
        #expect(contents.messages[7]?.references == 3)

        contents.apply(.deleteDelivery(sequence: 100, messageID: 7))
        #expect(contents.messages[7]?.references == 2)
        contents.apply(.deleteSession(key: 2, deliveries: []))
        #expect(contents.messages[7]?.references == 1)
        #expect(contents.sessions.keys.sorted() == [1])
        contents.apply(.deleteRetained(topic: "t"))
        #expect(contents.messages.isEmpty)
        #expect(contents.retained.isEmpty)
    }

    @Test("Replacing a retained message releases the one it replaces")
    func retainedReplacement() {
        var contents = StoreContents()
        contents.apply(.putMessage(id: 1, Self.message("t", "old")))
        contents.apply(.putRetained(topic: "t", messageID: 1))
        contents.apply(.putMessage(id: 2, Self.message("t", "new")))
        contents.apply(.putRetained(topic: "t", messageID: 2))
        #expect(contents.retained == ["t": 2])
        #expect(contents.messages.keys.sorted() == [2])
    }

    @Test("A delivery keeps its packet identifier once sent; releases and inbound QoS 2 ids come and go")
    func inflightState() throws {
        var contents = StoreContents()
        contents.apply(.putSession(Self.header(1, "a")))
        contents.apply(.putMessage(id: 3, Self.message("t", "x")))
        contents.apply(.putDelivery(session: 1, Self.delivery(10, message: 3)))
        contents.apply(.deliverySent(sequence: 10, packetIdentifier: 42))
        contents.apply(.putRelease(session: 1, packetIdentifier: 9))
        contents.apply(.putInboundQoS2(session: 1, packetIdentifier: 5))
        contents.apply(.putInboundQoS2(session: 1, packetIdentifier: 6))
        contents.apply(.deleteInboundQoS2(session: 1, packetIdentifier: 5))
        let session = try #require(contents.snapshot().sessions.first)
        #expect(session.deliveries.map(\.packetIdentifier) == [42])
        #expect(session.releases == [9])
        #expect(session.inboundQoS2 == [6])
        contents.apply(.deleteRelease(session: 1, packetIdentifier: 9))
        #expect(contents.snapshot().sessions.first?.releases == [])
    }

    @Test("Changes for a session that is not stored are ignored, not applied to another")
    func unknownSession() {
        var contents = StoreContents()
        contents.apply(.putMessage(id: 3, Self.message("t", "x")))
        contents.apply(.putDelivery(session: 99, Self.delivery(10, message: 3)))
        contents.apply(.deliverySent(sequence: 10, packetIdentifier: 1))
        #expect(contents.sessions.isEmpty)
        #expect(contents.messages[3]?.references == 0)
    }

    @Test("A subscription put twice for the same filter replaces the first, options and identifier")
    func subscriptionReplaced() throws {
        var contents = StoreContents()
        contents.apply(.putSession(Self.header(1, "a")))
        let filter = try TopicFilter("a/#")
        contents.apply(
            .putSubscription(session: 1, SessionSubscription(filter: filter, options: .init(), identifier: nil))
        )
        contents.apply(
            .putSubscription(
                session: 1,
                SessionSubscription(filter: filter, options: .init(qos: .exactlyOnce), identifier: 4)
            )
        )
        let stored = contents.snapshot().sessions.first?.subscriptions
        #expect(stored?.count == 1)
        #expect(stored?.first?.options.qos == .exactlyOnce)
        #expect(stored?.first?.identifier == 4)
        contents.apply(.deleteSubscription(session: 1, filter: "a/#"))
        #expect(contents.snapshot().sessions.first?.subscriptions.isEmpty == true)
    }

    @Test("InMemoryStore applies changes as submitted: no ticket to wait for, and a reload sees them")
    func inMemoryStore() throws {
        let store = InMemoryStore()
        store.start { _ in Issue.record("an in-memory store has no commits to report") }
        let ticket = store.submit([
            .putSession(Self.header(1, "a")),
            .putMessage(id: 1, Self.message("t", "x")),
            .putDelivery(session: 1, Self.delivery(1, message: 1)),
        ])
        #expect(ticket == nil)
        #expect(store.statistics.sessions == 1)
        #expect(store.statistics.messages == 1)
        store.close()
        let snapshot = try store.load()
        #expect(snapshot.sessions.map(\.header.clientID) == ["a"])
        #expect(snapshot.messages[1].map { String(buffer: $0.payload) } == "x")
    }
}
