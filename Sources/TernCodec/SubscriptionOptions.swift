/// The options byte of one SUBSCRIBE entry (MQTT 5.0 §3.8.3.1). On 3.1.1 only ``qos`` exists.
public struct SubscriptionOptions: Sendable, Hashable {
    /// The highest QoS the server may use when it forwards a message for this subscription.
    public var qos: QoS
    /// Do not send the subscriber its own publications (MQTT 5 only).
    public var noLocal: Bool
    /// Keep the RETAIN flag of forwarded messages as published (MQTT 5 only).
    public var retainAsPublished: Bool
    /// When retained messages are sent for this subscription (MQTT 5 only).
    public var retainHandling: RetainHandling

    public init(
        qos: QoS = .atMostOnce,
        noLocal: Bool = false,
        retainAsPublished: Bool = false,
        retainHandling: RetainHandling = .sendOnSubscribe
    ) {
        self.qos = qos
        self.noLocal = noLocal
        self.retainAsPublished = retainAsPublished
        self.retainHandling = retainHandling
    }

    /// When the server sends retained messages for a new subscription (§3.8.3.1).
    public enum RetainHandling: UInt8, Sendable, Hashable, CaseIterable {
        /// Send retained messages at the time of the subscribe.
        case sendOnSubscribe = 0
        /// Send them only if the subscription did not already exist.
        case sendOnNewSubscription = 1
        /// Do not send them.
        case doNotSend = 2
    }

    /// Reads the options byte as `version` defines it.
    public init(byte: UInt8, version: ProtocolVersion) throws(TernError) {
        let qosBits = byte & 0b11
        if version.hasProperties {
            guard byte & 0b1100_0000 == 0 else {
                throw .malformedPacket("reserved subscription option bits are set")  // [MQTT-3.8.3-5]
            }
            guard let qos = QoS(rawValue: qosBits) else { throw .protocolError("a subscription asks for QoS 3") }
            guard let handling = RetainHandling(rawValue: (byte >> 4) & 0b11) else {
                throw .protocolError("a subscription has Retain Handling 3")
            }
            self.init(
                qos: qos,
                noLocal: byte & 0b0100 != 0,
                retainAsPublished: byte & 0b1000 != 0,
                retainHandling: handling
            )
        } else {
            // MQTT 3.1.1 §3.8.3.1 [MQTT-3-8.3-4]: reserved bits set or QoS 3 make the packet malformed.
            guard byte & 0b1111_1100 == 0, let qos = QoS(rawValue: qosBits) else {
                throw .malformedPacket("a 3.1.1 subscription has reserved bits set or QoS 3")
            }
            self.init(qos: qos)
        }
    }

    /// The options byte as `version` defines it.
    public func byte(version: ProtocolVersion) -> UInt8 {
        guard version.hasProperties else { return qos.rawValue }
        var byte = qos.rawValue | (retainHandling.rawValue << 4)
        if noLocal { byte |= 0b0100 }
        if retainAsPublished { byte |= 0b1000 }
        return byte
    }
}
