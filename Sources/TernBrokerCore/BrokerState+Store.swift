import DequeModule
public import TernCodec

// MARK: - Recording changes for the store

extension BrokerState {
    /// Hands over the store changes made since the last call, in order.
    ///
    /// The shared retained messages' changes come first (``RetainedMessages/takeChanges(_:)``);
    /// a broker with several states hands those to its store under their own lock instead, with
    /// ``takeSessionChanges()``.
    public mutating func takeStoreChanges() -> [StoreChange] {
        let retainedChanges = shared.retained.takeChanges { $0 } ?? []
        return retainedChanges + takeSessionChanges()
    }

    /// How many deliveries were stored for sessions whose clients are away since the last call.
    /// Nothing can finish them before they are written, so a connection's read burst starts
    /// the commit early once a few wait, rather than at its end (``Outbox``).
    public mutating func takeStoredForAbsentClients() -> Int {
        defer { storedForAbsentClients = 0 }
        return storedForAbsentClients
    }

    /// Hands each receipt completed since the last call (``PublishReceipt``) to `body`, which
    /// wakes its publisher, and forgets them. In place: the list is not copied on the publish path.
    public mutating func takeCompletedReceipts(_ body: (PublishReceipt) -> Void) {
        guard !completedReceipts.isEmpty else { return }
        for receipt in completedReceipts { body(receipt) }
        completedReceipts.removeAll(keepingCapacity: true)
    }

