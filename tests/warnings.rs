//! Warnings keep their fix (issue 23, point 1): the longest real findings (63-character
//! container names, a privileged port with the runtime advice, a rewrite left alone
//! because it is pinned by digest) in every mode, through the webhook router and through
//! `check`. kube-apiserver cuts each warning to 256 characters only when one response's
//! warnings pass 4 KiB; the rule, the container and the fix come first, so they survive.

mod common;

use common::app::App;
use common::cli::{Run, dhi};
use common::*;
use dhi_policy::{WARNING_CUT, WARNINGS_TOTAL, as_api_server_sends};
use serde_json::{Value, json};

/// The longest container name the API server accepts (a DNS label).
fn long_name(tag: &str) -> String {
    let name = format!("{tag}-{}", "x".repeat(63));
    name[..63].to_owned()
}

fn long_pod() -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "long", "namespace": "team"},
    "spec": {"containers": [
        {"name": long_name("web"), "image": "dhi.io/nginx:1.31", "ports": [{"containerPort": 80}]},
        {"name": long_name("root"), "image": "dhi.io/python:3.13-dev", "securityContext": {"runAsUser": 0}},
        {"name": long_name("pinned"),
         "image": format!("docker.io/istio/proxyv2:1.30.3@sha256:{}", "a".repeat(64))},
    ]}})
}

/// Within the first [`WARNING_CUT`] characters, what must survive a cut.
fn head(warning: &str) -> &str {
    &warning[..warning.len().min(WARNING_CUT)]
}

fn assert_survives_a_cut(warning: &str) {
    assert!(warning.is_ascii(), "{warning:?}");
    let head = head(warning);
    if warning.contains("] container ") {
        // A rule's finding: rule, container and the first fix in full.
        let fix = head.split_once(": Fix: ").map(|(_, fix)| fix).unwrap_or("");
        assert!(
            fix.contains("(targetPort: 8080), or set the pod sysctl net.ipv4.ip_unprivileged_port_start=80")
                || fix.contains("remove runAsUser: 0 and use the runtime variant (tag without -dev), which runs as nonroot"),
            "the fix is cut: {warning:?}"
        );
    } else if warning.contains("not rewritten") {
        assert!(
            head.contains("it is pinned by digest, which names the upstream content"),
            "the reason is cut: {warning:?}"
        );
    }
}

#[tokio::test]
async fn the_longest_findings_keep_their_fix_in_every_mode() {
    let request = review(&long_pod());
    let mut app = App::new();
    for mode in ["", "/audit", "/warn"] {
        let validate = app
            .post_json(&format!("/validate{mode}"), &request)
            .await
            .review();
        let mutate = app
            .post_json(&format!("/mutate{mode}"), &request)
            .await
            .review();
        let warnings: Vec<&String> = validate.warnings.iter().chain(&mutate.warnings).collect();
        let total: usize = warnings.iter().map(|w| w.len()).sum();
        assert!(total <= WARNINGS_TOTAL, "{mode}: {total}");
        for w in &warnings {
            assert_survives_a_cut(w);
        }
        // Below the total nothing is cut: the runtime advice survives whole.
        let port = warnings.iter().find(|w| w.contains("[privileged-port]"));
        let digest = warnings.iter().find(|w| w.contains("pinned by digest"));
        assert!(
            digest.is_some_and(|w| w.ends_with(&"a".repeat(64))),
            "{mode}: {warnings:?}"
        );
        if mode.is_empty() {
            assert!(!validate.allowed && port.is_none());
            let message = validate.message();
            assert!(
                message
                    .contains("set runtime.unprivilegedPortStart: 0 in the dhi-admission policy)")
            );
            assert!(validate.audit_annotations.is_empty());
            continue;
        }
        assert!(validate.allowed, "{mode}");
        assert!(
            port.is_some_and(|w| w.ends_with("cannot bind ports below 1024")),
            "{mode}: {warnings:?}"
        );
        if mode == "/audit" {
            // The whole finding, fix and runtime advice included, is in the audit log.
            let finding = &validate.audit_annotations["finding.privileged-port"];
            assert!(finding.starts_with(&format!("container \"{}\"", long_name("web"))));
            assert!(
                finding
                    .ends_with("set runtime.unprivilegedPortStart: 0 in the dhi-admission policy)")
            );
            assert!(
                validate.audit_annotations["finding.run-as-root"]
                    .contains("Fix: remove runAsUser: 0")
            );
        } else {
            assert!(validate.audit_annotations.is_empty(), "{mode}");
        }
    }
}

