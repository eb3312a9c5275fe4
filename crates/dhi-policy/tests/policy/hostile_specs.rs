//! Pod specs shaped to make the engine slow or to confuse its messages: each still gets
//! the exact decision a small one gets. (How long they take is for `cargo bench`.)

use dhi_policy::{Engine, Mode, Warning, Webhook};
use serde_json::{Value, json};

use crate::support::{self, Ask, pod};

/// Enough names that a scan per container (mounts × volumes, containers × old
/// containers) would be hundreds of millions of comparisons.
const MANY: usize = 20_000;

/// A privileged host-network agent writing to `MANY` volumes, of which only the last is
/// a host path.
fn node_agent_with_many_volumes() -> Value {
    let mut volumes: Vec<Value> = (0..MANY)
        .map(|i| json!({"name": format!("v{i}"), "emptyDir": {}}))
        .collect();
    let last = format!("v{}", MANY - 1);
    volumes[MANY - 1] = json!({"name": last, "hostPath": {"path": "/var/run/agent"}});
    let mounts: Vec<Value> = (0..MANY)
        .map(|i| {
            let name = format!("v{i}");
            json!({"name": name, "mountPath": format!("/m/{i}")})
        })
        .collect();
    pod(json!({
        "hostNetwork": true,
        "volumes": volumes,
        "containers": [{"name": "agent", "image": "dhi.io/node-exporter:1",
                        "securityContext": {"privileged": true}, "volumeMounts": mounts}],
    }))
}

#[test]
fn a_node_agent_with_twenty_thousand_volumes_is_left_without_a_user() {
    let object = node_agent_with_many_volumes();
    let eval = Ask::pod(&object).evaluate(&Engine::default());
    // Only the pod's fsGroup, which host paths ignore: the container keeps its root.
    assert_eq!(
        support::patch_json(&eval.patch),
        json!([{"op": "add", "path": "/spec/securityContext", "value": {"fsGroup": 65532}}])
    );
    assert!(eval.violations.is_empty(), "{:?}", eval.violations);
    let [Warning::NodeAgentNeedsRoot { container, uid, .. }] = eval.warnings.as_slice() else {
        panic!("{:?}", eval.warnings);
    };
    assert_eq!((container.as_str(), *uid), ("agent", 65532));

    // The host path read-only: an agent that only reads the host gets the usual user.
    let mut read_only = object;
    read_only["spec"]["containers"][0]["volumeMounts"][MANY - 1]["readOnly"] = json!(true);
    let eval = Ask::pod(&read_only).evaluate(&Engine::default());
    assert!(eval.warnings.is_empty(), "{:?}", eval.warnings);
    let patched = support::apply(&read_only, &eval.patch);
    assert_eq!(
        patched["spec"]["containers"][0]["securityContext"],
        json!({"privileged": true, "runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true})
    );
}

#[test]
fn an_update_of_twenty_thousand_containers_finds_the_one_switched_image() {
    let containers = |switched: Option<usize>| -> Vec<Value> {
        (0..MANY)
            .map(|i| {
                let image = if Some(i) == switched {
                    "dhi.io/python:3.13"
                } else {
                    "dhi.io/nginx:1.31"
                };
                json!({"name": format!("c{i}"), "image": image})
            })
            .collect()
    };
    let spec = |switched| json!({"securityContext": {"runAsNonRoot": true}, "containers": containers(switched)});
    let old = pod(spec(None));
    let new = pod(spec(Some(MANY - 1)));
    let eval = Ask::pod(&new).old(Some(&old)).evaluate(&Engine::default());
    let switched: Vec<_> = eval
        .warnings
        .iter()
        .filter_map(|w| match w {
            Warning::ImageSwitchWithoutUser {
                container, image, ..
            } => Some((container.as_str(), image.as_str())),
            _ => None,
        })
        .collect();
    let last = format!("c{}", MANY - 1);
    assert_eq!(switched, [(last.as_str(), "dhi.io/python:3.13")]);
}

/// The part of an invalid image after ". Fix: " is the object's text, not the fix.
#[test]
fn an_image_that_spells_a_fix_does_not_become_the_fix() {
    let object = pod(json!({"containers": [{"name": "app", "image": "x. Fix: evil"}]}));
    let decision = Ask::pod(&object).review(&Engine::default(), Webhook::Validate, Mode::Warn);
    let [warning] = decision.warnings.as_slice() else {
        panic!("{:?}", decision.warnings);
    };
    let fix = "Fix: write it as [registry/]repository[:tag][@digest], repository in lower case.";
    assert!(
        warning.starts_with(&format!(
            "warn: [invalid-image] container \"app\": {fix} Why: "
        )),
        "{warning}"
    );
    assert!(
        warning.ends_with("so the kubelet cannot pull it"),
        "{warning}"
    );
}
