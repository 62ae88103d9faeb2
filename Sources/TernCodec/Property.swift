public import NIOCore

/// One MQTT 5 property (MQTT 5.0 §2.2.2.2).
///
/// Each case documents the packets that may carry it. ``Properties`` checks those rules when a
/// packet is decoded, so a property in the wrong packet never reaches the broker's logic.
public enum Property: Sendable, Hashable {
    /// 0x01, PUBLISH and will: whether the payload is UTF-8 (`true`) or unspecified bytes.
    case payloadFormatIndicator(isUTF8: Bool)
    /// 0x02, PUBLISH and will: the message's lifetime in seconds.
    case messageExpiryInterval(UInt32)
    /// 0x03, PUBLISH and will: a MIME-like description of the payload.
    case contentType(String)
    /// 0x08, PUBLISH and will: the topic a responder should publish its answer to.
    case responseTopic(String)
    /// 0x09, PUBLISH and will: data that ties a response to its request.
    case correlationData(ByteBuffer)
    /// 0x0B, PUBLISH (server to client, repeatable) and SUBSCRIBE (once): 1…268,435,455.
    case subscriptionIdentifier(UInt32)
    /// 0x11, CONNECT, CONNACK and DISCONNECT: seconds the session outlives the connection.
    case sessionExpiryInterval(UInt32)
    /// 0x12, CONNACK: the client identifier the server chose for an empty one.
    case assignedClientIdentifier(String)
    /// 0x13, CONNACK: the keep alive the server imposes, in seconds.
    case serverKeepAlive(UInt16)
    /// 0x15, CONNECT, CONNACK and AUTH: the extended authentication method.
    case authenticationMethod(String)
    /// 0x16, CONNECT, CONNACK and AUTH: method-specific authentication data.
    case authenticationData(ByteBuffer)
    /// 0x17, CONNECT: whether the server may send Reason Strings and User Properties on failures.
    case requestProblemInformation(Bool)
    /// 0x18, will: seconds to wait after disconnect before publishing the will.
    case willDelayInterval(UInt32)
    /// 0x19, CONNECT: whether the client asks for Response Information in CONNACK.
    case requestResponseInformation(Bool)
    /// 0x1A, CONNACK: the basis for response topics.
    case responseInformation(String)
    /// 0x1C, CONNACK and DISCONNECT: another server the client should use.
    case serverReference(String)
    /// 0x1F, every acknowledgement, DISCONNECT and AUTH: a human-readable diagnostic.
    case reasonString(String)
    /// 0x21, CONNECT and CONNACK: how many QoS 1/2 publications may be unacknowledged at once.
    case receiveMaximum(UInt16)
    /// 0x22, CONNECT and CONNACK: the highest Topic Alias the sender accepts.
    case topicAliasMaximum(UInt16)
    /// 0x23, PUBLISH: a number standing in for the topic name.
    case topicAlias(UInt16)
    /// 0x24, CONNACK: the highest QoS the server supports (0 or 1; absent means 2).
    case maximumQoS(QoS)
    /// 0x25, CONNACK: whether the server supports retained messages.
    case retainAvailable(Bool)
    /// 0x26, every packet with properties, repeatable and ordered: a name/value pair.
    case userProperty(name: String, value: String)
    /// 0x27, CONNECT and CONNACK: the largest packet the sender accepts, in bytes.
    case maximumPacketSize(UInt32)
    /// 0x28, CONNACK: whether wildcard subscriptions are supported.
    case wildcardSubscriptionAvailable(Bool)
    /// 0x29, CONNACK: whether Subscription Identifiers are supported.
    case subscriptionIdentifierAvailable(Bool)
    /// 0x2A, CONNACK: whether shared subscriptions are supported.
    case sharedSubscriptionAvailable(Bool)

    /// The property's identifier byte.
    public var identifier: Identifier {
        switch self {
        case .payloadFormatIndicator: return .payloadFormatIndicator
        case .messageExpiryInterval: return .messageExpiryInterval
        case .contentType: return .contentType
        case .responseTopic: return .responseTopic
        case .correlationData: return .correlationData
        case .subscriptionIdentifier: return .subscriptionIdentifier
        case .sessionExpiryInterval: return .sessionExpiryInterval
        case .assignedClientIdentifier: return .assignedClientIdentifier
        case .serverKeepAlive: return .serverKeepAlive
        case .authenticationMethod: return .authenticationMethod
        case .authenticationData: return .authenticationData
        case .requestProblemInformation: return .requestProblemInformation
        case .willDelayInterval: return .willDelayInterval
        case .requestResponseInformation: return .requestResponseInformation
        case .responseInformation: return .responseInformation
        case .serverReference: return .serverReference
        case .reasonString: return .reasonString
        case .receiveMaximum: return .receiveMaximum
        case .topicAliasMaximum: return .topicAliasMaximum
        case .topicAlias: return .topicAlias
        case .maximumQoS: return .maximumQoS
        case .retainAvailable: return .retainAvailable
        case .userProperty: return .userProperty
        case .maximumPacketSize: return .maximumPacketSize
        case .wildcardSubscriptionAvailable: return .wildcardSubscriptionAvailable
        case .subscriptionIdentifierAvailable: return .subscriptionIdentifierAvailable
        case .sharedSubscriptionAvailable: return .sharedSubscriptionAvailable
        }
    }
}

