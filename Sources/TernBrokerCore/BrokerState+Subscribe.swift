public import TernCodec

extension BrokerState {
    /// Handles SUBSCRIBE: grants each filter, answers SUBACK, then sends retained messages as each
    /// subscription's Retain Handling asks (MQTT 5.0 §3.8.4, §3.3.1.3).
    public mutating func subscribe(_ connection: ConnectionID, _ packet: Subscribe, now: BrokerInstant)
        -> [BrokerAction]
    {
        var actions: [BrokerAction] = []
        guard let (clientID, version) = connections[connection], let reference = sessions[clientID]?.reference
        else { return [] }
        let identifier = packet.properties.subscriptionIdentifiers.first
        let identity = checksAccess ? sessions[clientID]?.identity : nil
        var codes: [ReasonCode] = []
        var retainedToSend: [(TopicFilter, SubscriptionOptions)] = []
        for subscription in packet.subscriptions {
            if let identity, !maySubscribe(subscription.filter, clientID: clientID, identity: identity) {
                codes.append(version == .v5 ? .notAuthorized : .unspecifiedError)  // 3.1.1 §3.9.3: 0x80 Failure
                continue
            }
            var options = subscription.options
            options.qos = min(options.qos, configuration.maxQoS)
            // A bridge's own messages never come back to it over its subscriptions (loop prevention).
            if sessions[clientID]?.isBridge == true { options.noLocal = true }
            let existed = shared.subscriptions.subscribe(
                subscription.filter,
                entry: TopicTree.Entry(session: reference, options: options, identifier: identifier)
            )
            let remembered = SessionSubscription(filter: subscription.filter, options: options, identifier: identifier)
            sessions[clientID]?.subscriptions[subscription.filter.string] = remembered
            record(for: clientID) { .putSubscription(session: $0, remembered) }
            if shared.clustered {
                let key = sessions[clientID]?.storeKey ?? 0
                storeChanges.append(.cluster(.subscribe(clientID: clientID, sessionKey: key, remembered)))
            }
            codes.append(ReasonCode(rawValue: options.qos.rawValue))
            // §4.8.2: retained messages are not sent for a shared subscription.
            guard !subscription.filter.isShared else { continue }
            switch options.retainHandling {
            case .sendOnSubscribe: retainedToSend.append((subscription.filter, options))
            case .sendOnNewSubscription: if !existed { retainedToSend.append((subscription.filter, options)) }
            case .doNotSend: break
            }
        }
        actions.append(
            .send(
                connection,
                .suback(SubscribeAcknowledgement(packetIdentifier: packet.packetIdentifier, reasonCodes: codes))
            )
        )
        for (filter, options) in retainedToSend {
            for (topic, message) in shared.retained.matching(filter) {
                if message.isExpired(at: now) { continue }
                if identity != nil, let session = sessions[clientID], !mayReceive(topic, session: session) { continue }
                // §3.3.1.3: messages sent because of a new subscription keep RETAIN = 1.
                let delivery = Delivery(
                    message: message,
                    qos: min(message.qos, options.qos),
                    retain: true,
                    subscriptionIdentifiers: identifier.map { [$0] } ?? []
                )
                deliver(delivery, to: clientID, now: now, into: &actions)
            }
        }
        return actions
    }

    /// Handles UNSUBSCRIBE (§3.10.4).
    public mutating func unsubscribe(_ connection: ConnectionID, _ packet: Unsubscribe) -> [BrokerAction] {
        guard let (clientID, _) = connections[connection], let reference = sessions[clientID]?.reference
        else { return [] }
        var codes: [ReasonCode] = []
        for filter in packet.filters {
            let existed = shared.subscriptions.unsubscribe(filter, session: reference)
            sessions[clientID]?.subscriptions[filter.string] = nil
            if existed { record(for: clientID) { .deleteSubscription(session: $0, filter: filter.string) } }
            if existed, shared.clustered {
                storeChanges.append(.cluster(.unsubscribe(clientID: clientID, filter: filter.string)))
            }
            codes.append(existed ? .success : .noSubscriptionExisted)
        }
        return [
            .send(
                connection,
                .unsuback(SubscribeAcknowledgement(packetIdentifier: packet.packetIdentifier, reasonCodes: codes))
            )
        ]
    }
}
