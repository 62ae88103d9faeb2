import TernCodec

/// A session on its way from the state that held it to the one whose CONNECT claimed it.
public struct SessionHandover: Sendable {
    public var session: Session
    /// Its will, if it waits for its Will Delay Interval.
    var pendingWill: (message: ApplicationMessage, deadline: BrokerInstant)?
}

/// What ``BrokerState/release(_:to:now:)`` did with a session another state claimed.
public enum SessionRelease: Sendable {
    /// The session leaves this state: hand it to the claimant's ``BrokerState/adopt(_:clientID:now:)``.
    case handedOver(SessionHandover)
    /// There is no such session (any more): the claimant starts a new one.
    case none
    /// This state waits for the session itself: it is handed on once it arrives here
    /// (``BrokerState/takeDeferredReleases(_:)``).
    case deferred
}

/// Deliveries routed to a session another state holds, to post to its mailbox.
public struct OutgoingDeliveries: Sendable {
    public var session: SessionReference
    public var deliveries: [Delivery]
    /// The store key of the session the deliveries were stored under (0: not stored).
    public var storeKey: UInt64
}

// MARK: - Sessions moving between states

extension BrokerState {
    /// Gives up `clientID`'s session to state `claimant`, whose CONNECT claimed it (§3.1.4-3): a
    /// client attached here is sent DISCONNECT 0x8E (MQTT 5) and closed, and its will follows the
    /// usual rules. What other states posted to the session and this one has not taken stays in
    /// its mailbox for the claimant.
    public mutating func release(_ clientID: String, to claimant: Int, now: BrokerInstant) -> (
        release: SessionRelease, actions: [BrokerAction]
    ) {
        var actions: [BrokerAction] = []
        guard let existing = sessions[clientID] else {
            if awaitingSessions.contains(clientID) {
                deferredReleases[clientID, default: []].append(claimant)
                return (.deferred, [])
            }
            return (.none, [])
        }
        if let old = existing.connection {
            if existing.protocolVersion == .v5 {
                actions.append(.send(old, .disconnect(Disconnect(reasonCode: .sessionTakenOver))))
            }
            actions.append(.close(old))
            detach(old, publishWill: true, now: now, into: &actions)
        }
        guard let session = sessions.removeValue(forKey: clientID) else { return (.none, actions) }  // it ended
        session.reference.move(to: claimant)
        let handover = SessionHandover(session: session, pendingWill: pendingWills.removeValue(forKey: clientID))
        return (.handedOver(handover), actions)
    }

    /// Takes in a session this state claimed (``SessionRelease/handedOver(_:)``), or learns that
    /// there is none (`nil`). The CONNECTs that waited for it run again afterwards.
    /// - Returns: actions for what was posted to the session meanwhile (it is detached, so they
    ///   queue), and the store commit those deliveries wait for.
    ///
    /// - Parameter fromCluster: whether the session came from the cluster's store (another node,
    ///   or none, held it); the CONNECT that waits for it may then start a new one here.
    public mutating func adopt(
        _ handover: SessionHandover?,
        clientID: String,
        fromCluster: Bool = false,
        now: BrokerInstant
    ) -> (actions: [BrokerAction], ticket: UInt64) {
        awaitingSessions.remove(clientID)
        if fromCluster {
            clusterClaims.insert(clientID)
            // What this broker routed to the session while another node held it, or none did,
            // goes; the session's own subscriptions, if any, came with it.
            if handover == nil { shared.dropRemoteSubscriptions(clientID) }
        }
        guard let handover else { return ([], 0) }
        sessions[clientID] = handover.session
        sessions[clientID]?.connection = nil
        if let pending = handover.pendingWill {
            pendingWills[clientID] = pending
            schedule(.will(clientID), at: pending.deadline)
        }
        schedule(.sessionExpiry(clientID), at: handover.session.expiresAt)
        return receivePosted(handover.session.reference, now: now)
    }

