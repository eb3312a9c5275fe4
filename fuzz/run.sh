#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 60), one after the other, and prints
# the executions and findings of each.
#
#   fuzz/run.sh            # 60 s per target
#   fuzz/run.sh 600        # 10 min per target
#   fuzz/run.sh 60 image_ref engine_pod
#
# Needs cargo-fuzz (installed with `cargo install cargo-fuzz --locked` when missing).
# Exits 1 when a target found something, 0 otherwise. cargo-fuzz passes -Z flags
# (sanitizer, coverage instrumentation) that only nightly accepts; RUSTC_BOOTSTRAP=1
# lets the stable toolchain accept them. Set FUZZ_SANITIZER=none to skip AddressSanitizer
# (faster; the crate forbids unsafe code, so ASan mostly watches dependencies).
#
# Corpora and crashes go to fuzz/corpus/<target> and fuzz/artifacts/<target> (not
# committed). Seeds come from fuzz/seeds/<target> and, for admission_handle, from every
# review under tests/fixtures. A crash input worth keeping goes to
# fuzz/regressions/<target>/ (replayed by `cargo test -p dhi-policy --test policy fuzz_regressions`).
set -uo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
cd "$here"
secs="${1:-60}"
shift || true
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=(admission_handle image_ref policy_config engine_pod)
fi
sanitizer="${FUZZ_SANITIZER:-address}"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "cargo-fuzz is not installed; installing it from crates.io..."
    cargo install cargo-fuzz --locked || {
        echo "cannot install cargo-fuzz (cargo install cargo-fuzz --locked)" >&2
        exit 2
    }
fi

echo "building fuzz targets (sanitizer: $sanitizer)..."
cargo fuzz build -O -s "$sanitizer" || exit 1

max_len() {
    case "$1" in
        admission_handle) echo 65536 ;;
        policy_config) echo 16384 ;;
        image_ref) echo 512 ;;
        *) echo 4096 ;;
    esac
}

seed() {
    local target="$1" corpus="corpus/$1"
    mkdir -p "$corpus" "artifacts/$target" artifacts/logs
    if [ -d "seeds/$target" ]; then
        cp -n seeds/"$target"/* "$corpus"/ 2>/dev/null || true
    fi
    if [ -d "regressions/$target" ]; then
        cp -n regressions/"$target"/* "$corpus"/ 2>/dev/null || true
    fi
    if [ "$target" = admission_handle ] && [ -d ../tests/fixtures ]; then
        # The first byte picks the policy (see fuzz_targets/admission_handle.rs).
        local i=0 f
        while IFS= read -r -d '' f; do
            for pick in 0 1 3; do
                { printf "\\x0$pick"; cat "$f"; } >"$corpus/fixture-$i-$pick"
            done
            i=$((i + 1))
        done < <(find ../tests/fixtures -name '*.json' -print0)
    fi
}

declare -A execs findings status
for target in "${targets[@]}"; do
    seed "$target"
    before=$(find "artifacts/$target" -type f | wc -l)
    log="artifacts/logs/$target.log"
    echo "=== $target: ${secs}s ==="
    cargo fuzz run -O -s "$sanitizer" "$target" "corpus/$target" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
        -max_len="$(max_len "$target")" -print_final_stats=1 >"$log" 2>&1
    rc=$?
    after=$(find "artifacts/$target" -type f | wc -l)
    execs[$target]=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    findings[$target]=$((after - before))
    if [ "$rc" -eq 0 ]; then status[$target]=ok; else status[$target]="exit $rc"; fi
    grep -E '^(==[0-9]+==|thread .* panicked|SUMMARY|Test unit written|artifact_prefix)' "$log" | head -5
done

echo
printf '%-18s %14s %9s %s\n' target executions findings status
for target in "${targets[@]}"; do
    printf '%-18s %14s %9s %s\n' "$target" "${execs[$target]:-?}" "${findings[$target]}" "${status[$target]}"
done
for target in "${targets[@]}"; do
    if [ "${findings[$target]}" -gt 0 ]; then
        echo "findings in fuzz/artifacts/$target (log: fuzz/artifacts/logs/$target.log)"
    fi
done
total=0
for target in "${targets[@]}"; do
    total=$((total + findings[$target]))
    if [ "${status[$target]}" != ok ] && [ "${findings[$target]}" -eq 0 ]; then
        echo "$target ended with ${status[$target]} without saving an input: see fuzz/artifacts/logs/$target.log" >&2
        total=$((total + 1))
    fi
done
[ "$total" -eq 0 ]
