/// Who a connected client is, as the ACLs see it.
public struct ClientIdentity: Sendable, Hashable {
    /// The user name it logged in with (or its certificate's, with `use_identity_as_username`).
    public var username: String?
    /// The listener whose own settings apply (`per_listener_settings true`), or `nil` for the
    /// broker-wide ones.
    public var listener: Int?

    public init(username: String?, listener: Int? = nil) {
        self.username = username
        self.listener = listener
    }
}

/// The access settings of one listener under `per_listener_settings true`.
public struct AccessPolicy: Sendable, Hashable {
    /// `allow_anonymous` for this listener.
    public var allowAnonymous: Bool
    /// `acl_file` for this listener; `nil` lets every client use every topic.
    public var accessControl: AccessControlList?

    public init(allowAnonymous: Bool, accessControl: AccessControlList? = nil) {
        self.allowAnonymous = allowAnonymous
        self.accessControl = accessControl
    }
}
