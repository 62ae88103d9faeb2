import Synchronization

/// Which ``BrokerState`` holds each client identifier's session, shared by all of them.
///
/// Only CONNECT and the end of a session look here, never a PUBLISH. A CONNECT on one event loop
/// for a session another loop holds claims it: the directory names the claimant at once (so that
/// a third CONNECT asks the claimant, and the last one wins), and the holder hands the session
/// over (``BrokerState/release(_:to:now:)``).
public final class SessionDirectory: Sendable {
    struct Entry: Sendable {
        /// The state that holds the session, or has claimed it and waits for it.
        var owner: Int
        var reference: SessionReference
    }

    private let entries = Mutex<[String: Entry]>([:])

    public init() {}

    enum Claim {
        /// No session is held by another state: start one under this reference.
        case start(SessionReference)
        /// Another state holds (or awaits) the session: it must be fetched from there.
        case fetch(from: Int)
    }

    /// Claims `clientID` for `shard`, whose state does not hold its session.
    func claim(_ clientID: String, for shard: Int) -> Claim {
        entries.withLock { entries in
            if let entry = entries[clientID], entry.owner != shard {
                entries[clientID]?.owner = shard
                return .fetch(from: entry.owner)
            }
            let reference = SessionReference(clientID: clientID, owner: shard)
            entries[clientID] = Entry(owner: shard, reference: reference)
            return .start(reference)
        }
    }

    /// Records that `shard` holds the session behind `reference` (a restored one, or a new one).
    func register(_ reference: SessionReference, shard: Int) {
        entries.withLock { $0[reference.clientID] = Entry(owner: shard, reference: reference) }
    }

    /// Records that no state of this broker holds the session behind `reference` any more, but
    /// another node of the cluster does, or none does (it stays in the store): the entry stays,
    /// so that the subscriptions index keeps routing to it through the store.
    func leave(_ reference: SessionReference, shard: Int) {
        entries.withLock { entries in
            guard let entry = entries[reference.clientID], entry.owner == shard, entry.reference === reference
            else { return }
            entries[reference.clientID]?.owner = SessionReference.elsewhereOwner
        }
    }

    /// The reference of a session another node holds, or none does, made if there is none yet;
    /// `nil` when a state of this broker holds or claims it (this broker's view is the one that
    /// counts for it).
    func remoteReference(_ clientID: String) -> SessionReference? {
        entries.withLock { entries in
            if let entry = entries[clientID] {
                return entry.owner == SessionReference.elsewhereOwner ? entry.reference : nil
            }
            let reference = SessionReference(clientID: clientID, owner: SessionReference.elsewhereOwner)
            entries[clientID] = Entry(owner: SessionReference.elsewhereOwner, reference: reference)
            return reference
        }
    }

    /// The state that holds (or claims) `clientID`'s session, ``SessionReference/elsewhereOwner``
    /// when another node holds it or none does, `nil` when this broker knows of no session.
    public func owner(of clientID: String) -> Int? {
        entries.withLock { $0[clientID]?.owner }
    }

    /// The reference this broker knows `clientID`'s session by, if any.
    public func reference(_ clientID: String) -> SessionReference? {
        entries.withLock { $0[clientID]?.reference }
    }

    /// Forgets a session that ended on another node (its reference, which held no session here).
    func forgetRemote(_ clientID: String) {
        entries.withLock { entries in
            guard entries[clientID]?.owner == SessionReference.elsewhereOwner else { return }
            entries[clientID] = nil
        }
    }

    /// Forgets an ended session, unless another state has claimed its client identifier since.
    func remove(_ reference: SessionReference, shard: Int) {
        entries.withLock { entries in
            guard let entry = entries[reference.clientID], entry.owner == shard, entry.reference === reference
            else { return }
            entries[reference.clientID] = nil
        }
    }

    /// Whether a session (held or claimed) exists for `clientID`.
    func contains(_ clientID: String) -> Bool {
        entries.withLock { $0[clientID] != nil }
    }

    /// How many client identifiers have a session.
    public var count: Int { entries.withLock { $0.count } }
}
