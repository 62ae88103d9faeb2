import TernCodec

// MARK: - ACL checks (acl_file)

extension BrokerState {
    /// The ACL that applies to a client, or `nil` when it may use every topic.
    func accessControl(for identity: ClientIdentity) -> AccessControlList? {
        if let listener = identity.listener, let policy = listenerPolicies[listener] { return policy.accessControl }
        return accessControl
    }

    mutating func updateChecksAccess() {
        checksAccess = accessControl != nil || listenerPolicies.values.contains { $0.accessControl != nil }
    }

    func mayPublish(_ topic: String, clientID: String, identity: ClientIdentity) -> Bool {
        guard let acl = accessControl(for: identity) else { return true }
        return acl.mayPublish(topic: topic, clientID: clientID, username: identity.username)
    }

    /// Whether a session may be sent a message on `topic`. A session restored from the store whose
    /// client has not come back yet is not judged: its queue is checked when it does.
    func mayReceive(_ topic: String, session: Session) -> Bool {
        guard let identity = session.identity, let acl = accessControl(for: identity) else { return true }
        return acl.mayReceive(topic: topic, clientID: session.clientID, username: identity.username)
    }

    func maySubscribe(_ filter: TopicFilter, clientID: String, identity: ClientIdentity) -> Bool {
        guard let acl = accessControl(for: identity) else { return true }
        return acl.maySubscribe(filter: filter, clientID: clientID, username: identity.username)
    }

    /// Holds a session to the ACLs in force for its current identity: subscriptions it may no
    /// longer make are removed, and queued messages it may no longer receive are dropped. Run when
    /// a session resumes (a session restored from the store is checked here for the first time)
    /// and for every session when the ACLs are reloaded.
    mutating func recheckAccess(_ clientID: String) {
        guard checksAccess, let session = sessions[clientID], let identity = session.identity else { return }
        for (key, subscription) in session.subscriptions
        where !maySubscribe(subscription.filter, clientID: clientID, identity: identity) {
            shared.subscriptions.unsubscribe(subscription.filter, session: session.reference)
            sessions[clientID]?.subscriptions[key] = nil
            record(for: clientID) { .deleteSubscription(session: $0, filter: key) }
            if shared.clustered { storeChanges.append(.cluster(.unsubscribe(clientID: clientID, filter: key))) }
        }
        guard var session = sessions.removeValue(forKey: clientID) else { return }
        defer { sessions[clientID] = session }
        // Judged one by one, restored deliveries are decoded (an ACL reload is rare).
        session.unpackRestoredQueue()
        var denied: [Delivery] = []
        let judged = session
        session.queue.removeAll { delivery in
            guard !mayReceive(delivery.message.topic.string, session: judged) else { return false }
            denied.append(delivery)
            return true
        }
        for delivery in denied {
            session.queuedBytes -= delivery.message.payload.readableBytes
            statistics.publishMessagesDropped += 1
            recordDeliveryEnded(delivery)
        }
    }

    /// Replaces the ACLs (SIGHUP) and holds every session to the new ones. Connections stay up.
    public mutating func reloadAccess(accessControl: AccessControlList?, listenerPolicies: [Int: AccessPolicy]) {
        self.accessControl = accessControl
        self.listenerPolicies = listenerPolicies
        for clientID in sessions.keys.sorted() { recheckAccess(clientID) }
    }
}
