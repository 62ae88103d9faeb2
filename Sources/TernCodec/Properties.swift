public import NIOCore

/// The property list of an MQTT 5 packet or will (MQTT 5.0 §2.2.2).
///
/// The list is stored in its wire encoding. A decoded packet's properties are a slice of the
/// receive buffer, validated once and never copied, so a broker that forwards a PUBLISH passes its
/// properties through without decoding them into values. Reading a property decodes it on demand.
///
/// Order is kept: User Properties come out in the order they went in (§3.3.2.3.7).
public struct Properties: Sendable, Hashable, Sequence, CustomStringConvertible {
    /// The encoded property list, without its length prefix.
    public private(set) var encoded: ByteBuffer

    /// An empty list.
    public init() { self.encoded = ByteBuffer() }

    /// A list of the given properties, in order.
    ///
    /// - Throws: ``TernError`` when a string is longer than 65,535 bytes or contains U+0000.
    public init(_ properties: some Sequence<Property>) throws(TernError) {
        self.init()
        for property in properties { try self.append(property) }
    }

    init(validatedEncoding: ByteBuffer) { self.encoded = validatedEncoding }

    /// Whether the list holds no property.
    public var isEmpty: Bool { encoded.readableBytes == 0 }

    /// Adds a property at the end, keeping any earlier one with the same identifier.
    public mutating func append(_ property: Property) throws(TernError) {
        var buffer = encoded
        try Self.write(property, to: &buffer)
        encoded = buffer
    }

    /// Removes every property with this identifier.
    public mutating func removeAll(_ identifier: Property.Identifier) {
        guard contains(identifier) else { return }
        var kept = ByteBuffer()
        for property in self where property.identifier != identifier {
            // Re-encoding a property that was already encoded cannot fail.
            try? Self.write(property, to: &kept)
        }
        encoded = kept
    }

    /// Replaces every property with this one's identifier by `property`.
    public mutating func set(_ property: Property) throws(TernError) {
        removeAll(property.identifier)
        try append(property)
    }

    /// Whether the list holds a property with this identifier.
    public func contains(_ identifier: Property.Identifier) -> Bool { first(identifier) != nil }

    /// The first property with this identifier.
    public func first(_ identifier: Property.Identifier) -> Property? {
        var reader = encoded
        while reader.readableBytes > 0 {
            guard let rawIdentifier = reader.readInteger(as: UInt8.self),
                let id = Property.Identifier(rawValue: rawIdentifier)
            else { return nil }
            if id == identifier { return Self.readValue(of: id, from: &reader) }
            guard Self.skipValue(of: id, in: &reader) else { return nil }
        }
        return nil
    }

    /// The number of bytes `write(to:)` produces: the length prefix and the list.
    public var encodedLength: Int {
        ByteBuffer.variableByteIntegerSize(UInt32(encoded.readableBytes)) + encoded.readableBytes
    }

    /// Writes the length prefix and the list.
    public func write(to buffer: inout ByteBuffer) {
        buffer.writeVariableByteInteger(UInt32(encoded.readableBytes))
        buffer.writeImmutableBuffer(encoded)
    }

    // MARK: Sequence

    public struct Iterator: IteratorProtocol {
        var reader: ByteBuffer

        public mutating func next() -> Property? {
            guard let rawIdentifier = reader.readInteger(as: UInt8.self),
                let id = Property.Identifier(rawValue: rawIdentifier)
            else { return nil }
            return Properties.readValue(of: id, from: &reader)
        }
    }

    public func makeIterator() -> Iterator { Iterator(reader: encoded) }

    // MARK: Hashable

    public static func == (lhs: Properties, rhs: Properties) -> Bool {
        lhs.elementsEqual(rhs)
    }

    public func hash(into hasher: inout Hasher) {
        for property in self { hasher.combine(property) }
    }

    public var description: String {
        "[" + self.map { "\($0)" }.joined(separator: ", ") + "]"
    }
}

// MARK: - Typed access

extension Properties {
    private mutating func replace(_ identifier: Property.Identifier, with property: Property?) {
        removeAll(identifier)
        // Integer and boolean properties carry no string, so writing them cannot fail.
        if let property { try? append(property) }
    }

    /// Session Expiry Interval (0x11): seconds the session outlives the network connection.
    public var sessionExpiryInterval: UInt32? {
        get { if case .sessionExpiryInterval(let value)? = first(.sessionExpiryInterval) { value } else { nil } }
        set { replace(.sessionExpiryInterval, with: newValue.map { .sessionExpiryInterval($0) }) }
    }

