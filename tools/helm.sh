#!/usr/bin/env bash
# Prints the path of a helm binary, building it once from the Go module helm.sh/helm/v3 and
# caching it like the project's other tools:
#
#   tools/helm.sh                 # prints ~/.cache/dhi-admission/tools/helm-v3.21.4/helm
#   "$(tools/helm.sh)" lint deploy/helm/dhi-admission
#
# Needs Go and the Go module proxy (the build takes a few minutes on two cores). Override the
# version with HELM_VERSION, the cache with DHI_TOOLS_CACHE. Progress goes to standard error;
# standard output is only the path, so the script composes with $(...).
set -euo pipefail

# v3.21.4: the newest v3 release the Go module proxy here lists as approved (it serves
# v3.22.0 too, but not as a release).
version=${HELM_VERSION:-v3.21.4}
cache=${DHI_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dhi-admission/tools}
dir="$cache/helm-$version"
bin="$dir/helm"

# A binary that reports another version (or none) is rebuilt.
if [ -x "$bin" ] && [ "$("$bin" version --template '{{.Version}}' 2>/dev/null)" = "$version" ]; then
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
# Stamped as helm's own Makefile does: its version (else it reports "v3.21"), and the
# Kubernetes version `helm template` and `helm lint` assume, from the client-go it was
# built with (else v1.20, which a chart's kubeVersion: >=1.30 refuses). v3.21.4 uses
# client-go v0.36, hence 1.36; set HELM_KUBE_MINOR with another HELM_VERSION.
kube_minor=${HELM_KUBE_MINOR:-36}
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$kube_minor"
done
GOBIN="$tmp" GOFLAGS=-trimpath CGO_ENABLED=0 go install -ldflags "$ldflags" \
  "helm.sh/helm/v3/cmd/helm@$version" >&2
mv "$tmp/helm" "$bin"
echo "helm.sh: built helm $("$bin" version --template '{{.Version}}') in $((SECONDS - start))s" >&2
echo "$bin"
