import Foundation
import TernBroker
import TernBrokerTesting
import Testing

/// paho-mqtt for Python against Tern.
@Suite("Interop: paho-mqtt (Python)", .enabled(if: Peers.pahoAvailable, "python3-paho-mqtt is not installed"))
struct PahoTests {
    @Test("§4.1 a persistent MQTT 5 session: session present on reconnect, and the message sent while away arrives")
    func persistentSession() async throws {
        try await withTestBroker { _, port in
            let output = try await Peers.run(
                "/usr/bin/python3",
                [Peers.script("paho_session.py"), "\(port)"],
                timeout: 30
            )
            #expect(output.status == 0, "\(output.stdout)\(output.stderr)")
            #expect(
                output.stdout.contains("first connect session_present=0")
                    || output.stdout.contains("first connect session_present=False")
            )
            #expect(output.stdout.contains("received=['while-away']"))
        }
    }

    @Test("MQTT 3.1.1 publish and subscribe at QoS 2")
    func legacyQoS2() async throws {
        try await withTestBroker { _, port in
            let script = """
                import sys, threading
                import paho.mqtt.client as mqtt
                got = threading.Event(); data = []
                sub = mqtt.Client(client_id="s311", protocol=mqtt.MQTTv311)
                def on_message(c, u, m):
                    data.append((m.topic, m.payload.decode(), m.qos)); got.set()
                sub.on_message = on_message
                ready = threading.Event()
                sub.on_subscribe = lambda *a: ready.set()
                sub.connect("127.0.0.1", \(port)); sub.loop_start(); sub.subscribe("q2/#", qos=2)
                assert ready.wait(10)
                pub = mqtt.Client(client_id="p311", protocol=mqtt.MQTTv311)
                pub.connect("127.0.0.1", \(port)); pub.loop_start()
                pub.publish("q2/x", b"exact", qos=2).wait_for_publish(10)
                ok = got.wait(10)
                print(data)
                sys.exit(0 if ok and data == [("q2/x", "exact", 2)] else 1)
                """
            let output = try await Peers.run("/usr/bin/python3", ["-c", script], timeout: 30)
            #expect(output.status == 0, "\(output.stdout)\(output.stderr)")
        }
    }
}
