#!/usr/bin/env bash
# Load test of `dhi-admission serve` against the same stack with no engine
# (examples/baseline.rs). See bench/README.md.
#
#   bench/load.sh              # full suite: 5 s per case, 3 repetitions, medians
#   bench/load.sh --quick      # CI: 2 s per case, 1 repetition
#   bench/load.sh --help       # every option (passed on to bench/load.py)
#
# Installs what it needs (wrk, openssl and python3 from Debian, when missing), builds the release
# binaries, then hands over to bench/load.py, which generates an ECDSA P-256 certificate,
# pins the server to CPU 0 and wrk to CPU 1, runs the cases and writes
# bench/results/<timestamp>/ (plus a summary table on stdout).
set -euo pipefail

cd "$(dirname "$0")/.."

for arg in "$@"; do
    case "$arg" in
        -h|--help) exec python3 bench/load.py --help ;;
    esac
done

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

apt_install() {
    # Bounded retries: a fresh machine may not have package lists yet.
    if ! as_root apt-get install -y --no-install-recommends "$@"; then
        as_root apt-get update
        as_root apt-get install -y --no-install-recommends "$@"
    fi
}

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "load.sh: installing ${missing[*]}" >&2
    apt_install "${missing[@]}"
fi

ncpu=$(nproc --all)
if [ "$ncpu" -lt 2 ]; then
    echo "load.sh: needs at least 2 CPUs (server on CPU 0, wrk on CPU 1); found $ncpu" >&2
    exit 1
fi

skip_build=0
for arg in "$@"; do
    [ "$arg" = "--no-build" ] && skip_build=1
done
if [ "$skip_build" -eq 0 ]; then
    cargo build --release --locked --bin dhi-admission --example baseline
fi

exec python3 bench/load.py "$@"
