#!/usr/bin/env bash
# Prints the path of a helm binary, building it once from the Go module helm.sh/helm/v3 and
# caching it like the project's other tools:
#
#   tools/helm.sh                 # prints ~/.cache/dhi-admission/tools/helm-v3.22.0/helm
#   "$(tools/helm.sh)" lint deploy/helm/dhi-admission
#
# Needs Go and the Go module proxy (the build takes a few minutes on two cores). Override the
# version with HELM_VERSION, the cache with DHI_TOOLS_CACHE. Progress goes to standard error;
# standard output is only the path, so the script composes with $(...).
set -euo pipefail

version=${HELM_VERSION:-v3.22.0}
cache=${DHI_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dhi-admission/tools}
dir="$cache/helm-$version"
bin="$dir/helm"

if [ -x "$bin" ] && "$bin" version --short >/dev/null 2>&1; then
  echo "$bin"
  exit 0
fi
if ! command -v go >/dev/null 2>&1; then
  echo "helm.sh: go is not installed; cannot build helm $version" >&2
  exit 1
fi

echo "helm.sh: building helm $version into $dir (a few minutes, once)" >&2
mkdir -p "$dir"
start=$SECONDS
# A temporary GOBIN, moved into place at the end: an interrupted build leaves no half binary.
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" GOFLAGS=-trimpath CGO_ENABLED=0 go install "helm.sh/helm/v3/cmd/helm@$version" >&2
mv "$tmp/helm" "$bin"
echo "helm.sh: built $("$bin" version --short) in $((SECONDS - start))s" >&2
echo "$bin"
