#!/usr/bin/env bash
# Tern against Mosquitto, side by side on this machine, in the scenarios of Benchmarks/RESULTS.md:
# one-to-one at QoS 0/1/2, 1 KiB payloads, fan-in 100 -> 1, fan-out 1 -> 100, latency at fixed
# rates, idle connections and idle memory. Each round starts both brokers afresh with the same
# configuration and runs every scenario against each in turn, with the independent C generator
# (../shared/tools/mqttbench); `tern bench` repeats the one-to-one, fan-in and 5k msg/s rows as a
# cross-check. Writes Benchmarks/RESULTS.md (medians over the rounds, ratios Tern / Mosquitto)
# and keeps every run's JSON line in Benchmarks/RESULTS.jsonl. Prints figures; asserts nothing.
#
# Usage: Benchmarks/scripts/compare.sh [rounds] [seconds per run] [tern serve options...]
#        (default 3 rounds of 4 s; e.g. `compare.sh 3 4 --threads 1`). RESULTS=FILE.md writes the
#        table elsewhere (the JSON lines go beside it, as FILE.jsonl).
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds=${1:-3}
seconds=${2:-4}
shift $(( $# > 2 ? 2 : $# ))
tern_options=("$@")
output=${RESULTS:-Benchmarks/RESULTS.md}
source Benchmarks/scripts/common.sh
mqttbench=$(build_mqttbench)
results=$work/results.jsonl
: > "$results"

# name|generator arguments (mqttbench; "-d SECONDS" is added to the throughput and latency rows)
scenarios=(
    "QoS 0, 1 -> 1, 16 B|-q 0 -s 16"
    "QoS 1, 1 -> 1, 16 B|-q 1 -s 16"
    "QoS 1, 1 -> 1, 16 B, 200 in flight|-q 1 -s 16 --inflight 200"
    "QoS 2, 1 -> 1, 16 B|-q 2 -s 16"
    "QoS 1, 1 -> 1, 1 KiB|-q 1 -s 1024"
    "fan-in 100 -> 1, QoS 1|-q 1 -P 100 -S 1 -L fanin"
    "fan-out 1 -> 100, QoS 0|-q 0 -P 1 -S 100 -L fanout"
    "fan-out 1 -> 100, QoS 1|-q 1 -P 1 -S 100 -L fanout"
    "QoS 1 at 5k msg/s|-q 1 -r 5000"
    "QoS 1 at 20k msg/s|-q 1 -r 20000"
    "fan-out 1 -> 100, QoS 1, at 1k msg/s|-q 1 -P 1 -S 100 -L fanout -r 1000"
)
# The rows `tern bench` repeats: name|tern bench arguments
crosschecks=(
    "QoS 0, 1 -> 1, 16 B|-q 0 --payload 16"
    "QoS 1, 1 -> 1, 16 B|-q 1 --payload 16"
    "QoS 1, 1 -> 1, 16 B, 200 in flight|-q 1 --payload 16 --inflight 200"
    "fan-in 100 -> 1, QoS 1|-q 1 -P 100 -S 1 --layout fanin"
    "QoS 1 at 5k msg/s|-q 1 --rate 5000"
)

mosquitto_port=28860
tern_port=28861
for round in $(seq 1 "$rounds"); do
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n' "$mosquitto_port" \
        > "$work/mosquitto.conf"
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n' "$tern_port" > "$work/tern.conf"
    run_broker "$work/mosquitto.log" mosquitto -c "$work/mosquitto.conf"
    mosquitto_pid=$pid
    run_broker "$work/tern.log" "$tern" serve -c "$work/tern.conf" "${tern_options[@]}"
    tern_pid=$pid
    wait_for_port "$mosquitto_port"
    wait_for_port "$tern_port"
    sleep 1  # settle before reading idle memory: nothing to wait for, the brokers are idle
    for broker in mosquitto tern; do
        pid_var=${broker}_pid
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/${!pid_var}/status")
        echo "{\"scenario\": \"idle RSS\", \"broker\": \"$broker\", \"round\": $round, \"rss_kb\": $rss}" >> "$results"
    done
    # Idle connections first, while both brokers are fresh: the memory figure is a difference.
    for broker in mosquitto tern; do
        port_var=${broker}_port
        pid_var=${broker}_pid
        "$mqttbench" -p "${!port_var}" -m conn -c 10000 --hold 1 -b "${!pid_var}" --quiet \
            --json "$results" --tag "scenario=10k_idle_connections broker=$broker round=$round tool=mqttbench" \
            > /dev/null
    done
    for entry in "${scenarios[@]}"; do
        name=${entry%%|*}
        read -ra arguments <<< "${entry#*|}"
        for broker in mosquitto tern; do
            port_var=${broker}_port
            pid_var=${broker}_pid
            "$mqttbench" -p "${!port_var}" "${arguments[@]}" -d "$seconds" -b "${!pid_var}" --quiet --json "$results" \
                --tag "scenario=${name// /_} broker=$broker round=$round tool=mqttbench" > /dev/null
        done
        echo "round $round: $name"
    done
    for entry in "${crosschecks[@]}"; do
        name=${entry%%|*}
        read -ra arguments <<< "${entry#*|}"
        for broker in mosquitto tern; do
            port_var=${broker}_port
            pid_var=${broker}_pid
            "$tern" bench -p "${!port_var}" "${arguments[@]}" -d "$seconds" -b "${!pid_var}" --label "$broker" \
                --json "$work/bench.jsonl" > /dev/null
            # tern bench has no tags: the scenario and round are added here.
            tail -1 "$work/bench.jsonl" | sed -E "s#^\{#{\"scenario\": \"${name// /_}\", \"round\": $round, #" \
                >> "$results"
        done
        echo "round $round: $name (tern bench)"
    done
    kill -9 "$mosquitto_pid" "$tern_pid" 2>/dev/null || true
done

cp "$results" "${output%.md}.jsonl"
python3 - "$results" "$rounds" "$seconds" "${tern_options[*]:-}" "${RESULTS:-}" > "$output" <<'PY'
import json, platform, statistics, subprocess, sys, datetime
runs = [json.loads(line) for line in open(sys.argv[1])]
rounds, seconds, options, output = sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
def pick(scenario, broker, tool="mqttbench"):
    return [r for r in runs if r.get("scenario") == scenario and r.get("broker") == broker and r.get("tool") == tool]
def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")
cpu_model = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mosquitto = subprocess.run(["mosquitto", "-h"], capture_output=True, text=True).stdout.splitlines()[0]
swift = subprocess.run(["swift", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
command = (f"RESULTS={output} " if output else "") + "Benchmarks/scripts/compare.sh " + " ".join([rounds, seconds] + ([options] if options else []))
print("# Tern and Mosquitto side by side\n")
print(f"Measured {datetime.date.today().isoformat()} on {platform.node() or 'this machine'}: {subprocess.run(['nproc'], capture_output=True, text=True).stdout.strip()} cores ({cpu_model}), Linux {platform.release()}.")
print(f"{mosquitto}; {swift}; `tern serve {options}`.".replace("`tern serve `", "`tern serve` with its defaults"))
print(f"\nCommand: `{command}`. Each round starts both brokers afresh (`max_queued_messages 1000000`, anonymous), then runs each")
print(f"scenario against Mosquitto and then Tern for {seconds} s with the independent C generator (`../shared/tools/mqttbench`).")
print(f"Figures are medians over {rounds} rounds; ratios are Tern / Mosquitto from the same rounds. \"CPU/msg\" is broker CPU time per")
print("delivered message. Latency is quoted only from fixed-rate rows; elsewhere it is queueing delay. \"ooo/lost\" sums the")
print("out-of-order (or duplicate) and lost deliveries over every run: at QoS 1/2 both must be 0.\n")
print("| scenario | Mosquitto msg/s | Tern msg/s | Tern / Mosquitto | CPU/msg Mosquitto | CPU/msg Tern | p50 / p99 µs Mosquitto | p50 / p99 µs Tern | ooo/lost Mosquitto | ooo/lost Tern |")
print("|---|---|---|---|---|---|---|---|---|---|")
order = []
for r in runs:
    if r.get("tool") == "mqttbench" and "recv_rate" in r and r["scenario"] not in order:
        order.append(r["scenario"])
def cpu_per_msg(group):
    return med([r["broker_cpu_pct"] / 100 * r["wall_s"] / r["received"] * 1e6 if r.get("received") else None for r in group])
for scenario in order:
    m, t = pick(scenario, "mosquitto"), pick(scenario, "tern")
    fixed = m and m[0].get("rate_target")
    rm, rt = med([r["recv_rate"] for r in m]), med([r["recv_rate"] for r in t])
    lat = lambda g: f"{med([r['lat_p50_us'] for r in g]):.0f} / {med([r['lat_p99_us'] for r in g]):.0f}" if fixed else "–"
    ooo = lambda g: f"{sum(r['dup_or_ooo'] for r in g)}/{sum(r['lost'] for r in g)}"
    ratio = f"{rt / rm:.2f}" if not fixed else "(fixed rate)"
    print(f"| {scenario.replace('_', ' ')} | {rm:,.0f} | {rt:,.0f} | {ratio} | {cpu_per_msg(m):.1f} µs | {cpu_per_msg(t):.1f} µs | {lat(m)} | {lat(t)} | {ooo(m)} | {ooo(t)} |")
conn_m, conn_t = pick("10k_idle_connections", "mosquitto"), pick("10k_idle_connections", "tern")
if conn_m and conn_t:
    bm, bt = med([r["bytes_per_conn"] for r in conn_m]), med([r["bytes_per_conn"] for r in conn_t])
    cm, ct = med([r["conn_rate"] for r in conn_m]), med([r["conn_rate"] for r in conn_t])
    print(f"| 10k idle connections: memory per connection | {bm:,.0f} B | {bt:,.0f} B | {bt / bm:.2f} | | | | | | |")
    print(f"| 10k idle connections: connect rate | {cm:,.0f}/s | {ct:,.0f}/s | {ct / cm:.2f} | | | | | | |")
idle_m = [r["rss_kb"] for r in runs if r.get("scenario") == "idle RSS" and r["broker"] == "mosquitto"]
idle_t = [r["rss_kb"] for r in runs if r.get("scenario") == "idle RSS" and r["broker"] == "tern"]
if idle_m and idle_t:
    print(f"| idle broker RSS | {med(idle_m) / 1024:.1f} MB | {med(idle_t) / 1024:.1f} MB | {med(idle_t) / med(idle_m):.2f} | | | | | | |")
print("\n## Cross-check with `tern bench`\n")
print("The same rows measured with Tern's own generator in the same rounds. Its figures should agree with the C generator's")
print("within the noise; where they do not, the generator CPU column says whether the generator was the bottleneck.\n")
print("| scenario | Mosquitto msg/s | Tern msg/s | Tern / Mosquitto | p50 / p99 µs Mosquitto | p50 / p99 µs Tern | generator CPU | ooo/lost |")
print("|---|---|---|---|---|---|---|---|")
for scenario in dict.fromkeys(r["scenario"] for r in runs if r.get("tool") == "tern-bench"):
    m, t = pick(scenario, "mosquitto", "tern-bench"), pick(scenario, "tern", "tern-bench")
    fixed = m and m[0].get("rate_target")
    rm, rt = med([r["recv_rate"] for r in m]), med([r["recv_rate"] for r in t])
    lat = lambda g: f"{med([r['lat_p50_us'] for r in g]):.0f} / {med([r['lat_p99_us'] for r in g]):.0f}" if fixed else "–"
    gen = f"{med([r['generator_cpu_pct'] for r in m]):.0f}% / {med([r['generator_cpu_pct'] for r in t]):.0f}%"
    ooo = f"{sum(r['dup_or_ooo'] + r['lost'] for r in m)} / {sum(r['dup_or_ooo'] + r['lost'] for r in t)}"
    ratio = f"{rt / rm:.2f}" if not fixed else "(fixed rate)"
    print(f"| {scenario.replace('_', ' ')} | {rm:,.0f} | {rt:,.0f} | {ratio} | {lat(m)} | {lat(t)} | {gen} | {ooo} |")
PY
cat "$output"
