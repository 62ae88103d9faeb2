public import TernCodec

/// The broker's logic, with no I/O: sessions, subscriptions, retained messages, wills and expiry.
/// Every method takes the current time and returns the ``BrokerAction``s to carry out.
///
/// The broker has one state per event loop, holding the sessions of the clients connected to that
/// loop (and of those that were, until they come back elsewhere). The states share a
/// ``BrokerShared``: the subscription index, the retained messages and the directory of sessions.
/// A message for a session another state holds is posted to that session's mailbox
/// (``takeOutgoing()``), and a CONNECT for such a session fetches it first (``release(_:to:now:)``,
/// ``adopt(_:now:)``), so that a session's state is only ever touched by one loop and no lock is
/// held around the publish path. A state made on its own holds every session, as the tests of the
/// rules use it. Per-connection rules that need no session (topic aliases, packet order) live in
/// ``ConnectionStateMachine`` instead.
public struct BrokerState: Sendable {
    public var configuration: BrokerConfiguration
    /// What this state shares with the broker's other states.
    public let shared: BrokerShared
    /// This state's number among the broker's states: its event loop's.
    public let shard: Int
    /// The sessions this state holds, attached to its connections or waiting for their clients.
    public internal(set) var sessions: [String: Session] = [:]
    /// The client identifier attached to each live connection, and its protocol level.
    var connections: [ConnectionID: (clientID: String, version: ProtocolVersion)] = [:]
    /// Wills waiting for their Will Delay Interval, by client identifier.
    public internal(set) var pendingWills: [String: (message: ApplicationMessage, deadline: BrokerInstant)] = [:]
    /// When each will, session expiry and retained message expiry comes due, earliest first.
    var deadlines = Deadlines()
    public var statistics = BrokerStatistics()
    /// Set by the broker while its memory is over `memory_limit`: new connections are refused and
    /// new PUBLISH packets are not taken in.
    public var overMemoryLimit = false
    /// `acl_file`: who may publish, subscribe and receive where; `nil` allows everything. With
    /// `per_listener_settings true` a listener's own policy in ``listenerPolicies`` replaces it.
    public var accessControl: AccessControlList? {
        didSet { updateChecksAccess() }
    }
    /// Each listener's `allow_anonymous` and `acl_file` under `per_listener_settings true`, by the
    /// listener number the I/O layer passes to ``connect(_:_:credentials:listener:now:)``.
    public var listenerPolicies: [Int: AccessPolicy] = [:] {
        didSet { updateChecksAccess() }
    }
    /// Whether any ACL is configured: kept up to date here so that every PUBLISH and delivery
    /// without an ACL pays one load, not a walk over the listener policies.
    var checksAccess = false
    /// Whether changes to stored sessions are recorded for a store (``takeStoreChanges()``).
    /// Off when the broker keeps its state in memory only.
    public var recordsChanges = false
    var storeChanges: [StoreChange] = []
    var lastRecordedMessageID: UInt64 = 0
    /// Deliveries stored for sessions whose clients are away since ``takeStoredForAbsentClients()``
    /// was last called: rows that no acknowledgement will remove before the next commit.
    var storedForAbsentClients = 0
    let startedAt: BrokerInstant
    /// Payload bytes of the queues of sessions that ended since ``takeFreedQueueBytes()`` was last
    /// called: the I/O layer hands that much freed heap back to the system once it is large.
    var freedQueueBytes = 0
    /// Deliveries for sessions other states hold, to post to their mailboxes (``takeOutgoing()``).
    var outgoing: [(session: SessionReference, delivery: Delivery, storeKey: UInt64)] = []
    /// Client identifiers whose sessions this state has claimed from another and waits for.
    var awaitingSessions: Set<String> = []
    /// Releases asked of this state for sessions it waits for itself: made once they arrive.
    var deferredReleases: [String: [Int]] = [:]
    /// Client identifiers whose CONNECT the cluster has answered (``adopt(_:clientID:now:)``):
    /// the session, if any, is here now, and a new one may start here.
    var clusterClaims: Set<String> = []
    /// What the topics of this state's PUBLISH packets matched lately.
    var matchCache = MatchCache()
    /// The receipt of the PUBLISH being routed, which its copies carry (``PublishReceipt``).
    var routingReceipt: PublishReceipt?
    /// Receipts completed since ``takeCompletedReceipts(_:)`` was last called: their publishers'
    /// connections are woken, so that the PUBACKs leave.
    var completedReceipts: [PublishReceipt] = []

