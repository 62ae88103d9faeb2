public import NIOCore

/// CONNECT: the first packet a client sends (MQTT 5.0 §3.1, MQTT 3.1.1 §3.1).
public struct Connect: Sendable, Hashable {
    /// The protocol level, which fixes the wire format of the whole connection.
    public var protocolVersion: ProtocolVersion
    /// The client identifier; empty asks the server to assign one.
    public var clientIdentifier: String
    /// Clean Start (5.0) or Clean Session (3.1.1).
    public var cleanStart: Bool
    /// The keep alive in seconds; 0 turns it off.
    public var keepAlive: UInt16
    /// CONNECT properties (MQTT 5 only).
    public var properties: Properties
    /// The will message, if the client registers one.
    public var will: Will?
    /// The user name, if any.
    public var username: String?
    /// The password, if any. Binary Data, not a string.
    public var password: ByteBuffer?
    /// The client is a bridge from another broker, and says so the way Mosquitto's bridges do
    /// with `try_private true`: the high bit of a 3.1/3.1.1 protocol level (0x83, 0x84). A broker
    /// that knows it sends a bridge none of the messages that bridge published, so that a topic
    /// bridged both ways does not loop. MQTT 5 bridges use No Local instead; the bit is not sent.
    public var isBridge: Bool = false

    public init(
        protocolVersion: ProtocolVersion = .v5,
        clientIdentifier: String,
        cleanStart: Bool = true,
        keepAlive: UInt16 = 60,
        properties: Properties = Properties(),
        will: Will? = nil,
        username: String? = nil,
        password: ByteBuffer? = nil
    ) {
        self.protocolVersion = protocolVersion
        self.clientIdentifier = clientIdentifier
        self.cleanStart = cleanStart
        self.keepAlive = keepAlive
        self.properties = properties
        self.will = will
        self.username = username
        self.password = password
    }

    /// A will message, published by the server when the connection ends without a clean DISCONNECT.
    public struct Will: Sendable, Hashable {
        public var topic: TopicName
        public var payload: ByteBuffer
        public var qos: QoS
        public var retain: Bool
        /// Will properties (MQTT 5 only): delay, expiry, content type and so on.
        public var properties: Properties

        public init(
            topic: TopicName,
            payload: ByteBuffer,
            qos: QoS = .atMostOnce,
            retain: Bool = false,
            properties: Properties = Properties()
        ) {
            self.topic = topic
            self.payload = payload
            self.qos = qos
            self.retain = retain
            self.properties = properties
        }
    }
}

extension Connect {
    private enum Flag {
        static let reserved: UInt8 = 0x01
        static let cleanStart: UInt8 = 0x02
        static let will: UInt8 = 0x04
        static let willQoSShift: UInt8 = 3
        static let willRetain: UInt8 = 0x20
        static let password: UInt8 = 0x40
        static let username: UInt8 = 0x80
    }

