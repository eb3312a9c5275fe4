//! End to end: the real `dhi-admission` binary behind a real kube-apiserver and etcd.
//!
//! ```sh
//! tests/e2e/controlplane.sh build          # once per machine: kube-apiserver, kubectl, etcd
//! DHI_E2E=1 cargo test --test e2e          # the suite
//! ```
//!
//! One control plane (tests/e2e/controlplane.sh, loopback only, no controller-manager, no
//! scheduler, no kubelet) is started per run of this binary and shared by every test; it
//! stops by itself when the binary exits. Each test works in its own namespace, labelled
//! `e2e.dhi.io/test=<name>`, runs its own `dhi-admission serve` on a loopback port, and
//! registers the shipped webhook configurations (deploy/base) by URL, narrowed to that label,
//! so the tests run in parallel without seeing each other's webhooks.
//!
//! Without the binaries and without `DHI_E2E`, each test prints one line saying how to run
//! the suite, and passes: plain `cargo test` needs no Go. With `DHI_E2E=1` a missing or
//! failing control plane fails the tests. `DHI_E2E=0` skips them even when built.
//! Logs of every run stay in `target/tmp/e2e/<pid>/` (API server, etcd, audit log, and each
//! test's webhook server).
//!
//! Behaviour that belongs to an open issue is asserted but gated, see the
//! `ISSUE_*` constants.

// The harness of the other test binaries: its polling serves this suite too.
mod common;

#[path = "e2e/cluster.rs"]
mod cluster;
#[path = "e2e/injector.rs"]
mod injector;
#[path = "e2e/tier.rs"]
mod tier;
#[path = "e2e/webhook.rs"]
mod webhook;

#[path = "e2e/audit.rs"]
mod audit;
#[path = "e2e/background_audit.rs"]
mod background_audit;
#[path = "e2e/certs.rs"]
mod certs;
#[path = "e2e/guides_root.rs"]
mod guides_root;
#[path = "e2e/guides_warnings.rs"]
mod guides_warnings;
#[path = "e2e/reinvocation.rs"]
mod reinvocation;
#[path = "e2e/safe_install.rs"]
mod safe_install;
#[path = "e2e/scan.rs"]
mod scan;
#[path = "e2e/scope.rs"]
mod scope;
#[path = "e2e/seed.rs"]
mod seed;
#[path = "e2e/updates.rs"]
mod updates;
#[path = "e2e/warn.rs"]
mod warn;