    /// - Parameters:
    ///   - configuration: The broker's limits and options.
    ///   - now: When the broker started.
    ///   - shared: What this state shares with the broker's other states; its own by default.
    ///   - shard: This state's number among them.
    public init(
        configuration: BrokerConfiguration = BrokerConfiguration(),
        now: BrokerInstant,
        shared: BrokerShared = BrokerShared(),
        shard: Int = 0
    ) {
        self.configuration = configuration
        self.startedAt = now
        self.shared = shared
        self.shard = shard
    }

    /// The subscriptions of every session, shared by all states.
    public var topics: SubscriptionIndex { shared.subscriptions }

    /// The retained messages, shared by all states.
    public var retained: RetainedMessages { shared.retained }

    /// Payload bytes queued for sessions that have ended since the last call.
    public mutating func takeFreedQueueBytes() -> Int {
        defer { freedQueueBytes = 0 }
        return freedQueueBytes
    }

    /// How many clients are connected now.
    public var connectedCount: Int { connections.count }

    /// The client identifier attached to `connection`.
    public func clientID(of connection: ConnectionID) -> String? { connections[connection]?.clientID }

    /// The keep alive the broker grants for a requested one (MQTT 5.0 §3.2.2.3.14): `max_keepalive`
    /// caps it, and a request of 0 (no keep alive) is raised to it when a cap is configured.
    public func grantedKeepAlive(requested: UInt16) -> UInt16 {
        let cap = configuration.maxKeepalive
        guard cap < UInt16.max else { return requested }
        return requested == 0 || requested > cap ? cap : requested
    }
}

// MARK: - CONNECT

