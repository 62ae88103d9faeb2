#!/usr/bin/env bash
# What TLS costs: QoS 0 throughput through Tern and Mosquitto, each over plain TCP and over TLS
# (TLS 1.3, an ECDSA P-256 certificate made here with openssl), with the same load generator
# (`tern bench`: one publisher, one subscriber, 16-byte payloads). Prints each rate and the
# ratios. Asserts nothing.
#
# Usage: Benchmarks/scripts/tls-vs-mosquitto.sh [messages]     (default 200000)
set -euo pipefail
cd "$(dirname "$0")/../.."
count=${1:-200000}
command -v openssl >/dev/null || { echo "openssl is not installed"; exit 1; }
source Benchmarks/scripts/common.sh
(
    cd "$work"
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out ca.key 2>/dev/null
    openssl req -x509 -new -key ca.key -subj '/CN=Bench CA' -days 1 -out ca.crt
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:prime256v1 -out server.key 2>/dev/null
    openssl req -new -key server.key -subj '/CN=localhost' -out server.csr
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > server.ext
    openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile server.ext -out server.crt 2>/dev/null
)
tls_lines="certfile $work/server.crt
keyfile $work/server.key"
printf 'user root\nallow_anonymous true\nlistener 28850 127.0.0.1\nlistener 28851 127.0.0.1\n%s\n' "$tls_lines" > "$work/mosquitto.conf"
printf 'allow_anonymous true\nlistener 28852 127.0.0.1\nlistener 28853 127.0.0.1\n%s\n' "$tls_lines" > "$work/tern.conf"

run_broker "$work/mosquitto.log" mosquitto -c "$work/mosquitto.conf"
run_broker "$work/tern.log" "$tern" serve -c "$work/tern.conf"
for port in 28850 28851 28852 28853; do wait_for_port "$port"; done

bench() { "$tern" bench -h 127.0.0.1 -p "$1" -q 0 -c "$count" --window 10000 --timeout 120 --label "$2" "${@:3}"; }
echo "mosquitto: $(mosquitto -h 2>&1 | head -1)"
mp=$(bench 28850 "mosquitto tcp")
mt=$(bench 28851 "mosquitto tls" --cafile "$work/ca.crt")
tp=$(bench 28852 "tern tcp")
tt=$(bench 28853 "tern tls" --cafile "$work/ca.crt")
printf '%s\n' "$mp" "$mt" "$tp" "$tt"
awk -v mp="$(echo "$mp" | rate)" -v mt="$(echo "$mt" | rate)" -v tp="$(echo "$tp" | rate)" -v tt="$(echo "$tt" | rate)" 'BEGIN {
    printf "TLS / TCP: tern %.2f, mosquitto %.2f\n", tt / tp, mt / mp
    printf "tern / mosquitto: tcp %.2f, tls %.2f\n", tp / mp, tt / mt
}'
