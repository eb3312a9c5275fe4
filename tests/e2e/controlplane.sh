#!/usr/bin/env bash
# The control plane of the end-to-end tests: etcd and kube-apiserver on loopback, no
# controller-manager, no scheduler, no kubelet.
#
#   tests/e2e/controlplane.sh build        build kube-apiserver, kubectl and etcd once per machine
#   tests/e2e/controlplane.sh bin-dir      print where they are; exit 1 if any is missing
#   tests/e2e/controlplane.sh ldflags      print the linker flags its Kubernetes builds use (node.sh too)
#   tests/e2e/controlplane.sh start DIR    start in DIR (certificates, logs, kubeconfig, env file)
#   tests/e2e/controlplane.sh stop DIR     stop the processes that `start DIR` started, and only those
#
# The binaries come from the Go module proxy only: the wrapper module in controlplane/ requires
# k8s.io/kubernetes and replaces its staging modules with their published versions. They are
# cached outside the repository, keyed by version, in
# ${DHI_E2E_CACHE:-~/.cache/dhi-admission/e2e}/$VERSION/.
#
# `start` writes DIR/env (sourceable: KUBECONFIG, DHI_E2E_APISERVER, DHI_E2E_AUDIT_LOG, ...), and
# returns once /readyz answers ok. With DHI_E2E_WATCH_PID=PID, the control plane also stops by
# itself when process PID exits (the test binary uses it, so a crashed test run leaves nothing behind).
# `start` needs openssl, curl and python3 besides the binaries; `build` needs go.
#
# DHI_E2E_APISERVER_ADDRESS=IP (set by tests/e2e/node.sh) makes kube-apiserver listen on that
# address instead of 127.0.0.1, so that pods on a node reach it: its certificate then also names
# that address and the `kubernetes` Service (10.96.0.1, kubernetes.default.svc), it calls
# webhooks at their EndpointSlice addresses (there is no kube-proxy) and authenticates to
# kubelets with the admin certificate. Unset, nothing changes.
set -euo pipefail

K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.8 # the etcd that k8s.io/kubernetes v1.36.3 requires (go.etcd.io/etcd/server/v3)
VERSION="k8s-${K8S_VERSION}-etcd-${ETCD_VERSION}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${DHI_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dhi-admission/e2e}"
BIN="$CACHE/$VERSION"

die() { echo "controlplane.sh: $*" >&2; exit 1; }

have_binaries() { [ -x "$BIN/kube-apiserver" ] && [ -x "$BIN/kubectl" ] && [ -x "$BIN/etcd" ]; }

# The linker flags of a Kubernetes binary: stripped, and reporting the release it is built
# from, as the official builds do (node.sh builds the node's binaries with them too).
cmd_ldflags() {
  local ldflags="-s -w" pkg
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1"
    ldflags+=" -X $pkg.gitMinor=$(echo "$K8S_VERSION" | cut -d. -f2) -X $pkg.gitTreeState=clean"
  done
  echo "$ldflags"
}

