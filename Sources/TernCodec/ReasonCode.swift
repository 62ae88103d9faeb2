/// An MQTT 5 reason code (MQTT 5.0 §2.4).
///
/// The same byte has different names in different packets (0x00 is *Success* in a PUBACK, *Normal
/// disconnection* in a DISCONNECT and *Granted QoS 0* in a SUBACK), so this is a struct over the
/// raw byte with one named constant per name the specification gives, not an enum.
public struct ReasonCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8

    @inlinable
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Whether this code reports a failure: every code from 0x80 up does (MQTT 5.0 §2.4).
    @inlinable
    public var isFailure: Bool { rawValue >= 0x80 }

    public static let success = ReasonCode(rawValue: 0x00)
    public static let normalDisconnection = ReasonCode(rawValue: 0x00)
    public static let grantedQoS0 = ReasonCode(rawValue: 0x00)
    public static let grantedQoS1 = ReasonCode(rawValue: 0x01)
    public static let grantedQoS2 = ReasonCode(rawValue: 0x02)
    public static let disconnectWithWillMessage = ReasonCode(rawValue: 0x04)
    public static let noMatchingSubscribers = ReasonCode(rawValue: 0x10)
    public static let noSubscriptionExisted = ReasonCode(rawValue: 0x11)
    public static let continueAuthentication = ReasonCode(rawValue: 0x18)
    public static let reAuthenticate = ReasonCode(rawValue: 0x19)
    public static let unspecifiedError = ReasonCode(rawValue: 0x80)
    public static let malformedPacket = ReasonCode(rawValue: 0x81)
    public static let protocolError = ReasonCode(rawValue: 0x82)
    public static let implementationSpecificError = ReasonCode(rawValue: 0x83)
    public static let unsupportedProtocolVersion = ReasonCode(rawValue: 0x84)
    public static let clientIdentifierNotValid = ReasonCode(rawValue: 0x85)
    public static let badUserNameOrPassword = ReasonCode(rawValue: 0x86)
    public static let notAuthorized = ReasonCode(rawValue: 0x87)
    public static let serverUnavailable = ReasonCode(rawValue: 0x88)
    public static let serverBusy = ReasonCode(rawValue: 0x89)
    public static let banned = ReasonCode(rawValue: 0x8A)
    public static let serverShuttingDown = ReasonCode(rawValue: 0x8B)
    public static let badAuthenticationMethod = ReasonCode(rawValue: 0x8C)
    public static let keepAliveTimeout = ReasonCode(rawValue: 0x8D)
    public static let sessionTakenOver = ReasonCode(rawValue: 0x8E)
    public static let topicFilterInvalid = ReasonCode(rawValue: 0x8F)
    public static let topicNameInvalid = ReasonCode(rawValue: 0x90)
    public static let packetIdentifierInUse = ReasonCode(rawValue: 0x91)
    public static let packetIdentifierNotFound = ReasonCode(rawValue: 0x92)
    public static let receiveMaximumExceeded = ReasonCode(rawValue: 0x93)
    public static let topicAliasInvalid = ReasonCode(rawValue: 0x94)
    public static let packetTooLarge = ReasonCode(rawValue: 0x95)
    public static let messageRateTooHigh = ReasonCode(rawValue: 0x96)
    public static let quotaExceeded = ReasonCode(rawValue: 0x97)
    public static let administrativeAction = ReasonCode(rawValue: 0x98)
    public static let payloadFormatInvalid = ReasonCode(rawValue: 0x99)
    public static let retainNotSupported = ReasonCode(rawValue: 0x9A)
    public static let qosNotSupported = ReasonCode(rawValue: 0x9B)
    public static let useAnotherServer = ReasonCode(rawValue: 0x9C)
    public static let serverMoved = ReasonCode(rawValue: 0x9D)
    public static let sharedSubscriptionsNotSupported = ReasonCode(rawValue: 0x9E)
    public static let connectionRateExceeded = ReasonCode(rawValue: 0x9F)
    public static let maximumConnectTime = ReasonCode(rawValue: 0xA0)
    public static let subscriptionIdentifiersNotSupported = ReasonCode(rawValue: 0xA1)
    public static let wildcardSubscriptionsNotSupported = ReasonCode(rawValue: 0xA2)

    /// Every reason code the MQTT 5.0 specification defines, with its name in §2.4.
    public static let allDefined: [(code: ReasonCode, name: String)] = [
        (.success, "Success"), (.grantedQoS1, "Granted QoS 1"), (.grantedQoS2, "Granted QoS 2"),
        (.disconnectWithWillMessage, "Disconnect with Will Message"),
        (.noMatchingSubscribers, "No matching subscribers"), (.noSubscriptionExisted, "No subscription existed"),
        (.continueAuthentication, "Continue authentication"), (.reAuthenticate, "Re-authenticate"),
        (.unspecifiedError, "Unspecified error"), (.malformedPacket, "Malformed Packet"),
        (.protocolError, "Protocol Error"), (.implementationSpecificError, "Implementation specific error"),
        (.unsupportedProtocolVersion, "Unsupported Protocol Version"),
        (.clientIdentifierNotValid, "Client Identifier not valid"),
        (.badUserNameOrPassword, "Bad User Name or Password"), (.notAuthorized, "Not authorized"),
        (.serverUnavailable, "Server unavailable"), (.serverBusy, "Server busy"), (.banned, "Banned"),
        (.serverShuttingDown, "Server shutting down"), (.badAuthenticationMethod, "Bad authentication method"),
        (.keepAliveTimeout, "Keep Alive timeout"), (.sessionTakenOver, "Session taken over"),
        (.topicFilterInvalid, "Topic Filter invalid"), (.topicNameInvalid, "Topic Name invalid"),
        (.packetIdentifierInUse, "Packet Identifier in use"),
        (.packetIdentifierNotFound, "Packet Identifier not found"),
        (.receiveMaximumExceeded, "Receive Maximum exceeded"), (.topicAliasInvalid, "Topic Alias invalid"),
        (.packetTooLarge, "Packet too large"), (.messageRateTooHigh, "Message rate too high"),
        (.quotaExceeded, "Quota exceeded"), (.administrativeAction, "Administrative action"),
        (.payloadFormatInvalid, "Payload format invalid"), (.retainNotSupported, "Retain not supported"),
        (.qosNotSupported, "QoS not supported"), (.useAnotherServer, "Use another server"),
        (.serverMoved, "Server moved"), (.sharedSubscriptionsNotSupported, "Shared Subscriptions not supported"),
        (.connectionRateExceeded, "Connection rate exceeded"), (.maximumConnectTime, "Maximum connect time"),
        (.subscriptionIdentifiersNotSupported, "Subscription Identifiers not supported"),
        (.wildcardSubscriptionsNotSupported, "Wildcard Subscriptions not supported"),
    ]

    public var description: String {
        let hex = "0x" + (rawValue < 0x10 ? "0" : "") + String(rawValue, radix: 16, uppercase: true)
        if let name = Self.allDefined.first(where: { $0.code == self })?.name {
            return "\(hex) \(name)"
        }
        return hex
    }
}

// MARK: - MQTT 3.1 and 3.1.1 return codes

extension ReasonCode {
    /// The CONNACK return code an MQTT 3.1/3.1.1 client is sent for this reason (MQTT 3.1.1 §3.2.2.3).
    ///
    /// 3.1.1 has six return codes; every other failure maps to the nearest one, as MQTT 5.0 §3.2.2.2
    /// itself suggests (for example *Banned* becomes *not authorized*).
    public var connectReturnCode: UInt8 {
        switch self {
        case .success: return 0
        case .unsupportedProtocolVersion: return 1
        case .clientIdentifierNotValid: return 2
        case .badUserNameOrPassword, .badAuthenticationMethod: return 4
        case .notAuthorized, .banned: return 5
        default: return 3
        }
    }

    /// The reason code for an MQTT 3.1/3.1.1 CONNACK return code, or `nil` for a reserved value.
    public init?(connectReturnCode: UInt8) {
        switch connectReturnCode {
        case 0: self = .success
        case 1: self = .unsupportedProtocolVersion
        case 2: self = .clientIdentifierNotValid
        case 3: self = .serverUnavailable
        case 4: self = .badUserNameOrPassword
        case 5: self = .notAuthorized
        default: return nil
        }
    }
}
