import Benchmark
import NIOCore
import TernBrokerCore
import TernCodec

/// The broker's per-message work without sockets: matching a topic against the subscription tree,
/// and one QoS 1 message from a publisher to a subscriber through `BrokerState` (PUBLISH in,
/// PUBACK and the delivery out, the subscriber's PUBACK in). The malloc counts are per message.

let now = BrokerInstant(millisecondsSinceEpoch: 1_700_000_000_000)

func subscribe(_ filter: String, qos: QoS) -> Subscribe {
    Subscribe(packetIdentifier: 1, subscriptions: [.init(filter: try! TopicFilter(filter), options: .init(qos: qos))])
}

/// A state with one publisher (#1) and one subscriber (#2) on `sensors/+/temperature`.
func oneToOne(qos: QoS) -> BrokerState {
    var state = BrokerState(now: now)
    _ = state.connect(ConnectionID(1), Connect(clientIdentifier: "publisher"), now: now)
    _ = state.connect(ConnectionID(2), Connect(clientIdentifier: "subscriber"), now: now)
    _ = state.subscribe(ConnectionID(2), subscribe("sensors/+/temperature", qos: qos), now: now)
    return state
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.throughput, .mallocCountTotal, .wallClock],
        warmupIterations: 1_000,
        scalingFactor: .kilo,
        maxDuration: .seconds(3),
        maxIterations: 1_000_000
    )

    Benchmark("match a topic among 1,000 subscriptions (10 levels of wildcards)") { benchmark in
        var tree = TopicTree()
        for index in 0..<1000 {
            let filter = index % 10 == 0 ? "site/\(index % 7)/+/temperature" : "site/\(index % 7)/device-\(index)/#"
            tree.subscribe(
                try! TopicFilter(filter),
                entry: .init(clientID: "client-\(index)", options: .init(qos: .atLeastOnce), identifier: nil)
            )
        }
        // As the broker matches a topic it has not seen since the subscriptions last changed: the
        // bytes of the PUBLISH, shared groups left whole.
        let topic = ByteBuffer(string: "site/3/device-143/temperature")
        for _ in benchmark.scaledIterations {
            let matches = tree.matchSet(topic)
            blackHole(matches.plain.count + matches.groups.count)
        }
    }

    Benchmark("1 -> 100 delivery, QoS 0, 16 B, through BrokerState (per message)") { benchmark in
        var state = BrokerState(now: now)
        _ = state.connect(ConnectionID(1), Connect(clientIdentifier: "publisher"), now: now)
        for index in 0..<100 {
            let connection = ConnectionID(UInt64(index + 2))
            _ = state.connect(connection, Connect(clientIdentifier: "subscriber-\(index)"), now: now)
            _ = state.subscribe(connection, subscribe("sensors/+/temperature", qos: .atMostOnce), now: now)
        }
        let publish = Publish(
            topic: try! TopicName("sensors/kitchen/temperature"),
            payload: ByteBuffer(repeating: 0x61, count: 16)
        )
        for _ in benchmark.scaledIterations {
            blackHole(state.publish(ConnectionID(1), publish, now: now).count)
        }
    }

    for qos in [QoS.atMostOnce, .atLeastOnce] {
        Benchmark("1 -> 1 delivery, QoS \(qos.rawValue), 16 B, through BrokerState") { benchmark in
            var state = oneToOne(qos: qos)
            let payload = ByteBuffer(repeating: 0x61, count: 16)
            let topic = try! TopicName("sensors/kitchen/temperature")
            var packetIdentifier: UInt16 = 0
            for _ in benchmark.scaledIterations {
                packetIdentifier = packetIdentifier == .max ? 1 : packetIdentifier + 1
                let publish = Publish(
                    topic: topic,
                    payload: payload,
                    qos: qos,
                    packetIdentifier: qos == .atMostOnce ? 0 : packetIdentifier
                )
                let actions = state.publish(ConnectionID(1), publish, now: now)
                blackHole(actions.count)
                if qos == .atLeastOnce {
                    for case .send(ConnectionID(2), .publish(let delivered)) in actions {
                        let ack = PublishAcknowledgement(packetIdentifier: delivered.packetIdentifier)
                        blackHole(state.acknowledge(ConnectionID(2), .puback, ack, now: now).count)
                    }
                }
            }
        }
    }
}
