#!/usr/bin/env bash
# Renders every overlay with kustomize, as `kubectl apply -k` would, into one YAML file
# each, so CI catches an overlay that kustomize itself refuses (a patch whose `test` op
# no longer matches the base, a missing file) and the output can be reviewed or diffed.
#
#   deploy/render.sh [OUT_DIR]        (default: target/deploy)
#
# Uses `kubectl kustomize`, else a standalone `kustomize build`. With neither installed
# it says so and exits 0, unless DHI_RENDER_REQUIRED=1 (then it fails): the Rust test
# tests/deploy_manifests.rs renders the same overlays with its own kustomize subset and
# checks them either way.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:-target/deploy}
overlays=(enforce audit cert-manager monitoring)

if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
  render=(kubectl kustomize)
elif command -v kustomize >/dev/null 2>&1; then
  render=(kustomize build)
else
  echo "render.sh: neither kubectl nor kustomize is installed; overlays not rendered" >&2
  [ "${DHI_RENDER_REQUIRED:-0}" = 1 ] && exit 1
  exit 0
fi

mkdir -p "$out"
for name in "${overlays[@]}"; do
  file="$out/$name.yaml"
  "${render[@]}" "deploy/overlays/$name" >"$file"
  printf '%-14s %3d objects  %s\n' "$name" "$(grep -c '^kind:' "$file")" "$file"
done
