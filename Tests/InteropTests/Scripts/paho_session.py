"""paho-mqtt against Tern: a persistent MQTT 5 session survives a disconnect.

Usage: paho_session.py PORT
Prints one line per check; exits 0 when every check passed.
"""
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

PORT = int(sys.argv[1])
TIMEOUT = 10


def connect(client_id, clean_start, expiry):
    done = threading.Event()
    result = {}
    client = mqtt.Client(client_id=client_id, protocol=mqtt.MQTTv5)

    def on_connect(client, userdata, flags, reason_code, properties):
        result["session_present"] = flags["session present"]
        result["rc"] = reason_code
        done.set()

    client.on_connect = on_connect
    properties = Properties(PacketTypes.CONNECT)
    properties.SessionExpiryInterval = expiry
    client.connect("127.0.0.1", PORT, clean_start=clean_start, properties=properties)
    client.loop_start()
    if not done.wait(TIMEOUT):
        raise SystemExit("no CONNACK")
    return client, result


# 1. A persistent session subscribes, then leaves.
client, result = connect("paho-durable", True, 300)
print("first connect session_present=%s" % result["session_present"])
subscribed = threading.Event()
client.on_subscribe = lambda *args: subscribed.set()
client.subscribe("paho/jobs", qos=1)
if not subscribed.wait(TIMEOUT):
    raise SystemExit("no SUBACK")
client.disconnect()
client.loop_stop()

# 2. Someone publishes while it is away.
publisher, _ = connect("paho-publisher", True, 0)
info = publisher.publish("paho/jobs", b"while-away", qos=1)
info.wait_for_publish(TIMEOUT)
publisher.disconnect()
publisher.loop_stop()

# 3. It comes back: the session is present and the message is delivered.
received = []
arrived = threading.Event()


def on_message(client, userdata, message):
    received.append(message.payload.decode())
    arrived.set()


client = mqtt.Client(client_id="paho-durable", protocol=mqtt.MQTTv5)
client.on_message = on_message
back = threading.Event()
state = {}


def on_connect(client, userdata, flags, reason_code, properties):
    state["session_present"] = flags["session present"]
    back.set()


client.on_connect = on_connect
properties = Properties(PacketTypes.CONNECT)
properties.SessionExpiryInterval = 300
client.connect("127.0.0.1", PORT, clean_start=False, properties=properties)
client.loop_start()
ok = back.wait(TIMEOUT) and arrived.wait(TIMEOUT)
client.disconnect()
client.loop_stop()
print("reconnect session_present=%s received=%s" % (state.get("session_present"), received))
sys.exit(0 if ok and state.get("session_present") and received == ["while-away"] else 1)