    /// Message Expiry Interval (0x02): the message's lifetime in seconds.
    public var messageExpiryInterval: UInt32? {
        get { if case .messageExpiryInterval(let value)? = first(.messageExpiryInterval) { value } else { nil } }
        set { replace(.messageExpiryInterval, with: newValue.map { .messageExpiryInterval($0) }) }
    }

    /// Will Delay Interval (0x18): seconds between disconnect and publishing the will.
    public var willDelayInterval: UInt32? {
        get { if case .willDelayInterval(let value)? = first(.willDelayInterval) { value } else { nil } }
        set { replace(.willDelayInterval, with: newValue.map { .willDelayInterval($0) }) }
    }

    /// Receive Maximum (0x21): how many QoS 1/2 messages may be unacknowledged at once.
    public var receiveMaximum: UInt16? {
        get { if case .receiveMaximum(let value)? = first(.receiveMaximum) { value } else { nil } }
        set { replace(.receiveMaximum, with: newValue.map { .receiveMaximum($0) }) }
    }

    /// Maximum Packet Size (0x27): the largest packet the sender accepts.
    public var maximumPacketSize: UInt32? {
        get { if case .maximumPacketSize(let value)? = first(.maximumPacketSize) { value } else { nil } }
        set { replace(.maximumPacketSize, with: newValue.map { .maximumPacketSize($0) }) }
    }

    /// Topic Alias Maximum (0x22): the highest Topic Alias the sender accepts.
    public var topicAliasMaximum: UInt16? {
        get { if case .topicAliasMaximum(let value)? = first(.topicAliasMaximum) { value } else { nil } }
        set { replace(.topicAliasMaximum, with: newValue.map { .topicAliasMaximum($0) }) }
    }

    /// Topic Alias (0x23).
    public var topicAlias: UInt16? {
        get { if case .topicAlias(let value)? = first(.topicAlias) { value } else { nil } }
        set { replace(.topicAlias, with: newValue.map { .topicAlias($0) }) }
    }

    /// Server Keep Alive (0x13).
    public var serverKeepAlive: UInt16? {
        get { if case .serverKeepAlive(let value)? = first(.serverKeepAlive) { value } else { nil } }
        set { replace(.serverKeepAlive, with: newValue.map { .serverKeepAlive($0) }) }
    }

    /// Maximum QoS (0x24).
    public var maximumQoS: QoS? {
        get { if case .maximumQoS(let value)? = first(.maximumQoS) { value } else { nil } }
        set { replace(.maximumQoS, with: newValue.map { .maximumQoS($0) }) }
    }

    /// Payload Format Indicator (0x01): `true` when the payload is UTF-8.
    public var payloadIsUTF8: Bool? {
        get { if case .payloadFormatIndicator(let value)? = first(.payloadFormatIndicator) { value } else { nil } }
        set { replace(.payloadFormatIndicator, with: newValue.map { .payloadFormatIndicator(isUTF8: $0) }) }
    }

    /// Every Subscription Identifier (0x0B), in order.
    public var subscriptionIdentifiers: [UInt32] {
        compactMap { if case .subscriptionIdentifier(let value) = $0 { value } else { nil } }
    }

    /// Every User Property (0x26), in order.
    public var userProperties: [(name: String, value: String)] {
        compactMap { if case .userProperty(let name, let value) = $0 { (name, value) } else { nil } }
    }

    /// The Reason String (0x1F).
    public var reasonString: String? {
        if case .reasonString(let value)? = first(.reasonString) { value } else { nil }
    }

    /// The Assigned Client Identifier (0x12).
    public var assignedClientIdentifier: String? {
        if case .assignedClientIdentifier(let value)? = first(.assignedClientIdentifier) { value } else { nil }
    }

    /// The Authentication Method (0x15).
    public var authenticationMethod: String? {
        if case .authenticationMethod(let value)? = first(.authenticationMethod) { value } else { nil }
    }
}

// MARK: - Wire format

