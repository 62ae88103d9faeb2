import Synchronization

/// Where a client keeps its half of a session (in-flight QoS 1/2 messages, inbound QoS 2
/// identifiers), so that a process restarted with the same store and client identifier can
/// finish what it started.
///
/// Every change is handed to the store as it happens. A durable store must have it on disk when
/// the call returns.
public protocol ClientStore: Sendable {
    /// The saved state for `clientID`, or `nil`.
    func load(clientID: String) throws -> ClientSessionState?
    /// Replaces the saved state for `clientID`.
    func save(_ state: ClientSessionState, clientID: String) throws
    /// Forgets `clientID`.
    func remove(clientID: String) throws
}

/// A store in memory: a new client given the same store (and client identifier) resumes the
/// in-flight state of the one before it, within the process. Every change copies the state.
public final class InMemoryClientStore: ClientStore {
    private let states = Mutex<[String: ClientSessionState]>([:])

    public init() {}

    public func load(clientID: String) throws -> ClientSessionState? { states.withLock { $0[clientID] } }
    public func save(_ state: ClientSessionState, clientID: String) throws { states.withLock { $0[clientID] = state } }
    public func remove(clientID: String) throws { _ = states.withLock { $0.removeValue(forKey: clientID) } }
}

/// A store that keeps nothing: the session's in-flight state lives only in the client (which keeps
/// it across reconnects), and saving costs nothing. The default; also right for a client whose
/// unfinished messages are kept elsewhere, such as a bridge, whose local broker holds each one
/// unacknowledged until the remote broker has it.
public struct TransientClientStore: ClientStore {
    public init() {}

    public func load(clientID: String) throws -> ClientSessionState? { nil }
    public func save(_ state: ClientSessionState, clientID: String) throws {}
    public func remove(clientID: String) throws {}
}
