public import TernCodec

// MARK: - Inbound PUBLISH

extension BrokerState {
    /// Handles a PUBLISH from a client whose Topic Alias has been resolved (MQTT 5.0 §3.3.4).
    public mutating func publish(_ connection: ConnectionID, _ packet: Publish, now: BrokerInstant) -> [BrokerAction] {
        var actions: [BrokerAction] = []
        publish(connection, packet, now: now, into: &actions)
        return actions
    }

    /// ``publish(_:_:now:)``, appending its actions to `actions`: the broker keeps one buffer per
    /// event loop for them, so that a PUBLISH allocates no array.
    /// - Parameter receiptWaiter: the publisher's connection, when a QoS 1 PUBACK that waits for a
    ///   store commit may leave before it once every stored copy is acknowledged
    ///   (``PublishReceipt``, ``BrokerAction/acknowledge(_:_:receipt:)``).
    public mutating func publish(
        _ connection: ConnectionID,
        _ packet: Publish,
        now: BrokerInstant,
        receiptWaiter: (any PublishReceiptWaiter)? = nil,
        into actions: inout [BrokerAction]
    ) {
        guard let (clientID, version) = connections[connection] else { return }
        statistics.publishMessagesReceived += 1
        statistics.publishReceivedByQoS[packet.qos] += 1
        statistics.payloadBytesReceivedByQoS[packet.qos] += UInt64(packet.payload.readableBytes)

        func disconnect(_ code: ReasonCode, into actions: inout [BrokerAction]) {
            if version == .v5 { actions.append(.send(connection, .disconnect(Disconnect(reasonCode: code)))) }
            actions.append(.close(connection))
        }
        if overMemoryLimit {
            // `memory_limit`: nothing new is taken in. A v5 sender is told 0x97 Quota exceeded
            // (§3.4.2.1, §3.5.2.1); a 3.1.1 one has no such answer, and is disconnected instead of
            // acknowledged, so that it sends its unacknowledged messages again once it reconnects.
            statistics.publishMessagesDropped += 1
            let ack = PublishAcknowledgement(packetIdentifier: packet.packetIdentifier, reasonCode: .quotaExceeded)
            switch (packet.qos, version) {
            case (.atMostOnce, _): return
            case (_, .v5): actions.append(.send(connection, packet.qos == .atLeastOnce ? .puback(ack) : .pubrec(ack)))
            default: actions.append(.close(connection))
            }
            return
        }
        if packet.qos > configuration.maxQoS {  // §3.2.2.3.4
            disconnect(.qosNotSupported, into: &actions)
            return
        }
        if packet.retain, !configuration.retainAvailable {  // §3.2.2.3.5
            disconnect(.retainNotSupported, into: &actions)
            return
        }

        if packet.qos == .exactlyOnce {
            let pending = sessions[clientID]?.inboundQoS2Pending ?? []
            if pending.contains(packet.packetIdentifier) {
                // A re-sent QoS 2 PUBLISH that is already ours: acknowledge, never deliver twice (§4.3.3).
                actions.append(
                    .send(connection, .pubrec(PublishAcknowledgement(packetIdentifier: packet.packetIdentifier)))
                )
                return
            }
            if pending.count >= configuration.maxInboundQoS2Pending {
                disconnect(.receiveMaximumExceeded, into: &actions)  // §3.3.4 [MQTT-3.3.4-9]
                return
            }
        }

        if checksAccess, let identity = sessions[clientID]?.identity,
            !mayPublish(packet.topic.string, clientID: clientID, identity: identity)
        {
            // Dropped; a v5 QoS 1/2 sender is told 0x87, a 3.1.1 one gets the only answer it can read.
            statistics.publishMessagesDropped += 1
            let ack = PublishAcknowledgement(
                packetIdentifier: packet.packetIdentifier,
                reasonCode: version == .v5 ? .notAuthorized : .success
            )
            switch packet.qos {
            case .atMostOnce: break
            case .atLeastOnce: actions.append(.send(connection, .puback(ack)))
            case .exactlyOnce: actions.append(.send(connection, .pubrec(ack)))
            }
            return
        }

        let tooLarge =
            configuration.messageSizeLimit > 0 && packet.payload.readableBytes > configuration.messageSizeLimit
        var delivered = 0
        // Not for a retained message: the retained set must be on disk before the PUBACK.
        let receipt =
            packet.qos == .atLeastOnce && !packet.retain && recordsChanges && !tooLarge
            ? receiptWaiter.map(PublishReceipt.init(waiter:)) : nil
        if !tooLarge {
            var properties = packet.properties
            properties.topicAlias = nil
            let message = ApplicationMessage(
                topic: packet.topic,
                payload: packet.payload,
                qos: packet.qos,
                retain: packet.retain,
                properties: properties,
                expiresAt: packet.properties.messageExpiryInterval.map { now.adding(seconds: $0) },
                publisherClientID: clientID
            )
            routingReceipt = receipt
            delivered = route(message, now: now, into: &actions)
            routingReceipt = nil
        } else {
            statistics.publishMessagesDropped += 1
        }

        let code: ReasonCode =
            tooLarge ? .packetTooLarge : (delivered == 0 && version == .v5 ? .noMatchingSubscribers : .success)
        switch packet.qos {
        case .atMostOnce:
            break
        case .atLeastOnce:
            let puback = MQTTPacket.puback(
                PublishAcknowledgement(packetIdentifier: packet.packetIdentifier, reasonCode: code)
            )
            // Complete already when no copy was stored (none matched, or none for a stored session).
            if let receipt, !receipt.release() {
                actions.append(.acknowledge(connection, puback, receipt: receipt))
            } else {
                actions.append(.send(connection, puback))
            }
        case .exactlyOnce:
            if !tooLarge {
                sessions[clientID]?.inboundQoS2Pending.insert(packet.packetIdentifier)
                record(for: clientID) { .putInboundQoS2(session: $0, packetIdentifier: packet.packetIdentifier) }
            }
            actions.append(
                .send(
                    connection,
                    .pubrec(PublishAcknowledgement(packetIdentifier: packet.packetIdentifier, reasonCode: code))
                )
            )
        }
    }

