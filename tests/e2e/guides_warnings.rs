//! Warnings keep their fix through the real kube-apiserver (issue 23, point 1): the longest
//! real findings in every mode, and more than 4 KiB of them, which the API server cuts.

use serde_json::{Value, json};

use super::cluster::pod;
use super::webhook::setup;

/// The longest container name the API server accepts (a DNS label).
fn long_name(tag: &str) -> String {
    format!("{tag}-{}", "x".repeat(63))[..63].to_owned()
}

fn long_pod(name: &str) -> Value {
    pod(
        name,
        json!([
            {"name": long_name("web"), "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 80}]},
            {"name": long_name("root"), "image": "dhi.io/python:3.13-dev", "securityContext": {"runAsUser": 0}},
            {"name": long_name("pinned"),
             "image": format!("docker.io/istio/proxyv2:1.30.3@sha256:{}", "a".repeat(64))},
        ]),
    )
}

#[tokio::test]
async fn guides_warnings_keep_their_fix_through_kube_apiserver() {
    for mode in ["audit", "warn", "enforce"] {
        let test = format!("guides-warn-{mode}");
        let Some(env) = setup(&test, &[("dhi.io/mode", mode)], &[]).await else {
            return;
        };
        let answer = env.create_pod(&long_pod("long"), true).await;
        let pinned = answer.warning(|w| w.contains("not rewritten"));
        assert!(
            pinned.contains(": it is pinned by digest, which names the upstream content; image "),
            "{pinned}"
        );
        if mode == "enforce" {
            answer.assert_status(403).assert_message(|m| {
                m.contains("set runtime.unprivilegedPortStart: 0 in the dhi-admission policy)")
            });
            continue;
        }
        assert_eq!(answer.status, 201, "{mode}: {}", answer.body);
        let port = answer.warning(|w| w.contains("[privileged-port]"));
        // Below 4 KiB the API server cuts nothing: the fix with its runtime advice, whole.
        assert!(
            port.starts_with(&format!(
                "{mode}: [privileged-port] container \"{}\": Fix: listen on 8080",
                long_name("web")
            )) && port
                .contains("set runtime.unprivilegedPortStart: 0 in the dhi-admission policy)")
                && port.ends_with("cannot bind ports below 1024"),
            "{port}"
        );
    }
}

#[tokio::test]
async fn guides_warnings_past_four_kib_are_cut_after_their_fix() {
    let Some(env) = setup("guides-warn-many", &[("dhi.io/mode", "audit")], &[]).await else {
        return;
    };
    let containers: Vec<Value> = (0..20)
        .map(|i| {
            json!({"name": long_name(&format!("w{i:02}")), "image": "dhi.io/nginx:1.31",
            "ports": [{"containerPort": 80 + i}]})
        })
        .collect();
    let answer = env.create_pod(&pod("many", json!(containers)), true).await;
    answer.assert_status(201);
    let ports: Vec<&String> = answer
        .warnings
        .iter()
        .filter(|w| w.contains("[privileged-port]"))
        .collect();
    assert!(ports.len() >= 10, "{:?}", answer.warnings);
    for w in ports {
        assert!(w.chars().count() <= 256, "{w}");
        assert!(
            w.contains(": Fix: listen on ") && w.contains(" and map Service port "),
            "{w}"
        );
    }
}
