#!/usr/bin/env bash
# The node tier of the end-to-end tests: one real Kubernetes node on this machine (a bridge,
# containerd, the kubelet, kube-controller-manager and kube-scheduler), joined to a control
# plane of tests/e2e/controlplane.sh that listens on the bridge address so that pods reach it.
#
#   tests/e2e/node.sh build        build the kubelet, controller-manager and scheduler, and
#                                  containerd v2 (unless DHI_E2E_CONTAINERD2=0), once per machine;
#                                  install the Debian packages below when missing (apt)
#   tests/e2e/node.sh bin-dir      print where the binaries are; exit 1 if any is missing
#   tests/e2e/node.sh start DIR    start a control plane and a node in DIR; returns once the Node
#                                  is Ready and writes DIR/env
#   tests/e2e/node.sh stop DIR     stop what `start DIR` started, and only that, and restore the
#                                  host as `start` found it
#   tests/e2e/node.sh import DIR ARCHIVE...      import OCI archives (tests/e2e/oci_image.py)
#   tests/e2e/node.sh webhook-image BINARY OUT   the webhook's image around a release binary
#   tests/e2e/node.sh host-state   what start changes on the host, for diffing before and after
#
# Needs root. Only one node can run per machine: the bridge, the kubepods cgroups and the
# runtime's shim directory are host-wide. DIR must be short (unix socket paths live under it;
# at most 60 characters).
#
# DHI_E2E_CONTAINERD=1.6 (the default: Debian's containerd 1.6.20) or 2 (v2.4.2, built from the
# Go module proxy). Either way the CRI option enable_unprivileged_ports is set explicitly, to
# the runtime's own default: false on 1.6, true on 2; DHI_E2E_UNPRIVILEGED_PORTS=true|false
# overrides it.
#
# Pods get the bridge 10.213.0.0/24 and nothing else: no default route, no IP forwarding, no NAT
# except one DNAT rule that sends 10.96.0.1:443 (the `kubernetes` Service) to the API server.
# There is no kube-proxy and no cluster DNS; the API server calls webhooks at their
# EndpointSlice addresses (--enable-aggregator-routing).
#
# With DHI_E2E_WATCH_PID=PID the node (and its control plane) stops by itself, and the host is
# restored, when process PID exits.
set -euo pipefail

K8S_VERSION=v1.36.3
CONTAINERD2_VERSION=v2.4.2
NODE_VERSION="k8s-${K8S_VERSION}-node"
CONTAINERD2="containerd-${CONTAINERD2_VERSION}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${DHI_E2E_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dhi-admission/e2e}"
BIN="$CACHE/$NODE_VERSION"
C2BIN="$CACHE/$CONTAINERD2"
# Debian packages the node needs (busybox-static: the pause image and the test programs).
# nftables: stop deletes the (empty) tables that iptables-nft created.
PACKAGES="containerd runc containernetworking-plugins iproute2 iptables nftables conntrack busybox-static"
CNI_BIN=/usr/lib/cni

BRIDGE=dhie2e0
BRIDGE_CIDR=10.213.0.1/24
NODE_IP=10.213.0.1
POD_SUBNET=10.213.0.0/24
NODE_NAME=dhi-e2e-node
PAUSE_IMAGE=dhi-e2e.local/pause:busybox

die() { echo "node.sh: $*" >&2; exit 1; }
log() { echo "node.sh: $*" >&2; }

have_binaries() {
  [ -x "$BIN/kubelet" ] && [ -x "$BIN/kube-controller-manager" ] && [ -x "$BIN/kube-scheduler" ]
}
have_containerd2() { [ -x "$C2BIN/containerd" ] && [ -x "$C2BIN/containerd-shim-runc-v2" ]; }
missing_packages() {
  local pkg
  for pkg in $PACKAGES; do
    [ "$(dpkg-query -W -f '${Status}' "$pkg" 2>/dev/null)" = "install ok installed" ] || echo "$pkg"
  done
}

