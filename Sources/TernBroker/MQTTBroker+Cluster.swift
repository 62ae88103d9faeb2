import NIOCore
public import TernBrokerCore
import TernCodec

/// The broker as a node of a cluster (``BrokerOptions/cluster``): what its
/// ``ClusterTransport`` tells it, and the claims its CONNECTs make.
extension MQTTBroker: ClusterNode {
    public func clusterSubscriptionsChanged(clientID: String, sessionKey: UInt64, subscriptions: [SessionSubscription])
    {
        sharedState.applyRemoteSubscriptions(clientID: clientID, sessionKey: sessionKey, subscriptions: subscriptions)
    }

    public func clusterRetainedChanged(topic: String, message: ApplicationMessage?) {
        sharedState.retained.applyFromCluster(topic, message)
    }

    /// Posts each message to its session's mailbox, as another event loop of this broker would:
    /// the session's state takes them in order. A session being claimed here keeps them until
    /// it has arrived; one that is not here (any more) lets them go, its stored copies waiting
    /// in the store for whichever node its client connects to.
    public func clusterDeliver(_ transits: [ClusterTransit]) {
        var groups: [(session: SessionReference, sessionKey: UInt64, deliveries: [Delivery])] = []
        clusterClaimsInFlight.withLock { claims in
            for transit in transits {
                if claims[transit.clientID] != nil {
                    claims[transit.clientID]!.append(transit)
                    continue
                }
                guard let reference = sharedState.directory.reference(transit.clientID) else { continue }
                if let last = groups.last, last.session === reference, last.sessionKey == transit.sessionKey {
                    groups[groups.count - 1].deliveries.append(transit.delivery)
                } else {
                    groups.append((reference, transit.sessionKey, [transit.delivery]))
                }
            }
            // Posted under the lock, so that a claim finishing meanwhile posts what it kept first.
            postToMailboxes(groups)
        }
    }

    private func postToMailboxes(_ groups: [(session: SessionReference, sessionKey: UInt64, deliveries: [Delivery])]) {
        var wakes: [Int: [SessionReference]] = [:]
        for group in groups {
            if case .accepted(let owner?) = group.session.post(group.deliveries, storeKey: group.sessionKey, ticket: 0)
            {
                wakes[owner, default: []].append(group.session)
            }
        }
        for (index, sessions) in wakes {
            let shard = shards[index]
            shard.run { self.receivePosted(sessions, on: shard) }
        }
    }

    public func clusterRelease(_ clientID: String) async {
        // A session on its way between two loops of this broker is asked again once it arrived.
        for _ in 0..<250 {
            guard let owner = sharedState.directory.owner(of: clientID), owner != SessionReference.elsewhereOwner
            else { break }
            let shard = shards[owner]
            let waits = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                shard.run {
                    var waits = false
                    self.withState(on: shard) { state in
                        let outcome = state.releaseToCluster(clientID, now: .now())
                        waits = outcome.waitsForSession
                        return outcome.actions
                    }
                    continuation.resume(returning: waits)
                }
            }
            guard waits else { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        await clusterStoreSettled()
    }

    public func clusterPublish(_ message: ApplicationMessage) {
        let shard = shards[0]
        shard.run {
            self.withState(on: shard) { state in state.publishFromCluster(message, now: .now()) }
        }
    }

    public func clusterStoreSettled() async {
        guard let store = options.store, let ticket = store.submit([], startingCommit: true) else { return }
        await commits.waitUntilCommitted(ticket)
    }

    /// Claims `clientID`'s session from the cluster for a CONNECT on `claimant`'s loop: the
    /// CONNECT goes on once the session (or the news that there is none) is here.
    func claimFromCluster(_ clientID: String, for claimant: BrokerShard) {
        guard let cluster = options.cluster else { return }
        clusterClaimsInFlight.withLock { $0[clientID] = [] }
        Task {
            do {
                let claim = try await cluster.claim(clientID)
                claimant.run { self.adoptFromCluster(claim, clientID, on: claimant) }
            } catch {
                logger.error(
                    "claiming a session from the cluster failed",
                    metadata: ["client": "\(clientID)", "error": "\(error)"]
                )
                claimant.run { self.abandonClaim(clientID, on: claimant) }
            }
        }
    }

    private func adoptFromCluster(_ claim: ClusterClaim, _ clientID: String, on shard: BrokerShard) {
        var outbox = Outbox()
        var waiting: [Handle] = []
        withShard(shard, current: nil, outbox: &outbox) { state, actions in
            waiting = state.awaitingSession.removeValue(forKey: clientID) ?? []
            let now = BrokerInstant.now()
            let handover = claim.session.map { state.broker.handover(from: $0, messages: claim.messages, now: now) }
            let adopted = state.broker.adopt(handover, clientID: clientID, fromCluster: true, now: now)
            actions += adopted.actions
            if waiting.isEmpty {
                // Its client left while the session was on its way: back to the store with it.
                actions += state.broker.releaseToCluster(clientID, now: now).actions
            }
            return adopted.ticket
        }
        outbox.dispatch(self)
        clusterClaimsInFlight.withLock { claims in
            guard let kept = claims.removeValue(forKey: clientID), !kept.isEmpty else { return }
            guard let reference = sharedState.directory.reference(clientID) else { return }
            postToMailboxes(kept.map { (reference, $0.sessionKey, [$0.delivery]) })
        }
        for handle in waiting { handle.handler.value.continueAfterSession() }
        let claimants = shard.state.withLock { $0.broker.takeDeferredReleases(clientID) }
        for claimant in claimants { release(clientID, on: shard, to: shards[claimant]) }
    }

    /// The cluster could not hand the session over (its database is unreachable, or the node
    /// that holds the session does not answer): the CONNECTs that waited for it are refused with
    /// 0x88 (Server unavailable), so that their clients try again, here or on another node.
    private func abandonClaim(_ clientID: String, on shard: BrokerShard) {
        var waiting: [Handle] = []
        withState(on: shard) { state in
            state.abandonClusterClaim(clientID)
            return []
        }
        shard.state.withLock { waiting = $0.awaitingSession.removeValue(forKey: clientID) ?? [] }
        clusterClaimsInFlight.withLock { _ = $0.removeValue(forKey: clientID) }
        for handle in waiting { handle.handler.value.refuseHeldConnect(.serverUnavailable) }
        let claimants = shard.state.withLock { $0.broker.takeDeferredReleases(clientID) }
        for claimant in claimants { release(clientID, on: shard, to: shards[claimant]) }
    }
}