extension Properties {
    /// Reads a property list (length prefix and properties) and checks it against `context`:
    /// every identifier known and allowed there (else *Malformed Packet*, §2.2.2.2), no
    /// duplicate of a property that may appear once and every value in range (else
    /// *Protocol Error*).
    static func read(from buffer: inout ByteBuffer, context: PropertyContext) throws(TernError) -> Properties {
        let length = try buffer.readMQTTVariableByteInteger()
        guard var list = buffer.readSlice(length: Int(length)) else {
            throw .malformedPacket("the property length of a \(context.name) is longer than the packet")
        }
        let encoded = list
        var seen: UInt64 = 0
        var hasPaddedIdentifier = false
        while list.readableBytes > 0 {
            let identifierStart = list.readerIndex
            let rawIdentifier = try list.readMQTTVariableByteInteger()
            hasPaddedIdentifier = hasPaddedIdentifier || list.readerIndex - identifierStart > 1
            guard rawIdentifier <= UInt8.max, let identifier = Property.Identifier(rawValue: UInt8(rawIdentifier))
            else {
                throw .malformedPacket("unknown property identifier \(rawIdentifier) in a \(context.name)")
            }
            guard identifier.allowedIn.contains(context) else {
                throw .malformedPacket("property \(identifier) is not allowed in a \(context.name)")
            }
            let bit: UInt64 = 1 << identifier.rawValue
            if seen & bit != 0, !identifier.isRepeatable(in: context) {
                throw .protocolError("property \(identifier) appears more than once in a \(context.name)")
            }
            seen |= bit
            try checkValue(of: identifier, in: &list, context: context)
        }
        if hasPaddedIdentifier {
            // Identifiers are Variable Byte Integers that all fit one byte; a sender may still pad
            // them (§1.5.5 does not require the minimal form). Stored lists use one byte, so that
            // reading them back needs no second decoding path.
            return try Properties(reencodingPadded: encoded)
        }
        return Properties(validatedEncoding: encoded)
    }

    private init(reencodingPadded encoded: ByteBuffer) throws(TernError) {
        self.init()
        var reader = encoded
        while reader.readableBytes > 0 {
            let raw = try reader.readMQTTVariableByteInteger()
            guard let id = Property.Identifier(rawValue: UInt8(truncatingIfNeeded: raw)),
                let property = Self.readValue(of: id, from: &reader)
            else { throw .malformedPacket("a property list could not be read back") }
            try append(property)
        }
    }

    /// Validates one value in place, without materialising strings.
    private static func checkValue(
        of identifier: Property.Identifier,
        in list: inout ByteBuffer,
        context: PropertyContext
    ) throws(TernError) {
        switch identifier.valueType {
        case .byte:
            let value = try list.readMQTTByte("property value")
            let limit: UInt8 = 1  // every byte property is 0 or 1, Maximum QoS included (§3.2.2.3.4)
            if value > limit {
                throw .protocolError("property \(identifier) has value \(value); only 0 or 1 is allowed")
            }
        case .twoByteInteger:
            let value = try list.readMQTTUInt16("property value")
            if value == 0 {
                switch identifier {
                case .receiveMaximum: throw .protocolError("Receive Maximum is 0")
                case .topicAlias: throw TernError(.topicAliasInvalid, "Topic Alias is 0")
                default: break
                }
            }
        case .fourByteInteger:
            let value = try list.readMQTTUInt32("property value")
            if value == 0, identifier == .maximumPacketSize { throw .protocolError("Maximum Packet Size is 0") }
        case .variableByteInteger:
            let value = try list.readMQTTVariableByteInteger()
            if value == 0 { throw .protocolError("Subscription Identifier is 0") }
        case .string:
            let value = try list.readMQTTStringSlice("property string")
            if identifier == .responseTopic {
                do { _ = try TopicName(decodedUTF8: value) } catch {
                    throw .protocolError("Response Topic is not a valid topic name: \(error.reason)")
                }
            }
        case .binary:
            _ = try list.readMQTTBinary("property data")
        case .stringPair:
            _ = try list.readMQTTStringSlice("user property name")
            _ = try list.readMQTTStringSlice("user property value")
        }
    }

    /// Moves past one value of a validated list.
    static func skipValue(of identifier: Property.Identifier, in reader: inout ByteBuffer) -> Bool {
        switch identifier.valueType {
        case .byte: return reader.readInteger(as: UInt8.self) != nil
        case .twoByteInteger: return reader.readInteger(as: UInt16.self) != nil
        case .fourByteInteger: return reader.readInteger(as: UInt32.self) != nil
        case .variableByteInteger: return (try? reader.readMQTTVariableByteInteger()) != nil
        case .string, .binary: return (try? reader.readMQTTBinary("value")) != nil
        case .stringPair:
            return (try? reader.readMQTTBinary("name")) != nil && (try? reader.readMQTTBinary("value")) != nil
        }
    }

