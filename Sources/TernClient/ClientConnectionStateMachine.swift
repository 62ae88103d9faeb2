import DequeModule
import TernCodec

/// The client's protocol rules, one connection after another, without I/O: what to send on
/// CONNACK when resuming a session (MQTT 5.0 §4.4), how far the server's Receive Maximum lets
/// publications go (§4.9), how inbound topic aliases (§3.3.2.3.4) and QoS 2 duplicates (§4.3.3)
/// are handled, and what to answer each packet with.
///
/// ``MQTTClient`` feeds it events and performs the actions it returns: writing packets, saving the
/// session, resuming the callers that wait, handing messages to subscription streams. Each method
/// says when the session changed and must be saved before the packets it returns are written.
struct ClientConnectionStateMachine {
    /// What the rules depend on from ``MQTTClientConfiguration``.
    struct Settings: Sendable {
        var protocolVersion: ProtocolVersion
        var offlineQueueLimit: Int
        var sessionLostPolicy: ClientSessionState.SessionLostPolicy
        var manualAcknowledgement: Bool

        init(_ configuration: MQTTClientConfiguration) {
            protocolVersion = configuration.protocolVersion
            offlineQueueLimit = configuration.offlineQueueLimit
            sessionLostPolicy = configuration.sessionLostPolicy
            manualAcknowledgement = configuration.acknowledgement == .manual
        }
    }

    let settings: Settings
    /// What must survive a reconnect and, with a durable store, a restart.
    private(set) var session: ClientSessionState
    /// Outbound packet ids whose PUBLISH has never been written, in the order they started. They
    /// go first-time (DUP = 0) when the window allows; every other flow may have reached the server.
    private var unsent: Deque<UInt16> = []
    /// QoS 0 publications made while no connection was up, sent first on the next one.
    private var offlineQoS0: Deque<Publish> = []
    /// Whether CONNACK accepted the current connection.
    private(set) var isConnected = false
    private var serverReceiveMaximum = Int(UInt16.max)
    /// Kept after the connection closes: a publication made offline is checked against it too.
    private var serverMaximumPacketSize: Int?
    private var inboundAliases: [UInt16: TopicName] = [:]
    /// Subscriptions to make again when the server has lost the session, by filter.
    private var subscriptions: [String: Subscribe.Subscription] = [:]
    private var nextControlPacketIdentifier: UInt16 = 1

    init(settings: Settings, session: ClientSessionState) {
        self.settings = settings
        // Flows read back from a store may have been sent before the process stopped: they are
        // treated as in flight, and go again with DUP = 1 on a resumed session.
        self.session = session
    }

    /// How many outbound QoS 1/2 flows are unfinished.
    var inflightCount: Int { session.outbound.count }

    // MARK: Connecting

    /// What CONNACK with success starts.
    struct Resumption {
        /// In order: re-sent PUBLISH (DUP = 1) and PUBREL of a present session, a SUBSCRIBE for
        /// the subscriptions a lost session forgot, then queued publications within the window.
        var writes: [MQTTPacket]
        /// Outbound flows the server no longer knows and the policy dropped: their callers fail.
        var dropped: [UInt16]
    }

    /// The server accepted the connection. The session changed: save it before writing.
    mutating func connected(_ connack: ConnAck) -> Resumption {
        isConnected = true
        inboundAliases = [:]
        serverReceiveMaximum = Int(connack.properties.receiveMaximum ?? .max)
        serverMaximumPacketSize = connack.properties.maximumPacketSize.map { Int($0) }

        // A PUBLISH never written is not re-sent: it waits for the window and goes first-time.
        let (resend, dropped) = session.resume(
            sessionPresent: connack.sessionPresent,
            policy: settings.sessionLostPolicy,
            neverSent: Set(unsent)
        )
        var writes = resend
        if !connack.sessionPresent, !subscriptions.isEmpty {
            // The server forgot the subscriptions with the session: make them again.
            let subscribe = Subscribe(
                packetIdentifier: controlPacketIdentifier(),
                subscriptions: subscriptions.keys.sorted().compactMap { subscriptions[$0] }
            )
            writes.append(.subscribe(subscribe))
        }
        writes += queuedWrites()
        return Resumption(writes: writes, dropped: dropped)
    }