cmd_build() {
  local start=$SECONDS missing=()
  mapfile -t missing < <(missing_packages)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # An apt index first only when the packages are not found without one.
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
      { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
    log "packages installed ($((SECONDS - start))s)"
  fi
  command -v go >/dev/null || die "go is not installed: it is needed once, to build $NODE_VERSION into $BIN"
  if have_binaries; then
    log "reusing $BIN"
  else
    mkdir -p "$BIN"
    local tmp="$BIN.tmp.$$" ldflags name
    ldflags=$(bash "$HERE/controlplane.sh" ldflags)
    rm -rf "$tmp" && mkdir -p "$tmp"
    (
      # The wrapper module of the control plane: the same versions of every dependency.
      cd "$HERE/controlplane"
      export GOFLAGS="-trimpath -mod=readonly -buildvcs=false" CGO_ENABLED=0
      log "building $NODE_VERSION (20 s on a Go cache that has them, 4 minutes on the control plane's, 15 from none)"
      for name in kube-scheduler kube-controller-manager kubelet; do
        go build -ldflags "$ldflags" -o "$tmp/$name" "k8s.io/kubernetes/cmd/$name"
        log "$name built ($((SECONDS - start))s)"
      done
    )
    mv "$tmp"/* "$BIN"/ && rmdir "$tmp"
    "$BIN/kubelet" --version
  fi
  if [ "${DHI_E2E_CONTAINERD2:-1}" = 0 ]; then
    log "containerd $CONTAINERD2_VERSION not built (DHI_E2E_CONTAINERD2=0)"
  elif have_containerd2; then
    log "reusing $C2BIN"
  else
    mkdir -p "$C2BIN"
    local tmp2="$C2BIN.tmp.$$" mod=github.com/containerd/containerd/v2
    rm -rf "$tmp2" && mkdir -p "$tmp2"
    log "building containerd $CONTAINERD2_VERSION (about 3 minutes)"
    # Its own module, at its own go.mod's versions (go install pkg@version); the same flags as
    # containerd's release builds minus the cgo-only snapshotters (btrfs).
    (
      cd "$tmp2"
      export GOBIN="$tmp2" GOFLAGS="-trimpath -buildvcs=false" CGO_ENABLED=0
      local v="-X $mod/version.Version=$CONTAINERD2_VERSION -X $mod/version.Package=$mod"
      go install -tags no_btrfs -ldflags "-s -w $v" \
        "$mod/cmd/containerd@$CONTAINERD2_VERSION" "$mod/cmd/containerd-shim-runc-v2@$CONTAINERD2_VERSION"
    )
    mv "$tmp2"/containerd "$tmp2"/containerd-shim-runc-v2 "$C2BIN"/ && rm -rf "$tmp2"
    "$C2BIN/containerd" --version
  fi
  log "built in $((SECONDS - start))s"
}

# === host state: what start changes, snapshotted before and restored by stop ===

# The sysctls the kubelet sets (protectKernelDefaults is off), and the forwarding switches that
# must stay as they were (the bridge plugin turns ip_forward on with isGateway).
SYSCTLS="kernel.panic kernel.panic_on_oops vm.overcommit_memory vm.panic_on_oom
kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward net.ipv4.conf.all.forwarding
net.ipv6.conf.all.forwarding net.ipv4.conf.all.route_localnet"
CGROUP_ROOT=/sys/fs/cgroup
# Host paths the kubelet, containerd 1.6 and libcni write to whatever their configuration says
# (device-plugin socket, container log links, shim sockets and runc state, CNI result cache,
# network namespaces). Those absent before start are removed by stop; in those that were there,
# stop removes what this node put there.
HOST_PATHS="/run/containerd /run/netns /var/lib/cni /var/lib/kubelet /var/log/pods /var/log/containers"

# The host state that start touches, for diffing before and after (sorted, without counters):
# the sysctls above, iptables of both families, links, addresses, routes, network namespaces,
# mounts, cgroup directories three levels deep.
cmd_host_state() {
  local key fam
  echo "## sysctl"
  for key in $SYSCTLS; do sysctl -n "$key" 2>/dev/null | sed "s|^|$key = |" || true; done
  for fam in iptables ip6tables; do
    echo "## $fam"
    "$fam-save" 2>/dev/null | grep -v '^#' | sed 's/\[[0-9]*:[0-9]*\]//' | sort || true
  done
  echo "## links"
  ip -o link show | sed 's/^[0-9]*: //; s/ link\/.*//' | sort
  echo "## addresses"
  ip -o addr show | awk '{print $2, $3, $4}' | sort
  echo "## routes"
  ip route show table all 2>/dev/null | sort
  echo "## netns"
  ip netns list 2>/dev/null | awk '{print $1}' | sort
  echo "## mounts"
  awk '{print $2, $3}' /proc/self/mounts | sort
  echo "## cgroups"
  find "$CGROUP_ROOT" -mindepth 1 -maxdepth 3 -type d 2>/dev/null | sort
  echo "## paths"
  for key in $HOST_PATHS; do [ -e "$key" ] && find "$key" -maxdepth 3 | sort; done
  true
}

iptables_chains() { # FAMILY: "table chain" per line
  "$1-save" 2>/dev/null | awk '/^\*/{t=substr($1,2)} /^:/{print t, substr($1,2)}'
}

snapshot_host() { # DIR
  local host="$1/host" key v fam
  mkdir -p "$host"
  for key in $SYSCTLS; do
    if v="$(sysctl -n "$key" 2>/dev/null)"; then printf '%s\t%s\n' "$key" "$v"; fi
  done > "$host/sysctl"
  for fam in iptables ip6tables; do
    iptables_chains "$fam" > "$host/$fam-chains"
    "$fam-save" 2>/dev/null | sed -n 's/^\*//p' > "$host/$fam-tables"
  done
  for key in $HOST_PATHS; do [ -e "$key" ] && echo "$key"; done > "$host/paths" || true
  ip netns list 2>/dev/null | awk '{print $1}' > "$host/netns"
  find "$CGROUP_ROOT" -mindepth 2 -maxdepth 2 -type d -name kubepods 2>/dev/null > "$host/kubepods" || true
  cmd_host_state > "$host/state.before"
}

# Every chain that is not in the snapshot and that the kubelet or this script made (KUBE-*,
# DHI-E2E-*): the rules that jump to it first, then its own rules, then the chain.
restore_iptables() { # DIR
  local fam table chain rule added
  for fam in iptables ip6tables; do
    command -v "$fam-save" >/dev/null || continue
    added="$(iptables_chains "$fam" | grep -E ' (KUBE-|DHI-E2E-)' | grep -vxF -f "$1/host/$fam-chains" || true)"
    [ -n "$added" ] || continue
    echo "$added" > "$1/host/$fam-added"
    while read -r table chain; do
      { "$fam" -w -t "$table" -S 2>/dev/null | grep -E -- "-j $chain( |\$)" | sed 's/^-A /-D /' || true; } |
        while read -r rule; do
          # shellcheck disable=SC2086 # a rule as iptables -S prints it, word for word
          "$fam" -w -t "$table" $rule 2>/dev/null || true
        done
    done <<< "$added"
    while read -r table chain; do "$fam" -w -t "$table" -F "$chain" 2>/dev/null || true; done <<< "$added"
    while read -r table chain; do "$fam" -w -t "$table" -X "$chain" 2>/dev/null || true; done <<< "$added"
  done
  # With the nf_tables backend, the first rule creates its table; a table that was not there
  # and holds nothing but empty built-in chains (ACCEPT) goes again.
  command -v nft >/dev/null || return 0
  local family rules
  for fam in iptables ip6tables; do
    family=ip && [ "$fam" = ip6tables ] && family=ip6
    for table in $("$fam-save" 2>/dev/null | sed -n 's/^\*//p' | grep -vxF -f "$1/host/$fam-tables"); do
      rules="$("$fam-save" -t "$table" 2>/dev/null | grep -v '^#' || true)"
      if ! grep -qvE '^(\*|COMMIT|:[A-Z]+ ACCEPT )' <<<"$rules"; then
        nft delete table "$family" "$table" 2>/dev/null || true
      fi
    done
  done
}

restore_paths() { # DIR
  local p
  for p in $HOST_PATHS; do
    if grep -qxF "$p" "$1/host/paths"; then
      # There before: only what this node put there (log links into DIR, its CNI results).
      find "$p" -maxdepth 1 -type l -lname "$1/*" -delete 2>/dev/null
      find "$p" -maxdepth 2 -name 'dhi-e2e-*' -delete 2>/dev/null
    else
      rm -rf "$p"
    fi
  done
  true
}

restore_sysctls() { # DIR
  local key old
  while IFS=$'\t' read -r key old; do
    [ "$(sysctl -n "$key" 2>/dev/null)" = "$old" ] || sysctl -q -w "$key=$old" || true
  done < "$1/host/sysctl"
}

# === processes ===

run_bg() { # NAME DIR COMMAND...: in its own session, its pid in DIR/NAME.pid
  local name="$1" dir="$2"
  shift 2
  setsid "$@" >"$dir/$name.log" 2>&1 </dev/null &
  echo $! > "$dir/$name.pid"
}

stop_pid_files() { # FILE=EXE...: TERM to each pid that still runs its EXE, KILL after 5 s
  local spec pid pids=()
  for spec in "$@"; do
    [ -f "${spec%%=*}" ] || continue
    pid="$(cat "${spec%%=*}")"
    if kill -0 "$pid" 2>/dev/null && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "${spec#*=}" ]; then
      kill -TERM "$pid" 2>/dev/null && pids+=("$pid")
    fi
    rm -f "${spec%%=*}"
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  any_alive() { for pid in "$@"; do kill -0 "$pid" 2>/dev/null && return 0; done; return 1; }
  for _ in $(seq 50); do
    any_alive "${pids[@]}" || break
    sleep 0.1
  done
  kill -KILL "${pids[@]}" 2>/dev/null
  true
}

