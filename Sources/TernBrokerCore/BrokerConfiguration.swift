public import TernCodec

/// The broker's protocol limits, with Mosquitto's option names and defaults.
public struct BrokerConfiguration: Sendable, Hashable {
    /// `max_inflight_messages`: outbound QoS 1/2 messages in flight per client, and the Receive
    /// Maximum the broker announces. Mosquitto's default is 20.
    public var maxInflightMessages: Int = 20
    /// `max_queued_messages`: QoS 1/2 messages queued per client beyond the in-flight window; 0 is
    /// unlimited. Mosquitto's default is 1000.
    public var maxQueuedMessages: Int = 1000
    /// `max_queued_bytes`: payload bytes queued per client; 0 is unlimited.
    public var maxQueuedBytes: Int = 0
    /// `max_packet_size`: the largest packet accepted from a client; 0 is the protocol maximum.
    public var maxPacketSize: Int = 0
    /// `message_size_limit`: the largest payload accepted; 0 is unlimited.
    public var messageSizeLimit: Int = 0
    /// `max_keepalive`: the longest keep alive granted; a longer or zero request from a v5 client
    /// is answered with Server Keep Alive.
    public var maxKeepalive: UInt16 = 65535
    /// `retain_available`.
    public var retainAvailable: Bool = true
    /// `max_qos`: the highest QoS the broker supports.
    public var maxQoS: QoS = .exactlyOnce
    /// `persistent_client_expiration`: the longest a disconnected persistent session is kept, in
    /// seconds, also for sessions that asked never to expire. `nil` keeps them as asked.
    public var persistentClientExpiration: UInt32?
    /// `max_topic_alias`: the Topic Alias Maximum announced to v5 clients.
    public var maxTopicAlias: UInt16 = 10
    /// `allow_anonymous`.
    public var allowAnonymous: Bool = true
    /// `allow_zero_length_clientid`.
    public var allowZeroLengthClientID: Bool = true
    /// `auto_id_prefix`: the prefix of identifiers assigned to clients that send none.
    public var autoIDPrefix: String = "auto-"
    /// `queue_qos0_messages`: queue QoS 0 messages for offline persistent sessions.
    public var queueQoS0Messages: Bool = false
    /// `use_username_as_clientid`: a client's user name is its client identifier; a client
    /// without a user name is refused (0x87 Not authorized).
    public var useUsernameAsClientID: Bool = false
    /// The number of QoS 2 publications awaiting PUBREL that one client may hold open.
    public var maxInboundQoS2Pending: Int { maxInflightMessages }

    public init() {}
}

/// What the I/O layer found when it checked a CONNECT's user name and password.
public enum Credentials: Sendable, Hashable {
    /// No user name.
    case none
    /// A user name, but no password file to check it against.
    case unchecked
    /// The password matched.
    case valid
    /// The user is unknown or the password is wrong.
    case invalid
    /// A client the broker opened itself, such as a bridge's local side: no password is asked,
    /// and no ACL applies to it.
    case trusted
}
