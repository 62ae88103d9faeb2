public import NIOCore
public import TernCodec

/// The rules of one connection that need no shared state (MQTT 5.0 §3.1, §3.3.2.3.4, §4.8):
/// CONNECT must come first and only once, a client never sends server-only packets, and inbound
/// Topic Aliases are resolved here, on the connection's own event loop.
public struct ConnectionStateMachine: Sendable {
    // Payloads out of line (`indirect`): a state machine lives in every connection, and the
    // authentication cases are large and rare.
    enum State: Sendable {
        case awaitingConnect
        /// CONNECT named an enhanced authentication method; AUTH rounds are under way.
        indirect case authenticating(Connect, any AuthenticationExchange)
        /// `exchange` is set while a re-authentication (AUTH 0x19) is under way.
        indirect case connected(ProtocolVersion, method: String?, exchange: (any AuthenticationExchange)?)
        case closed
    }

    /// What the connection handler does with a packet.
    public enum Action: Sendable, Hashable {
        /// Hand the packet to the broker's shared state.
        case forward(MQTTPacket)
        /// Answer directly (PINGRESP).
        case reply(MQTTPacket)
        /// The client broke a rule: send DISCONNECT with this code (MQTT 5 only) and close.
        case close(ReasonCode, String)
        /// Refuse the connection with this CONNACK and close.
        case refuseConnect(ConnAck)
        /// Hand CONNECT to the broker, authenticated by `method`; its CONNACK carries the method and `data`.
        case forwardAuthenticated(Connect, method: String, data: ByteBuffer?)
    }

    var state: State = .awaitingConnect
    var inboundAliases: [UInt16: TopicName] = [:]
    var clientIdentifier = ""
    /// The Topic Alias Maximum the broker announced.
    let topicAliasMaximum: UInt16
    let authenticators: [String: any EnhancedAuthentication]
    /// The listener's `mount_point`: applied to what the client sends once its aliases are
    /// resolved, and taken off what it is sent (``outbound(_:)``).
    let mountPoint: MountPoint?

    public init(
        topicAliasMaximum: UInt16,
        authenticators: [any EnhancedAuthentication] = [],
        mountPoint: MountPoint? = nil
    ) {
        self.topicAliasMaximum = topicAliasMaximum
        self.mountPoint = mountPoint
        self.authenticators = Dictionary(
            authenticators.map { ($0.method, $0) },
            uniquingKeysWith: { first, _ in first }
        )
    }

    /// The protocol level, once CONNECT has been received.
    public var protocolVersion: ProtocolVersion? {
        if case .connected(let version, _, _) = state { return version }
        return nil
    }

    private static func authPacket(_ code: ReasonCode, method: String, data: ByteBuffer?) -> MQTTPacket {
        var properties = Properties()
        try? properties.append(.authenticationMethod(method))
        if let data { try? properties.append(.authenticationData(data)) }
        return .auth(Auth(reasonCode: code, properties: properties))
    }

    /// Starts or continues an enhanced authentication of CONNECT (§4.12).
    private mutating func authenticate(
        _ connect: Connect,
        exchange: inout any AuthenticationExchange,
        data: ByteBuffer?,
        method: String
    ) -> Action {
        switch exchange.step(data) {
        case .success(let reply):
            state = .connected(connect.protocolVersion, method: method, exchange: nil)
            var stripped = connect
            stripped.properties.removeAll(.authenticationMethod)
            stripped.properties.removeAll(.authenticationData)
            return .forwardAuthenticated(stripped, method: method, data: reply)
        case .challenge(let challenge):
            state = .authenticating(connect, exchange)
            return .reply(Self.authPacket(.continueAuthentication, method: method, data: challenge))
        case .failure:
            state = .closed
            return .refuseConnect(ConnAck(reasonCode: .notAuthorized))
        }
    }

    private static func authenticationData(_ auth: Auth) -> ByteBuffer? {
        if case .authenticationData(let data)? = auth.properties.first(.authenticationData) { return data }
        return nil
    }

