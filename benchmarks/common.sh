# Shared by the benchmark scripts (sourced, not run): checks for Mosquitto, builds tern in release
# mode, makes a work directory, and stops every broker it started, by PID, on exit.
#
# Gives: $tern, $work, rate (reads a `tern bench` line's rate), run_broker LOG COMMAND... (starts a
# broker in the background and records its PID in $pid and in the list stopped on exit).
command -v mosquitto >/dev/null || { echo "mosquitto is not installed (apt-get install mosquitto)"; exit 1; }

swift build -c release --product tern >/dev/null
tern=$PWD/.build/release/tern
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done; rm -rf "$work"' EXIT
rate() { sed -E 's/.*rate=([0-9]+).*/\1/'; }
run_broker() {  # log command...
    local log=$1
    shift
    "$@" > "$log" 2>&1 &
    pid=$!
    disown "$pid"  # stopped by PID on exit, without the shell's "Killed" notice
    pids+=("$pid")
}