extension BrokerState {
    /// Handles a CONNECT on `connection`: authentication, client identifier, session takeover,
    /// Clean Start and resumption (MQTT 5.0 §3.1.4, §3.2).
    public mutating func connect(
        _ connection: ConnectionID,
        _ packet: Connect,
        credentials: Credentials = .none,
        listener: Int? = nil,
        now: BrokerInstant
    ) -> [BrokerAction] {
        var actions: [BrokerAction] = []
        let version = packet.protocolVersion
        statistics.connectionsTotal += 1

        func refuse(_ code: ReasonCode, _ reason: String? = nil) -> [BrokerAction] {
            var properties = Properties()
            if let reason, version == .v5 { try? properties.append(.reasonString(reason)) }
            return [.send(connection, .connack(ConnAck(reasonCode: code, properties: properties))), .close(connection)]
        }

        // Mosquitto's rules: a wrong password is refused with 0x86 (3.1.1: 4), and so is an unknown
        // user, so that the answer does not tell whether the user exists; a client without a user
        // name needs allow_anonymous (else 0x87, 3.1.1: 5), and so does one whose user name there
        // is no password file to check against.
        let identity: ClientIdentity? =
            credentials == .trusted ? nil : ClientIdentity(username: packet.username, listener: listener)
        let allowAnonymous = listener.flatMap { listenerPolicies[$0]?.allowAnonymous } ?? configuration.allowAnonymous
        switch credentials {
        case .invalid: return refuse(.badUserNameOrPassword)
        case .none where !allowAnonymous: return refuse(.notAuthorized)
        case .unchecked where !allowAnonymous: return refuse(.badUserNameOrPassword)
        case .none, .unchecked, .valid, .trusted: break
        }
        if overMemoryLimit { return refuse(.quotaExceeded, "the broker is over its memory_limit") }
        if version == .v5, packet.properties.authenticationMethod != nil {
            return refuse(.badAuthenticationMethod, "no extended authentication method is configured")
        }
        if let will = packet.will {
            if will.qos > configuration.maxQoS { return refuse(.qosNotSupported) }
            if will.retain, !configuration.retainAvailable { return refuse(.retainNotSupported) }
        }

        var clientID = packet.clientIdentifier
        if configuration.useUsernameAsClientID {
            // As Mosquitto does: the user name replaces the client identifier; without one, no entry.
            guard let username = packet.username, !username.isEmpty else { return refuse(.notAuthorized) }
            clientID = username
        }
        var assignedIdentifier: String?
        if clientID.isEmpty {
            // §3.1.3.1: 3.1 never allows an empty id; 3.1.1 only with Clean Session [MQTT-3.1.3-8].
            guard configuration.allowZeroLengthClientID, version != .v3_1, version == .v5 || packet.cleanStart else {
                return refuse(.clientIdentifierNotValid)
            }
            repeat {
                let number = BrokerShared.next(shared.assignedIdentifierCounter)
                clientID =
                    shared.clustered
                    ? "\(configuration.autoIDPrefix)\(startedAt.millisecondsSinceEpoch)-\(shared.keyOffset)-\(number)"
                    : "\(configuration.autoIDPrefix)\(startedAt.millisecondsSinceEpoch)-\(number)"
            } while shared.directory.contains(clientID)
            assignedIdentifier = clientID
        }
        // As Mosquitto does: a will the client could not publish itself is refused at CONNECT.
        if let will = packet.will, let identity, !mayPublish(will.topic.string, clientID: clientID, identity: identity)
        {
            return refuse(.notAuthorized)
        }

        // §3.1.2.11.2: absent means 0. 3.1.1's Clean Session 0 is a session that never expires.
        let expiryInterval: UInt32 =
            version == .v5 ? (packet.properties.sessionExpiryInterval ?? 0) : (packet.cleanStart ? 0 : .max)

        // A session another state holds is fetched first; the CONNECT runs again once it is here.
        var reference: SessionReference?
        if sessions[clientID] == nil {
            if awaitingSessions.contains(clientID) {
                return [.awaitSession(connection, clientID: clientID, fetchFrom: nil)]
            }
            switch shared.directory.claim(clientID, for: shard) {
            case .start(let fresh)
            where !shared.clustered || clusterClaims.contains(clientID) || assignedIdentifier != nil:
                // An identifier assigned here names no session anywhere (it carries the node's number).
                reference = fresh
            case .start:
                // In a cluster, a session no state here holds may be held by another node, or
                // stored with none: the cluster is asked first (``ClusterChange``).
                awaitingSessions.insert(clientID)
                return [.awaitSession(connection, clientID: clientID, fetchFrom: SessionReference.elsewhereOwner)]
            case .fetch(let owner):
                awaitingSessions.insert(clientID)
                if owner == SessionReference.elsewhereOwner, let remote = shared.directory.reference(clientID) {
                    // From now on what this broker routes to the session waits in its mailbox here,
                    // behind what the store holds for it, rather than going through the store: a
                    // publisher of this node must not see a later message overtake an earlier one
                    // still on its way through the database.
                    remote.move(to: shard)
                }
                return [.awaitSession(connection, clientID: clientID, fetchFrom: owner)]
            }
        }

        // A detached session whose expiry has passed is over (§3.1.2.11.2), even if no tick has
        // ended it yet (a restart ends expired sessions after the listeners open): it ends now,
        // its will first, and this CONNECT starts a new one.
        if let existing = sessions[clientID], existing.connection == nil, let expiresAt = existing.expiresAt,
            expiresAt <= now
        {
            endSession(clientID, now: now, into: &actions)
        }

        // Session takeover (§3.1.4-3): the old connection is told and closed; its will follows the usual rules.
        if let existing = sessions[clientID], let old = existing.connection {
            if existing.protocolVersion == .v5 {
                actions.append(.send(old, .disconnect(Disconnect(reasonCode: .sessionTakenOver))))
            }
            actions.append(.close(old))
            detach(old, publishWill: true, now: now, into: &actions)
        }

        var sessionPresent = false
        if packet.cleanStart {
            if sessions[clientID] != nil { endSession(clientID, now: now, into: &actions) }
        } else if sessions[clientID] != nil {
            sessionPresent = true
            // §3.1.2.5: a reconnection before the Will Delay Interval passes cancels the will.
            pendingWills[clientID] = nil
        }

        if sessions[clientID] == nil {
            if reference == nil {
                // The session ended just now (Clean Start, or an expiry of 0 at takeover): the new one
                // gets a new reference, so that nothing routed to the old one reaches it.
                switch shared.directory.claim(clientID, for: shard) {
                case .start(let fresh): reference = fresh
                case .fetch(let owner):
                    // Another state claimed it meanwhile: it goes there, and this CONNECT follows it.
                    awaitingSessions.insert(clientID)
                    actions.append(.awaitSession(connection, clientID: clientID, fetchFrom: owner))
                    return actions
                }
            }
            sessions[clientID] = Session(
                clientID: clientID,
                protocolVersion: version,
                expiryInterval: expiryInterval,
                reference: reference!
            )
        }
        var session = sessions[clientID]!
        session.protocolVersion = version
        session.expiryInterval = expiryInterval
        session.connection = connection
        session.expiresAt = nil
        session.will = packet.will
        let clientReceiveMaximum = version == .v5 ? Int(packet.properties.receiveMaximum ?? .max) : Int.max
        // max_inflight_messages bounds what clients may hold unacknowledged; a client of the broker's
        // own (a bridge's local side) is held by its Receive Maximum alone, so that the bridge is
        // not limited to max_inflight_messages on top of the remote broker's window.
        let window = credentials == .trusted ? clientReceiveMaximum : configuration.maxInflightMessages
        session.sendWindow = max(1, min(clientReceiveMaximum, window))
        session.clientMaximumPacketSize = packet.properties.maximumPacketSize.map { Int($0) }
        session.writable = true
        session.identity = identity
        session.isBridge = packet.isBridge
        session.reference.connected.store(true, ordering: .relaxed)
        sessions[clientID] = session
        connections[connection] = (clientID, version)
        recordSession(clientID)
        if shared.clustered {
            clusterClaims.remove(clientID)
            // The other nodes learn its will, to publish it should this node die.
            let will = packet.will.map {
                willMessage($0, clientID: clientID, now: BrokerInstant(millisecondsSinceEpoch: 0))
            }
            storeChanges.append(
                .cluster(
                    .attached(
                        clientID: clientID,
                        will: will.map { message in
                            var message = message
                            message.expiresAt = nil  // made absolute when the will goes out
                            return message
                        },
                        willDelay: packet.will?.properties.willDelayInterval ?? 0,
                        expiryInterval: expiryInterval
                    )
                )
            )
        }

        var properties = Properties()
        if version == .v5 {
            if configuration.maxInflightMessages < Int(UInt16.max) {
                properties.receiveMaximum = UInt16(max(1, configuration.maxInflightMessages))
            }
            if configuration.maxQoS < .exactlyOnce { properties.maximumQoS = configuration.maxQoS }
            if !configuration.retainAvailable { try? properties.append(.retainAvailable(false)) }
            if configuration.maxPacketSize > 0 {
                properties.maximumPacketSize = UInt32(clamping: configuration.maxPacketSize)
            }
            properties.topicAliasMaximum = configuration.maxTopicAlias
            if let assignedIdentifier { try? properties.append(.assignedClientIdentifier(assignedIdentifier)) }
            let granted = grantedKeepAlive(requested: packet.keepAlive)
            if granted != packet.keepAlive { properties.serverKeepAlive = granted }
        }
        actions.append(.send(connection, .connack(ConnAck(sessionPresent: sessionPresent, properties: properties))))
        if sessionPresent {
            recheckAccess(clientID)
            resume(clientID, now: now, into: &actions)
        }
        return actions
    }