    /// The connection closed, or the attempt failed. Every unfinished PUBLISH goes out on the
    /// next connection: again with DUP = 1 if it was written and the session survived.
    /// - Returns: whether CONNACK had accepted it.
    mutating func connectionClosed() -> Bool {
        defer { isConnected = false }
        return isConnected
    }

    /// Whether a reconnection asks to resume the session: only one that outlives the connection
    /// (Session Expiry > 0 on MQTT 5, Clean Session 0 on 3.1.1) can be.
    static func reconnectResumes(_ configuration: MQTTClientConfiguration) -> Bool {
        configuration.protocolVersion == .v5 ? configuration.sessionExpiry != .none : !configuration.cleanStart
    }

    // MARK: Publishing

    enum PublishAction {
        /// QoS 0 on a connection: write it.
        case write(MQTTPacket)
        /// QoS 0 with no connection: it waits for the next one.
        case queued
        /// QoS 1/2: the flow has its packet identifier and the session changed (save it); write
        /// `writes`, which hold it if the window allows.
        case started(packetIdentifier: UInt16, writes: [MQTTPacket])
        case rejected(MQTTClientError)
    }

    mutating func publish(_ publish: Publish) -> PublishAction {
        if let limit = serverMaximumPacketSize,
            MQTTPacket.publish(publish).encodedSize(version: settings.protocolVersion) > limit
        {
            return .rejected(
                MQTTClientError(.packetTooLarge, reasonString: "the broker accepts packets of at most \(limit) bytes")
            )
        }
        if publish.qos == .atMostOnce {
            if isConnected { return .write(.publish(publish)) }
            guard offlineQoS0.count + unsent.count < settings.offlineQueueLimit else {
                return .rejected(MQTTClientError(.offlineQueueFull))
            }
            offlineQoS0.append(publish)
            return .queued
        }
        guard offlineQoS0.count + unsent.count < settings.offlineQueueLimit else {
            return .rejected(MQTTClientError(.offlineQueueFull))
        }
        let started = session.start(publish)
        unsent.append(started.packetIdentifier)
        return .started(packetIdentifier: started.packetIdentifier, writes: queuedWrites())
    }

    /// Queued publications the server's Receive Maximum lets go now: QoS 0 first, then QoS 1/2
    /// in the order they started.
    private mutating func queuedWrites() -> [MQTTPacket] {
        guard isConnected else { return [] }
        var writes = offlineQoS0.map(MQTTPacket.publish)
        offlineQoS0 = []
        var room = serverReceiveMaximum - (session.outbound.count - unsent.count)
        while room > 0, let id = unsent.popFirst() {
            // Searched from the end: a flow not yet written is among the newest.
            guard case .publish(let publish)? = session.outbound.last(where: { $0.packetIdentifier == id }) else {
                continue
            }
            writes.append(.publish(publish))
            room -= 1
        }
        return writes
    }

    // MARK: Subscribing

    /// The packet identifier for the next SUBSCRIBE or UNSUBSCRIBE.
    mutating func controlPacketIdentifier() -> UInt16 {
        // SUBSCRIBE/UNSUBSCRIBE ids come from the top half, publications' from the bottom, so the
        // two never collide without sharing state that must be persisted.
        defer { nextControlPacketIdentifier = nextControlPacketIdentifier % 0x7FFF + 1 }
        return 0x8000 | nextControlPacketIdentifier
    }

    /// The server granted `subscription`: it is made again if the server loses the session.
    mutating func subscribed(_ filter: String, _ subscription: Subscribe.Subscription) {
        subscriptions[filter] = subscription
    }