    private mutating func receivedAuth(_ auth: Auth) -> Action {
        let method = auth.properties.authenticationMethod
        switch state {
        case .authenticating(let connect, var exchange):
            guard auth.reasonCode == .continueAuthentication, method == connect.properties.authenticationMethod,
                let method
            else {
                state = .closed
                return .close(.protocolError, "an AUTH that does not continue the authentication")
            }
            return authenticate(connect, exchange: &exchange, data: Self.authenticationData(auth), method: method)
        case .connected(let version, let current?, let ongoing):
            guard method == current else {
                state = .closed
                return .close(.protocolError, "AUTH names a different authentication method")  // §4.12.1
            }
            var exchange: any AuthenticationExchange
            switch (auth.reasonCode, ongoing) {
            case (.reAuthenticate, nil): exchange = authenticators[current]!.makeExchange(clientID: clientIdentifier)
            case (.continueAuthentication, let running?): exchange = running
            default:
                state = .closed
                return .close(.protocolError, "an AUTH with reason \(auth.reasonCode) out of turn")
            }
            switch exchange.step(Self.authenticationData(auth)) {
            case .success(let reply):
                state = .connected(version, method: current, exchange: nil)
                return .reply(Self.authPacket(.success, method: current, data: reply))
            case .challenge(let challenge):
                state = .connected(version, method: current, exchange: exchange)
                return .reply(Self.authPacket(.continueAuthentication, method: current, data: challenge))
            case .failure:
                state = .closed
                return .close(.notAuthorized, "re-authentication failed")
            }
        default:
            state = .closed
            return .close(.protocolError, "AUTH without an authentication method")  // §4.12
        }
    }

    public mutating func received(_ packet: MQTTPacket) -> Action {
        let action = checked(packet)
        guard let mountPoint else { return action }
        switch action {
        case .forward(let packet): return .forward(mountPoint.mount(packet))
        case .forwardAuthenticated(let connect, let method, let data):
            return .forwardAuthenticated(mountPoint.mount(connect), method: method, data: data)
        case .reply, .close, .refuseConnect: return action
        }
    }

    /// Whether the listener has a mount point, so that outbound PUBLISH packets need ``outbound(_:)``.
    public var mountsTopics: Bool { mountPoint != nil }

    /// A PUBLISH as the client is to receive it: without the listener's mount point.
    public func outbound(_ publish: inout Publish) {
        if let mountPoint { publish.topic = mountPoint.unmount(publish.topic) }
    }

    private mutating func checked(_ packet: MQTTPacket) -> Action {
        switch state {
        case .closed:
            return .close(.protocolError, "a packet arrived after the connection ended")
        case .awaitingConnect:
            guard case .connect(let connect) = packet else {
                state = .closed
                return .close(.protocolError, "the first packet is not CONNECT")  // [MQTT-3.1.0-1]
            }
            clientIdentifier = connect.clientIdentifier
            if connect.protocolVersion == .v5, let method = connect.properties.authenticationMethod {
                guard let authenticator = authenticators[method] else {
                    state = .closed
                    return .refuseConnect(ConnAck(reasonCode: .badAuthenticationMethod))  // §4.12
                }
                var exchange = authenticator.makeExchange(clientID: connect.clientIdentifier)
                let data: ByteBuffer? =
                    if case .authenticationData(let data)? = connect.properties.first(.authenticationData) { data } else
                    { nil }
                return authenticate(connect, exchange: &exchange, data: data, method: method)
            }
            state = .connected(connect.protocolVersion, method: nil, exchange: nil)
            return .forward(packet)
        case .authenticating:
            if case .auth(let auth) = packet { return receivedAuth(auth) }
            state = .closed
            return .close(.protocolError, "a \(packet.type) before authentication finished")
        case .connected(let version, _, _):
            switch packet {
            case .connect:
                state = .closed
                return .close(.protocolError, "a second CONNECT")  // [MQTT-3.1.0-2]
            case .connack, .suback, .unsuback, .pingresp:
                state = .closed
                return .close(.protocolError, "a client sent \(packet.type), which only a server sends")
            case .pingreq:
                return .reply(.pingresp)
            case .auth(let auth):
                return receivedAuth(auth)
            case .disconnect:
                state = .closed
                return .forward(packet)
            case .publish(var publish):
                if version == .v5 {
                    if publish.properties.contains(.subscriptionIdentifier) {
                        state = .closed
                        return .close(.protocolError, "a client PUBLISH carries a Subscription Identifier")  // §3.3.4
                    }
                    if let alias = publish.properties.topicAlias {
                        guard alias <= topicAliasMaximum else {
                            state = .closed
                            return .close(
                                .topicAliasInvalid,
                                "Topic Alias \(alias) exceeds the maximum \(topicAliasMaximum)"
                            )
                        }
                        if publish.topic.isEmpty {
                            guard let known = inboundAliases[alias] else {
                                state = .closed
                                return .close(.protocolError, "Topic Alias \(alias) was never set")  // §3.3.2.3.4
                            }
                            publish.topic = known
                        } else {
                            inboundAliases[alias] = publish.topic
                        }
                        publish.properties.topicAlias = nil
                        return .forward(.publish(publish))
                    }
                }
                return .forward(packet)
            default:
                return .forward(packet)
            }
        }
    }
}