    /// Re-sends the in-flight messages of a resumed session, then drains its queue (§4.4).
    mutating func resume(_ clientID: String, now: BrokerInstant, into actions: inout [BrokerAction]) {
        guard let connection = sessions[clientID]?.connection,
            let (packets, expired) = sessions[clientID]?.redeliver(now: now)
        else { return }
        statistics.publishMessagesExpired += UInt64(expired.count)
        for delivery in expired { recordDeliveryEnded(delivery) }
        for packet in packets {
            if case .publish(let publish) = packet { statistics.countSent(publish) }
            actions.append(.send(connection, packet))
        }
        drainQueue(clientID, now: now, into: &actions)
    }
}

// MARK: - Leaving

extension BrokerState {
    /// Handles a DISCONNECT from the client (MQTT 5.0 §3.14.4).
    public mutating func disconnect(_ connection: ConnectionID, _ packet: Disconnect, now: BrokerInstant)
        -> [BrokerAction]
    {
        var actions: [BrokerAction] = []
        guard let (clientID, version) = connections[connection] else { return [.close(connection)] }
        var publishWill = packet.reasonCode == .disconnectWithWillMessage
        if version == .v5, let newInterval = packet.properties.sessionExpiryInterval {
            if sessions[clientID]?.expiryInterval == 0, newInterval != 0 {
                // §3.14.2.2.2 [MQTT-3.14.2-2]: 0 at CONNECT cannot become non-zero at DISCONNECT.
                actions.append(.send(connection, .disconnect(Disconnect(reasonCode: .protocolError))))
                publishWill = true
            } else {
                sessions[clientID]?.expiryInterval = newInterval
            }
        }
        if packet.reasonCode.isFailure { publishWill = true }
        actions.append(.close(connection))
        detach(connection, publishWill: publishWill, now: now, into: &actions)
        return actions
    }