wait_for() { # SECONDS WHAT COMMAND...
  local deadline=$((SECONDS + $1)) what="$2"
  shift 2
  while [ $SECONDS -lt $deadline ]; do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "$what: not within $1s"
  return 1
}

containerd_version() { # 1.6 | 2
  case "${DHI_E2E_CONTAINERD:-1.6}" in
    1.6) echo 1.6 ;;
    2) echo 2 ;;
    *) die "DHI_E2E_CONTAINERD=${DHI_E2E_CONTAINERD}: expected 1.6 or 2" ;;
  esac
}

ctr_in() { ctr --address "$1/containerd/containerd.sock" -n k8s.io "${@:2}"; }

write_containerd_config() { # DIR UNPRIVILEGED_PORTS
  local dir="$1" cd="$1/containerd"
  # Config version 2, which containerd 1.6 reads and containerd 2 migrates on load.
  cat > "$cd/config.toml" <<EOF
version = 2
root = "$cd/root"
state = "$cd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "$cd/containerd.sock"
[ttrpc]
  address = "$cd/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$cd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  # Root here lacks CAP_SYS_RESOURCE: an oom_score_adj below 0 fails every sandbox.
  restrict_oom_score_adj = true
  # Explicit, whatever the runtime's default (1.6: false, 2: true): tests assert it.
  enable_unprivileged_ports = $2
  enable_unprivileged_icmp = $2
  stream_server_address = "127.0.0.1"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$cd/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$dir/cni/net.d"
EOF
  # The pods' network: the bridge, no gateway, no masquerade; a route to the Service range
  # via the node's address (for the one DNAT rule), and no default route.
  cat > "$dir/cni/net.d/10-dhi-e2e.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "dhi-e2e",
  "plugins": [{
    "type": "bridge", "bridge": "$BRIDGE", "isGateway": false, "ipMasq": false, "hairpinMode": true,
    "ipam": {
      "type": "host-local", "dataDir": "$dir/cni/ipam",
      "ranges": [[{"subnet": "$POD_SUBNET", "rangeStart": "10.213.0.10", "rangeEnd": "10.213.0.250"}]],
      "routes": [{"dst": "10.96.0.0/16", "gw": "$NODE_IP"}]
    }
  }]
}
EOF
}

