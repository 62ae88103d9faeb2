#!/usr/bin/env bash
# Order and loss under load, Tern and Mosquitto side by side, with the independent C load
# generator (../shared/tools/mqttbench, which numbers every payload): one publisher, one
# subscriber, 16-byte payloads, QoS 0, 1 and 2, as fast as its window allows, alternating brokers
# round by round. Prints, per broker and QoS, the total out-of-order and lost counts, the median
# rate and broker CPU, and the median ratio Tern / Mosquitto. Asserts nothing.
#
# Usage: Benchmarks/scripts/order-vs-mosquitto.sh [rounds] [seconds] [qos list] [mqttbench options...]
#   default 10 rounds of 3 s at QoS "0 1 2"; for example fan-out to 100 subscribers at QoS 0:
#   Benchmarks/scripts/order-vs-mosquitto.sh 3 5 0 -P 1 -S 100 -L fanout
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-10}
seconds=${2:-3}
qos_list=${3:-0 1 2}
shift $(($# < 3 ? $# : 3))
source Benchmarks/scripts/common.sh
mqttbench=$(build_mqttbench)
mosquitto_port=28850
tern_port=28851
start_both_brokers "$mosquitto_port" "$tern_port"

echo "mosquitto: $(mosquitto -h 2>&1 | head -1)"
results=$work/results.json
for round in $(seq 1 "$rounds"); do
    for qos in $qos_list; do
        for broker in mosquitto tern; do
            port=${broker}_port
            bpid=${broker}_pid
            "$mqttbench" -p "${!port}" -q "$qos" -s 16 -d "$seconds" -b "${!bpid}" --quiet \
                --json "$results" --tag "broker=$broker round=$round" "$@" > /dev/null
        done
    done
done
summarize_runs "$results"
