#!/usr/bin/env bash
# User-space instructions per request of `dhi-admission serve` and of the baseline, each
# run under valgrind's callgrind while wrk sends the Istio pod review over TLS keep-alive.
#
#   bench/instructions.sh                 # /mutate and /validate, 8 s each, 4 connections
#   bench/instructions.sh --seconds 20    # more requests, same per-request figure
#   bench/instructions.sh --no-build      # reuse target/release binaries
#
# Why: on a shared VM, CPU time per request moves by 20-30% between runs of the same
# binary (other tenants share caches and cores), which hides changes of a few percent.
# An instruction count does not move with the neighbours, so it is the figure to compare
# two builds with, and the ratio to the baseline's count is an upper bound on the
# throughput ratio `bench/load.sh` can measure (cache misses make our instructions dearer
# than the baseline's, never cheaper). Kernel work (TCP, syscalls) is not counted: both
# servers make the same syscalls per request (3 recvfrom, 1 writev).
#
# Counters are zeroed after a 2 s warm-up, so start-up and the 4 connections' first
# handshakes are excluded; the measured run opens 4 new connections (4 handshakes, well
# under 1% of the total). Valgrind runs the server ~50x slower: expect ~2,000 requests.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=8
conns=4
build=1
while [ $# -gt 0 ]; do
    case "$1" in
        --seconds) seconds=$2; shift 2 ;;
        --connections) conns=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "instructions.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done

for tool in valgrind callgrind_control wrk python3; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "instructions.sh: needs $tool (apt-get install valgrind wrk python3)" >&2
        exit 1
    fi
done
if [ "$build" -eq 1 ]; then
    cargo build --release --locked --bin dhi-admission --example baseline
fi
target=${CARGO_TARGET_DIR:-target}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$target/release/dhi-admission" certs generate --out "$work/certs" --dns localhost >/dev/null
python3 - "$work" <<'EOF'
import sys
from pathlib import Path
sys.path.insert(0, "bench")
import load
load.log = lambda *a, **k: None
load.write_bodies(Path(sys.argv[1]) / "bodies")
EOF
body="$work/bodies/istio-pod.json"

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ready() {
    python3 - "$1" <<'EOF'
import sys, time, urllib.request
deadline = time.time() + 60
while time.time() < deadline:
    try:
        if urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/readyz", timeout=1).status == 200:
            sys.exit(0)
    except Exception:
        time.sleep(0.2)
sys.exit(1)
EOF
}

# measure <name> <path> <server argv...>: prints "<name> <path> <requests> <instructions/request>"
measure() {
    local name=$1 path=$2; shift 2
    local port metrics out pid
    port=$(free_port); metrics=$(free_port)
    out="$work/callgrind.$name.$path"
    valgrind --tool=callgrind --callgrind-out-file="$out.%p" "$@" \
        --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics" \
        --tls-cert "$work/certs/tls.crt" --tls-key "$work/certs/tls.key" \
        >"$work/$name.log" 2>&1 &
    pid=$!
    if ! ready "$metrics"; then
        echo "instructions.sh: $name did not become ready; see its log:" >&2
        cat "$work/$name.log" >&2
        exit 1
    fi
    WRK_BODY=$body wrk -t1 -c"$conns" -d2s -s bench/post.lua "https://localhost:$port/$path" >/dev/null
    callgrind_control -z "$pid" >/dev/null 2>&1
    WRK_BODY=$body WRK_JSON="$work/$name.$path.json" \
        wrk -t1 -c"$conns" -d"${seconds}s" -s bench/post.lua "https://localhost:$port/$path" >/dev/null
    callgrind_control -d "$pid" >/dev/null 2>&1
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    python3 - "$name" "$path" "$work/$name.$path.json" "$out.$pid.1" <<'EOF'
import json, re, sys
name, path, wrk_json, dump = sys.argv[1:]
run = json.load(open(wrk_json))
errors = sum(run["errors"].values())
if errors:
    sys.exit(f"instructions.sh: {name} {path}: {errors} errors from wrk")
text = open(dump).read()
total = int(re.search(r"^(?:summary|totals): (\d+)", text, re.M).group(1))
print(f"{name} {path} {run['requests']} {total / run['requests']:.0f}")
EOF
}

results=()
for path in mutate validate; do
    results+=("$(measure dhi-admission "$path" "$target/release/dhi-admission" serve)")
    results+=("$(measure baseline "$path" "$target/release/examples/baseline")")
done

printf '%s\n' "${results[@]}" | python3 -c '
import sys
rows = [line.split() for line in sys.stdin if line.strip()]
by = {(r[0], r[1]): (int(r[2]), int(r[3])) for r in rows}
print("| path | dhi-admission instructions/request | baseline | baseline / dhi-admission | requests (dhi, baseline) |")
print("|---|---:|---:|---:|---:|")
for path in ("mutate", "validate"):
    (n_d, d), (n_b, b) = by[("dhi-admission", path)], by[("baseline", path)]
    print(f"| /{path} | {d:,} | {b:,} | {b / d:.2f} | {n_d:,}, {n_b:,} |")
'
