#!/usr/bin/env bash
# The durable store against Mosquitto's persistence on this machine, side by side, same load
# generators. Prints figures and ratios; asserts nothing.
#
#  1. QoS 1, one publisher -> one persistent subscriber (clean session 0), 16-byte payloads:
#     Tern in its default durable mode (acknowledge after fsync) against Mosquitto (which
#     acknowledges from memory and saves every autosave_interval).
#  2. SESSIONS persistent sessions with MESSAGES queued QoS 1 messages of 16 bytes, then a graceful
#     restart: time to first CONNACK, store size on disk, broker memory after start-up, and the
#     drain rate when every session resumes.
#
# Usage: Benchmarks/scripts/store-vs-mosquitto.sh [throughput-messages] [sessions] [queued-messages]
set -euo pipefail
cd "$(dirname "$0")/../.."
count=${1:-100000}
sessions=${2:-1000}
queued=${3:-100000}
source Benchmarks/scripts/common.sh
rss_mb() { awk '/VmRSS/ { printf "%.1f", $2 / 1024 }' "/proc/$1/status"; }

start_mosquitto() {  # port dir
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nuser root\nmax_queued_messages 0\nmax_inflight_messages 1000\n' \
        "$1" "$2" > "$2/mosquitto.conf"
    run_broker "$2/mosquitto.log" mosquitto -c "$2/mosquitto.conf"
}
start_tern() {  # port dir
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\nmax_queued_messages 0\nmax_inflight_messages 1000\n' \
        "$1" "$2" > "$2/tern.conf"
    run_broker "$2/tern.log" "$tern" serve -c "$2/tern.conf"
}
stop() { kill -TERM "$1"; while kill -0 "$1" 2>/dev/null; do sleep 0.05; done; }

echo "mosquitto: $(mosquitto -h 2>&1 | head -1)"
echo "== 1. QoS 1 throughput, persistent subscriber, $count messages"
for broker in mosquitto tern; do
    dir="$work/$broker-throughput"; mkdir -p "$dir"
    port=$([ "$broker" = mosquitto ] && echo 28850 || echo 28851)
    "start_$broker" "$port" "$dir"; wait_for_port "$port"
    line=$("$tern" bench -p "$port" -q 1 -c "$count" --window 1000 --persistent --timeout 300 --label "$broker")
    echo "$line"
    eval "${broker}_rate=$(echo "$line" | rate)"
    stop "$pid"
done
awk -v t="$tern_rate" -v m="$mosquitto_rate" 'BEGIN { printf "QoS 1 persistent ratio tern/mosquitto = %.2f\n", t / m }'

echo "== 2. $sessions persistent sessions, $queued queued QoS 1 messages, graceful restart"
for broker in mosquitto tern; do
    dir="$work/$broker-restart"; mkdir -p "$dir"
    port=$([ "$broker" = mosquitto ] && echo 28852 || echo 28853)
    "start_$broker" "$port" "$dir"; wait_for_port "$port"
    "$tern" bench-store fill -p "$port" --sessions "$sessions" --messages "$queued"
    stop "$pid"
    size=$(du -cb "$dir"/*.db* 2>/dev/null | tail -1 | cut -f1)
    "start_$broker" "$port" "$dir"
    "$tern" bench-store resume -p "$port" --sessions "$sessions" --messages "$queued" --pause 3 &
    resume_pid=$!
    sleep 2; memory=$(rss_mb "$pid")  # loaded, before any session resumes
    wait "$resume_pid"
    echo "$broker: store size $(awk -v b="$size" 'BEGIN { printf "%.1f MB", b / 1e6 }'), memory after start-up ${memory} MB"
    stop "$pid"
done