    /// Handles PUBREL for an inbound QoS 2 message (§4.3.3).
    public mutating func publishRelease(_ connection: ConnectionID, _ packet: PublishAcknowledgement) -> [BrokerAction]
    {
        guard let (clientID, version) = connections[connection] else { return [] }
        let known = sessions[clientID]?.inboundQoS2Pending.remove(packet.packetIdentifier) != nil
        if known {
            record(for: clientID) { .deleteInboundQoS2(session: $0, packetIdentifier: packet.packetIdentifier) }
        }
        let code: ReasonCode = known || version != .v5 ? .success : .packetIdentifierNotFound
        return [
            .send(
                connection,
                .pubcomp(PublishAcknowledgement(packetIdentifier: packet.packetIdentifier, reasonCode: code))
            )
        ]
    }

    /// Stores or clears a retained message and delivers `message` to every matching subscription:
    /// at once to the sessions this state holds, through their mailboxes to the others
    /// (``takeOutgoing()``).
    /// - Returns: how many subscriptions it was delivered, queued or posted to.
    @discardableResult
    mutating func route(_ message: ApplicationMessage, now: BrokerInstant, into actions: inout [BrokerAction]) -> Int {
        var message = message
        if recordsChanges, message.storeID == 0 {
            // Numbered before it is copied into deliveries, so that every copy names the same stored message.
            message.storeID = shared.nextKey(shared.lastMessageID)
        }
        if message.retain {
            let topic = message.topic.string
            let stored = recordsChanges && !message.topic.isDollarTopic  // $SYS values are rebuilt, not stored
            if message.payload.readableBytes == 0 {
                // §3.3.1.3: a zero-length retained message deletes the stored one
                shared.retained.set(topic, nil, record: stored)
            } else {
                shared.retained.set(topic, message, record: stored)
                schedule(.retainedExpiry(topic), at: message.expiresAt)
            }
        }
        let matches = matchCache.matchSet(message.topic.utf8, in: shared.subscriptions)
        if matches.isEmpty { return 0 }
        // Made only when an ACL needs it: a topic is matched as the bytes it arrived in.
        let topic: String? = checksAccess ? message.topic.string : nil
        if matches.plain.count == 1, matches.groups.isEmpty {
            // The common case (one subscriber to the topic): no per-client merging to do.
            let entry = matches.plain[0]
            guard let delivery = delivery(of: message, topic: topic, to: entry) else { return 0 }
            deliver(delivery, to: entry.session, now: now, into: &actions)
            return 1
        }

        // One copy per client for ordinary subscriptions: the highest granted QoS and every
        // matching Subscription Identifier (§3.3.4). Each shared group adds its own copy.
        var perClient: [SessionReference: Delivery] = [:]
        var order: [SessionReference] = []
        for entry in matches.plain {
            guard let delivery = delivery(of: message, topic: topic, to: entry) else { continue }
            if var existing = perClient[entry.session] {
                existing.qos = max(existing.qos, delivery.qos)
                existing.retain = existing.retain || delivery.retain
                existing.subscriptionIdentifiers += delivery.subscriptionIdentifiers
                perClient[entry.session] = existing
            } else {
                perClient[entry.session] = delivery
                order.append(entry.session)
            }
        }
        for session in order { deliver(perClient[session]!, to: session, now: now, into: &actions) }
        var sharedCopies = 0
        for group in matches.groups {
            let entry = group.choose { $0.isConnected }
            guard let delivery = delivery(of: message, topic: topic, to: entry) else { continue }
            deliver(delivery, to: entry.session, now: now, into: &actions)
            sharedCopies += 1
        }
        return order.count + sharedCopies
    }

