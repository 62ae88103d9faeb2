import NIOCore
public import TernBrokerCore
public import TernCodec

// Packets and instants for tests that drive `BrokerState` without sockets: the broker-core rules
// and the store rules, which live in different test targets, build their events the same way.

/// The instant every pure broker test starts at.

public let t0 = BrokerInstant(millisecondsSinceEpoch: 1_800_000_000_000)

extension BrokerInstant {
    /// This instant moved on by whole seconds.
    public func plus(seconds: Int64) -> BrokerInstant {
        BrokerInstant(millisecondsSinceEpoch: millisecondsSinceEpoch + seconds * 1000)
    }
}

extension Array where Element == BrokerAction {
    /// The packets sent to `connection`, in order.
    public func sent(to connection: ConnectionID) -> [MQTTPacket] {
        compactMap { if case .send(connection, let packet) = $0 { packet } else { nil } }
    }

    /// The PUBLISH packets sent to `connection`, in order.
    public func publishes(to connection: ConnectionID) -> [Publish] {
        sent(to: connection).compactMap { if case .publish(let publish) = $0 { publish } else { nil } }
    }

    /// Whether the actions close `connection`.
    public func closes(_ connection: ConnectionID) -> Bool { contains(.close(connection)) }

    /// The first CONNACK among the actions.
    public var connack: ConnAck? {
        for action in self { if case .send(_, .connack(let ack)) = action { return ack } }
        return nil
    }
}

/// A connection id for a test.
public func conn(_ n: UInt64) -> ConnectionID { ConnectionID(n) }

/// A CONNECT with the options the rules tests vary.
public func connectPacket(
    _ clientID: String,
    version: ProtocolVersion = .v5,
    cleanStart: Bool = true,
    expiry: UInt32? = nil,
    receiveMaximum: UInt16? = nil,
    maximumPacketSize: UInt32? = nil,
    will: Connect.Will? = nil,
    keepAlive: UInt16 = 60,
    username: String? = nil
) -> Connect {
    var properties = Properties()
    if version == .v5 {
        properties.sessionExpiryInterval = expiry
        properties.receiveMaximum = receiveMaximum
        properties.maximumPacketSize = maximumPacketSize
    }
    return Connect(
        protocolVersion: version,
        clientIdentifier: clientID,
        cleanStart: cleanStart,
        keepAlive: keepAlive,
        properties: properties,
        will: will,
        username: username
    )
}

/// A PUBLISH with a text payload.
public func publishPacket(
    _ topic: String,
    _ payload: String,
    qos: QoS = .atMostOnce,
    id: UInt16 = 0,
    retain: Bool = false,
    properties: Properties = Properties()
) -> Publish {
    Publish(
        topic: try! TopicName(topic),
        payload: ByteBuffer(string: payload),
        qos: qos,
        retain: retain,
        packetIdentifier: id,
        properties: properties
    )
}

/// A SUBSCRIBE for the given filters and options.
public func subscribePacket(_ filters: [(String, SubscriptionOptions)], id: UInt16 = 1, identifier: UInt32? = nil)
    -> Subscribe
{
    var properties = Properties()
    if let identifier { try! properties.append(.subscriptionIdentifier(identifier)) }
    return Subscribe(
        packetIdentifier: id,
        subscriptions: filters.map { Subscribe.Subscription(filter: try! TopicFilter($0.0), options: $0.1) },
        properties: properties
    )
}

/// A will with a text payload and an optional delay.
public func will(_ topic: String, _ payload: String, delay: UInt32? = nil) -> Connect.Will {
    var properties = Properties()
    properties.willDelayInterval = delay
    return Connect.Will(topic: try! TopicName(topic), payload: ByteBuffer(string: payload), properties: properties)
}

/// A broker state at `t0` with a watcher, connection 9, subscribed to `filter` at QoS 0: the
/// client that sees the wills the tests publish.
public func stateWithWatcher(on filter: String) -> BrokerState {
    var state = BrokerState(now: t0)
    _ = state.connect(conn(9), connectPacket("watcher"), now: t0)
    _ = state.subscribe(conn(9), subscribePacket([(filter, SubscriptionOptions())]), now: t0)
    return state
}

extension Publish {
    /// The payload as UTF-8 text.
    public var text: String { String(buffer: payload) }
}