    static func read(from body: inout ByteBuffer) throws(TernError) -> Connect {
        let name = try body.readMQTTBinary("protocol name")
        let rawLevel = try body.readMQTTByte("protocol level")
        let bridgeBit: UInt8 = 0x80
        // Only 3.1 and 3.1.1 carry the bridge bit; 0x85 stays an unknown level.
        let isBridge = rawLevel & bridgeBit != 0 && rawLevel & ~bridgeBit != ProtocolVersion.v5.rawValue
        let level = isBridge ? rawLevel & ~bridgeBit : rawLevel
        guard let version = ProtocolVersion(rawValue: level) else {
            throw TernError(.unsupportedProtocolVersion, "protocol level \(level) is not 3, 4 or 5")
        }
        guard name == ByteBuffer(string: version.protocolName) else {
            throw TernError(
                .unsupportedProtocolVersion,
                "protocol name '\(String(buffer: name))' does not match protocol level \(level)"
            )
        }
        let flags = try body.readMQTTByte("connect flags")
        // §3.1.2.3 [MQTT-3.1.2-3]: the reserved flag is zero.
        guard flags & Flag.reserved == 0 else { throw .malformedPacket("the reserved CONNECT flag is set") }
        let hasWill = flags & Flag.will != 0
        let willQoSBits = (flags >> Flag.willQoSShift) & 0b11
        let willRetain = flags & Flag.willRetain != 0
        guard let willQoS = QoS(rawValue: willQoSBits) else {
            throw .malformedPacket("the will QoS in CONNECT is 3")
        }
        if !hasWill, willQoSBits != 0 || willRetain {
            // §3.1.2.6 [MQTT-3.1.2-11], §3.1.2.7 [MQTT-3.1.2-13]
            throw .malformedPacket("CONNECT sets will QoS or will retain without a will")
        }
        let hasUsername = flags & Flag.username != 0
        let hasPassword = flags & Flag.password != 0
        if version != .v5, hasPassword, !hasUsername {
            // MQTT 3.1.1 §3.1.2.9 [MQTT-3.1.2-22]; MQTT 5 allows a password alone.
            throw .malformedPacket("CONNECT has a password without a user name")
        }
        let keepAlive = try body.readMQTTUInt16("keep alive")
        var properties = Properties()
        if version.hasProperties {
            properties = try Properties.read(from: &body, context: .connect)
            if properties.contains(.authenticationData), !properties.contains(.authenticationMethod) {
                throw .protocolError("CONNECT has Authentication Data without an Authentication Method")
            }
        }
        let clientIdentifier = try body.readMQTTString("client identifier")
        var will: Will?
        if hasWill {
            var willProperties = Properties()
            if version.hasProperties {
                willProperties = try Properties.read(from: &body, context: .will)
            }
            let topic = try TopicName(decodedUTF8: body.readMQTTStringSlice("will topic"))
            let payload = try body.readMQTTBinary("will payload")
            will = Will(topic: topic, payload: payload, qos: willQoS, retain: willRetain, properties: willProperties)
        }
        let username = hasUsername ? try body.readMQTTString("user name") : nil
        let password = hasPassword ? try body.readMQTTBinary("password") : nil
        try body.expectFullyRead(.connect)
        var connect = Connect(
            protocolVersion: version,
            clientIdentifier: clientIdentifier,
            cleanStart: flags & Flag.cleanStart != 0,
            keepAlive: keepAlive,
            properties: properties,
            will: will,
            username: username,
            password: password
        )
        connect.isBridge = isBridge
        return connect
    }

    func bodyLength() -> Int {
        var length = protocolVersion.protocolName.mqttEncodedLength + 1 + 1 + 2
        let v5 = protocolVersion.hasProperties
        if v5 { length += properties.encodedLength }
        length += clientIdentifier.mqttEncodedLength
        if let will {
            if v5 { length += will.properties.encodedLength }
            length += 2 + will.topic.utf8.readableBytes + 2 + will.payload.readableBytes
        }
        if let username { length += username.mqttEncodedLength }
        if let password { length += 2 + password.readableBytes }
        return length
    }

    func writeBody(to buffer: inout ByteBuffer) throws(TernError) {
        try buffer.writeMQTTString(protocolVersion.protocolName, "protocol name")
        let bridgeBit: UInt8 = isBridge && !protocolVersion.hasProperties ? 0x80 : 0
        buffer.writeInteger(protocolVersion.rawValue | bridgeBit)
        var flags: UInt8 = 0
        if cleanStart { flags |= Flag.cleanStart }
        if let will {
            flags |= Flag.will | (will.qos.rawValue << Flag.willQoSShift)
            if will.retain { flags |= Flag.willRetain }
        }
        if username != nil { flags |= Flag.username }
        if password != nil { flags |= Flag.password }
        buffer.writeInteger(flags)
        buffer.writeInteger(keepAlive)
        let v5 = protocolVersion.hasProperties
        if v5 { properties.write(to: &buffer) }
        try buffer.writeMQTTString(clientIdentifier, "client identifier")
        if let will {
            if v5 { will.properties.write(to: &buffer) }
            buffer.writeMQTTValidatedString(will.topic.utf8)
            try buffer.writeMQTTBinary(will.payload, "will payload")
        }
        if let username { try buffer.writeMQTTString(username, "user name") }
        if let password { try buffer.writeMQTTBinary(password, "password") }
    }
}