    /// What one matching subscription receives of `message`: its granted QoS, Retain As
    /// Published and Subscription Identifier; `nil` when the ACL or No Local withholds it. The
    /// ACL of a session another state holds is applied there, when it takes the delivery.
    private func delivery(of message: ApplicationMessage, topic: String?, to entry: TopicTree.Entry) -> Delivery? {
        if let topic, let session = sessions[entry.clientID], session.reference === entry.session,
            !mayReceive(topic, session: session)
        {
            return nil
        }
        if entry.options.noLocal, entry.clientID == message.publisherClientID { return nil }  // §3.8.3.1
        return Delivery(
            message: message,
            qos: min(message.qos, entry.options.qos),
            retain: entry.options.retainAsPublished ? message.retain : false,
            subscriptionIdentifiers: entry.identifier.map { [$0] } ?? [],
            receipt: routingReceipt
        )
    }

    /// Delivers to a session this state holds, or stores the delivery (if the session is stored)
    /// and keeps it for the mailbox of a session another state holds.
    mutating func deliver(
        _ delivery: Delivery,
        to session: SessionReference,
        now: BrokerInstant,
        into actions: inout [BrokerAction]
    ) {
        // Compared through a temporary, not bound: a binding would keep a second reference to the
        // session's queue alive while `deliver` appends to it, and copy the whole queue each time.
        if sessions[session.clientID]?.reference === session {
            deliver(delivery, to: session.clientID, now: now, into: &actions)
            return
        }
        var delivery = delivery
        let storeKey = recordsChanges ? session.storeKey.load(ordering: .relaxed) : 0
        if storeKey != 0 {
            // Stored here, before this publisher's PUBACK leaves; the session's state takes it from there.
            recordDelivery(&delivery, storeKey: storeKey, packetIdentifier: nil)
            if !session.isConnected { storedForAbsentClients += 1 }
        }
        if shared.clustered, session.isElsewhere {
            recordTransit(delivery, to: session, storeKey: storeKey)
            return
        }
        outgoing.append((session, delivery, storeKey))
    }

    /// Sends a delivery for a session another node holds (or none does) through the store, in
    /// the same transaction as the rest of this event's changes.
    mutating func recordTransit(_ delivery: Delivery, to session: SessionReference, storeKey: UInt64) {
        let stored = StoredDelivery(
            sequence: delivery.sequence,
            messageID: delivery.message.storeID,
            qos: delivery.qos,
            retain: delivery.retain,
            subscriptionIdentifiers: delivery.subscriptionIdentifiers,
            packetIdentifier: nil
        )
        storeChanges.append(
            .cluster(
                .transit(clientID: session.clientID, sessionKey: storeKey, delivery: stored, message: delivery.message)
            )
        )
    }
}