    /// A session read from a cluster's store for a CONNECT here, when no node holds it any more,
    /// under the reference this broker knows its client identifier by (which its subscriptions
    /// in the index already name). Its stored deliveries go in front, in sequence order; those
    /// the store also sends through (``ClusterChange/transit``), because they were committed
    /// while it was read, are taken once.
    public mutating func handover(
        from stored: StoredSession,
        messages: [UInt64: ApplicationMessage],
        now: BrokerInstant
    ) -> SessionHandover {
        let header = stored.header
        shared.raiseKey(shared.lastStoreKey, to: header.key)
        let reference =
            shared.directory.reference(header.clientID) ?? SessionReference(clientID: header.clientID, owner: shard)
        reference.move(to: shard)
        reference.storeKey.store(header.key, ordering: .relaxed)
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
        }
        shared.takeFromRemote(reference, subscriptions: stored.subscriptions)
        for packetIdentifier in stored.releases {
            session.inflight.append(.release(packetIdentifier: packetIdentifier))
        }
        var summary = RestoreSummary()
        restoreDeliveries(stored.deliveries, messages: messages, into: &session, summary: &summary)
        session.loadedSequences = Set(stored.deliveries.map(\.sequence))
        session.inboundQoS2Pending = Set(stored.inboundQoS2)
        var pendingWill: (message: ApplicationMessage, deadline: BrokerInstant)?
        if let will = header.will {
            if let deadline = header.willDeadline {
                pendingWill = (will, deadline)
            } else if header.attached {
                // Its node died with it attached: the will is due from now on.
                var message = will
                message.expiresAt = will.properties.messageExpiryInterval.map { now.adding(seconds: $0) }
                pendingWill = (message, now.adding(seconds: min(header.willDelay, header.expiryInterval)))
            }
        }
        return SessionHandover(session: session, pendingWill: pendingWill)
    }

    /// Gives up a claim of `clientID`'s session from the cluster that could not be completed: what
    /// this broker routes to it goes through the store again, and a later CONNECT claims anew.
    public mutating func abandonClusterClaim(_ clientID: String) {
        awaitingSessions.remove(clientID)
        guard let reference = shared.directory.reference(clientID), sessions[clientID] == nil else { return }
        reference.move(to: SessionReference.elsewhereOwner)
        shared.directory.leave(reference, shard: shard)
    }

    /// The claimants that asked for `clientID`'s session while this state waited for it itself.
    public mutating func takeDeferredReleases(_ clientID: String) -> [Int] {
        deferredReleases.removeValue(forKey: clientID) ?? []
    }

    /// Whether this state waits for `clientID`'s session from another.
    public func awaitsSession(_ clientID: String) -> Bool { awaitingSessions.contains(clientID) }
}

// MARK: - Deliveries between states

extension BrokerState {
    /// Hands over the deliveries routed to sessions other states hold since the last call, one
    /// group per session and store key, in the order they were routed.
    public mutating func takeOutgoing() -> [OutgoingDeliveries] {
        guard !outgoing.isEmpty else { return [] }
        defer { outgoing.removeAll(keepingCapacity: true) }
        if outgoing.count == 1 {
            let (session, delivery, storeKey) = outgoing[0]
            return [OutgoingDeliveries(session: session, deliveries: [delivery], storeKey: storeKey)]
        }
        var groups: [OutgoingDeliveries] = []
        var index: [SessionReference: Int] = [:]
        for (session, delivery, storeKey) in outgoing {
            if let position = index[session], groups[position].storeKey == storeKey {
                groups[position].deliveries.append(delivery)
            } else {
                index[session] = groups.count
                groups.append(OutgoingDeliveries(session: session, deliveries: [delivery], storeKey: storeKey))
            }
        }
        return groups
    }

    /// Takes, in order, what other states posted to `reference`'s session, if this state holds it.
    /// - Returns: the actions, and the store commit the deliveries wait for (their QoS 2 PUBLISH
    ///   is not sent before it).
    public mutating func receivePosted(_ reference: SessionReference, now: BrokerInstant) -> (
        actions: [BrokerAction], ticket: UInt64
    ) {
        var actions: [BrokerAction] = []
        let ticket = receivePosted(reference, now: now, into: &actions)
        return (actions, ticket)
    }

    /// ``receivePosted(_:now:)``, appending its actions to `actions`.
    /// - Returns: the store commit the deliveries wait for.
    public mutating func receivePosted(
        _ reference: SessionReference,
        now: BrokerInstant,
        into actions: inout [BrokerAction]
    ) -> UInt64 {
        let clientID = reference.clientID
        // A session on its way here takes its mailbox when it arrives; one that left, at its new
        // state. (Compared through a temporary: a binding would make every delivery below copy the queue.)
        guard sessions[clientID]?.reference === reference else { return 0 }
        let entries = reference.mailbox.withLock { mailbox in
            mailbox.drainScheduled = false
            defer { mailbox.entries = [] }
            return mailbox.entries
        }
        var ticket: UInt64 = 0
        for entry in entries {
            ticket = max(ticket, entry.ticket)
            for var delivery in entry.deliveries {
                if delivery.sequence != 0, sessions[clientID]?.loadedSequences?.contains(delivery.sequence) == true {
                    continue  // read from the store with the session already (a cluster's transit)
                }
                if delivery.sequence != 0, entry.storeKey != sessions[clientID]?.storeKey {
                    // Stored for a session row that is gone: finished there, stored anew if needed.
                    recordDeliveryEnded(delivery)
                    delivery.sequence = 0
                }
                if checksAccess, let session = sessions[clientID],
                    !mayReceive(delivery.message.topic.string, session: session)
                {
                    recordDeliveryEnded(delivery)
                    continue
                }
                deliver(delivery, to: clientID, now: now, into: &actions)
            }
        }
        return ticket
    }

    /// Sends through the cluster's store the deliveries a mailbox turned away because their
    /// session left for another node of the cluster (or none) meanwhile: they reach the node its
    /// client is attached to, which takes a stored one once even if it read it with the session.
    public mutating func postElsewhere(_ group: OutgoingDeliveries) {
        for delivery in group.deliveries {
            recordTransit(delivery, to: group.session, storeKey: group.storeKey)
        }
    }

    /// Finishes the stored copies of deliveries a mailbox refused (their session had ended).
    public mutating func postRefused(_ refused: OutgoingDeliveries) {
        for delivery in refused.deliveries { recordDeliveryEnded(delivery) }
    }
}
