/// The cluster options of a configuration file (Tern's own; Mosquitto has no cluster). The
/// executable turns them into a cluster node; the broker never sees them.
public struct ClusterSettings: Sendable, Hashable {
    /// `cluster_store`: the PostgreSQL database the nodes share, as a
    /// `postgresql://USER@HOST[:PORT]/DATABASE[?schema=NAME]` URL. `nil`: no cluster.
    public var storeURL: String?
    /// The file and line `cluster_store` was set on, for errors about it.
    public var storeLine = 0
    public var storeFile = ""
    /// `cluster_node`: this node's name, unique in the cluster and kept across restarts.
    public var node: String?
    /// `cluster_password_file`: a file whose first line is the database password, so that the
    /// configuration need not hold it. The `TERN_CLUSTER_PASSWORD` environment variable does
    /// the same.
    public var passwordFile: String?

    public init() {}

    /// Whether the broker is a cluster node.
    public var isEnabled: Bool { storeURL != nil }
}
