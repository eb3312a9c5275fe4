//! Privileged node agents (issue 23, point 4): a privileged container on the host network
//! or PID namespace that writes a host path is not given the catalog's nonroot UID, which
//! would leave it unable to write the root-owned paths it exists to manage; a warning gives
//! the fix (root, as its guide prescribes or as the policy allows). Read-only host paths and
//! unprivileged containers are patched as before. Engine and router.

mod common;

use common::app::App;
use common::engine::decide_pod as decide;
use common::*;
use dhi_policy::{Decision, Engine, Webhook};
use serde_json::{Value, json};

fn agent(image: &str, privileged: bool, read_only: bool, host: &str) -> Value {
    let mut spec = json!({
        "containers": [{"name": "agent", "image": image,
            "securityContext": {"privileged": privileged},
            "volumeMounts": [{"name": "host", "mountPath": "/host", "readOnly": read_only}]}],
        "volumes": [{"name": "host", "hostPath": {"path": "/etc/cni/net.d"}}]});
    spec[host] = json!(true);
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agent", "namespace": "kube-cni"},
        "spec": spec})
}

fn patch_text(d: &Decision) -> String {
    serde_json::to_string(&d.patch).unwrap()
}

#[test]
fn a_privileged_agent_writing_host_paths_is_not_given_the_nonroot_uid() {
    let e = Engine::default();
    for host in ["hostNetwork", "hostPID"] {
        let pod = agent("dhi.io/calico-node:3.32.1", true, false, host);
        let m = decide(&e, &pod, Webhook::Mutate);
        assert!(
            !patch_text(&m).contains("runAsUser"),
            "{host}: {}",
            patch_text(&m)
        );
        let v = decide(&e, &pod, Webhook::Validate);
        assert!(v.allowed);
        assert_eq!(
            v.warnings,
            [
                "container \"agent\": privileged node agent writing host paths, not given UID 65532: \
              as nonroot it cannot write the root-owned host paths it mounts. Fix: set runAsUser: 0 \
              and allow root for this image in the dhi-admission policy (catalog: {calico-node: \
              {allowRoot: true}}). Image: dhi.io/calico-node:3.32.1"
            ]
        );
    }
    // Its guide's word, where the guide prescribes root.
    let v = decide(
        &e,
        &agent(
            "dhi.io/node-problem-detector:1.36.0",
            true,
            false,
            "hostPID",
        ),
        Webhook::Validate,
    );
    assert!(v.warnings[0].contains("Fix: set runAsUser: 0, as the image's own guide prescribes (image/node-problem-detector/guides.md:56)"), "{:?}", v.warnings);
    // The fix, taken, is admitted.
    let allowed = Engine::new(
        dhi_policy::PolicyFile::from_yaml("catalog: {calico-node: {allowRoot: true}}\n").unwrap(),
    );
    let mut root = agent("dhi.io/calico-node:3.32.1", true, false, "hostNetwork");
    root["spec"]["containers"][0]["securityContext"]["runAsUser"] = json!(0);
    let v = decide(&allowed, &root, Webhook::Validate);
    assert!(
        v.allowed && v.warnings.is_empty(),
        "{:?} {:?}",
        v.violations,
        v.warnings
    );
}

#[test]
fn read_only_host_paths_and_unprivileged_agents_are_patched_as_before() {
    let e = Engine::default();
    for pod in [
        agent("dhi.io/calico-node:3.32.1", true, true, "hostNetwork"),
        agent("dhi.io/calico-node:3.32.1", false, false, "hostNetwork"),
    ] {
        let m = decide(&e, &pod, Webhook::Mutate);
        assert!(patch_text(&m).contains("runAsUser"), "{}", patch_text(&m));
        assert!(decide(&e, &pod, Webhook::Validate).warnings.is_empty());
    }
    // Off the host's namespaces a host path alone does not make a node agent.
    let mut pod = agent("dhi.io/calico-node:3.32.1", true, false, "hostNetwork");
    pod["spec"]["hostNetwork"] = json!(false);
    assert!(patch_text(&decide(&e, &pod, Webhook::Mutate)).contains("runAsUser"));
}

#[tokio::test]
async fn the_router_leaves_the_agent_unpatched_with_the_warning() {
    let mut app = App::new();
    let request = review(&agent(
        "dhi.io/calico-node:3.32.1",
        true,
        false,
        "hostNetwork",
    ));
    let m = app.post_json("/mutate", &request).await.review();
    assert!(m.allowed);
    assert!(
        !m.patch
            .unwrap_or(json!([]))
            .to_string()
            .contains("runAsUser")
    );
    let v = app.post_json("/validate", &request).await.review();
    assert!(
        v.allowed && v.warnings[0].contains("privileged node agent writing host paths"),
        "{:?}",
        v.warnings
    );
}