write_kubelet_config() { # DIR CA
  local kl="$1/kubelet"
  : > "$kl/resolv.conf"
  cat > "$kl/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
failSwapOn: false
containerRuntimeEndpoint: unix://$1/containerd/containerd.sock
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzPort: 0
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: $2}
authorization:
  mode: AlwaysAllow
resolvConf: $kl/resolv.conf
podLogsDir: $kl/logs
maxPods: 30
# Images are imported, never pulled: the kubelet must not collect them.
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
EOF
}

cmd_start() {
  local dir="${1:?usage: node.sh start DIR}" started=$SECONDS
  [ "$(id -u)" = 0 ] || die "needs root (a bridge, iptables, cgroups, containerd)"
  have_binaries || die "no node binaries in $BIN: run tests/e2e/node.sh build"
  [ -z "$(missing_packages)" ] || die "missing packages: $(missing_packages | tr '\n' ' '): run tests/e2e/node.sh build"
  mkdir -p "$dir"
  dir="$(cd "$dir" && pwd)"
  [ ${#dir} -le 60 ] || die "$dir is ${#dir} characters long: at most 60 (unix socket paths live under it)"
  [ -e "$dir/node.started" ] && die "$dir is in use: node.sh stop $dir"
  # A node whose test binary just exited may still be stopping (its watcher's stop takes ~12 s).
  bridge_gone() { ! ip link show "$BRIDGE" >/dev/null 2>&1; }
  wait_for 30 "the bridge $BRIDGE to go" bridge_gone ||
    die "the bridge $BRIDGE exists: another node runs on this machine (or a stop did not finish)"
  local version unpriv containerd_bin shim_path
  version="$(containerd_version)"
  if [ "$version" = 2 ]; then
    have_containerd2 || die "no containerd $CONTAINERD2_VERSION in $C2BIN: run tests/e2e/node.sh build"
    containerd_bin="$C2BIN/containerd" shim_path="$C2BIN:$PATH" unpriv=true
  else
    containerd_bin="$(command -v containerd)" shim_path="$PATH" unpriv=false
  fi
  unpriv="${DHI_E2E_UNPRIVILEGED_PORTS:-$unpriv}"

  snapshot_host "$dir"
  touch "$dir/node.started" # from here on, stop restores the host, whatever else fails
  if [ -n "${DHI_E2E_WATCH_PID:-}" ]; then
    # Stops the node and restores the host when the process that asked for it is gone.
    setsid bash -c 'while kill -0 "$1" 2>/dev/null && [ -e "$2/node.started" ]; do sleep 1; done; [ -e "$2/node.started" ] && exec bash "$3" stop "$2"' \
      watch "$DHI_E2E_WATCH_PID" "$dir" "$HERE/node.sh" >"$dir/watch.log" 2>&1 </dev/null &
  fi
  trap 'log "start failed; stopping"; cmd_stop "$dir" >&2; exit 1' ERR

  # The bridge: the node's address and the pods' network; nothing is routed anywhere else.
  ip link add "$BRIDGE" type bridge
  ip addr add "$BRIDGE_CIDR" dev "$BRIDGE"
  ip link set "$BRIDGE" up

  # The control plane, listening on the bridge address (stopped by this script's stop).
  DHI_E2E_APISERVER_ADDRESS="$NODE_IP" DHI_E2E_WATCH_PID='' bash "$HERE/controlplane.sh" start "$dir/cp" >&2
  # shellcheck disable=SC1091
  . "$dir/cp/env"
  local api_port="${DHI_E2E_APISERVER##*:}" pki="$dir/cp/pki"

  # In-cluster clients (the `kubernetes` Service, 10.96.0.1:443) reach the API server through
  # one DNAT rule, in a chain of our own. Pods route 10.96.0.0/16 to the node's address, so
  # the packet is delivered on this host, never forwarded.
  iptables -w -t nat -N DHI-E2E-SERVICES
  iptables -w -t nat -A DHI-E2E-SERVICES -s "$POD_SUBNET" -d 10.96.0.1/32 -p tcp --dport 443 \
    -j DNAT --to-destination "$NODE_IP:$api_port"
  iptables -w -t nat -I PREROUTING -j DHI-E2E-SERVICES

  # A local pause image, as no registry is reachable: busybox asleep (sandboxes are killed).
  mkdir -p "$dir/images" "$dir/containerd" "$dir/cni/net.d" "$dir/cni/ipam" "$dir/kubelet"
  python3 "$HERE/oci_image.py" --name "$PAUSE_IMAGE" --out "$dir/images/pause.tar" \
    --add /bin/busybox=/bin/busybox:0555 --user 65535:65535 \
    --entrypoint '["/bin/busybox","sleep","2147483647"]' >/dev/null

  write_containerd_config "$dir" "$unpriv"
  PATH="$shim_path" run_bg containerd "$dir" "$containerd_bin" --config "$dir/containerd/config.toml"
  wait_for 30 "containerd" ctr_in "$dir" version || { tail -n 20 "$dir/containerd.log" >&2; false; }
  ctr_in "$dir" images import "$dir/images/pause.tar" >/dev/null

  # The kubelet, controller-manager and scheduler, all as the cluster administrator (a test
  # cluster: no node authorizer); the API server authenticates to the kubelet with the admin
  # certificate, signed by the cluster CA.
  write_kubelet_config "$dir" "$pki/ca.crt"
  run_bg kubelet "$dir" "$BIN/kubelet" --config "$dir/kubelet/config.yaml" --kubeconfig "$KUBECONFIG" \
    --root-dir "$dir/kubelet/root" --cert-dir "$dir/kubelet/pki" --node-ip "$NODE_IP" \
    --hostname-override "$NODE_NAME"
  run_bg kube-controller-manager "$dir" "$BIN/kube-controller-manager" --kubeconfig "$KUBECONFIG" \
    --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
    --root-ca-file "$pki/ca.crt" --service-account-private-key-file "$pki/sa.key" \
    --service-cluster-ip-range 10.96.0.0/16 --leader-elect=false --secure-port 0
  run_bg kube-scheduler "$dir" "$BIN/kube-scheduler" --kubeconfig "$KUBECONFIG" \
    --authentication-kubeconfig "$KUBECONFIG" --authorization-kubeconfig "$KUBECONFIG" \
    --leader-elect=false --secure-port 0

  {
    cat "$dir/cp/env"
    echo "export DHI_E2E_NODE_NAME=$NODE_NAME"
    echo "export DHI_E2E_NODE_IP=$NODE_IP"
    echo "export DHI_E2E_NODE_DIR=$dir"
    echo "export DHI_E2E_CONTAINERD_ADDRESS=$dir/containerd/containerd.sock"
    echo "export DHI_E2E_CONTAINERD=$version"
    echo "export DHI_E2E_UNPRIVILEGED_PORTS=$unpriv"
    echo "export DHI_E2E_OCI_IMAGE=$HERE/oci_image.py"
  } > "$dir/env"

  local kubectl=("$DHI_E2E_KUBECTL" --kubeconfig "$KUBECONFIG")
  node_ready() {
    [ "$("${kubectl[@]}" get node "$NODE_NAME" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}')" = True ]
  }
  wait_for 120 "Node $NODE_NAME Ready" node_ready || { tail -n 30 "$dir/kubelet.log" >&2; false; }
  # What the controller-manager makes and every pod needs: the default ServiceAccount.
  wait_for 60 "ServiceAccount default/default" "${kubectl[@]}" get serviceaccount default
  trap - ERR
  log "node $NODE_NAME Ready in $((SECONDS - started))s (containerd $version, unprivileged ports $unpriv); env in $dir/env"
}

# Removes what start made, in the reverse order, from whatever state a start or a crash left.
cmd_stop() {
  local dir="${1:?usage: node.sh stop DIR}" started=$SECONDS
  # Best effort from here: every step runs, whatever failed before it.
  set +e
  [ -d "$dir" ] || return 0
  dir="$(cd "$dir" && pwd)"
  local t0=$SECONDS
  stop_pid_files "$dir/kube-scheduler.pid=$BIN/kube-scheduler" "$dir/kubelet.pid=$BIN/kubelet" \
    "$dir/kube-controller-manager.pid=$BIN/kube-controller-manager"
  log "kubelet, controller-manager, scheduler stopped ($((SECONDS - t0))s)"
  local cd="$dir/containerd" id pid exe cg m
  if [ -S "$cd/containerd.sock" ] && ctr_in "$dir" version >/dev/null 2>&1; then
    # Every task, then every container: each shim exits with its last task.
    for id in $(ctr_in "$dir" tasks ls -q 2>/dev/null); do ctr_in "$dir" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_in "$dir" tasks ls -q 2>/dev/null); do ctr_in "$dir" tasks delete -f "$id" >/dev/null 2>&1 || true; done
    for id in $(ctr_in "$dir" containers ls -q 2>/dev/null); do ctr_in "$dir" containers delete "$id" >/dev/null 2>&1 || true; done
  fi
  if [ -f "$dir/containerd.pid" ]; then
    exe="$(readlink "/proc/$(cat "$dir/containerd.pid")/exe" 2>/dev/null || true)"
    case "$exe" in */containerd) stop_pid_files "$dir/containerd.pid=$exe" ;; esac
    rm -f "$dir/containerd.pid"
  fi
  # Shims of this containerd (their command line names its socket), and whatever still runs
  # in the kubepods cgroups, which this node made.
  log "containers and containerd stopped ($((SECONDS - t0))s)"
  for pid in $(pgrep -f -- "-address $cd/containerd.sock" || true); do kill -KILL "$pid" 2>/dev/null || true; done
  local new_kubepods=""
  if [ -f "$dir/host/kubepods" ]; then
    new_kubepods="$(find "$CGROUP_ROOT" -mindepth 2 -maxdepth 2 -type d -name kubepods 2>/dev/null | grep -vxF -f "$dir/host/kubepods" || true)"
    for cg in $new_kubepods; do
      find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u | xargs -r kill -KILL 2>/dev/null || true
    done
    sleep 0.3
  fi
  # Mounts under DIR (root filesystems, volumes, shm), deepest first; the network namespaces
  # the CNI made (bind mounts in /run/netns).
  for m in $(awk '{print $2}' /proc/self/mounts | grep -F "$dir/" | sort -r); do
    umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
  done
  if [ -f "$dir/host/netns" ]; then
    for m in $(ip netns list 2>/dev/null | awk '{print $1}' | grep '^cni-' | grep -vxF -f "$dir/host/netns" || true); do
      ip netns delete "$m" 2>/dev/null || true
    done
  fi
  # The kubepods cgroups, leaves first.
  for cg in $new_kubepods; do find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true; done
  [ -d "$dir/cp" ] && bash "$HERE/controlplane.sh" stop "$dir/cp"
  log "control plane stopped ($((SECONDS - t0))s)"
  # The host's network and sysctls.
  if [ -e "$dir/node.started" ]; then
    restore_iptables "$dir"
    restore_paths "$dir"
    ip link del "$BRIDGE" 2>/dev/null || true
    restore_sysctls "$dir"
    cmd_host_state > "$dir/host/state.after"
    rm -f "$dir/node.started"
    if diff -u "$dir/host/state.before" "$dir/host/state.after" > "$dir/host/state.diff"; then
      log "stopped in $((SECONDS - started))s; the host is as start found it"
    else
      log "stopped in $((SECONDS - started))s; the host differs from what start found ($dir/host/state.diff):"
      head -n 40 "$dir/host/state.diff" >&2
    fi
  fi
}

