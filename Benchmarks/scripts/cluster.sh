#!/usr/bin/env bash
# Cross-node QoS 1 through a two-node Tern cluster, next to one node in the same run.
#
#   TERN_BENCH_POSTGRES_URL=postgresql://USER@127.0.0.1:PORT/DB Benchmarks/scripts/cluster.sh [ROUNDS] [SECONDS] [RATE]
#
# Three set-ups, alternated each round, every subscriber persistent (its messages stored):
#   cross   publisher on node 1, subscriber on node 2 (messages go through PostgreSQL)
#   same    publisher and subscriber on node 1 (the cluster's store, no hop between nodes)
#   sqlite  one `tern serve --data DIR` (the SQLite store, no cluster)
# For each: as fast as allowed (tern bench, window 1000), then a fixed RATE for latency; CPU per
# message counts the Tern processes and every PostgreSQL server process (ticks from /proc).
# The C generator (mqttbench) repeats the cross-node throughput run as a second opinion: its
# subscriber sessions are set up on node 2 and drained there while it publishes on node 1.
# Medians over the rounds; every run checks loss and order per publisher.
set -euo pipefail
rounds=${1:-3}; secs=${2:-5}; rate=${3:-1000}
tern=${TERN:-.build/release/tern}
mqttbench=${MQTTBENCH:-/tmp/mqttbench}
url=${TERN_BENCH_POSTGRES_URL:?set TERN_BENCH_POSTGRES_URL to a PostgreSQL server Tern may create a schema in}
schema=bench_$RANDOM$RANDOM
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    psql "${url%%\?*}" -qc "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT
sep='?'; [[ $url == *\?* ]] && sep='&'
cluster="$url${sep}schema=$schema"
$tern serve -p 29101 --cluster-store "$cluster" --cluster-node bench1 > "$work/n1.log" 2>&1 & n1=$!; pids+=($n1)
$tern serve -p 29102 --cluster-store "$cluster" --cluster-node bench2 > "$work/n2.log" 2>&1 & n2=$!; pids+=($n2)
$tern serve -p 29103 --data "$work/sqlite" > "$work/s.log" 2>&1 & s=$!; pids+=($s)
sleep 2

# CPU ticks (utime + stime) of the given processes and of every PostgreSQL server process.
ticks() {
    local total=0 pid
    for pid in "$@" $(pgrep -x postgres || true); do
        [ -r /proc/$pid/stat ] || continue
        total=$((total + $(awk '{print $14 + $15}' /proc/$pid/stat)))
    done
    echo $total
}
hz=$(getconf CLK_TCK)
results="$work/results.jsonl"
run() { # label pub-port sub-port rate -- node pids
    local label=$1 pub=$2 sub=$3 r=$4; shift 5
    local before after
    before=$(ticks "$@")
    $tern bench -p "$pub" --subscriber-port "$sub" -q 1 --persistent -d "$secs" -r "$r" \
        --label "$label" --json "$work/one.json" > /dev/null
    after=$(ticks "$@")
    python3 - "$work/one.json" "$results" "$label" "$r" "$before" "$after" "$hz" <<'PY'
import json, sys
one, results, label, rate, before, after, hz = sys.argv[1:]
run = json.loads(open(one).read().strip().splitlines()[-1])
run.update(setup=label, mode="rate" if rate != "0" else "max",
           cpu_us_per_msg=(int(after) - int(before)) / int(hz) * 1e6 / max(1, run["received"]))
open(results, "a").write(json.dumps(run) + "\n")
PY
    rm -f "$work/one.json"
}
for round in $(seq 1 "$rounds"); do
    for mode in 0 "$rate"; do
        run cross 29101 29102 "$mode" -- $n1 $n2
        run same 29101 29101 "$mode" -- $n1 $n2
        run sqlite 29103 29103 "$mode" -- $s
    done
    # The C generator, cross-node: sessions set up on node 2, drained there while node 1 takes the publishes.
    count=$((secs * 2000))
    $mqttbench -p 29102 -m sub-setup -q 1 --clean-start 0 --session-expiry 3600 --client-prefix mbx$round- --quiet > /dev/null
    sleep 1
    $mqttbench -p 29102 -m sub-drain -q 1 --clean-start 0 --session-expiry 3600 --client-prefix mbx$round- \
        --expect "$count" --drain-timeout 10 --quiet --json "$work/drain.json" --tag "round=$round" > /dev/null &
    drain=$!
    $mqttbench -p 29101 -m pub -q 1 -n "$count" --client-prefix mbx$round- --quiet > /dev/null
    wait $drain || true
done
python3 - "$results" "$work/drain.json" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
print("| set-up | mode | msg/s | p50 us | p99 us | CPU us/msg (Tern + PostgreSQL) | lost | dup/ooo |")
print("|---|---|---:|---:|---:|---:|---:|---:|")
for setup in ["cross", "same", "sqlite"]:
    for mode in ["max", "rate"]:
        g = [r for r in runs if r["setup"] == setup and r["mode"] == mode]
        if not g: continue
        med = lambda key: statistics.median(float(r[key]) for r in g)
        print(f"| {setup} | {mode} | {med('recv_rate'):.0f} | {med('lat_p50_us'):.0f} | {med('lat_p99_us'):.0f} | "
              f"{med('cpu_us_per_msg'):.1f} | {sum(int(r['lost']) for r in g)} | {sum(int(r['dup_or_ooo']) for r in g)} |")
try:
    drains = [json.loads(line) for line in open(sys.argv[2])]
    print()
    for d in drains:
        print(f"mqttbench cross-node drain: received {d.get('received')} of {d.get('expected', '?')}, "
              f"{float(d.get('recv_rate', 0)):.0f} msg/s, p50 {d.get('lat_p50_us')} us, p99 {d.get('lat_p99_us')} us, "
              f"lost {d.get('lost')}, dup/ooo {d.get('dup_or_ooo')}")
except FileNotFoundError:
    print("mqttbench: no drain result")
PY
