#!/usr/bin/env bash
# Renders the base and every overlay with kustomize, as `kubectl apply -k` would, into
# one YAML file each. The renders are committed in deploy/rendered/, so a change to the
# manifests shows its effect in review, and tests/deploy_manifests.rs checks them.
#
#   deploy/render.sh [OUT_DIR]        (default: deploy/rendered)
#   deploy/render.sh --check          (CI: fail if deploy/rendered/ is not current)
#
# Uses `kubectl kustomize`, else a standalone `kustomize build`. With neither installed
# it says so and exits 0, unless DHI_RENDER_REQUIRED=1 (then it fails).
set -euo pipefail
cd "$(dirname "$0")/.."

check=0
if [ "${1:-}" = --check ]; then
  check=1
  out=$(mktemp -d)
  trap 'rm -rf "$out"' EXIT
else
  out=${1:-deploy/rendered}
fi
dirs=(base overlays/enforce overlays/audit overlays/cert-manager overlays/monitoring overlays/policyreport-crds overlays/audit-reports)

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
for dir in "${dirs[@]}"; do
  name=$(basename "$dir")
  file="$out/$name.yaml"
  "${render[@]}" "deploy/$dir" >"$file"
  printf '%-18s %3d objects  %s\n' "$name" "$(grep -c '^kind:' "$file")" "$file"
done

if [ "$check" = 1 ]; then
  if ! diff -ru deploy/rendered "$out"; then
    echo "render.sh: deploy/rendered/ is out of date: run deploy/render.sh and commit" >&2
    exit 1
  fi
fi
