import DequeModule
public import TernCodec

// MARK: - Recording changes for the store

extension BrokerState {
    /// Hands over the store changes made since the last call, in order.
    public mutating func takeStoreChanges() -> [StoreChange] {
        // A message whose last reference went away in an earlier batch may be referenced again
        // (a retained message delivered on SUBSCRIBE): it is put again rather than assumed stored.
        lastRecordedMessageID = 0
        guard !storeChanges.isEmpty else { return [] }
        defer { storeChanges.removeAll(keepingCapacity: true) }
        return storeChanges
    }

    /// Writes a session's own row, or removes it from the store once its Session Expiry Interval
    /// is 0: persistence depends on the expiry alone, never on Clean Start (MQTT 5.0 §3.1.2.11.2).
    mutating func recordSession(_ clientID: String) {
        guard recordsChanges, var session = sessions.removeValue(forKey: clientID) else { return }
        defer { sessions[clientID] = session }
        guard session.expiryInterval > 0 else {
            if session.storeKey != 0 {
                storeChanges.append(.deleteSession(key: session.storeKey, deliveries: session.storedDeliveryKeys))
                session.storeKey = 0
            }
            return
        }
        if session.storeKey == 0 {
            lastStoreKey += 1
            session.storeKey = lastStoreKey
        }
        var header = StoredSessionHeader(
            key: session.storeKey,
            clientID: clientID,
            protocolVersion: session.protocolVersion,
            expiryInterval: session.expiryInterval,
            expiresAt: session.expiresAt,
            attached: session.connection != nil
        )
        if let will = session.will, session.connection != nil {
            var message = willMessage(will, clientID: clientID, now: BrokerInstant(millisecondsSinceEpoch: 0))
            message.expiresAt = nil  // made absolute when the connection ends, as for a live will
            header.will = message
            header.willDelay = will.properties.willDelayInterval ?? 0
        } else if let pending = pendingWills[clientID] {
            header.will = pending.message
            header.willDeadline = pending.deadline
        }
        storeChanges.append(.putSession(header))
    }

    /// Stores a new delivery of a stored session, and its message the first time it is needed.
    mutating func recordDelivery(_ delivery: inout Delivery, session: Session, packetIdentifier: UInt16?) {
        guard recordsChanges, session.storeKey != 0 else { return }
        recordMessage(&delivery.message)
        lastDeliverySequence += 1
        delivery.sequence = lastDeliverySequence
        let stored = StoredDelivery(
            sequence: delivery.sequence,
            messageID: delivery.message.storeID,
            qos: delivery.qos,
            retain: delivery.retain,
            subscriptionIdentifiers: delivery.subscriptionIdentifiers,
            packetIdentifier: packetIdentifier
        )
        storeChanges.append(.putDelivery(session: session.storeKey, stored))
    }

    /// Stores `message` once: copies routed to several sessions carry the same ``ApplicationMessage/storeID``.
    mutating func recordMessage(_ message: inout ApplicationMessage) {
        if message.storeID == 0 {
            lastMessageID += 1
            message.storeID = lastMessageID
        }
        if message.storeID != lastRecordedMessageID {
            lastRecordedMessageID = message.storeID
            storeChanges.append(.putMessage(id: message.storeID, message))
        }
    }

    /// A stored delivery is finished: acknowledged, expired or dropped.
    mutating func recordDeliveryEnded(_ delivery: Delivery) {
        guard recordsChanges, delivery.sequence != 0 else { return }
        storeChanges.append(.deleteDelivery(sequence: delivery.sequence, messageID: delivery.message.storeID))
    }

    mutating func record(_ change: StoreChange, session: UInt64) {
        guard recordsChanges, session != 0 else { return }
        storeChanges.append(change)
    }

    /// Records the change `make` builds from the store key of `clientID`'s session, if it is stored.
    mutating func record(for clientID: String, _ make: (UInt64) -> StoreChange) {
        guard recordsChanges, let key = sessions[clientID]?.storeKey, key != 0 else { return }
        storeChanges.append(make(key))
    }
}

// MARK: - Restoring from a store

extension BrokerState {
    /// How much a restore brought back, for the start-up log line.
    public struct RestoreSummary: Sendable, Hashable {
        public var sessions = 0
        public var expiredSessions = 0
        public var queuedMessages = 0
        public var inflightMessages = 0
        public var retainedMessages = 0
    }

