#!/usr/bin/env bash
# A subscriber that stops reading, Tern and Mosquitto side by side: it subscribes, reads its
# SUBACK, and never reads again, while the independent C load generator (../shared/tools/mqttbench)
# runs a publisher and a healthy subscriber of the same topics at full speed (QoS, 1 KiB payloads).
# Prints the broker's RSS before, at peak and after the stalled client left, and what the healthy
# subscriber got (order, loss). Asserts nothing.
#
# Usage: Benchmarks/scripts/stalled-vs-mosquitto.sh [seconds] [qos]     (default 8 s, QoS 0)
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${1:-8}
qos=${2:-0}
source Benchmarks/scripts/common.sh
mqttbench=$(build_mqttbench)
mosquitto_port=28860
tern_port=28861
start_both_brokers "$mosquitto_port" "$tern_port"

# The stalled client: CONNECT (MQTT 5), SUBSCRIBE mqttbench/#, read CONNACK and SUBACK, then
# nothing until it is told to stop (SIGTERM) or its time is up.
cat > "$work/stalled.py" <<'PY'
import signal, socket, sys, time
port, qos, limit = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
s = socket.create_connection(("127.0.0.1", port))
client = b"stalled"
connect = b"\x00\x04MQTT\x05\x02\x00\x3c\x00" + len(client).to_bytes(2, "big") + client
s.sendall(b"\x10" + bytes([len(connect)]) + connect)
topic = b"mqttbench/#"
subscribe = b"\x00\x01\x00" + len(topic).to_bytes(2, "big") + topic + bytes([qos])
s.sendall(b"\x82" + bytes([len(subscribe)]) + subscribe)
got = b""
while b"\x90" not in got:  # SUBACK's first byte; CONNACK and SUBACK are tiny
    got += s.recv(1)
print("subscribed", flush=True)
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
time.sleep(limit)
PY

rss() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
printf '%-10s %8s %10s %9s %9s %10s %6s %6s\n' broker msg/s "RSS before" "peak" "after" "received" ooo lost
for broker in mosquitto tern; do
    port=${broker}_port
    bpid=${broker}_pid
    python3 "$work/stalled.py" "${!port}" "$qos" $((seconds + 30)) > "$work/stalled.out" &
    stalled=$!
    pids+=("$stalled")
    for _ in $(seq 1 200); do grep -q subscribed "$work/stalled.out" && break; sleep 0.05; done
    before=$(rss "${!bpid}")
    "$mqttbench" -p "${!port}" -q "$qos" -s 1024 -d "$seconds" -b "${!bpid}" --quiet --json "$work/$broker.json" > /dev/null
    kill "$stalled"
    wait "$stalled" 2>/dev/null || true
    # Let the broker notice the close and free what it held, at most 5 s.
    after=$(rss "${!bpid}")
    for _ in $(seq 1 50); do sleep 0.1; after=$(rss "${!bpid}"); [ "$after" -lt $((before + 20000)) ] && break; done
    python3 - "$work/$broker.json" "$broker" "$before" "$after" <<'PY'
import json, sys
r = json.loads(open(sys.argv[1]).readline())
print(f"{sys.argv[2]:<10} {r['recv_rate']:>8.0f} {int(sys.argv[3]) / 1024:>8.1f}MB {r['rss_peak_kb'] / 1024:>7.1f}MB "
      f"{int(sys.argv[4]) / 1024:>7.1f}MB {r['received']:>10} {r['dup_or_ooo']:>6} {r['lost']:>6}")
PY
done