/// More than 4 KiB of warnings: cut as kube-apiserver cuts them, each fix still there.
#[tokio::test]
async fn past_four_kib_each_warning_is_cut_after_its_fix() {
    let containers: Vec<Value> = (0..20)
        .map(|i| {
            json!({"name": long_name(&format!("w{i:02}")), "image": "dhi.io/nginx:1.31",
            "ports": [{"containerPort": 80 + i}]})
        })
        .collect();
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "many", "namespace": "team"},
        "spec": {"containers": containers}});
    let audit = App::new()
        .post_json("/validate/audit", &review(&pod))
        .await
        .review();
    assert!(audit.allowed);
    assert!(
        audit.warnings.len() >= WARNINGS_TOTAL / WARNING_CUT,
        "{}",
        audit.warnings.len()
    );
    assert!(audit.warnings.len() <= 20);
    for w in &audit.warnings {
        assert!(w.len() <= WARNING_CUT, "{w:?}");
        let fix = w
            .split_once(": Fix: listen on ")
            .map(|(_, f)| f)
            .unwrap_or("");
        assert!(fix.contains(" and map Service port "), "{w:?}");
    }
    // The complete findings are all in the audit annotation.
    assert_eq!(
        audit.audit_annotations["finding.privileged-port"]
            .lines()
            .count(),
        20
    );
}

#[test]
fn the_api_server_cut_keeps_short_lists_whole_and_ascii() {
    let long = "y".repeat(300);
    assert_eq!(
        as_api_server_sends(std::slice::from_ref(&long)),
        [long.as_str()]
    );
    let many: Vec<String> = (0..16).map(|i| format!("{i}{long}")).collect();
    let cut = as_api_server_sends(&many);
    assert!(cut.iter().all(|w| w.len() == WARNING_CUT));
    // It adds warnings while it has written less than the total.
    assert_eq!(cut.len(), WARNINGS_TOTAL / WARNING_CUT);
    assert_eq!(
        as_api_server_sends(&["caf\u{e9}".to_owned()]),
        ["caf\\u{e9}"]
    );
    // Sent once each, like the recorder.
    assert_eq!(
        as_api_server_sends(&["a".to_owned(), "a".to_owned()]),
        ["a"]
    );
}

/// `check` prints every finding whole; the webhook sends the same texts.
#[tokio::test]
async fn check_prints_what_the_webhook_sends() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("long.yaml");
    std::fs::write(&path, serde_json::to_string(&long_pod()).unwrap()).unwrap();
    for mode in ["enforce", "warn", "audit"] {
        let mut check = dhi(&["check", "-o", "json", "--mode", mode]);
        let report = Run::from(check.arg(&path).output().unwrap()).json();
        let object = &report["objects"][0];
        let printed: Vec<String> = object["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w.as_str().unwrap().to_owned())
            .collect();
        let request = review(&long_pod());
        let suffix = if mode == "enforce" {
            String::new()
        } else {
            format!("/{mode}")
        };
        let mut app = App::new();
        let mut sent = app
            .post_json(&format!("/validate{suffix}"), &request)
            .await
            .review()
            .warnings;
        for w in app
            .post_json(&format!("/mutate{suffix}"), &request)
            .await
            .review()
            .warnings
        {
            if !sent.contains(&w) {
                sent.push(w);
            }
        }
        let mut printed_sorted = as_api_server_sends(&printed);
        printed_sorted.sort();
        sent.sort();
        assert_eq!(printed_sorted, sent, "{mode}");
        for v in object["violations"].as_array().unwrap() {
            assert!(v["message"].as_str().unwrap().contains(". Fix: "), "{v}");
        }
    }
}