    /// Handles the end of a network connection that was not preceded by a DISCONNECT, or that the
    /// broker closed: the will is published or scheduled (§3.1.2.5).
    public mutating func connectionClosed(_ connection: ConnectionID, now: BrokerInstant) -> [BrokerAction] {
        var actions: [BrokerAction] = []
        detach(connection, publishWill: true, now: now, into: &actions)
        return actions
    }

    mutating func detach(
        _ connection: ConnectionID,
        publishWill: Bool,
        now: BrokerInstant,
        into actions: inout [BrokerAction]
    ) {
        guard let (clientID, _) = connections.removeValue(forKey: connection),
            var session = sessions[clientID], session.connection == connection
        else { return }
        session.connection = nil
        session.reference.connected.store(false, ordering: .relaxed)
        let expiry = session.expiryInterval
        if let will = session.will, publishWill {
            let message = willMessage(will, clientID: clientID, now: now)
            let delay = will.properties.willDelayInterval ?? 0
            if delay == 0 || expiry == 0 {
                route(message, now: now, into: &actions)
            } else {
                // The will goes out at whichever comes first: its delay or the end of the session.
                let deadline = now.adding(seconds: min(delay, expiry))
                pendingWills[clientID] = (message, deadline)
                schedule(.will(clientID), at: deadline)
            }
        }
        session.will = nil
        if expiry == 0 {
            sessions[clientID] = session
            endSession(clientID, now: now, into: &actions)
            return
        }
        var lifetime: UInt32? = expiry == .max ? nil : expiry
        if let cap = configuration.persistentClientExpiration { lifetime = min(lifetime ?? cap, cap) }
        session.expiresAt = lifetime.map { now.adding(seconds: $0) }
        sessions[clientID] = session
        schedule(.sessionExpiry(clientID), at: session.expiresAt)
        recordSession(clientID)
        if shared.clustered { leaveToStore(clientID) }
    }

    /// A node of a cluster keeps only the sessions of its connected clients: a detached one,
    /// recorded just now with its queue, deadline and pending will, is left to the store, where
    /// the node its client comes back to finds it and every node's janitor ends it when due.
    /// This node's subscriptions index keeps its subscriptions, under a reference that sends what
    /// they match through the store.
    private mutating func leaveToStore(_ clientID: String) {
        guard let session = sessions.removeValue(forKey: clientID) else { return }
        pendingWills[clientID] = nil
        freedQueueBytes += session.queuedBytes
        session.reference.move(to: SessionReference.elsewhereOwner)
        shared.directory.leave(session.reference, shard: shard)
        shared.keepAsRemote(clientID, subscriptions: Array(session.subscriptions.values))
        storeChanges.append(.cluster(.detached(clientID: clientID)))
    }

    /// Gives up `clientID`'s session to another node of the cluster, whose CONNECT claimed it
    /// (§3.1.4-3): a client attached here is sent DISCONNECT 0x8E (MQTT 5) and closed, its will
    /// follows the usual rules, and the session, if it outlives the connection, is left to the
    /// store, where the claimant reads it once this state's changes are committed.
    /// - Returns: the actions, and whether this state waits for the session itself from another
    ///   state of this broker (ask again once it has arrived).
    public mutating func releaseToCluster(_ clientID: String, now: BrokerInstant) -> (
        actions: [BrokerAction], waitsForSession: Bool
    ) {
        var actions: [BrokerAction] = []
        guard let existing = sessions[clientID] else { return ([], awaitingSessions.contains(clientID)) }
        if let old = existing.connection {
            if existing.protocolVersion == .v5 {
                actions.append(.send(old, .disconnect(Disconnect(reasonCode: .sessionTakenOver))))
            }
            actions.append(.close(old))
            detach(old, publishWill: true, now: now, into: &actions)
        } else {
            leaveToStore(clientID)
        }
        return (actions, false)
    }

    /// Publishes a message the cluster hands this node: the will of a client whose node died, or
    /// whose delay passed while no node held its session. Its expiry counts from now.
    public mutating func publishFromCluster(_ message: ApplicationMessage, now: BrokerInstant) -> [BrokerAction] {
        var actions: [BrokerAction] = []
        var message = message
        message.expiresAt = message.properties.messageExpiryInterval.map { now.adding(seconds: $0) }
        route(message, now: now, into: &actions)
        return actions
    }

