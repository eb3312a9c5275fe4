#!/usr/bin/env bash
# `dhi-admission scan -A` against the stand-in API server (bench/standin.rs): 100
# namespaces, 2,000 workloads (1,400 Deployments with their ReplicaSets, 200 each of
# StatefulSets, DaemonSets and CronJobs with their Jobs), 10,000 pods of about 4 KiB.
# Reports the wall time and peak RSS of each run and their medians.
#
#   bench/scan.sh            # 5 runs, --output json
#   RUNS=3 OUTPUT=text bench/scan.sh
#
# Targets (issue 14): under 10 s, under 128 MiB.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${RUNS:-5}
output=${OUTPUT:-json}

cargo build --release --locked --bin dhi-admission --example scan_standin >&2
dir=$(mktemp -d)
target/release/examples/scan_standin --namespaces 100 --workloads 20 --pods 5 \
    --kubeconfig "$dir/kubeconfig" >"$dir/standin.log" 2>&1 &
standin=$!
trap 'kill "$standin" 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do
    grep -q '^ready' "$dir/standin.log" 2>/dev/null && break
    sleep 0.1
done
grep -q '^ready' "$dir/standin.log" || { cat "$dir/standin.log" >&2; exit 1; }

walls=() rss=()
for i in $(seq "$runs"); do
    # Exit status 1: the stand-in has workloads that would be denied.
    /usr/bin/time -f '%e %M' -o "$dir/time" \
        target/release/dhi-admission scan -A --kubeconfig "$dir/kubeconfig" --output "$output" \
        >"$dir/report" 2>"$dir/stderr" || [ $? -eq 1 ] || { cat "$dir/stderr" >&2; exit 1; }
    # GNU time writes "Command exited with non-zero status 1" first: the figures are last.
    read -r wall kib < <(tail -n 1 "$dir/time")
    walls+=("$wall") rss+=("$kib")
    printf 'run %d: %6.2f s  %7.1f MiB\n' "$i" "$wall" "$(echo "$kib / 1024" | bc -l)"
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
printf 'median: %6.2f s  %7.1f MiB  (%d runs, --output %s, %s bytes of report)\n' \
    "$(median "${walls[@]}")" "$(echo "$(median "${rss[@]}") / 1024" | bc -l)" "$runs" "$output" \
    "$(wc -c <"$dir/report")"
if [ "$output" = json ]; then
    python3 -c 'import json,sys; print("cluster:", json.load(open(sys.argv[1]))["summary"]["cluster"])' "$dir/report"
fi