// MARK: - Outbound flows

extension BrokerState {
    /// Moves the session at `slot` out of ``sessions``, leaving a placeholder, so that it can be
    /// changed without a second reference to its queue (which would copy it) and without a second
    /// lookup or a rehash. ``putSession(_:at:)`` puts it back; nothing may add or remove a session
    /// in between, or `slot` would no longer be its place.
    mutating func takeSession(at slot: [String: Session].Index) -> Session {
        var session = Session.placeholder
        swap(&session, &sessions.values[slot])
        return session
    }

    mutating func putSession(_ session: consuming Session, at slot: [String: Session].Index) {
        sessions.values[slot] = session
    }

    /// Sends `delivery` to a session now, or queues it when the client is away or its window is full.
    mutating func deliver(
        _ delivery: Delivery,
        to clientID: String,
        now: BrokerInstant,
        into actions: inout [BrokerAction]
    ) {
        // Moved out rather than copied, so that mutating its queue does not copy it (copy-on-write).
        guard let slot = sessions.index(forKey: clientID) else { return }
        var session = takeSession(at: slot)
        defer { putSession(session, at: slot) }
        // A delivery stored by the state that routed it (`sequence` set) is finished here as soon as
        // it is sent at QoS 0, dropped or discarded, or its row would outlive it in the store.
        if delivery.qos == .atMostOnce {
            if let connection = session.connection {
                if session.writable {
                    send(
                        delivery,
                        packetIdentifier: 0,
                        session: &session,
                        connection: connection,
                        now: now,
                        into: &actions
                    )
                } else {
                    // Backpressure: QoS 0 is not queued for a client that does not keep up, as in Mosquitto.
                    statistics.publishMessagesDropped += 1
                    statistics.publishMessagesDroppedBackpressure += 1
                }
                recordDeliveryEnded(delivery)
            } else if configuration.queueQoS0Messages {
                enqueue(delivery, session: &session)
            } else {
                recordDeliveryEnded(delivery)
            }
            return
        }
        if let connection = session.connection, session.writable, session.inflight.count < session.sendWindow,
            session.queueIsEmpty
        {
            let id = session.allocatePacketIdentifier()
            if send(delivery, packetIdentifier: id, session: &session, connection: connection, now: now, into: &actions)
            {
                var delivery = delivery
                recordDelivery(&delivery, session: session, packetIdentifier: id)
                session.inflight.append(.publish(packetIdentifier: id, delivery))
            } else {
                recordDeliveryEnded(delivery)  // expired, or too large for the client
            }
        } else {
            enqueue(delivery, session: &session)
        }
    }

    private mutating func enqueue(_ delivery: Delivery, session: inout Session) {
        let size = delivery.message.payload.readableBytes
        if configuration.maxQueuedMessages > 0, session.queuedCount >= configuration.maxQueuedMessages {
            statistics.publishMessagesDropped += 1
            recordDeliveryEnded(delivery)
            return
        }
        if configuration.maxQueuedBytes > 0, session.queuedBytes + size > configuration.maxQueuedBytes {
            statistics.publishMessagesDropped += 1
            recordDeliveryEnded(delivery)
            return
        }
        var delivery = delivery
        let storedBefore = delivery.sequence != 0
        recordDelivery(&delivery, session: session, packetIdentifier: nil)
        // Queued, it waits longer than a commit: the publisher's PUBACK waits for the commit.
        delivery.receipt?.waitForCommit()
        delivery.receipt = nil
        if session.connection == nil, !storedBefore, delivery.sequence != 0 { storedForAbsentClients += 1 }
        session.queue.append(delivery)
        session.queuedBytes += size
    }

    /// Writes one PUBLISH; returns `false` when it was dropped (expired, or too large for the client).
    @discardableResult
    private mutating func send(
        _ delivery: Delivery,
        packetIdentifier: UInt16,
        session: inout Session,
        connection: ConnectionID,
        now: BrokerInstant,
        into actions: inout [BrokerAction]
    ) -> Bool {
        if delivery.message.isExpired(at: now) {
            statistics.publishMessagesExpired += 1
            return false
        }
        let publish = delivery.publish(
            packetIdentifier: packetIdentifier,
            duplicate: false,
            now: now,
            version: session.protocolVersion
        )
        let packet = MQTTPacket.publish(publish)
        guard session.fitsClient(packet) else {
            // §3.1.2.11.4 [MQTT-3.1.2-25]: discarded for this subscriber only, as if delivered.
            statistics.publishMessagesDroppedTooLarge += 1
            return false
        }
        statistics.countSent(publish)
        actions.append(.send(connection, packet))
        return true
    }