cmd_build() {
  if have_binaries; then
    echo "controlplane.sh: reusing $BIN"
    return
  fi
  command -v go >/dev/null || die "go is not installed: it is needed once, to build $VERSION into $BIN"
  mkdir -p "$BIN"
  local tmp="$BIN.tmp.$$" start=$SECONDS
  rm -rf "$tmp" && mkdir -p "$tmp"
  local ldflags
  ldflags=$(cmd_ldflags)
  (
    cd "$HERE/controlplane"
    export GOFLAGS="-trimpath -mod=readonly -buildvcs=false" CGO_ENABLED=0
    echo "controlplane.sh: building $VERSION (15 to 30 minutes on 2 cores, once per machine)"
    go build -ldflags "$ldflags" -o "$tmp/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
    echo "controlplane.sh: kube-apiserver built ($((SECONDS - start))s)"
    go build -ldflags "$ldflags" -o "$tmp/kubectl" k8s.io/kubernetes/cmd/kubectl
    echo "controlplane.sh: kubectl built ($((SECONDS - start))s)"
    go build -ldflags "-s -w" -o "$tmp/etcd" go.etcd.io/etcd/server/v3
    echo "controlplane.sh: etcd built ($((SECONDS - start))s)"
  )
  mv "$tmp"/* "$BIN"/ && rmdir "$tmp"
  "$BIN/kube-apiserver" --version
  "$BIN/etcd" --version | sed -n 1p
  echo "controlplane.sh: built into $BIN in $((SECONDS - start))s"
}

# A free TCP port on 127.0.0.1 or ADDRESS (the kernel picks it; a race with another process is possible
# but unlikely, and then the server fails to bind and `start` fails loudly).
free_port() { # [ADDRESS]
  python3 -c 'import socket,sys; s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1]); s.close()' "${1:-127.0.0.1}"
}

wait_ready() { # URL CACERT TOKEN SECONDS
  local deadline=$((SECONDS + $4))
  while [ $SECONDS -lt $deadline ]; do
    if [ "$(curl -s --max-time 2 --cacert "$2" -H "Authorization: Bearer $3" "$1/readyz" 2>/dev/null)" = ok ]; then
      return 0
    fi
    sleep 0.2
  done
  return 1
}

cmd_start() {
  local dir="${1:?usage: controlplane.sh start DIR}"
  have_binaries || die "no control plane in $BIN: run tests/e2e/controlplane.sh build"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  [ -e "$dir/etcd.pid" ] && die "$dir is in use: controlplane.sh stop $dir"
  local pki="$dir/pki"
  mkdir -p "$pki"

  local addr="${DHI_E2E_APISERVER_ADDRESS:-127.0.0.1}" node_args=() san="IP:127.0.0.1,DNS:localhost"
  if [ "$addr" != 127.0.0.1 ]; then
    san+=",IP:$addr,IP:10.96.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc"
    node_args=(--enable-aggregator-routing=true --kubelet-preferred-address-types InternalIP
      --kubelet-client-certificate "$pki/admin.crt" --kubelet-client-key "$pki/admin.key")
  fi

  # Certificates: a CA, the API server's serving certificate (IP SAN 127.0.0.1), an admin client
  # certificate, and the service-account signing key.
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=dhi-e2e-ca" -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=kube-apiserver" \
    -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr" 2>/dev/null
  openssl x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -out "$pki/apiserver.crt" \
    -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san") 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/O=system:masters/CN=e2e-admin" \
    -keyout "$pki/admin.key" -out "$pki/admin.csr" 2>/dev/null
  openssl x509 -req -in "$pki/admin.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -out "$pki/admin.crt" -extfile <(printf 'extendedKeyUsage=clientAuth\n') 2>/dev/null
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
  openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null

  local token
  token="$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
  printf '%s,e2e-admin,e2e-admin,"system:masters"\n' "$token" > "$pki/tokens.csv"

  # Every request at Metadata level: enough to carry the webhooks' auditAnnotations.
  cat > "$dir/audit-policy.yaml" <<'EOF'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: None
  nonResourceURLs: ["/readyz*", "/livez*", "/healthz*"]
- level: Metadata
EOF

  local etcd_port etcd_peer_port api_port
  etcd_port=$(free_port); etcd_peer_port=$(free_port); api_port=$(free_port "$addr")

  setsid "$BIN/etcd" --name e2e --data-dir "$dir/etcd" --unsafe-no-fsync \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "e2e=http://127.0.0.1:$etcd_peer_port" \
    --log-level warn >"$dir/etcd.log" 2>&1 </dev/null &
  echo $! > "$dir/etcd.pid"

  setsid "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$addr" --advertise-address "$addr" --secure-port "$api_port" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-account-issuer "https://$addr:$api_port" \
    --authorization-mode RBAC \
    --enable-admission-plugins MutatingAdmissionWebhook,ValidatingAdmissionWebhook \
    --service-cluster-ip-range 10.96.0.0/16 --allow-privileged=true \
    --endpoint-reconciler-type none \
    --audit-policy-file "$dir/audit-policy.yaml" --audit-log-path "$dir/audit.log" \
    --audit-log-maxbackup 1 --audit-log-maxsize 200 "${node_args[@]}" \
    >"$dir/kube-apiserver.log" 2>&1 </dev/null &
  echo $! > "$dir/kube-apiserver.pid"

  local url="https://$addr:$api_port"
  cat > "$dir/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: e2e
  cluster:
    server: $url
    certificate-authority: $pki/ca.crt
users:
- name: e2e-admin
  user:
    token: $token
contexts:
- name: e2e
  context: {cluster: e2e, user: e2e-admin, namespace: default}
current-context: e2e
EOF
  cat > "$dir/env" <<EOF
export KUBECONFIG=$dir/kubeconfig
export DHI_E2E_APISERVER=$url
export DHI_E2E_CA=$pki/ca.crt
export DHI_E2E_TOKEN=$token
export DHI_E2E_AUDIT_LOG=$dir/audit.log
export DHI_E2E_KUBECTL=$BIN/kubectl
export DHI_E2E_VERSION=$VERSION
EOF

  if [ -n "${DHI_E2E_WATCH_PID:-}" ]; then
    # Stops the control plane when the process that asked for it is gone.
    setsid bash -c 'while kill -0 "$1" 2>/dev/null && [ -e "$2/etcd.pid" ]; do sleep 1; done; exec bash "$3" stop "$2"' \
      watch "$DHI_E2E_WATCH_PID" "$dir" "$HERE/controlplane.sh" >/dev/null 2>&1 </dev/null &
  fi

  if ! wait_ready "$url" "$pki/ca.crt" "$token" 90; then
    echo "controlplane.sh: kube-apiserver was not ready in 90s; last lines of its log:" >&2
    tail -n 30 "$dir/kube-apiserver.log" >&2 || true
    echo "controlplane.sh: etcd log:" >&2
    tail -n 10 "$dir/etcd.log" >&2 || true
    cmd_stop "$dir"
    exit 1
  fi
  echo "controlplane.sh: ready at $url (KUBECONFIG=$dir/kubeconfig)"
}

cmd_stop() {
  local dir="${1:?usage: controlplane.sh stop DIR}" name pid
  for name in kube-apiserver etcd; do
    [ -f "$dir/$name.pid" ] || continue
    pid="$(cat "$dir/$name.pid")"
    # Only our process: the pid must still run the binary we started.
    if kill -0 "$pid" 2>/dev/null && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$BIN/$name" ]; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$dir/$name.pid"
  done
}

case "${1:-}" in
  build) cmd_build ;;
  bin-dir) echo "$BIN"; have_binaries ;;
  ldflags) cmd_ldflags ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  *) echo "usage: $0 build | bin-dir | start DIR | stop DIR" >&2; exit 2 ;;
esac