    mutating func unsubscribed(_ filter: String) {
        subscriptions[filter] = nil
    }

    // MARK: Receiving

    enum ReceiveAction {
        case connack(ConnAck)
        /// A new message for the application. Save the session first when `sessionChanged` (an
        /// inbound QoS 2 id was recorded), then write `acknowledgement` if there is one.
        case deliver(Publish, sessionChanged: Bool, acknowledgement: MQTTPacket?)
        /// A QoS 2 PUBLISH already received and acknowledged: acknowledge again, deliver nothing.
        case acknowledgeOnly(MQTTPacket)
        /// A PUBACK, PUBREC or PUBCOMP. The session changed: save it, then write `reply` (PUBREL)
        /// and `writes` (what the freed window lets go), and finish the flow in `completion`, with
        /// the server's Reason String if it refused.
        case publishAcknowledged(
            reply: MQTTPacket?,
            completion: ClientSessionState.Completion?,
            reasonString: String?,
            writes: [MQTTPacket]
        )
        /// PUBREL ended an inbound QoS 2 flow. The session changed: save it, then write `reply` (PUBCOMP).
        case released(reply: MQTTPacket)
        case requestAcknowledged(SubscribeAcknowledgement)
        case serverDisconnected(Disconnect)
        /// The server broke a rule: close the connection.
        case protocolError(String)
        case ignore
    }

    mutating func received(_ packet: MQTTPacket) -> ReceiveAction {
        switch packet {
        case .connack(let connack):
            return .connack(connack)
        case .publish(let publish):
            return receivedPublish(publish)
        case .puback(let ack), .pubrec(let ack), .pubcomp(let ack):
            let (reply, completion) = session.received(packet.type, ack)
            return .publishAcknowledged(
                reply: reply,
                completion: completion,
                reasonString: ack.properties.reasonString,
                writes: completion == nil ? [] : queuedWrites()
            )
        case .pubrel(let release):
            session.released(release.packetIdentifier)
            return .released(reply: .pubcomp(PublishAcknowledgement(packetIdentifier: release.packetIdentifier)))
        case .suback(let ack), .unsuback(let ack):
            return .requestAcknowledged(ack)
        case .disconnect(let disconnect):
            return .serverDisconnected(disconnect)
        default:
            return .ignore
        }
    }

    private mutating func receivedPublish(_ publish: Publish) -> ReceiveAction {
        var publish = publish
        if let alias = publish.properties.topicAlias {
            if publish.topic.isEmpty {
                guard let known = inboundAliases[alias] else {
                    return .protocolError("topic alias \(alias) was never set")  // §3.3.2.3.4
                }
                publish.topic = known
            } else {
                inboundAliases[alias] = publish.topic
            }
        }
        var sessionChanged = false
        if publish.qos == .exactlyOnce {
            guard session.receivedExactlyOnce(publish.packetIdentifier) else {
                return acknowledgement(publish.packetIdentifier, qos: publish.qos).map(ReceiveAction.acknowledgeOnly)
                    ?? .ignore
            }
            sessionChanged = true
        }
        let automatic =
            settings.manualAcknowledgement ? nil : acknowledgement(publish.packetIdentifier, qos: publish.qos)
        return .deliver(publish, sessionChanged: sessionChanged, acknowledgement: automatic)
    }

    /// The PUBACK (QoS 1) or PUBREC (QoS 2) that acknowledges an inbound PUBLISH, if there is a
    /// connection to send it on.
    func acknowledgement(_ packetIdentifier: UInt16, qos: QoS) -> MQTTPacket? {
        guard isConnected else { return nil }
        switch qos {
        case .atMostOnce: return nil
        case .atLeastOnce: return .puback(PublishAcknowledgement(packetIdentifier: packetIdentifier))
        case .exactlyOnce: return .pubrec(PublishAcknowledgement(packetIdentifier: packetIdentifier))
        }
    }
}
