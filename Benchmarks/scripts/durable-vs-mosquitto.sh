#!/usr/bin/env bash
# The durable store against Mosquitto's persistence, with the independent C load generator
# (../shared/tools/mqttbench, which numbers every payload), alternating brokers round by round.
# Prints figures and ratios; asserts nothing.
#
#  1. Durable QoS 1, 16-byte payloads, persistent subscriber (clean start 0, expiry 3600), for 1
#     publisher (pairs) and 10 and 100 publishers into one subscriber (fan-in): Tern in its default
#     `commit` mode, Mosquitto with `persistence true` and with it off. Order and loss per
#     publisher, median rate, broker CPU.
#  2. SESSIONS persistent sessions with QUEUED 16-byte QoS 1 messages spread over them, then a
#     graceful restart: publish rate into the offline queues, memory before and after the restart,
#     shutdown time, store size, time to the first CONNACK of a new client, drain rate when every
#     session resumes.
#
# Usage: Benchmarks/scripts/durable-vs-mosquitto.sh [rounds] [seconds] [sessions] [queued]
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
seconds=${2:-5}
sessions=${3:-1000}
queued=${4:-100000}
source Benchmarks/scripts/common.sh
mqttbench=$(build_mqttbench)
rss_kb() { awk '/VmRSS/ { print $2 }' "/proc/$1/status"; }
stop() { kill -TERM "$1"; while kill -0 "$1" 2>/dev/null; do sleep 0.01; done; }
configure() {  # broker dir port: mosquitto-persist, mosquitto-memory or tern
    local persistence="persistence true\npersistence_location $2/\n"
    case $1 in
        mosquitto-memory) persistence="" ;;
    esac
    local user=""
    [ "$1" = tern ] || user="user root\n"
    printf "listener %s 127.0.0.1\nallow_anonymous true\n${persistence}${user}max_queued_messages 0\n" "$3" > "$2/broker.conf"
}
start() {  # broker dir
    if [ "$1" = tern ]; then
        run_broker "$2/broker.log" "$tern" serve -c "$2/broker.conf"
    else
        run_broker "$2/broker.log" mosquitto -c "$2/broker.conf"
    fi
}

echo "mosquitto: $(mosquitto -h 2>&1 | head -1)"
echo "== 1. durable QoS 1 into a persistent subscriber, ${seconds} s per run, $rounds rounds"
results=$work/durable.json
port=28860
for round in $(seq 1 "$rounds"); do
    for shape in "1 pairs" "10 fanin" "100 fanin"; do
        read -r publishers layout <<< "$shape"
        for broker in mosquitto-persist mosquitto-memory tern; do
            dir="$work/$broker-$round-$publishers"; mkdir -p "$dir"
            port=$((port + 1))
            configure "$broker" "$dir" "$port"
            start "$broker" "$dir"
            wait_for_port "$port"
            "$mqttbench" -p "$port" -q 1 -s 16 -d "$seconds" --clean-start 0 --session-expiry 3600 \
                -P "$publishers" -S 1 -L "$layout" -b "$pid" --quiet --json "$results" \
                --tag "broker=$broker publishers=$publishers" > /dev/null
            stop "$pid"
        done
    done
done
python3 - "$results" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
groups = {}
for run in runs:
    groups.setdefault((int(run["publishers"]), run["broker"]), []).append(run)
print(f"{'publishers':>10} {'broker':<18} {'runs':>4} {'ooo':>5} {'lost':>5} {'median msg/s':>13} {'CPU %':>6}")
for publishers in sorted({k[0] for k in groups}):
    medians = {}
    for broker in ("mosquitto-persist", "mosquitto-memory", "tern"):
        g = groups.get((publishers, broker), [])
        if not g:
            continue
        medians[broker] = statistics.median(r["recv_rate"] for r in g)
        print(f"{publishers:>10} {broker:<18} {len(g):>4} {sum(r['dup_or_ooo'] for r in g):>5} {sum(r['lost'] for r in g):>5} "
              f"{medians[broker]:>13.0f} {statistics.median(r['broker_cpu_pct'] for r in g):>6.0f}")
    if "tern" in medians:
        print(f"{'':>10} tern / persist = {medians['tern'] / medians['mosquitto-persist']:.2f}, "
              f"tern / memory = {medians['tern'] / medians['mosquitto-memory']:.2f}")
PY

echo "== 2. $sessions persistent sessions, $queued queued QoS 1 messages, graceful restart, $rounds rounds"
common=(-q 1 -s 16 --clean-start 0 --session-expiry 3600 --client-prefix rs- --topic-prefix rt -L spread --quiet)
for round in $(seq 1 "$rounds"); do
    for broker in mosquitto-persist tern; do
        dir="$work/$broker-restart-$round"; mkdir -p "$dir"
        port=$((port + 1))
        configure "$broker" "$dir" "$port"
        start "$broker" "$dir"
        wait_for_port "$port"
        "$mqttbench" -p "$port" "${common[@]}" -m sub-setup -S "$sessions" > /dev/null
        fill=$("$mqttbench" -p "$port" "${common[@]}" -m pub -P 1 -S "$sessions" -n "$queued" | grep -oE '[0-9.]+ msg/s' | head -1)
        before=$(rss_kb "$pid")
        started=$(date +%s%N); stop "$pid"; stopped=$(date +%s%N)
        size=$(du -cb "$dir"/*.db* 2>/dev/null | tail -1 | cut -f1)
        start "$broker" "$dir"
        first=$("$mqttbench" -p "$port" -m probe --client-prefix probe- --timeout 60 | grep -oE '[0-9.]+ ms' | head -1)
        sleep 1
        after=$(rss_kb "$pid")
        drain=$("$mqttbench" -p "$port" "${common[@]}" -m sub-drain -S "$sessions" --expect "$queued" | grep received | head -1)
        echo "$broker: fill $fill | RSS before ${before} kB | shutdown $(((stopped - started) / 1000000)) ms |" \
            "store $size B | first CONNACK $first | RSS after ${after} kB | drain:${drain#*expected}"
        stop "$pid"
    done
done