    /// Moves queued messages into the in-flight window while it has room (§4.9).
    mutating func drainQueue(_ clientID: String, now: BrokerInstant, into actions: inout [BrokerAction]) {
        // Moved out first: a temporary read of `sessions[clientID]` would keep a second reference
        // to the queue alive and make the mutations below copy it.
        guard let slot = sessions.index(forKey: clientID) else { return }
        var session = takeSession(at: slot)
        defer { putSession(session, at: slot) }
        guard let connection = session.connection, session.writable else { return }
        while session.inflight.count < session.sendWindow, let delivery = session.popQueued() {
            session.queuedBytes -= delivery.message.payload.readableBytes
            if delivery.qos == .atMostOnce {
                send(delivery, packetIdentifier: 0, session: &session, connection: connection, now: now, into: &actions)
                recordDeliveryEnded(delivery)
                continue
            }
            let id = session.allocatePacketIdentifier()
            if send(delivery, packetIdentifier: id, session: &session, connection: connection, now: now, into: &actions)
            {
                session.inflight.append(.publish(packetIdentifier: id, delivery))
                if delivery.sequence != 0 {
                    record(.deliverySent(sequence: delivery.sequence, packetIdentifier: id), session: session.storeKey)
                }
            } else {
                recordDeliveryEnded(delivery)  // expired or too large: it never blocks the queue behind it
            }
        }
    }

    /// Handles a change in whether a connection's socket keeps up with what it is sent. While it
    /// does not, its QoS 1/2 messages wait in its session queue (within `max_queued_messages` and
    /// `max_queued_bytes`) and its QoS 0 messages are dropped; when it catches up, the queue
    /// drains in order. Other clients are not affected either way.
    public mutating func writabilityChanged(_ connection: ConnectionID, writable: Bool, now: BrokerInstant)
        -> [BrokerAction]
    {
        guard let (clientID, _) = connections[connection], let session = sessions[clientID],
            session.connection == connection, session.writable != writable
        else { return [] }
        sessions[clientID]?.writable = writable
        var actions: [BrokerAction] = []
        if writable {
            drainQueue(clientID, now: now, into: &actions)
        } else {
            statistics.backpressureEvents += 1
        }
        return actions
    }

    /// Handles PUBACK, PUBREC or PUBCOMP from a client for an outbound message (§4.3).
    public mutating func acknowledge(
        _ connection: ConnectionID,
        _ type: PacketType,
        _ packet: PublishAcknowledgement,
        now: BrokerInstant
    ) -> [BrokerAction] {
        var actions: [BrokerAction] = []
        acknowledge(connection, type, packet, now: now, into: &actions)
        return actions
    }

    /// ``acknowledge(_:_:_:now:)``, appending its actions to `actions`.
    public mutating func acknowledge(
        _ connection: ConnectionID,
        _ type: PacketType,
        _ packet: PublishAcknowledgement,
        now: BrokerInstant,
        into actions: inout [BrokerAction]
    ) {
        guard let (clientID, _) = connections[connection] else { return }
        // Mutated in place through its slot, so neither the session nor its in-flight list is copied.
        guard let slot = sessions.index(forKey: clientID) else { return }
        let outcome = sessions.values[slot].acknowledge(type, packet)
        if let reply = outcome.reply { actions.append(.send(connection, reply)) }
        if let finished = outcome.finished { recordDeliveryEnded(finished) }
        if outcome.released {
            record(for: clientID) { .putRelease(session: $0, packetIdentifier: packet.packetIdentifier) }
        }
        if outcome.completed {
            record(for: clientID) { .deleteRelease(session: $0, packetIdentifier: packet.packetIdentifier) }
        }
        drainQueue(clientID, now: now, into: &actions)
    }
}
