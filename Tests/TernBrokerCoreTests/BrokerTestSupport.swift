import NIOCore
import TernCodec

@testable import TernBrokerCore

let t0 = BrokerInstant(millisecondsSinceEpoch: 1_800_000_000_000)

extension BrokerInstant {
    func plus(seconds: Int64) -> BrokerInstant {
        BrokerInstant(millisecondsSinceEpoch: millisecondsSinceEpoch + seconds * 1000)
    }
}

extension Array where Element == BrokerAction {
    /// The packets sent to `connection`, in order.
    func sent(to connection: ConnectionID) -> [MQTTPacket] {
        compactMap { if case .send(connection, let packet) = $0 { packet } else { nil } }
    }

    func publishes(to connection: ConnectionID) -> [Publish] {
        sent(to: connection).compactMap { if case .publish(let publish) = $0 { publish } else { nil } }
    }

    func closes(_ connection: ConnectionID) -> Bool { contains(.close(connection)) }

    var connack: ConnAck? {
        for action in self { if case .send(_, .connack(let ack)) = action { return ack } }
        return nil
    }
}

func conn(_ n: UInt64) -> ConnectionID { ConnectionID(n) }

func connectPacket(
    _ clientID: String,
    version: ProtocolVersion = .v5,
    cleanStart: Bool = true,
    expiry: UInt32? = nil,
    receiveMaximum: UInt16? = nil,
    maximumPacketSize: UInt32? = nil,
    will: Connect.Will? = nil,
    keepAlive: UInt16 = 60
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
        will: will
    )
}

func publishPacket(
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

func subscribePacket(_ filters: [(String, SubscriptionOptions)], id: UInt16 = 1, identifier: UInt32? = nil) -> Subscribe
{
    var properties = Properties()
    if let identifier { try! properties.append(.subscriptionIdentifier(identifier)) }
    return Subscribe(
        packetIdentifier: id,
        subscriptions: filters.map { Subscribe.Subscription(filter: try! TopicFilter($0.0), options: $0.1) },
        properties: properties
    )
}

func will(_ topic: String, _ payload: String, delay: UInt32? = nil) -> Connect.Will {
    var properties = Properties()
    properties.willDelayInterval = delay
    return Connect.Will(topic: try! TopicName(topic), payload: ByteBuffer(string: payload), properties: properties)
}

extension Publish {
    var text: String { String(buffer: payload) }
}
