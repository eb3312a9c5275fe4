#!/usr/bin/env bash
# The background audit on a generated cluster: steady-state RSS, time to re-judge one changed
# workload, and report writes over an idle period. Not a test: it prints figures (medians)
# for bench/README.md.
#
#   bench/audit.sh                                  100 namespaces x 20 workloads x 5 pods
#   NAMESPACES=10 IDLE_SECONDS=60 bench/audit.sh    smaller and shorter
#   BIN=target/debug/dhi-admission bench/audit.sh   another build, without building
#
# The cluster is the end-to-end tier's real kube-apiserver and etcd (tests/e2e/controlplane.sh,
# built once), filled by bench/audit_cluster.py: Deployments with their ReplicaSets and pods,
# StatefulSets with their pods (no controller-manager runs: the objects are written as it would
# write them). The audit is the release build. Targets (issue 14): RSS < 64 MiB, re-judging < 1 s,
# zero writes while idle (the issue's window is 10 minutes: IDLE_SECONDS=600).
set -euo pipefail
cd "$(dirname "$0")/.."

NAMESPACES=${NAMESPACES:-100}
WORKLOADS=${WORKLOADS:-20}
PODS=${PODS:-5}
IDLE_SECONDS=${IDLE_SECONDS:-120}
# Relists during the idle window re-judge every workload: they must not write either.
RESYNC_SECONDS=${RESYNC_SECONDS:-45}
RUNS=${RUNS:-7}
REPORT=bench

# BIN=target/debug/dhi-admission measures another build (figures are for the release one).
bin=${BIN:-target/release/dhi-admission}
[ -n "${BIN:-}" ] || cargo build --release --locked --quiet
dir=$(mktemp -d)
audit_pid=
cleanup() {
  [ -n "$audit_pid" ] && kill "$audit_pid" 2>/dev/null || true
  tests/e2e/controlplane.sh stop "$dir" >/dev/null 2>&1 || true
  echo "logs: $dir"
}
trap cleanup EXIT

tests/e2e/controlplane.sh start "$dir" >/dev/null
# shellcheck disable=SC1091
source "$dir/env"
kubectl=$DHI_E2E_KUBECTL
"$kubectl" apply --server-side -k deploy/overlays/policyreport-crds >/dev/null
"$kubectl" wait --for=condition=Established --timeout=60s \
  crd/policyreports.wgpolicyk8s.io crd/clusterpolicyreports.wgpolicyk8s.io >/dev/null
python3 bench/audit_cluster.py populate "$NAMESPACES" "$WORKLOADS" "$PODS"

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
metrics="http://127.0.0.1:$port/metrics"
metric() { curl -fsS "$metrics" | awk -v m="$1" 'index($0, m" ") == 1 { print $2 }'; }
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$audit_pid/status"; }
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

started=$(date +%s.%N)
"$bin" --log-format json audit --kubeconfig "$KUBECONFIG" --lease-namespace default \
  --identity bench --report-name "$REPORT" --metrics-listen "127.0.0.1:$port" \
  --resync-seconds "$RESYNC_SECONDS" \
  2>"$dir/audit.log" &
audit_pid=$!

# Synced: the ClusterPolicyReport has a line per namespace (the bench's, and the
# control plane's own default, kube-system, kube-public, kube-node-lease when they hold
# workloads: they hold none here).
until [ "$("$kubectl" get clusterpolicyreport "$REPORT" -o jsonpath='{.results[*].resources[0].name}' 2>/dev/null | wc -w)" -ge "$NAMESPACES" ]; do
  kill -0 "$audit_pid" || { cat "$dir/audit.log"; exit 1; }
  sleep 0.2
done
synced=$(date +%s.%N)
echo "first full set of reports: $(python3 -c "print(f'{$synced - $started:.1f}')") s after start"
echo "workloads judged: $(metric 'dhi_admission_audit_judged_total{trigger="event"}')"

sleep 10
samples=$(for _ in 1 2 3 4 5; do rss_kib; sleep 1; done)
echo "steady-state RSS: $(echo "$samples" | median | awk '{ printf "%.1f MiB", $1 / 1024 }') (samples KiB: $(echo $samples))"

python3 bench/audit_cluster.py rejudge "$REPORT" "$RUNS"

sleep 3
before=$(metric 'dhi_admission_audit_report_writes_total{kind="PolicyReport",result="applied"}')
before_cluster=$(metric 'dhi_admission_audit_report_writes_total{kind="ClusterPolicyReport",result="applied"}')
echo "idle for ${IDLE_SECONDS}s..."
sleep "$IDLE_SECONDS"
after=$(metric 'dhi_admission_audit_report_writes_total{kind="PolicyReport",result="applied"}')
after_cluster=$(metric 'dhi_admission_audit_report_writes_total{kind="ClusterPolicyReport",result="applied"}')
echo "writes while idle: $((after - before)) PolicyReport, $((after_cluster - before_cluster)) ClusterPolicyReport"
echo "relists while idle: workloads re-judged $(metric 'dhi_admission_audit_judged_total{trigger="resync"}')"
samples=$(for _ in 1 2 3 4 5; do rss_kib; sleep 1; done)
echo "RSS after idle: $(echo "$samples" | median | awk '{ printf "%.1f MiB", $1 / 1024 }')"