    /// Hands over the changes of this state's own sessions made since the last call, in order.
    public mutating func takeSessionChanges() -> [StoreChange] {
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
            session.storeKey = shared.nextKey(shared.lastStoreKey)
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
    /// A delivery another state stored already (routed here through a mailbox) is only marked sent.
    mutating func recordDelivery(_ delivery: inout Delivery, session: Session, packetIdentifier: UInt16?) {
        guard recordsChanges, session.storeKey != 0 else { return }
        if delivery.sequence != 0 {
            if let packetIdentifier {
                storeChanges.append(.deliverySent(sequence: delivery.sequence, packetIdentifier: packetIdentifier))
            }
            return
        }
        recordDelivery(&delivery, storeKey: session.storeKey, packetIdentifier: packetIdentifier)
    }

    /// Stores a new delivery under the session key `storeKey`, and its message the first time it is needed.
    mutating func recordDelivery(_ delivery: inout Delivery, storeKey: UInt64, packetIdentifier: UInt16?) {
        recordMessage(&delivery.message)
        delivery.sequence = shared.nextKey(shared.lastDeliverySequence)
        let stored = StoredDelivery(
            sequence: delivery.sequence,
            messageID: delivery.message.storeID,
            qos: delivery.qos,
            retain: delivery.retain,
            subscriptionIdentifiers: delivery.subscriptionIdentifiers,
            packetIdentifier: packetIdentifier
        )
        storeChanges.append(.putDelivery(session: storeKey, stored))
        delivery.receipt?.hold()
    }

    /// Stores `message` once: copies routed to several sessions carry the same ``ApplicationMessage/storeID``.
    mutating func recordMessage(_ message: inout ApplicationMessage) {
        if message.storeID == 0 {
            message.storeID = shared.nextKey(shared.lastMessageID)
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
        if let receipt = delivery.receipt, receipt.release() { completedReceipts.append(receipt) }
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

        public init() {}
    }

    /// Rebuilds sessions, subscriptions, queues, in-flight flows, retained messages and pending
    /// wills from a store. Deadlines are absolute, so time spent stopped counts: a session whose
    /// expiry passed meanwhile ends now, and its will goes out (§3.1.2.5). A session that was
    /// attached when the broker stopped without saying goodbye is treated as if its connection had
    /// just closed.
    ///
    /// - Parameter finishing: whether to publish the wills that are due and end the sessions that
    ///   expired now (``tick(now:)``). A broker with several states restores each, then ticks
    ///   each, so that a will reaches every restored session.
    public mutating func restore(_ snapshot: StoreSnapshot, now: BrokerInstant, finishing: Bool = true) -> (
        summary: RestoreSummary, actions: [BrokerAction]
    ) {
        var summary = RestoreSummary()
        var actions: [BrokerAction] = []
        let messages = snapshot.messages
        shared.raiseKey(shared.lastMessageID, to: max(messages.keys.max() ?? 0, snapshot.lastMessageID))
        shared.raiseKey(shared.lastDeliverySequence, to: snapshot.lastDeliverySequence)
        shared.raiseKey(shared.lastStoreKey, to: snapshot.lastSessionKey)

        for (topic, id) in snapshot.retained {
            guard var message = messages[id] else { continue }
            // Set only when a store left it out: a change copies a message its store still holds.
            if message.storeID != id { message.storeID = id }
            shared.retained.set(topic, message, record: false)
            schedule(.retainedExpiry(topic), at: message.expiresAt)
        }
        summary.retainedMessages = snapshot.retained.count

        sessions.reserveCapacity(sessions.count + snapshot.sessions.count)
        if snapshot.queuesFollow, !snapshot.sessions.isEmpty {
            shared.sessionsAwaitingQueues.withLock { awaiting in
                for stored in snapshot.sessions { awaiting.insert(stored.header.clientID) }
            }
            shared.queuesPending.store(true, ordering: .releasing)
        }
        for stored in snapshot.sessions {
            let header = stored.header
            shared.raiseKey(shared.lastStoreKey, to: header.key)
            let reference = SessionReference(clientID: header.clientID, owner: shard)
            shared.directory.register(reference, shard: shard)
            var session = Session(
                clientID: header.clientID,
                protocolVersion: header.protocolVersion,
                expiryInterval: header.expiryInterval,
                reference: reference
            )
            session.storeKey = header.key
            session.expiresAt = header.expiresAt
            for subscription in stored.subscriptions {
                session.subscriptions[subscription.filter.string] = subscription
                topics.subscribe(
                    subscription.filter,
                    entry: TopicTree.Entry(
                        session: reference,
                        options: subscription.options,
                        identifier: subscription.identifier
                    )
                )
            }
            for packetIdentifier in stored.releases {
                session.inflight.append(.release(packetIdentifier: packetIdentifier))
            }
            restoreDeliveries(stored.deliveries, messages: messages, into: &session, summary: &summary)
            session.inboundQoS2Pending = Set(stored.inboundQoS2)
            if let will = header.will {
                if let deadline = header.willDeadline {
                    pendingWills[header.clientID] = (will, deadline)
                    schedule(.will(header.clientID), at: deadline)
                } else if header.attached {
                    // The connection ended with the broker: its will is due from now on (at once,
                    // by the tick below, when it has no delay: after every session is back).
                    var message = will
                    message.expiresAt = will.properties.messageExpiryInterval.map { now.adding(seconds: $0) }
                    let deadline = now.adding(seconds: min(header.willDelay, header.expiryInterval))
                    pendingWills[header.clientID] = (message, deadline)
                    schedule(.will(header.clientID), at: deadline)
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
        guard finishing else { return (summary, actions) }
        let before = sessions.count
        actions += tick(now: now)
        summary.expiredSessions = before - sessions.count
        summary.sessions -= summary.expiredSessions
        return (summary, actions)
    }

    /// Puts a session's stored deliveries in front of its queue and in-flight window. Stored
    /// deliveries predate anything routed to the session since the restart, so in front is
    /// their order (§4.6). Queued ones stay as the store's bytes (``RestoredQueue``) until each
    /// is taken to be sent.
    /// - Parameter bodies: messages kept as stored bytes, for those not in `messages`.
    mutating func restoreDeliveries(
        _ deliveries: [StoredDelivery],
        messages: [UInt64: ApplicationMessage],
        bodies: [UInt64: StoredMessageBytes] = [:],
        into session: inout Session,
        summary: inout RestoreSummary
    ) {
        guard !deliveries.isEmpty else { return }
        shared.raiseKey(shared.lastDeliverySequence, to: deliveries.lazy.map(\.sequence).max() ?? 0)
        // The restored queue is in front of anything routed to the session since the restart.
        for delivery in deliveries {
            var message = messages[delivery.messageID]
            // Every delivery of a message shares its storage, unless a store left its key out.
            if let stored = message, stored.storeID != delivery.messageID { message?.storeID = delivery.messageID }
            if let packetIdentifier = delivery.packetIdentifier {
                // The in-flight window is decoded now: it is re-sent the moment its client is back.
                let restored: Delivery
                if let message {
                    restored = Delivery(
                        message: message,
                        qos: delivery.qos,
                        retain: delivery.retain,
                        subscriptionIdentifiers: delivery.subscriptionIdentifiers,
                        sequence: delivery.sequence
                    )
                } else if let bytes = bodies[delivery.messageID] {
                    restored = Self.decoded(delivery, bytes: bytes)
                } else {
                    continue
                }
                session.inflight.append(.publish(packetIdentifier: packetIdentifier, restored))
                summary.inflightMessages += 1
            } else if let message {
                session.restoredQueue.append(delivery, message: message)
                session.queuedBytes += message.payload.readableBytes
                summary.queuedMessages += 1
            } else if let bytes = bodies[delivery.messageID] {
                session.restoredQueue.append(delivery, bytes: bytes)
                session.queuedBytes += bytes.payloadBytes
                summary.queuedMessages += 1
            }
        }
        session.restoredQueue.trimCapacity()
    }

    /// A delivery whose message a store kept as bytes, decoded (they were validated when read).
    private static func decoded(_ delivery: StoredDelivery, bytes: StoredMessageBytes) -> Delivery {
        Delivery(
            message: ApplicationMessage(
                validatedPublish: bytes.publish,
                expiresAt: bytes.expiresAt,
                storeID: delivery.messageID
            ),
            qos: delivery.qos,
            retain: delivery.retain,
            subscriptionIdentifiers: delivery.subscriptionIdentifiers,
            sequence: delivery.sequence
        )
    }

    /// Whether a CONNECT must wait for ``restoreQueues(_:)``: its session was restored and its
    /// deliveries are not in yet.
    public func connectWaitsForQueues(_ packet: Connect) -> Bool {
        shared.connectWaitsForQueues(packet, useUsernameAsClientID: configuration.useUsernameAsClientID)
    }

    /// Whether some restored session still waits for its deliveries.
    public var queuesPending: Bool { shared.queuesPending.load(ordering: .acquiring) }

    /// Brings in the deliveries a store read after the listeners opened
    /// (``StoreSnapshot/queuesFollow``), in front of whatever was routed to their sessions since,
    /// for the sessions this state holds. Sessions that ended meanwhile are skipped: the store
    /// deletes their deliveries with them.
    /// - Parameter last: whether this is the last of the broker's states to take them: then no
    ///   session waits for its queue any more.
    public mutating func restoreQueues(_ queues: StoredQueues, last: Bool = true) -> RestoreSummary {
        var summary = RestoreSummary()
        var byKey: [UInt64: String] = [:]
        for (clientID, session) in sessions where session.storeKey != 0 { byKey[session.storeKey] = clientID }
        var highestSequence: UInt64 = 0
        for (key, deliveries) in queues.deliveries {
            guard let clientID = byKey[key], var session = sessions.removeValue(forKey: clientID) else {
                highestSequence = max(highestSequence, deliveries.lazy.map(\.sequence).max() ?? 0)
                continue
            }
            restoreDeliveries(
                deliveries,
                messages: queues.messages,
                bodies: queues.bodies,
                into: &session,
                summary: &summary
            )
            sessions[clientID] = session
            summary.sessions += 1
        }
        shared.raiseKey(shared.lastDeliverySequence, to: highestSequence)
        shared.raiseKey(shared.lastMessageID, to: max(queues.messages.keys.max() ?? 0, queues.bodies.keys.max() ?? 0))
        if last {
            shared.sessionsAwaitingQueues.withLock { $0.removeAll() }
            shared.queuesPending.store(false, ordering: .releasing)
        }
        return summary
    }
}
