"""paho-mqtt over transport="websockets" against Tern, plain or TLS.

Usage: paho_websocket.py PORT [CAFILE]
For MQTT 3.1.1 and 5: connect, subscribe at QoS 1, publish a 70,000-byte message (several
WebSocket frames' worth) and a small one, and receive both. Prints one line per check; exits 0
when every check passed.
"""
import sys
import threading

import paho.mqtt.client as mqtt

PORT = int(sys.argv[1])
CAFILE = sys.argv[2] if len(sys.argv) > 2 else None
TIMEOUT = 10


def run(protocol, name):
    received = []
    done = threading.Event()
    subscribed = threading.Event()
    client = mqtt.Client(client_id="paho-ws-" + name, transport="websockets", protocol=protocol)
    if CAFILE:
        client.tls_set(ca_certs=CAFILE)

    def on_subscribe(client, userdata, mid, *rest):
        subscribed.set()

    def on_message(client, userdata, message):
        received.append((message.topic, len(message.payload)))
        if len(received) == 2:
            done.set()

    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect("localhost", PORT, 30)
    client.loop_start()
    client.subscribe("ws/" + name + "/#", qos=1)
    ok = subscribed.wait(TIMEOUT)
    client.publish("ws/" + name + "/big", b"x" * 70000, qos=1)
    client.publish("ws/" + name + "/small", b"hi", qos=0)
    ok = done.wait(TIMEOUT) and ok
    client.disconnect()
    client.loop_stop()
    expected = [("ws/" + name + "/big", 70000), ("ws/" + name + "/small", 2)]
    passed = ok and received == expected
    print(name, "ok" if passed else "FAILED", received)
    return passed


results = [run(mqtt.MQTTv311, "v311"), run(mqtt.MQTTv5, "v5")]
sys.exit(0 if all(results) else 1)
