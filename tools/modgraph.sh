#!/usr/bin/env bash
# Import cycles between the modules of both crates (exit 1 if any): cargo-modules' graph,
# collapsed to modules by tools/modgraph.py. Needs `cargo install --locked cargo-modules
# --version 0.27.0` (0.28 needs rustc 1.98).
set -euo pipefail
cd "$(dirname "$0")/.."
status=0
for crate in dhi-policy:crates/dhi-policy/src dhi-admission:src; do
  cargo modules dependencies --lib -p "${crate%%:*}" --no-externs --no-sysroot 2>/dev/null |
    python3 tools/modgraph.py "${crate#*:}" || status=1
done
exit $status
