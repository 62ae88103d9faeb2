public import TernCodec

/// The rules of one connection that need no shared state (MQTT 5.0 §3.1, §3.3.2.3.4, §4.8):
/// CONNECT must come first and only once, a client never sends server-only packets, and inbound
/// Topic Aliases are resolved here, on the connection's own event loop.
public struct ConnectionStateMachine: Sendable {
    enum State: Sendable {
        case awaitingConnect
        case connected(ProtocolVersion)
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
    }

    var state: State = .awaitingConnect
    var inboundAliases: [UInt16: TopicName] = [:]
    /// The Topic Alias Maximum the broker announced.
    let topicAliasMaximum: UInt16

    public init(topicAliasMaximum: UInt16) {
        self.topicAliasMaximum = topicAliasMaximum
    }

    /// The protocol level, once CONNECT has been received.
    public var protocolVersion: ProtocolVersion? {
        if case .connected(let version) = state { return version }
        return nil
    }

    public mutating func received(_ packet: MQTTPacket) -> Action {
        switch state {
        case .closed:
            return .close(.protocolError, "a packet arrived after the connection ended")
        case .awaitingConnect:
            guard case .connect(let connect) = packet else {
                state = .closed
                return .close(.protocolError, "the first packet is not CONNECT")  // [MQTT-3.1.0-1]
            }
            state = .connected(connect.protocolVersion)
            return .forward(packet)
        case .connected(let version):
            switch packet {
            case .connect:
                state = .closed
                return .close(.protocolError, "a second CONNECT")  // [MQTT-3.1.0-2]
            case .connack, .suback, .unsuback, .pingresp:
                state = .closed
                return .close(.protocolError, "a client sent \(packet.type), which only a server sends")
            case .pingreq:
                return .reply(.pingresp)
            case .auth:
                state = .closed
                return .close(.protocolError, "AUTH without an authentication method")  // §4.12
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
                            return .close(.topicAliasInvalid, "Topic Alias \(alias) exceeds the maximum \(topicAliasMaximum)")
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
