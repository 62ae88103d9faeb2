/// How the nodes of a Tern cluster reach each other: the part of a cluster the broker does not
/// implement itself, so that the way sessions, subscriptions and messages travel between nodes
/// can change without touching the broker.
///
/// What a node sends goes with its store changes (``ClusterChange``), committed in the same
/// transaction as the rest, so that a PUBACK never leaves before the other nodes can see what it
/// acknowledged. What a node receives comes through this protocol's calls into its
/// ``ClusterNode``.
public protocol ClusterTransport: Sendable {
    /// This node's number in the cluster, from 1 to ``ClusterLimits/maximumNodes`` - 1: the
    /// remainder of every key it hands out.
    var nodeNumber: Int { get }

    /// Joins the cluster: takes this node's place (failing if another process holds it), deals
    /// with what a previous run of this node left, and reports every session's subscriptions to
    /// `node` before returning, so that the listeners open with a complete routing table.
    func join(_ node: any ClusterNode) async throws

    /// Serves the node's part of the cluster after ``join(_:)``: messages, subscriptions and
    /// retained messages from the other nodes, releases they ask for, and the upkeep no node
    /// owns (expired sessions, delayed wills, dead nodes). Returns when the task is cancelled;
    /// throws when this node has lost its place in the cluster and must stop serving.
    func run() async throws

    /// Takes `clientID`'s session for this node, whose client has just connected: the node that
    /// holds it gives it up (its client is told 0x8E), a dead one's place is cleaned up first.
    /// - Returns: the session as stored, if any, with the messages its deliveries refer to.
    func claim(_ clientID: String) async throws -> ClusterClaim

    /// Leaves the cluster: the node's place goes, its clients having been disconnected already.
    func leave() async
}

/// The broker's side of a cluster: what a ``ClusterTransport`` tells it.
public protocol ClusterNode: AnyObject, Sendable {
    /// The subscriptions of a session another node holds (or none does) are now `subscriptions`.
    /// - Parameter sessionKey: the session's store key, 0 when it is not stored.
    func clusterSubscriptionsChanged(clientID: String, sessionKey: UInt64, subscriptions: [SessionSubscription])

    /// Another node changed the retained message of `topic` (`nil`: deleted).
    func clusterRetainedChanged(topic: String, message: ApplicationMessage?)

    /// Messages other nodes routed to sessions held here, in the order they were committed.
    func clusterDeliver(_ transits: [ClusterTransit])

    /// Another node's client claimed `clientID`'s session: gives it up, and returns once what
    /// this node changed of it is committed.
    func clusterRelease(_ clientID: String) async

    /// Publishes a will the cluster holds (a dead node's client's, or a delayed one that fell
    /// due while no node held its session).
    func clusterPublish(_ message: ApplicationMessage)

    /// Returns once every change this node has handed its store so far is committed.
    func clusterStoreSettled() async
}

/// A session a node of a cluster took from the store for a CONNECT (``ClusterTransport/claim(_:)``).
public struct ClusterClaim: Sendable {
    /// The session as stored, or `nil` when there is none: the CONNECT starts a new one.
    public var session: StoredSession?
    /// The messages `session`'s deliveries refer to, by store id.
    public var messages: [UInt64: ApplicationMessage]

    public init(session: StoredSession? = nil, messages: [UInt64: ApplicationMessage] = [:]) {
        self.session = session
        self.messages = messages
    }
}

/// A message another node routed to a session held here.
public struct ClusterTransit: Sendable {
    public var clientID: String
    /// The store key of the session it was routed to (0 when it is not stored).
    public var sessionKey: UInt64
    /// With the sequence of its stored copy (0 when not stored) and its message's store id.
    public var delivery: Delivery

    public init(clientID: String, sessionKey: UInt64, delivery: Delivery) {
        self.clientID = clientID
        self.sessionKey = sessionKey
        self.delivery = delivery
    }
}

/// Bounds shared by every node of a cluster.
public enum ClusterLimits {
    /// Keys are handed out in strides of this many, each node taking its own remainder, so that
    /// nodes sharing one store never hand out the same key: a cluster has fewer nodes than this.
    public static let maximumNodes = 1024
}