cmd_import() { # DIR ARCHIVE...: into the node's containerd, namespace k8s.io (the CRI's)
  local dir="${1:?usage: node.sh import DIR ARCHIVE...}" tar
  shift
  for tar in "$@"; do ctr_in "$dir" images import "$tar"; done
}

# The webhook's image as the Dockerfile makes it (its run-time contract: /dhi-admission, user
# 65532:65532, entry point and command, MIMALLOC_ALLOW_THP=0, ports 8443 and 9090, an
# /etc/passwd with nonroot and the CA certificates; no shell), around BINARY, named as
# deploy/base names it. A static BINARY needs nothing else; a dynamic one gets the libraries
# that ldd lists, at the paths it lists.
cmd_webhook_image() { # BINARY OUT
  local bin="${1:?usage: node.sh webhook-image BINARY OUT}" out="${2:?usage: node.sh webhook-image BINARY OUT}"
  local name libs=() lib deps
  name="$(sed -n 's/^ *image: *\(ghcr.io\/dhi-admission\/dhi-admission:.*\)$/\1/p' "$HERE/../../deploy/base/deployment.yaml" | sed -n 1p)"
  [ -n "$name" ] || die "no dhi-admission image in deploy/base/deployment.yaml"
  # Read whole before matching: under pipefail, `ldd | grep -q` fails whenever grep's early
  # exit cuts ldd off (SIGPIPE), and the image then went out without its libraries.
  deps="$(ldd "$bin" 2>/dev/null || true)"
  if grep -q '=> /\|^\s*/' <<<"$deps"; then
    for lib in $(grep -o '/[^ ]*' <<<"$deps"); do libs+=(--add "$(readlink -f "$lib")=$lib:0555"); done
  fi
  python3 "$HERE/oci_image.py" --name "$name" --out "$out" --add "$bin=/dhi-admission:0555" "${libs[@]}" \
    --add /etc/ssl/certs/ca-certificates.crt=/etc/ssl/certs/ca-certificates.crt \
    --user-account nonroot:65532 --user 65532:65532 \
    --entrypoint '["/dhi-admission"]' --cmd '["serve"]' --env MIMALLOC_ALLOW_THP=0 \
    --port 8443 --port 9090 \
    --label org.opencontainers.image.title=dhi-admission \
    --label org.opencontainers.image.source=https://github.com/dhi-admission/dhi-admission \
    --label org.opencontainers.image.licenses=Apache-2.0
}

case "${1:-}" in
  build) cmd_build ;;
  bin-dir)
    echo "$BIN"
    have_binaries && [ -z "$(missing_packages)" ] && bash "$HERE/controlplane.sh" bin-dir >/dev/null
    ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  import) shift; cmd_import "$@" ;;
  host-state) cmd_host_state ;;
  webhook-image) shift; cmd_webhook_image "$@" ;;
  *) echo "usage: $0 build | bin-dir | start DIR | stop DIR | import DIR ARCHIVE... | host-state | webhook-image BINARY OUT" >&2; exit 2 ;;
esac
