# Shared by the benchmark scripts (sourced, not run): checks for Mosquitto, builds tern in release
# mode (as deployed), makes a work directory, and stops every broker it started, by PID, on exit.
#
# Gives: $tern, $work, rate (reads a `tern bench` line's rate), run_broker LOG COMMAND... (starts a
# broker in the background and records its PID in $pid and in the list stopped on exit),
# wait_for_port PORT (until something accepts there, at most 10 s), build_mqttbench (builds the
# independent C generator into $work and prints its path), summarize_runs FILE (per broker and QoS:
# order, loss, median rate, CPU and RSS, and the ratio Tern / Mosquitto, from mqttbench's JSON lines),
# start_both_brokers MOSQUITTO_PORT TERN_PORT (both with the same configuration, anonymous and
# max_queued_messages 1000000; sets $mosquitto_pid and $tern_pid once both accept).
command -v mosquitto >/dev/null || { echo "mosquitto is not installed (apt-get install mosquitto)"; exit 1; }

# The deployment build (README, "Running under systemd"): the Swift runtime linked in.
swift build -c release --static-swift-stdlib --product tern >/dev/null
tern=$PWD/.build/release/tern
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
rate() { sed -nE 's/.*rate=([0-9]+).*/\1/p' | head -1; }  # the summary line; tern bench prints details after it
run_broker() {  # log command...
    local log=$1
    shift
    "$@" > "$log" 2>&1 &
    pid=$!
    disown "$pid"  # stopped by PID on exit, without the shell's "Killed" notice
    pids+=("$pid")
}
wait_for_port() {  # port
    for _ in $(seq 1 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "nothing accepts on port $1" >&2
    exit 1
}
build_mqttbench() {
    ../shared/tools/mqttbench/build.sh "$work/mqttbench" >/dev/null
    echo "$work/mqttbench"
}
summarize_runs() {  # mqttbench --json file with broker= tags
    python3 - "$1" <<'PY'
import json, statistics, sys
runs = [json.loads(line) for line in open(sys.argv[1])]
groups = {}
for run in runs:
    groups.setdefault((run["qos"], run.get("layout"), run["payload"], run["broker"]), []).append(run)
print(f"{'scenario':<28} {'broker':<10} {'runs':>4} {'ooo':>6} {'lost':>6} {'median msg/s':>13} {'CPU %':>6} {'peak RSS MB':>11} {'p50 us':>8} {'p99 us':>8}")
keys = sorted({k[:3] for k in groups})
for key in keys:
    medians = {}
    for broker in ("mosquitto", "tern"):
        g = groups.get(key + (broker,), [])
        if not g:
            continue
        rate = statistics.median(r["recv_rate"] for r in g)
        medians[broker] = rate
        name = f"QoS {key[0]} {key[1]} {key[2]} B" + (f" @{g[0]['rate_target']}/s" if g[0].get("rate_target") else "")
        print(f"{name:<28} {broker:<10} {len(g):>4} {sum(r['dup_or_ooo'] for r in g):>6} {sum(r['lost'] for r in g):>6} "
              f"{rate:>13.0f} {statistics.median(r['broker_cpu_pct'] for r in g):>6.0f} {max(r['rss_peak_kb'] for r in g) / 1024:>11.1f} "
              f"{statistics.median(r['lat_p50_us'] for r in g):>8.0f} {statistics.median(r['lat_p99_us'] for r in g):>8.0f}")
    if len(medians) == 2:
        print(f"{'':<28} tern/mosquitto = {medians['tern'] / medians['mosquitto']:.2f}")
PY
}
start_both_brokers() {  # mosquitto-port tern-port
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n' "$1" > "$work/mosquitto.conf"
    printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n' "$2" > "$work/tern.conf"
    run_broker "$work/mosquitto.log" mosquitto -c "$work/mosquitto.conf"
    mosquitto_pid=$pid
    run_broker "$work/tern.log" "$tern" serve -c "$work/tern.conf"
    tern_pid=$pid
    wait_for_port "$1"
    wait_for_port "$2"
}