extension Property {
    /// A property identifier (MQTT 5.0 §2.2.2.2, Table 2-4).
    public enum Identifier: UInt8, Sendable, Hashable, CaseIterable {
        case payloadFormatIndicator = 0x01
        case messageExpiryInterval = 0x02
        case contentType = 0x03
        case responseTopic = 0x08
        case correlationData = 0x09
        case subscriptionIdentifier = 0x0B
        case sessionExpiryInterval = 0x11
        case assignedClientIdentifier = 0x12
        case serverKeepAlive = 0x13
        case authenticationMethod = 0x15
        case authenticationData = 0x16
        case requestProblemInformation = 0x17
        case willDelayInterval = 0x18
        case requestResponseInformation = 0x19
        case responseInformation = 0x1A
        case serverReference = 0x1C
        case reasonString = 0x1F
        case receiveMaximum = 0x21
        case topicAliasMaximum = 0x22
        case topicAlias = 0x23
        case maximumQoS = 0x24
        case retainAvailable = 0x25
        case userProperty = 0x26
        case maximumPacketSize = 0x27
        case wildcardSubscriptionAvailable = 0x28
        case subscriptionIdentifierAvailable = 0x29
        case sharedSubscriptionAvailable = 0x2A

        /// How the value is encoded (MQTT 5.0 §1.5).
        enum ValueType {
            case byte, twoByteInteger, fourByteInteger, variableByteInteger, string, binary, stringPair
        }

        var valueType: ValueType {
            switch self {
            case .payloadFormatIndicator, .requestProblemInformation, .requestResponseInformation, .maximumQoS,
                .retainAvailable, .wildcardSubscriptionAvailable, .subscriptionIdentifierAvailable,
                .sharedSubscriptionAvailable:
                return .byte
            case .serverKeepAlive, .receiveMaximum, .topicAliasMaximum, .topicAlias:
                return .twoByteInteger
            case .messageExpiryInterval, .sessionExpiryInterval, .willDelayInterval, .maximumPacketSize:
                return .fourByteInteger
            case .subscriptionIdentifier:
                return .variableByteInteger
            case .contentType, .responseTopic, .assignedClientIdentifier, .authenticationMethod,
                .responseInformation, .serverReference, .reasonString:
                return .string
            case .correlationData, .authenticationData:
                return .binary
            case .userProperty:
                return .stringPair
            }
        }

        /// The packets (and the will) that may carry this property, from Table 2-4.
        public var allowedIn: PropertyContext {
            switch self {
            case .payloadFormatIndicator, .messageExpiryInterval, .contentType, .responseTopic, .correlationData:
                return [.publish, .will]
            case .subscriptionIdentifier: return [.publish, .subscribe]
            case .sessionExpiryInterval: return [.connect, .connack, .disconnect]
            case .assignedClientIdentifier, .serverKeepAlive, .responseInformation, .maximumQoS, .retainAvailable,
                .wildcardSubscriptionAvailable, .subscriptionIdentifierAvailable, .sharedSubscriptionAvailable:
                return .connack
            case .authenticationMethod, .authenticationData: return [.connect, .connack, .auth]
            case .requestProblemInformation, .requestResponseInformation: return .connect
            case .willDelayInterval: return .will
            case .serverReference: return [.connack, .disconnect]
            case .reasonString:
                return [.connack, .puback, .pubrec, .pubrel, .pubcomp, .suback, .unsuback, .disconnect, .auth]
            case .receiveMaximum, .topicAliasMaximum, .maximumPacketSize: return [.connect, .connack]
            case .topicAlias: return .publish
            case .userProperty: return .all
            }
        }

        /// Whether the property may appear more than once in a packet of `context`.
        func isRepeatable(in context: PropertyContext) -> Bool {
            switch self {
            case .userProperty: return true
            case .subscriptionIdentifier: return context == .publish
            default: return false
            }
        }
    }
}

/// The places a property list can appear: one per packet type that has properties, plus the will.
public struct PropertyContext: OptionSet, Sendable, Hashable {
    public let rawValue: UInt16
    public init(rawValue: UInt16) { self.rawValue = rawValue }

    public static let connect = PropertyContext(rawValue: 1 << 0)
    public static let connack = PropertyContext(rawValue: 1 << 1)
    public static let publish = PropertyContext(rawValue: 1 << 2)
    public static let will = PropertyContext(rawValue: 1 << 3)
    public static let puback = PropertyContext(rawValue: 1 << 4)
    public static let pubrec = PropertyContext(rawValue: 1 << 5)
    public static let pubrel = PropertyContext(rawValue: 1 << 6)
    public static let pubcomp = PropertyContext(rawValue: 1 << 7)
    public static let subscribe = PropertyContext(rawValue: 1 << 8)
    public static let suback = PropertyContext(rawValue: 1 << 9)
    public static let unsubscribe = PropertyContext(rawValue: 1 << 10)
    public static let unsuback = PropertyContext(rawValue: 1 << 11)
    public static let disconnect = PropertyContext(rawValue: 1 << 12)
    public static let auth = PropertyContext(rawValue: 1 << 13)
    public static let all = PropertyContext(rawValue: (1 << 14) - 1)

    var name: String {
        switch self {
        case .connect: return "CONNECT"
        case .connack: return "CONNACK"
        case .publish: return "PUBLISH"
        case .will: return "will properties"
        case .puback: return "PUBACK"
        case .pubrec: return "PUBREC"
        case .pubrel: return "PUBREL"
        case .pubcomp: return "PUBCOMP"
        case .subscribe: return "SUBSCRIBE"
        case .suback: return "SUBACK"
        case .unsubscribe: return "UNSUBSCRIBE"
        case .unsuback: return "UNSUBACK"
        case .disconnect: return "DISCONNECT"
        case .auth: return "AUTH"
        default: return "packet"
        }
    }
}