    /// Rebuilds sessions, subscriptions, queues, in-flight flows, retained messages and pending
    /// wills from a store. Deadlines are absolute, so time spent stopped counts: a session whose
    /// expiry passed meanwhile ends now, and its will goes out (§3.1.2.5). A session that was
    /// attached when the broker stopped without saying goodbye is treated as if its connection had
    /// just closed.
    public mutating func restore(_ snapshot: StoreSnapshot, now: BrokerInstant) -> (
        summary: RestoreSummary, actions: [BrokerAction]
    ) {
        var summary = RestoreSummary()
        var actions: [BrokerAction] = []
        let messages = snapshot.messages
        lastMessageID = max(lastMessageID, messages.keys.max() ?? 0, snapshot.lastMessageID)
        lastDeliverySequence = max(lastDeliverySequence, snapshot.lastDeliverySequence)

        for (topic, id) in snapshot.retained {
            guard var message = messages[id] else { continue }
            message.storeID = id
            retained[topic] = message
            schedule(.retainedExpiry(topic), at: message.expiresAt)
        }
        summary.retainedMessages = retained.count

        for stored in snapshot.sessions {
            let header = stored.header
            lastStoreKey = max(lastStoreKey, header.key)
            var session = Session(
                clientID: header.clientID,
                protocolVersion: header.protocolVersion,
                expiryInterval: header.expiryInterval
            )
            session.storeKey = header.key
            session.expiresAt = header.expiresAt
            for subscription in stored.subscriptions {
                session.subscriptions[subscription.filter.string] = subscription
                topics.subscribe(
                    subscription.filter,
                    entry: TopicTree.Entry(
                        clientID: header.clientID,
                        options: subscription.options,
                        identifier: subscription.identifier
                    )
                )
            }
            for packetIdentifier in stored.releases {
                session.inflight.append(.release(packetIdentifier: packetIdentifier))
            }
            session.queue.reserveCapacity(stored.deliveries.count)
            restoreDeliveries(stored.deliveries, messages: messages, into: &session, summary: &summary)
            if snapshot.queuesFollow { sessionsAwaitingQueues.insert(header.clientID) }
            session.inboundQoS2Pending = Set(stored.inboundQoS2)
            if let will = header.will {
                if let deadline = header.willDeadline {
                    pendingWills[header.clientID] = (will, deadline)
                    schedule(.will(header.clientID), at: deadline)
                } else if header.attached {
                    // The connection ended with the broker: its will is due from now on.
                    var message = will
                    message.expiresAt = will.properties.messageExpiryInterval.map { now.adding(seconds: $0) }
                    if header.willDelay == 0 {
                        sessions[header.clientID] = session
                        route(message, now: now, into: &actions)
                        session = sessions[header.clientID] ?? session
                    } else {
                        let deadline = now.adding(seconds: min(header.willDelay, header.expiryInterval))
                        pendingWills[header.clientID] = (message, deadline)
                        schedule(.will(header.clientID), at: deadline)
                    }
                }
            }
            if header.attached {
                var lifetime: UInt32? = header.expiryInterval == .max ? nil : header.expiryInterval
                if let cap = configuration.persistentClientExpiration { lifetime = min(lifetime ?? cap, cap) }
                session.expiresAt = lifetime.map { now.adding(seconds: $0) }
            }
            sessions[header.clientID] = session
            schedule(.sessionExpiry(header.clientID), at: session.expiresAt)
            summary.sessions += 1
            if header.attached { recordSession(header.clientID) }
        }
        // Sessions whose expiry passed while the broker was stopped end now, wills first.
        let before = sessions.count
        actions += tick(now: now)
        summary.expiredSessions = before - sessions.count
        summary.sessions -= summary.expiredSessions
        return (summary, actions)
    }

    /// Puts a session's stored deliveries in front of its queue and in-flight window. Stored
    /// deliveries predate anything routed to the session since the restart, so in front is
    /// their order (§4.6).
    private mutating func restoreDeliveries(
        _ deliveries: [StoredDelivery],
        messages: [UInt64: ApplicationMessage],
        into session: inout Session,
        summary: inout RestoreSummary
    ) {
        guard !deliveries.isEmpty else { return }
        var queued = Deque<Delivery>()
        queued.reserveCapacity(deliveries.count + session.queue.count)
        for delivery in deliveries {
            lastDeliverySequence = max(lastDeliverySequence, delivery.sequence)
            guard var message = messages[delivery.messageID] else { continue }
            message.storeID = delivery.messageID
            let restored = Delivery(
                message: message,
                qos: delivery.qos,
                retain: delivery.retain,
                subscriptionIdentifiers: delivery.subscriptionIdentifiers,
                sequence: delivery.sequence
            )
            if let packetIdentifier = delivery.packetIdentifier {
                session.inflight.append(.publish(packetIdentifier: packetIdentifier, restored))
                summary.inflightMessages += 1
            } else {
                queued.append(restored)
                session.queuedBytes += message.payload.readableBytes
                summary.queuedMessages += 1
            }
        }
        queued.append(contentsOf: session.queue)
        session.queue = queued
    }

    /// Whether a CONNECT must wait for ``restoreQueues(_:)``: its session was restored and its
    /// deliveries are not in yet.
    public func connectWaitsForQueues(_ packet: Connect) -> Bool {
        guard !sessionsAwaitingQueues.isEmpty else { return false }
        let clientID = configuration.useUsernameAsClientID ? packet.username ?? "" : packet.clientIdentifier
        return sessionsAwaitingQueues.contains(clientID)
    }

    /// Whether some restored session still waits for its deliveries.
    public var queuesPending: Bool { !sessionsAwaitingQueues.isEmpty }

    /// Brings in the deliveries a store read after the listeners opened
    /// (``StoreSnapshot/queuesFollow``), in front of whatever was routed to their sessions since.
    /// Sessions that ended meanwhile are skipped: the store deletes their deliveries with them.
    public mutating func restoreQueues(_ queues: StoredQueues) -> RestoreSummary {
        var summary = RestoreSummary()
        var byKey: [UInt64: String] = [:]
        for (clientID, session) in sessions where session.storeKey != 0 { byKey[session.storeKey] = clientID }
        for (key, deliveries) in queues.deliveries {
            guard let clientID = byKey[key], var session = sessions.removeValue(forKey: clientID) else {
                for delivery in deliveries { lastDeliverySequence = max(lastDeliverySequence, delivery.sequence) }
                continue
            }
            restoreDeliveries(deliveries, messages: queues.messages, into: &session, summary: &summary)
            sessions[clientID] = session
            summary.sessions += 1
        }
        lastMessageID = max(lastMessageID, queues.messages.keys.max() ?? 0)
        sessionsAwaitingQueues = []
        return summary
    }
}
