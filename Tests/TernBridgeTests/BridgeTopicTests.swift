import TernBridge
import TernCodec
import Testing

/// How a bridge `topic` line maps topics between the two brokers, as Mosquitto's does.
@Suite("Bridge topic mapping")
struct BridgeTopicTests {
    @Test("topic sensors/# out 1 local/ remote/: subscribe local/sensors/#, publish remote/sensors/...")
    func prefixesOut() {
        let topic = BridgeConfiguration.Topic(
            pattern: "sensors/#",
            direction: .out,
            qos: .atLeastOnce,
            localPrefix: "local/",
            remotePrefix: "remote/"
        )
        #expect(topic.localFilter == "local/sensors/#")
        #expect(topic.remoteFilter == "remote/sensors/#")
        #expect(topic.remoteTopic(forLocal: "local/sensors/room-1") == "remote/sensors/room-1")
        #expect(topic.localTopic(forRemote: "remote/sensors/room-1") == "local/sensors/room-1")
    }

    @Test("without prefixes a topic keeps its name both ways")
    func noPrefixes() {
        let topic = BridgeConfiguration.Topic(pattern: "#", direction: .both)
        #expect(topic.localFilter == "#")
        #expect(topic.remoteTopic(forLocal: "a/b") == "a/b")
        #expect(topic.localTopic(forRemote: "a/b") == "a/b")
    }

    @Test("an empty pattern bridges exactly the prefix topic, renamed")
    func emptyPattern() {
        let topic = BridgeConfiguration.Topic(
            pattern: "",
            direction: .in,
            localPrefix: "here/x",
            remotePrefix: "there/y"
        )
        #expect(topic.remoteFilter == "there/y")
        #expect(topic.localTopic(forRemote: "there/y") == "here/x")
    }

    @Test("defaults follow Mosquitto: client ids from host and name, the state topic under $SYS/broker/connection")
    func defaults() {
        let bridge = BridgeConfiguration(name: "cloud", addresses: [.init(host: "a")], hostname: "gateway")
        #expect(bridge.remoteClientID == "gateway.cloud")
        #expect(bridge.localClientID == "local.gateway.cloud")
        #expect(bridge.stateTopic == "$SYS/broker/connection/gateway.cloud/state")
        #expect(bridge.protocolVersion == .v3_1_1)
        #expect(!bridge.cleanSession && bridge.tryPrivate && bridge.notifications)
        #expect(bridge.addresses.first?.port == 1883)
    }
}
