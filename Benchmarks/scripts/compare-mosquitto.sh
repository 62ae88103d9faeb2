#!/usr/bin/env bash
# Tern against Mosquitto on this machine, side by side: one publisher, one subscriber, 16-byte
# payloads, QoS 0 and QoS 1, through each broker in turn with the same load generator
# (`tern bench`). Prints each rate and the ratio Tern / Mosquitto. Asserts nothing.
#
# Usage: Benchmarks/scripts/compare-mosquitto.sh [messages]     (default 200000)
set -euo pipefail
cd "$(dirname "$0")/../.."
count=${1:-200000}
source Benchmarks/scripts/common.sh
mosquitto_port=28840
tern_port=28841
printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$mosquitto_port" > "$work/mosquitto.conf"
run_broker "$work/mosquitto.log" mosquitto -c "$work/mosquitto.conf"
run_broker "$work/tern.log" "$tern" serve -p "$tern_port"
wait_for_port 28840; wait_for_port 28841

echo "mosquitto: $(mosquitto -h 2>&1 | head -1)"
for qos in 0 1; do
    # At QoS 0 a large window measures throughput rather than round-trip latency; at QoS 1 both
    # brokers' in-flight window (20, Mosquitto's default) is the limit anyway.
    window=$([ "$qos" = 0 ] && echo 10000 || echo 1000)
    m=$("$tern" bench -p "$mosquitto_port" -q "$qos" -c "$count" --window "$window" --timeout 120 --label mosquitto)
    t=$("$tern" bench -p "$tern_port" -q "$qos" -c "$count" --window "$window" --timeout 120 --label tern)
    echo "$m"
    echo "$t"
    awk -v t="$(echo "$t" | rate)" -v m="$(echo "$m" | rate)" -v q="$qos" \
        'BEGIN { printf "QoS %s ratio tern/mosquitto = %.2f\n", q, t / m }'
done