    /// Decodes one value of a validated list.
    static func readValue(of identifier: Property.Identifier, from reader: inout ByteBuffer) -> Property? {
        func byte() -> UInt8? { reader.readInteger(as: UInt8.self) }
        func u16() -> UInt16? { reader.readInteger(as: UInt16.self) }
        func u32() -> UInt32? { reader.readInteger(as: UInt32.self) }
        func string() -> String? { (try? reader.readMQTTBinary("value")).map { String(buffer: $0) } }
        func binary() -> ByteBuffer? { try? reader.readMQTTBinary("value") }
        switch identifier {
        case .payloadFormatIndicator: return byte().map { .payloadFormatIndicator(isUTF8: $0 == 1) }
        case .messageExpiryInterval: return u32().map { .messageExpiryInterval($0) }
        case .contentType: return string().map { .contentType($0) }
        case .responseTopic: return string().map { .responseTopic($0) }
        case .correlationData: return binary().map { .correlationData($0) }
        case .subscriptionIdentifier:
            return (try? reader.readMQTTVariableByteInteger()).map { .subscriptionIdentifier($0) }
        case .sessionExpiryInterval: return u32().map { .sessionExpiryInterval($0) }
        case .assignedClientIdentifier: return string().map { .assignedClientIdentifier($0) }
        case .serverKeepAlive: return u16().map { .serverKeepAlive($0) }
        case .authenticationMethod: return string().map { .authenticationMethod($0) }
        case .authenticationData: return binary().map { .authenticationData($0) }
        case .requestProblemInformation: return byte().map { .requestProblemInformation($0 == 1) }
        case .willDelayInterval: return u32().map { .willDelayInterval($0) }
        case .requestResponseInformation: return byte().map { .requestResponseInformation($0 == 1) }
        case .responseInformation: return string().map { .responseInformation($0) }
        case .serverReference: return string().map { .serverReference($0) }
        case .reasonString: return string().map { .reasonString($0) }
        case .receiveMaximum: return u16().map { .receiveMaximum($0) }
        case .topicAliasMaximum: return u16().map { .topicAliasMaximum($0) }
        case .topicAlias: return u16().map { .topicAlias($0) }
        case .maximumQoS: return byte().flatMap { QoS(rawValue: $0) }.map { .maximumQoS($0) }
        case .retainAvailable: return byte().map { .retainAvailable($0 == 1) }
        case .userProperty:
            guard let name = string(), let value = string() else { return nil }
            return .userProperty(name: name, value: value)
        case .maximumPacketSize: return u32().map { .maximumPacketSize($0) }
        case .wildcardSubscriptionAvailable: return byte().map { .wildcardSubscriptionAvailable($0 == 1) }
        case .subscriptionIdentifierAvailable: return byte().map { .subscriptionIdentifierAvailable($0 == 1) }
        case .sharedSubscriptionAvailable: return byte().map { .sharedSubscriptionAvailable($0 == 1) }
        }
    }

    /// Encodes one property.
    static func write(_ property: Property, to buffer: inout ByteBuffer) throws(TernError) {
        buffer.writeInteger(property.identifier.rawValue)
        switch property {
        case .payloadFormatIndicator(let isUTF8): buffer.writeInteger(UInt8(isUTF8 ? 1 : 0))
        case .messageExpiryInterval(let value), .sessionExpiryInterval(let value), .willDelayInterval(let value),
            .maximumPacketSize(let value):
            buffer.writeInteger(value)
        case .contentType(let value), .responseTopic(let value), .assignedClientIdentifier(let value),
            .authenticationMethod(let value), .responseInformation(let value), .serverReference(let value),
            .reasonString(let value):
            try buffer.writeMQTTString(value, "property string")
        case .correlationData(let value), .authenticationData(let value):
            try buffer.writeMQTTBinary(value, "property data")
        case .subscriptionIdentifier(let value):
            guard value >= 1, value <= ByteBuffer.maximumVariableByteInteger else {
                throw TernError(.protocolError, "Subscription Identifier \(value) is outside 1…268,435,455")
            }
            buffer.writeVariableByteInteger(value)
        case .serverKeepAlive(let value), .receiveMaximum(let value), .topicAliasMaximum(let value),
            .topicAlias(let value):
            buffer.writeInteger(value)
        case .requestProblemInformation(let flag), .requestResponseInformation(let flag),
            .retainAvailable(let flag), .wildcardSubscriptionAvailable(let flag),
            .subscriptionIdentifierAvailable(let flag), .sharedSubscriptionAvailable(let flag):
            buffer.writeInteger(UInt8(flag ? 1 : 0))
        case .maximumQoS(let qos): buffer.writeInteger(qos.rawValue)
        case .userProperty(let name, let value):
            try buffer.writeMQTTString(name, "user property name")
            try buffer.writeMQTTString(value, "user property value")
        }
    }
}