    /// Ends a session: its pending will is published and its subscriptions removed (§4.1).
    mutating func endSession(_ clientID: String, now: BrokerInstant, into actions: inout [BrokerAction]) {
        if let pending = pendingWills.removeValue(forKey: clientID) {
            route(pending.message, now: now, into: &actions)
        }
        guard let session = sessions.removeValue(forKey: clientID) else { return }
        freedQueueBytes += session.queuedBytes
        let reference = session.reference
        reference.connected.store(false, ordering: .relaxed)
        // What other states posted and this one has not taken yet ends with the session.
        let unread = reference.mailbox.withLock { mailbox in
            mailbox.closed = true
            defer { mailbox.entries = [] }
            return mailbox.entries.flatMap(\.deliveries)
        }
        var storedKeys = session.storedDeliveryKeys
        for delivery in unread where delivery.sequence != 0 {
            storedKeys.append(StoredDeliveryKey(sequence: delivery.sequence, messageID: delivery.message.storeID))
        }
        record(.deleteSession(key: session.storeKey, deliveries: storedKeys), session: session.storeKey)
        if shared.clustered { storeChanges.append(.cluster(.sessionEnded(clientID: clientID))) }
        reference.storeKey.store(0, ordering: .relaxed)
        shared.subscriptions.unsubscribe(session.subscriptions.values.map(\.filter), session: reference)
        shared.directory.remove(reference, shard: shard)
    }

    func willMessage(_ will: Connect.Will, clientID: String, now: BrokerInstant) -> ApplicationMessage {
        var properties = will.properties
        properties.willDelayInterval = nil
        let expiresAt = properties.messageExpiryInterval.map { now.adding(seconds: $0) }
        return ApplicationMessage(
            topic: will.topic,
            payload: will.payload,
            qos: will.qos,
            retain: will.retain,
            properties: properties,
            expiresAt: expiresAt,
            publisherClientID: clientID
        )
    }

    /// Publishes wills whose delay has passed, ends sessions whose expiry has passed and removes
    /// expired retained messages. Only what is due is touched (``Deadlines``), not every session.
    public mutating func tick(now: BrokerInstant) -> [BrokerAction] {
        var actions: [BrokerAction] = []
        var wills: [String] = []
        var endings: [String] = []
        var retainedTopics: [String] = []
        for entry in deadlines.popDue(now: now) {
            switch entry.kind {
            case .will(let clientID): wills.append(clientID)
            case .sessionExpiry(let clientID): endings.append(clientID)
            case .retainedExpiry(let topic): retainedTopics.append(topic)
            }
        }
        // Wills first: a session that ends in the same tick publishes its will as it ends anyway.
        for clientID in wills {
            guard let pending = pendingWills[clientID], pending.deadline <= now else { continue }  // stale
            pendingWills[clientID] = nil
            route(pending.message, now: now, into: &actions)
            recordSession(clientID)
        }
        for clientID in endings {
            guard let session = sessions[clientID], session.connection == nil,
                let expiresAt = session.expiresAt, expiresAt <= now
            else { continue }  // came back, or its expiry moved
            endSession(clientID, now: now, into: &actions)
        }
        for topic in retainedTopics {
            shared.retained.removeIfExpired(topic, now: now, record: recordsChanges)  // unless replaced
        }
        return actions
    }

    /// The earliest time at which ``tick(now:)`` may have work to do.
    public var nextDeadline: BrokerInstant? { deadlines.earliest }

    /// Adds a deadline; rebuilds the queue from the state when stale entries have piled up.
    mutating func schedule(_ kind: Deadlines.Kind, at instant: BrokerInstant?) {
        guard let instant else { return }
        deadlines.schedule(kind, at: instant)
        // An upper bound on the live entries: one per session, pending will and retained message.
        if deadlines.needsCompaction(live: sessions.count + pendingWills.count + retained.count) {
            var live: [Deadlines.Entry] = []
            for (clientID, pending) in pendingWills { live.append(.init(at: pending.deadline, kind: .will(clientID))) }
            for (clientID, session) in sessions where session.connection == nil {
                guard let expiresAt = session.expiresAt else { continue }
                live.append(.init(at: expiresAt, kind: .sessionExpiry(clientID)))
            }
            for (topic, message) in shared.retained.all {
                if let expiresAt = message.expiresAt { live.append(.init(at: expiresAt, kind: .retainedExpiry(topic))) }
            }
            deadlines.rebuild(live)
        }
    }
}
