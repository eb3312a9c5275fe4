//! `capabilities` and ports below 1024 (issue 23, point 3). Kubernetes sets no ambient
//! capabilities, so a nonroot process binds a low port only through a file capability on
//! its binary (guides.json `file_capabilities`; coredns's from its package definition),
//! which needs NET_BIND_SERVICE in the bounding set: containerd's default set has it,
//! `drop: [ALL]` removes it, `add` gives it back. Through the engine and the router.

mod common;

use common::app::App;
use common::engine::decide_pod;
use common::*;
use dhi_policy::{Decision, Engine, RuleId, Webhook};
use serde_json::{Value, json};

fn validate(object: &Value) -> Decision {
    decide_pod(&Engine::default(), object, Webhook::Validate)
}

fn pod(image: &str, port: i64, caps: Option<Value>) -> Value {
    let mut c = json!({"name": "srv", "image": image, "ports": [{"containerPort": port}]});
    if let Some(caps) = caps {
        c["securityContext"] = json!({"capabilities": caps});
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "srv", "namespace": "team"},
        "spec": {"containers": [c]}})
}

fn ports(d: &Decision) -> Vec<&str> {
    d.violations
        .iter()
        .filter(|v| v.rule == RuleId::PrivilegedPort)
        .map(|v| v.message.as_str())
        .collect()
}

/// The one privileged-port denial of a pod with these capabilities.
fn the_port_denial(image: &str, port: i64, caps: Value) -> String {
    let d = validate(&pod(image, port, Some(caps)));
    let [message] = ports(&d)[..] else {
        panic!("{:?}", d.violations)
    };
    message.to_owned()
}

#[test]
fn a_file_capability_binds_while_the_bounding_set_keeps_net_bind_service() {
    let drop_all_add = Some(json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}));
    // nginx-ingress's /usr/sbin/nginx has cap_net_bind_service=+eip: UID 101 binds 80.
    assert!(ports(&validate(&pod("dhi.io/nginx-ingress:5.5.4", 80, None))).is_empty());
    assert!(
        ports(&validate(&pod(
            "dhi.io/nginx-ingress:5.5.4",
            80,
            drop_all_add.clone()
        )))
        .is_empty()
    );
    // coredns's usual manifest: drop ALL, add NET_BIND_SERVICE, port 53.
    assert!(ports(&validate(&pod("dhi.io/coredns:1.14.7", 53, drop_all_add))).is_empty());
    // drop: [ALL] alone takes it away: the denial says so and gives the fix that works.
    let message = the_port_denial("dhi.io/coredns:1.14.7", 53, json!({"drop": ["ALL"]}));
    assert!(
        message.contains("and its capabilities drop NET_BIND_SERVICE, which the file capability of the image's binary needs")
            && message.contains(". Fix: add NET_BIND_SERVICE to capabilities.add, or listen on 8053"),
        "{message}"
    );
    // So does dropping it by name, even if add names it too (containerd drops last).
    let d = validate(&pod(
        "dhi.io/nginx-ingress:5.5.4",
        80,
        Some(json!({"drop": ["NET_BIND_SERVICE"], "add": ["NET_BIND_SERVICE"]})),
    ));
    assert_eq!(ports(&d).len(), 1);
}

#[test]
fn net_bind_service_without_a_file_capability_is_denied_and_says_why() {
    let message = the_port_denial(
        "dhi.io/nginx:1.31",
        80,
        json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}),
    );
    assert!(
        message.contains("capabilities.add: [NET_BIND_SERVICE] does not help, since Kubernetes gives a nonroot process no ambient capabilities")
            && message.contains(". Fix: listen on 8080 and map Service port 80 to it (targetPort: 8080)"),
        "{message}"
    );
    // Without capabilities, the message is the one it always was.
    let d = validate(&pod("dhi.io/nginx:1.31", 80, None));
    assert!(!ports(&d)[0].contains("capabilit"));
}

#[tokio::test]
async fn the_router_judges_capabilities_as_the_engine_does() {
    let mut app = App::new();
    let ok = pod(
        "dhi.io/coredns:1.14.7",
        53,
        Some(json!({"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]})),
    );
    let r = app.post_json("/validate", &review(&ok)).await.review();
    assert!(r.allowed, "{}", r.raw);
    let bad = pod(
        "dhi.io/nginx:1.31",
        80,
        Some(json!({"add": ["NET_BIND_SERVICE"]})),
    );
    let r = app.post_json("/validate", &review(&bad)).await.review();
    assert!(
        !r.allowed && r.message().contains("does not help"),
        "{}",
        r.raw
    );
}
