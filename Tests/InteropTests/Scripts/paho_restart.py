"""paho-mqtt against Tern: a persistent MQTT 5 session survives a broker restart.

Usage: paho_restart.py PORT subscribe
       paho_restart.py PORT resume COUNT
'subscribe' opens the session (expiry 3600 s) and subscribes paho/restart at QoS 1, then leaves.
'resume' comes back with clean start 0, prints 'session_present=...' and one 'message ...' line
per message received, and exits 0 once COUNT messages arrived (1 after a timeout).
"""
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

PORT = int(sys.argv[1])
PHASE = sys.argv[2]
TIMEOUT = 20

received = []
all_arrived = threading.Event()
expected = int(sys.argv[3]) if PHASE == "resume" else 0


def on_message(client, userdata, message):
    received.append(message.payload.decode())
    print("message %s" % message.payload.decode(), flush=True)
    if len(received) >= expected:
        all_arrived.set()


connected = threading.Event()
result = {}


def on_connect(client, userdata, flags, reason_code, properties):
    result["session_present"] = flags["session present"]
    # Printed here, on the network thread that also runs on_message: printed from the main
    # thread it could interleave with a 'message' line that arrives right after CONNACK.
    print("session_present=%s" % bool(result["session_present"]), flush=True)
    connected.set()


client = mqtt.Client(client_id="paho-restart", protocol=mqtt.MQTTv5)
client.on_connect = on_connect
client.on_message = on_message
properties = Properties(PacketTypes.CONNECT)
properties.SessionExpiryInterval = 3600
client.connect("127.0.0.1", PORT, clean_start=(PHASE == "subscribe"), properties=properties)
client.loop_start()
if not connected.wait(TIMEOUT):
    raise SystemExit("no CONNACK")

if PHASE == "subscribe":
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.subscribe("paho/restart", qos=1)
    if not subscribed.wait(TIMEOUT):
        raise SystemExit("no SUBACK")
    client.disconnect()
    client.loop_stop()
    sys.exit(0)

ok = all_arrived.wait(TIMEOUT)
client.disconnect()
client.loop_stop()
sys.exit(0 if ok else 1)
