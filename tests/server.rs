//! The server over real TLS: the admission protocol end to end, HTTP/1.1 keep-alive and
//! HTTP/2, every bad input with its exact answer, certificate and policy reloads under
//! traffic, metrics, connection timeouts, and SIGTERM draining of the real binary.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::*;
use dhi_admission::config::Limits;
use http::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

fn body(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// The patch `/mutate` returns for `istio-pod.json`.
fn istio_patch() -> Value {
    json!([
        {"op": "add", "path": "/spec/containers/0/securityContext",
         "value": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true}},
        {"op": "replace", "path": "/spec/containers/1/image", "value": "dhi.io/istio-proxyv2:1.30.3"},
        {"op": "add", "path": "/spec/securityContext/fsGroup", "value": 65532}
    ])
}

/// istio-init runs as root with NET_ADMIN: its image is left alone, with this warning.
const ISTIO_INIT_SKIPPED: &str = "container \"istio-init\": docker.io/istio/proxyv2:1.30.3 not rewritten to \
     dhi.io/istio-proxyv2:1.30.3: it runs as root and the hardened image is nonroot";

/// The patch `/mutate` returns for `small-pod.json`.
fn small_pod_patch() -> Value {
    json!([
        {"op": "add", "path": "/spec/containers/0/securityContext",
         "value": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true}},
        {"op": "add", "path": "/spec/securityContext/fsGroup", "value": 65532}
    ])
}

/// Checks a denial: 403 Forbidden, a header line naming the object, then one line per
/// violation with the rule id, the container, the image and a fix, in this order.
fn assert_denied(review: &Review, header: &str, violations: &[(&str, &str, &str)]) {
    assert!(!review.allowed, "{}", review.raw);
    let status = review.status.as_ref().unwrap();
    assert_eq!(status["code"], 403);
    assert_eq!(status["reason"], "Forbidden");
    assert_eq!(status["status"], "Failure");
    assert!(review.patch.is_none());
    let message = review.message();
    let lines: Vec<&str> = message.lines().collect();
    let n = violations.len();
    assert_eq!(
        lines[0],
        format!(
            "{header} cannot run on Docker Hardened Images ({n} violation{}):",
            if n == 1 { "" } else { "s" }
        ),
        "{message}"
    );
    assert_eq!(lines.len(), n + 1, "one line per violation:\n{message}");
    for (line, (rule, container, image)) in lines[1..].iter().zip(violations) {
        let prefix = format!("- [{rule}] container \"{container}\"");
        assert!(
            line.starts_with(&prefix),
            "{line:?} should start with {prefix:?}"
        );
        assert!(line.contains(image), "{line:?} should name {image}");
        assert!(line.contains("Fix: "), "{line:?} should say how to fix it");
    }
}

/// The three violations of [`violating_pod`] plus its dev-variant line, in order.
const VIOLATIONS: &[(&str, &str, &str)] = &[
    ("run-as-root", "web", "dhi.io/nginx:1.31"),
    ("privileged-port", "web", "dhi.io/nginx:1.31"),
    ("run-as-root", "tools", "dhi.io/python:3.13-dev"),
    ("invalid-image", "bad", "docker.io/Library/Nginx:1.29"),
];

const DEV_WARNING: &str = "container \"tools\" uses dev variant dhi.io/python:3.13-dev (root, shell, package \
     manager): use the runtime variant (tag without -dev) in production";

// ===== the admission protocol =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutate_istio_pod_returns_the_exact_patch_over_both_protocols() {
    let server = TestServer::start().await;
    let t = server.target();
    let raw = fixture_bytes(ISTIO_POD);
    let object = fixture(ISTIO_POD)["request"]["object"].clone();
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = t.connect(proto).await;
        // The fixture as stored (pretty-printed), then compact as the API server sends it.
        for bytes in [raw.clone(), fixture_compact(ISTIO_POD)] {
            let review = conn.post("/mutate", bytes).await.review();
            assert_eq!(review.uid, "4f1c3a52-8e0d-4b7a-9c65-2d7e1f0b9a13");
            assert!(review.allowed);
            assert!(review.status.is_none(), "{}", review.raw);
            assert_eq!(review.patch_type.as_deref(), Some("JSONPatch"));
            assert_eq!(review.patch.as_ref(), Some(&istio_patch()), "{proto:?}");
            assert_eq!(review.warnings, vec![ISTIO_INIT_SKIPPED.to_owned()]);
            assert!(review.audit_annotations.is_empty());

            // What kube-apiserver does next: apply the patch, then (reinvocationPolicy:
            // IfNeeded) call the webhook again with the patched object.
            let patched = apply_patch(&object, review.patch.as_ref().unwrap());
            assert_eq!(
                patched["spec"]["containers"][1]["image"],
                "dhi.io/istio-proxyv2:1.30.3"
            );
            assert_eq!(
                patched["spec"]["initContainers"][0]["image"],
                "docker.io/istio/proxyv2:1.30.3"
            );
            let mut again = fixture(ISTIO_POD);
            again["request"]["object"] = patched.clone();
            set_uid(&mut again, "reinvocation-1");
            let second = conn.post_json("/mutate", &again).await.review();
            assert_eq!(second.uid, "reinvocation-1");
            assert!(second.allowed);
            assert_eq!(second.patch, None, "a patched object needs no second patch");
            assert_eq!(second.patch_type, None);
            assert_eq!(second.warnings, vec![ISTIO_INIT_SKIPPED.to_owned()]);

            // The patched pod also passes validation.
            let mut validate = fixture(ISTIO_POD);
            validate["request"]["object"] = patched;
            let verdict = conn.post_json("/validate", &validate).await.review();
            assert!(verdict.allowed && verdict.status.is_none() && verdict.warnings.is_empty());
        }
        assert!(!conn.is_closed());
        assert_eq!(conn.answered, 6);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_pod_and_deployment_fixtures() {
    let server = TestServer::start().await;
    let t = server.target();
    let mut conn = t.h1().await;

    let review = conn
        .post("/mutate", fixture_bytes(SMALL_POD))
        .await
        .review();
    assert_eq!(review.uid, "8d2b6f14-5c3e-4a9d-b1f7-0e6a2c4d8b91");
    assert!(review.allowed);
    assert_eq!(review.patch, Some(small_pod_patch()));
    assert!(review.warnings.is_empty());
    let verdict = conn
        .post("/validate", fixture_bytes(SMALL_POD))
        .await
        .review();
    assert!(verdict.allowed && verdict.patch.is_none() && verdict.warnings.is_empty());

    // Templates are judged but not patched (templates.mutate is off by default).
    let review = conn
        .post("/mutate", fixture_bytes(DEPLOYMENT))
        .await
        .review();
    assert_eq!(review.uid, "c47e9a03-6b1d-4f28-9e5a-3d8f1b7c2e60");
    assert!(review.allowed && review.patch.is_none() && review.warnings.is_empty());
    let verdict = conn
        .post("/validate", fixture_bytes(DEPLOYMENT))
        .await
        .review();
    assert!(verdict.allowed && verdict.status.is_none());

    // The generated large pod (the benchmarks' fixture): 24 containers, six of them
    // Istio proxies rewritten, the hardened ones given their user, nginx untouched.
    let large = large_pod_review();
    let size = body(&large).len();
    assert!(
        (150_000..300_000).contains(&size),
        "large pod is {size} bytes"
    );
    let review = conn.post_json("/mutate", &large).await.review();
    let ops = review.patch.as_ref().unwrap().as_array().unwrap().clone();
    let rewrites = ops.iter().filter(|op| op["op"] == "replace").count();
    let contexts = ops
        .iter()
        .filter(|op| {
            op["op"] == "add" && op["path"].as_str().unwrap().ends_with("/securityContext")
        })
        .count();
    assert_eq!(rewrites, 6);
    assert_eq!(contexts, 12, "python and node containers get their user");
    assert_eq!(
        ops.last().unwrap(),
        &json!({"op": "add", "path": "/spec/securityContext/fsGroup", "value": 65532})
    );
    assert_eq!(ops.len(), 6 + 12 + 1);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_allows_compliant_and_denies_with_every_violation() {
    let server = TestServer::start().await;
    let t = server.target();
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = t.connect(proto).await;
        let ok = conn
            .post("/validate", fixture_bytes(ISTIO_POD))
            .await
            .review();
        assert_eq!(ok.uid, "4f1c3a52-8e0d-4b7a-9c65-2d7e1f0b9a13");
        assert!(ok.allowed);
        assert!(ok.status.is_none() && ok.patch.is_none() && ok.warnings.is_empty());

        let request = review(&violating_pod("web-1"));
        let uid = request["request"]["uid"].as_str().unwrap().to_owned();
        let denied = conn.post_json("/validate", &request).await.review();
        assert_eq!(denied.uid, uid);
        assert_denied(&denied, "Pod web-1", VIOLATIONS);
        assert_eq!(denied.warnings, vec![DEV_WARNING.to_owned()]);
        // Each fix names the concrete remedy.
        let message = denied.message();
        assert!(
            message.contains("set the container's runAsUser to 65532"),
            "{message}"
        );
        assert!(
            message.contains("listen on 8080 and map Service port 80 to it (targetPort: 8080)"),
            "{message}"
        );
        assert!(
            message.contains("use the runtime variant (tag without -dev)"),
            "{message}"
        );

        // A pod created by a controller has no name yet.
        let mut unnamed = violating_pod("");
        unnamed["metadata"].as_object_mut().unwrap().remove("name");
        unnamed["metadata"]["generateName"] = json!("web-");
        let denied = conn
            .post_json("/validate", &review(&unnamed))
            .await
            .review();
        assert_denied(&denied, "Pod web-*", VIOLATIONS);
        unnamed["metadata"]
            .as_object_mut()
            .unwrap()
            .remove("generateName");
        let denied = conn
            .post_json("/validate", &review(&unnamed))
            .await
            .review();
        assert_denied(&denied, "Pod (generated name)", VIOLATIONS);

        // A Deployment is judged on its template.
        let deploy = deployment(
            "legacy",
            "default",
            violating_pod("x")["spec"]["containers"]
                .as_array()
                .unwrap()
                .clone(),
        );
        let denied = conn.post_json("/validate", &review(&deploy)).await.review();
        assert_denied(&denied, "Deployment legacy", VIOLATIONS);
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_paths_report_without_enforcing() {
    let server = TestServer::start().await;
    let t = server.target();
    let mut conn = t.h2().await;

    let request = review(&violating_pod("web-1"));
    let audit = conn.post_json("/validate/audit", &request).await.review();
    assert_eq!(audit.uid, request["request"]["uid"]);
    assert!(audit.allowed);
    assert!(audit.status.is_none() && audit.patch.is_none());
    assert_eq!(audit.warnings.len(), 5, "{:#?}", audit.warnings);
    for (warning, (rule, container, _)) in audit.warnings.iter().zip(VIOLATIONS) {
        let prefix = format!("audit: [{rule}] container \"{container}\"");
        assert!(
            warning.starts_with(&prefix),
            "{warning:?} should start with {prefix:?}"
        );
        assert!(
            warning.len() <= 255,
            "kube-apiserver truncates longer warnings"
        );
    }
    assert_eq!(audit.warnings[4], DEV_WARNING);
    let expected: std::collections::BTreeMap<String, String> = [
        (
            "violation.run-as-root",
            "web (dhi.io/nginx:1.31); tools (dhi.io/python:3.13-dev)",
        ),
        ("violation.privileged-port", "web (dhi.io/nginx:1.31)"),
        (
            "violation.invalid-image",
            "bad (docker.io/Library/Nginx:1.29)",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    assert_eq!(audit.audit_annotations, expected);

    let planned =
        "image_rewrite x1, run_as_user x1, run_as_group x1, run_as_non_root x1, fs_group x1";
    let audit = conn
        .post("/mutate/audit", fixture_bytes(ISTIO_POD))
        .await
        .review();
    assert!(audit.allowed);
    assert_eq!(audit.patch, None, "audit never patches");
    assert_eq!(audit.patch_type, None);
    assert_eq!(
        audit.warnings,
        vec![
            ISTIO_INIT_SKIPPED.to_owned(),
            format!("audit: dhi-admission would patch this object: {planned}")
        ]
    );
    assert_eq!(audit.audit_annotations.len(), 1);
    assert_eq!(audit.audit_annotations["planned-mutations"], planned);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_kinds_operations_and_namespaces() {
    let server = TestServer::start().await;
    let t = server.target();
    let mut conn = t.h1().await;
    let bad = violating_pod("web-1");

    // kube-apiserver appends ?timeout=10s; routing ignores the query.
    let r = conn
        .post("/validate?timeout=10s", body(&review(&bad)))
        .await
        .review();
    assert_denied(&r, "Pod web-1", VIOLATIONS);
    let r = conn
        .post("/validate/audit?timeout=5s", body(&review(&bad)))
        .await
        .review();
    assert!(r.allowed && r.audit_annotations.len() == 3);
    let r = conn
        .post("/mutate?timeout=10s", fixture_bytes(ISTIO_POD))
        .await
        .review();
    assert_eq!(r.patch, Some(istio_patch()));
    let r = conn
        .post("/mutate/audit?timeout=10s&x=1", fixture_bytes(ISTIO_POD))
        .await
        .review();
    assert!(r.allowed && r.patch.is_none());

    // DELETE carries only the old object; CONNECT (exec/attach) no pod spec at all.
    for path in ["/validate", "/mutate"] {
        let delete = review_op(&Value::Null, "DELETE", Some(&bad));
        let r = conn.post_json(path, &delete).await.review();
        assert_eq!(r.uid, delete["request"]["uid"]);
        assert!(
            r.allowed && r.status.is_none() && r.patch.is_none() && r.warnings.is_empty(),
            "{}",
            r.raw
        );
        let connect = review_op(&Value::Null, "CONNECT", None);
        let mut connect = connect;
        connect["request"]["kind"] = json!({"group": "", "version": "v1", "kind": "Pod"});
        connect["request"]["subResource"] = json!("exec");
        let r = conn.post_json(path, &connect).await.review();
        assert!(
            r.allowed && r.status.is_none() && r.patch.is_none(),
            "{}",
            r.raw
        );
    }

    // An exempt namespace (kube-system in the test policy) is not touched at all.
    let mut system = bad.clone();
    system["metadata"]["namespace"] = json!("kube-system");
    for path in ["/validate", "/mutate", "/validate/audit", "/mutate/audit"] {
        let r = conn.post_json(path, &review(&system)).await.review();
        assert!(r.allowed, "{path}: {}", r.raw);
        assert!(
            r.status.is_none()
                && r.patch.is_none()
                && r.warnings.is_empty()
                && r.audit_annotations.is_empty()
        );
    }
    let mut istio_system = fixture(ISTIO_POD);
    istio_system["request"]["namespace"] = json!("kube-system");
    let r = conn.post_json("/mutate", &istio_system).await.review();
    assert!(r.allowed && r.patch.is_none() && r.warnings.is_empty());

    // dryRun requests are answered like any other (sideEffects: None).
    let mut dry = review(&bad);
    dry["request"]["dryRun"] = json!(true);
    let r = conn.post_json("/validate", &dry).await.review();
    assert_denied(&r, "Pod web-1", VIOLATIONS);
    let mut dry = fixture(ISTIO_POD);
    dry["request"]["dryRun"] = json!(true);
    let r = conn.post_json("/mutate", &dry).await.review();
    assert_eq!(r.patch, Some(istio_patch()));

    // Status and other subresources carry no containers to judge.
    let mut status = review_op(&bad, "UPDATE", Some(&bad));
    status["request"]["subResource"] = json!("status");
    let r = conn.post_json("/validate", &status).await.review();
    assert!(r.allowed && r.status.is_none());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_containers_subresource_is_validated_alone() {
    let server = TestServer::start().await;
    let t = server.target();
    let mut conn = t.h2().await;
    // The running pod breaks a rule itself; `kubectl debug` only adds a container.
    let running = violating_pod("app-0");
    let debug = |image: &str| {
        let mut with = running.clone();
        with["spec"]["ephemeralContainers"] = json!([{
            "name": "debugger", "image": image, "stdin": true, "tty": true,
            "targetContainerName": "web", "terminationMessagePolicy": "File"
        }]);
        let mut r = review_op(&with, "UPDATE", Some(&running));
        r["request"]["subResource"] = json!("ephemeralcontainers");
        r
    };
    let denied = conn
        .post_json("/validate", &debug("dhi.io/busybox:1-dev"))
        .await
        .review();
    assert_denied(
        &denied,
        "Pod app-0",
        &[("run-as-root", "debugger", "dhi.io/busybox:1-dev")],
    );
    let allowed = conn
        .post_json("/validate", &debug("dhi.io/busybox:1"))
        .await
        .review();
    assert!(
        allowed.allowed && allowed.status.is_none(),
        "{}",
        allowed.raw
    );
    // The mutating webhook leaves the subresource alone.
    let r = conn
        .post_json("/mutate", &debug("dhi.io/busybox:1-dev"))
        .await
        .review();
    assert!(r.allowed && r.patch.is_none());
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_with_unchanged_pod_spec_is_allowed() {
    let server = TestServer::start().await;
    let t = server.target();
    let mut conn = t.h1().await;
    let containers = violating_pod("x")["spec"]["containers"]
        .as_array()
        .unwrap()
        .clone();
    let old = deployment("legacy", "default", containers);
    let created = conn.post_json("/validate", &review(&old)).await.review();
    assert_denied(&created, "Deployment legacy", VIOLATIONS);

    // Scaling and relabelling an object admitted earlier (audit mode, older policy).
    let mut scaled = old.clone();
    scaled["spec"]["replicas"] = json!(5);
    scaled["metadata"]["labels"]["team"] = json!("payments");
    scaled["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"limits": {"cpu": "2"}});
    let r = conn
        .post_json("/validate", &review_op(&scaled, "UPDATE", Some(&old)))
        .await
        .review();
    assert!(
        r.allowed && r.status.is_none() && r.warnings.is_empty(),
        "{}",
        r.raw
    );

    // Changing what the rules read is judged again.
    let mut changed = old.clone();
    changed["spec"]["template"]["spec"]["containers"][0]["image"] = json!("dhi.io/nginx:1.30");
    let r = conn
        .post_json("/validate", &review_op(&changed, "UPDATE", Some(&old)))
        .await
        .review();
    assert!(!r.allowed);
    assert!(r.message().contains("dhi.io/nginx:1.30"), "{}", r.message());

    // The mutating webhook does not patch pod UPDATEs.
    let pod = fixture(ISTIO_POD)["request"]["object"].clone();
    let r = conn
        .post_json("/mutate", &review_op(&pod, "UPDATE", Some(&pod)))
        .await
        .review();
    assert!(r.allowed && r.patch.is_none() && r.warnings.is_empty());
    server.shutdown().await.unwrap();
}

// ===== connections =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_http2_multiplexing() {
    let server = TestServer::start().await;
    let t = server.target();

    // HTTP/1.1: twenty requests on one connection, every endpoint.
    let mut h1 = t.h1().await;
    for i in 0..20 {
        let path = ["/mutate", "/validate", "/mutate/audit", "/validate/audit"][i % 4];
        let mut r = fixture(SMALL_POD);
        set_uid(&mut r, &format!("keepalive-{i}"));
        let answer = h1.post_json(path, &r).await;
        assert_eq!(
            answer.header("connection"),
            None,
            "no close on a kept-alive connection"
        );
        assert_eq!(answer.review().uid, format!("keepalive-{i}"));
    }
    assert_eq!(h1.answered, 20);
    assert!(!h1.is_closed());

    // HTTP/2: fifty concurrent streams on one connection, each answer matched by uid.
    let h2 = t.h2().await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut stream = h2.stream();
        tasks.push(tokio::spawn(async move {
            let mut r = if i % 2 == 0 {
                fixture(ISTIO_POD)
            } else {
                review(&violating_pod("web-1"))
            };
            let uid = format!("stream-{i}");
            set_uid(&mut r, &uid);
            let path = if i % 2 == 0 { "/mutate" } else { "/validate" };
            let answer = stream.post_json(path, &r).await.review();
            assert_eq!(answer.uid, uid);
            if i % 2 == 0 {
                assert_eq!(answer.patch, Some(istio_patch()));
            } else {
                assert_denied(&answer, "Pod web-1", VIOLATIONS);
            }
        }));
    }
    for task in tasks {
        bounded("stream", task).await.unwrap();
    }
    assert!(!h2.is_closed());
    assert_eq!(h2.tls_version, Some(rustls::ProtocolVersion::TLSv1_3));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_survive_a_few_seconds() {
    let server = TestServer::start().await; // idle timeout 120 s (the default)
    let t = server.target();
    let mut h1 = t.h1().await;
    let mut h2 = t.h2().await;
    for conn in [&mut h1, &mut h2] {
        conn.post("/validate", fixture_bytes(SMALL_POD))
            .await
            .review();
    }
    // Waiting is the point here: nothing to poll.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for conn in [&mut h1, &mut h2] {
        assert!(
            !conn.is_closed(),
            "{:?} connection closed while idle 4 s",
            conn.proto
        );
        let r = conn
            .post("/validate", fixture_bytes(SMALL_POD))
            .await
            .review();
        assert!(r.allowed);
    }
    server.shutdown().await.unwrap();
}

fn short_limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(2),
        ..test_limits()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_keep_alive_connections() {
    let server = TestServer::start_with(ServerOptions {
        limits: short_limits(),
        ..Default::default()
    })
    .await;
    let t = server.target();
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = t.connect(proto).await;
        conn.post("/validate", fixture_bytes(SMALL_POD))
            .await
            .review();
        let idle_since = Instant::now();
        assert!(
            conn.wait_closed(Duration::from_secs(20)).await,
            "{proto:?}: idle connection still open after 20 s"
        );
        let idle = idle_since.elapsed();
        // Timers never fire early: the connection lived at least most of its idle timeout.
        assert!(
            idle >= Duration::from_millis(1500),
            "{proto:?}: closed after only {idle:?}"
        );
        println!("{proto:?} idle connection closed after {idle:?} (idle_timeout 2 s)");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_handshake_timeout() {
    let server = TestServer::start_with(ServerOptions {
        limits: short_limits(),
        ..Default::default()
    })
    .await;
    let t = server.target();
    // TLS completed, then nothing.
    let mut tls = t.tls(&[b"http/1.1"]).await.unwrap();
    let started = Instant::now();
    let ending = read_until_closed(&mut tls, Duration::from_secs(20)).await;
    assert!(
        ending.closed(),
        "silent TLS connection still open: {ending:?}"
    );
    assert!(
        ending.bytes().is_empty(),
        "nothing is sent to a silent client: {ending:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "closed after {:?}",
        started.elapsed()
    );
    // TCP connected, no ClientHello.
    let mut tcp = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    let started = Instant::now();
    let ending = read_until_closed(&mut tcp, Duration::from_secs(20)).await;
    assert!(
        ending.closed(),
        "silent TCP connection still open: {ending:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(700));
    // And the server still serves.
    assert!(
        t.post("/validate", fixture_bytes(SMALL_POD))
            .await
            .review()
            .allowed
    );
    server.shutdown().await.unwrap();
}

// ===== bad input =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_input_gets_its_exact_answer() {
    let server = TestServer::start().await;
    let t = server.target();
    let mut conn = t.h1().await;

    // Not JSON at all (truncated): a plain 400 Status; no uid can be read.
    let mut truncated = fixture_compact(SMALL_POD);
    truncated.truncate(truncated.len() / 2);
    let doc = conn.post("/validate", truncated).await.status_doc(400);
    assert_eq!(doc["reason"], "BadRequest");
    let message = doc["message"].as_str().unwrap();
    assert!(
        message.starts_with("request body is not a valid AdmissionReview: EOF while parsing"),
        "{message}"
    );

    // Valid JSON, invalid review, uid readable: an AdmissionReview refusal with the uid
    // (kube-apiserver shows its message instead of a bare "failed calling webhook").
    let mut wrong_op = review(&low_port_pod("web"));
    wrong_op["request"]["operation"] = json!("PATCH");
    let uid = wrong_op["request"]["uid"].as_str().unwrap().to_owned();
    let r = conn.post_json("/validate", &wrong_op).await.review();
    assert_eq!(r.uid, uid);
    assert!(!r.allowed);
    assert_eq!(r.code(), Some(400));
    assert_eq!(r.status.as_ref().unwrap()["reason"], "BadRequest");
    assert!(
        r.message()
            .starts_with("request body is not a valid AdmissionReview: unknown variant `PATCH`"),
        "{}",
        r.message()
    );

    // Not AdmissionReview v1.
    let mut v1beta1 = review(&low_port_pod("web"));
    v1beta1["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let doc = conn.post_json("/validate", &v1beta1).await.status_doc(400);
    assert_eq!(
        doc["message"],
        "expected apiVersion admission.k8s.io/v1 and kind AdmissionReview, got admission.k8s.io/v1beta1 \
         AdmissionReview; set admissionReviewVersions: [v1] in the webhook configuration"
    );
    let doc = conn
        .post("/validate", r#"{"apiVersion":"v1","kind":"Pod"}"#)
        .await
        .status_doc(400);
    assert!(doc["message"].as_str().unwrap().contains("got v1 Pod"));
    let doc = conn.post("/validate", "{}").await.status_doc(400);
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .contains("got (none) (none)")
    );

    // A review without a request.
    let doc = conn
        .post(
            "/mutate",
            r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#,
        )
        .await
        .status_doc(400);
    assert_eq!(doc["message"], "AdmissionReview has no request");

    // A kind the webhook does not review: refused with the uid, status 400.
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"}, "spec": {}});
    let request = review(&service);
    for path in ["/mutate", "/validate"] {
        let r = conn.post_json(path, &request).await.review();
        assert_eq!(r.uid, request["request"]["uid"]);
        assert!(!r.allowed);
        assert_eq!(r.code(), Some(400));
        assert_eq!(
            r.message(),
            "dhi-admission does not review core/Service: remove it from the webhook rules"
        );
    }
    let mut crd = review(&fixture(DEPLOYMENT)["request"]["object"]);
    crd["request"]["kind"] = json!({"group": "example.com", "version": "v1", "kind": "Deployment"});
    let r = conn.post_json("/validate", &crd).await.review();
    assert_eq!(
        r.message(),
        "dhi-admission does not review example.com/Deployment: remove it from the webhook rules"
    );

    // A CREATE without an object.
    let mut empty = review(&low_port_pod("web"));
    empty["request"]["object"] = Value::Null;
    let r = conn.post_json("/validate", &empty).await.review();
    assert_eq!((r.allowed, r.code()), (false, Some(400)));
    assert_eq!(r.message(), "Create request for Pod web has no object");

    // Content types.
    let small = fixture_bytes(SMALL_POD);
    let doc = conn
        .send(Method::POST, "/validate", Some("text/plain"), small.clone())
        .await
        .status_doc(415);
    assert_eq!(doc["reason"], "UnsupportedMediaType");
    assert_eq!(
        doc["message"],
        "content type must be application/json, got text/plain"
    );
    let doc = conn
        .send(Method::POST, "/validate", None, small.clone())
        .await
        .status_doc(415);
    assert_eq!(
        doc["message"],
        "content type must be application/json, got none"
    );
    let doc = conn
        .send(
            Method::POST,
            "/validate",
            Some("application/yaml"),
            small.clone(),
        )
        .await
        .status_doc(415);
    assert_eq!(
        doc["message"],
        "content type must be application/json, got application/yaml"
    );
    for ok in ["application/json; charset=utf-8", "Application/JSON"] {
        let r = conn
            .send(Method::POST, "/validate", Some(ok), small.clone())
            .await
            .review();
        assert!(r.allowed, "{ok}");
    }

    // Methods and paths.
    for method in [Method::GET, Method::PUT, Method::DELETE, Method::PATCH] {
        let doc = conn
            .send(method.clone(), "/validate", Some(JSON), small.clone())
            .await
            .status_doc(405);
        assert_eq!(doc["reason"], "MethodNotAllowed");
        assert_eq!(
            doc["message"],
            "method not allowed: the webhook endpoints take POST"
        );
    }
    for path in [
        "/",
        "/nope",
        "/validate/",
        "/mutate/audit/x",
        "/metrics",
        "/healthz",
    ] {
        let doc = conn.post(path, small.clone()).await.status_doc(404);
        assert_eq!(doc["reason"], "NotFound", "{path}");
        assert_eq!(
            doc["message"],
            "unknown path: the webhook serves /mutate, /validate, /mutate/audit and /validate/audit"
        );
    }
    // None of that closed the connection.
    assert!(!conn.is_closed());
    assert!(conn.post("/validate", small).await.review().allowed);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413() {
    let server = TestServer::start_with(ServerOptions {
        limits: Limits {
            max_body: 4096,
            ..test_limits()
        },
        ..Default::default()
    })
    .await;
    let t = server.target();
    let too_large = "request body larger than 4096 bytes";

    // Over the limit with Content-Length, on HTTP/1.1 and HTTP/2.
    let mut big = review(&low_port_pod("web"));
    big["request"]["object"]["metadata"]["annotations"] = json!({"a": "x".repeat(5000)});
    for proto in [Proto::H1, Proto::H2] {
        let doc = t
            .connect(proto)
            .await
            .post_json("/validate", &big)
            .await
            .status_doc(413);
        assert_eq!(doc["reason"], "RequestEntityTooLarge");
        assert_eq!(doc["message"], too_large);
    }
    // Exactly at the limit is fine: pad a review to 4096 bytes.
    let mut exact = review(&low_port_pod("web"));
    let base = body(&exact).len();
    exact["request"]["object"]["metadata"]["annotations"] = json!({"a": ""});
    let pad = 4096 - body(&exact).len();
    exact["request"]["object"]["metadata"]["annotations"]["a"] = json!("x".repeat(pad));
    assert_eq!(body(&exact).len(), 4096, "base {base}");
    assert!(!t.post_json("/validate", &exact).await.review().allowed);

    // A declared length over the limit is refused before the body is sent.
    let mut tls = t.tls(&[b"http/1.1"]).await.unwrap();
    let head = raw_request(
        "POST",
        "/validate",
        &[
            ("content-type", JSON.to_owned()),
            ("content-length", "10000000".to_owned()),
        ],
        b"",
    );
    let answer = exchange(&mut tls, &head).await.unwrap();
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["message"], too_large);

    // With `Expect: 100-continue` the client never gets a 100: the refusal comes first.
    let mut tls = t.tls(&[b"http/1.1"]).await.unwrap();
    let head = raw_request(
        "POST",
        "/validate",
        &[
            ("content-type", JSON.to_owned()),
            ("content-length", "10000000".to_owned()),
            ("expect", "100-continue".to_owned()),
        ],
        b"",
    );
    let answer = exchange(&mut tls, &head).await.unwrap();
    assert_eq!(answer.status, 413);

    // Chunked, no length announced: cut off once the limit is passed.
    let mut tls = t.tls(&[b"http/1.1"]).await.unwrap();
    let mut request = raw_request(
        "POST",
        "/validate",
        &[
            ("content-type", JSON.to_owned()),
            ("transfer-encoding", "chunked".to_owned()),
        ],
        b"",
    );
    for _ in 0..3 {
        request.extend_from_slice(format!("{:x}\r\n{}\r\n", 2000, "x".repeat(2000)).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let answer = exchange(&mut tls, &request).await.unwrap();
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["message"], too_large);

    let metrics = t.metrics().await;
    let errors = counter(
        &metrics,
        "dhi_admission_requests_total",
        &[
            ("webhook", "validate"),
            ("kind", "unknown"),
            ("operation", "unknown"),
            ("mode", "enforce"),
            ("decision", "error"),
        ],
    );
    assert_eq!(errors, 5.0, "{metrics}");
    server.shutdown().await.unwrap();
}

// ===== reloads =====

/// A validate request for the small pod and a check of its answer, without panicking.
async fn probe(conn: &mut Conn, n: u64) -> Result<(), String> {
    let mut r = fixture(SMALL_POD);
    let uid = format!("probe-{n}");
    set_uid(&mut r, &uid);
    let reply = conn
        .try_send(Method::POST, "/validate", Some(JSON), body(&r).into())
        .await?;
    if reply.status != 200 {
        return Err(format!(
            "status {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    let v: Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
    if v["response"]["uid"] != uid.as_str() || v["response"]["allowed"] != true {
        return Err(format!("wrong answer: {v}"));
    }
    Ok(())
}

async fn rotation_under_traffic(layout: CertLayout) {
    let server = TestServer::start_with(ServerOptions {
        layout,
        reload_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let t = server.target();
    let initial = serial_of_pem(&server.current().cert_pem);
    let stop = Arc::new(AtomicBool::new(false));

    // New connections, alternating HTTP/1.1 and HTTP/2, one request each.
    let fresh = {
        let (t, stop) = (t.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failures, mut serials) = (0u64, Vec::new(), BTreeSet::new());
            for i in 0..100_000u64 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let proto = if i % 2 == 0 { Proto::H1 } else { Proto::H2 };
                match t.try_connect(proto).await {
                    Ok(mut conn) => {
                        serials.insert(conn.peer_serial.clone());
                        match probe(&mut conn, i).await {
                            Ok(()) => ok += 1,
                            Err(err) => failures.push(format!("new {proto:?} #{i}: {err}")),
                        }
                    }
                    Err(err) => failures.push(format!("connect {proto:?} #{i}: {err}")),
                }
            }
            (ok, failures, serials)
        })
    };
    // Kept-alive connections opened before the first rotation.
    let kept = {
        let (t, stop) = (t.clone(), stop.clone());
        tokio::spawn(async move {
            let mut conns = [t.h1().await, t.h2().await];
            let (mut ok, mut failures) = (0u64, Vec::new());
            for i in 0..100_000u64 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let conn = &mut conns[(i % 2) as usize];
                match probe(conn, 1_000_000 + i).await {
                    Ok(()) => ok += 1,
                    Err(err) => failures.push(format!("kept {:?} #{i}: {err}", conn.proto)),
                }
            }
            let open = conns.iter().all(|c| !c.is_closed());
            (ok, failures, open, conns[0].peer_serial.clone())
        })
    };

    let mut rotated = Vec::new();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        rotated.push(server.rotate());
    }
    // Let the last one be picked up under traffic too.
    let last = rotated.last().unwrap().clone();
    let last_serial = serial_of_pem(&last.cert_pem);
    eventually(
        "a new connection sees the last certificate",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let t = t.clone();
            let last_serial = last_serial.clone();
            async move { (t.h1().await.peer_serial == last_serial).then_some(()) }
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    let (fresh_ok, fresh_failures, serials) = bounded("fresh loop", fresh).await.unwrap();
    let (kept_ok, kept_failures, kept_open, kept_serial) =
        bounded("kept loop", kept).await.unwrap();
    println!(
        "{layout:?}: {fresh_ok} requests on new connections ({} certificates seen), {kept_ok} on kept-alive ones",
        serials.len()
    );
    assert!(fresh_failures.is_empty(), "{fresh_failures:#?}");
    assert!(kept_failures.is_empty(), "{kept_failures:#?}");
    assert!(
        fresh_ok >= 10 && kept_ok >= 10,
        "too little traffic: {fresh_ok} / {kept_ok}"
    );
    assert!(kept_open, "kept-alive connections survive rotation");
    assert_eq!(
        kept_serial, initial,
        "an open connection keeps the certificate it was opened with"
    );
    let known: BTreeSet<Vec<u8>> = std::iter::once(initial.clone())
        .chain(rotated.iter().map(|c| serial_of_pem(&c.cert_pem)))
        .collect();
    assert!(
        serials.is_subset(&known),
        "only certificates we installed were served"
    );
    assert!(
        serials.len() >= 2,
        "new connections saw the rotation: {} serial(s)",
        serials.len()
    );

    let metrics = t.metrics().await;
    let reloaded = counter(
        &metrics,
        "dhi_admission_reloads_total",
        &[("what", "certificate"), ("result", "success")],
    );
    assert!(
        (1.0..=8.0).contains(&reloaded),
        "{reloaded} reloads for 8 rotations"
    );
    assert_eq!(
        counter(
            &metrics,
            "dhi_admission_reloads_total",
            &[("what", "certificate"), ("result", "failure")]
        ),
        0.0,
        "{metrics}"
    );
    assert_eq!(
        metric(
            &metrics,
            "dhi_admission_tls_cert_expiry_timestamp_seconds",
            &[]
        ),
        Some(not_after_of_pem(&last.cert_pem) as f64),
        "the expiry gauge follows the served certificate"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_traffic_by_rename() {
    rotation_under_traffic(CertLayout::Files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_traffic_by_kubelet_symlink_swap() {
    rotation_under_traffic(CertLayout::Kubelet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_gauge_follows_a_pair_written_in_two_steps() {
    // The key lands first; the reloader sees a mismatched pair, waits, and reads again
    // once the certificate has landed too. The gauge must describe what is served.
    let server = TestServer::start().await;
    let t = server.target();
    for _ in 0..3 {
        let next = generate_certs(90 + rand_days());
        server.trust.add_ca_pem(&next.ca_cert_pem);
        write_atomic(&server.key_path, next.key_pem.as_bytes());
        tokio::time::sleep(Duration::from_millis(150)).await; // inside the reloader's retry window
        write_atomic(&server.cert_path, next.cert_pem.as_bytes());
        let serial = serial_of_pem(&next.cert_pem);
        eventually(
            "the new pair is served",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || {
                let t = t.clone();
                let serial = serial.clone();
                async move { (t.h1().await.peer_serial == serial).then_some(()) }
            },
        )
        .await;
        let metrics = t.metrics().await;
        assert_eq!(
            metric(
                &metrics,
                "dhi_admission_tls_cert_expiry_timestamp_seconds",
                &[]
            ),
            Some(not_after_of_pem(&next.cert_pem) as f64),
            "the gauge shows the served certificate's notAfter"
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_the_server_starts_are_not_missed() {
    // Between `Server::bind` (which loads certificate and policy) and the reloader's
    // first poll, kubelet may swap the Secret or the ConfigMap. The reloader must
    // compare with what was loaded, not with what it finds when it starts.
    let mut server = TestServer::start_with(ServerOptions {
        hold_serve: true,
        ..Default::default()
    })
    .await;
    let next = server.rotate();
    server.write_policy("rules:\n  privileged-port: warn\n");
    server.release();
    let t = server.target();
    let serial = serial_of_pem(&next.cert_pem);
    eventually(
        "the certificate written during startup is served",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let t = t.clone();
            let serial = serial.clone();
            async move { (t.h1().await.peer_serial == serial).then_some(()) }
        },
    )
    .await;
    eventually(
        "the policy written during startup applies",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let t = t.clone();
            async move {
                t.post_json("/validate", &review(&low_port_pod("web")))
                    .await
                    .review()
                    .allowed
                    .then_some(())
            }
        },
    )
    .await;
    server.shutdown().await.unwrap();
}

/// 0..=9 days, different from call to call.
fn rand_days() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(3, Ordering::Relaxed) % 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_certificate_pairs_are_refused() {
    let server = TestServer::start_with(ServerOptions {
        layout: CertLayout::Kubelet,
        ..Default::default()
    })
    .await;
    let t = server.target();
    let original = server.current();
    let serial = serial_of_pem(&original.cert_pem);
    let reloads = |what: &'static str, result: &'static str| {
        let t = t.clone();
        async move {
            counter(
                &t.metrics().await,
                "dhi_admission_reloads_total",
                &[("what", what), ("result", result)],
            )
        }
    };

    // Certificate of one pair, key of another.
    let a = generate_certs(30);
    let b = generate_certs(30);
    server.trust.add_ca_pem(&a.ca_cert_pem);
    server.write_pems(a.cert_pem.as_bytes(), b.key_pem.as_bytes());
    eventually(
        "the mismatched pair is counted as a failure",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { (reloads("certificate", "failure").await == 1.0).then_some(()) },
    )
    .await;
    // Counted once, however many times it is seen; the old certificate stays.
    for _ in 0..10 {
        let mut conn = t.h1().await;
        assert_eq!(
            conn.peer_serial, serial,
            "the previous certificate is still served"
        );
        probe(&mut conn, 0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reloads("certificate", "failure").await, 1.0);
    assert_eq!(reloads("certificate", "success").await, 0.0);

    // Not PEM at all.
    server.write_pems(b"-----BEGIN CERTIFICATE-----\nnot base64\n", b"garbage");
    eventually(
        "garbage is counted",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { (reloads("certificate", "failure").await == 2.0).then_some(()) },
    )
    .await;
    assert_eq!(t.h1().await.peer_serial, serial);
    let metrics = t.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "dhi_admission_tls_cert_expiry_timestamp_seconds",
            &[]
        ),
        Some(not_after_of_pem(&original.cert_pem) as f64),
        "a refused certificate does not move the expiry gauge"
    );

    // A good pair again is applied.
    let good = server.rotate();
    let good_serial = serial_of_pem(&good.cert_pem);
    eventually(
        "the good pair is served",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let t = t.clone();
            let good_serial = good_serial.clone();
            async move { (t.h1().await.peer_serial == good_serial).then_some(()) }
        },
    )
    .await;
    assert_eq!(reloads("certificate", "success").await, 1.0);
    assert_eq!(reloads("certificate", "failure").await, 2.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reloads_keep_the_last_good_policy() {
    let server = TestServer::start().await;
    let t = server.target();
    let reloads = |result: &'static str| {
        let t = t.clone();
        async move {
            counter(
                &t.metrics().await,
                "dhi_admission_reloads_total",
                &[("what", "config"), ("result", result)],
            )
        }
    };
    let low_port = review(&low_port_pod("web"));
    let denied = t.post_json("/validate", &low_port).await.review();
    assert_denied(
        &denied,
        "Pod web",
        &[("privileged-port", "web", "dhi.io/nginx:1.31")],
    );

    // Invalid: refused, counted once, the policy in force stays.
    for invalid in [
        "rules: {privileged-port: maybe}\n",
        "rewirte: {}\n",
        "rules: [\n",
    ] {
        let before = reloads("failure").await;
        server.write_policy(invalid);
        eventually(
            "the invalid policy is refused",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async { (reloads("failure").await == before + 1.0).then_some(()) },
        )
        .await;
        let still = t
            .post_json("/validate", &review(&low_port_pod("web")))
            .await
            .review();
        assert_denied(
            &still,
            "Pod web",
            &[("privileged-port", "web", "dhi.io/nginx:1.31")],
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // several reload ticks
    assert_eq!(
        reloads("failure").await,
        3.0,
        "each refused version counted once"
    );
    assert_eq!(reloads("success").await, 0.0);

    // Valid: the verdict flips to a warning.
    server.write_policy("rules:\n  privileged-port: warn\nexempt:\n  namespaces: [kube-system]\n");
    let allowed = eventually(
        "the new policy applies",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let t = t.clone();
            async move {
                let r = t
                    .post_json("/validate", &review(&low_port_pod("web")))
                    .await
                    .review();
                r.allowed.then_some(r)
            }
        },
    )
    .await;
    assert!(allowed.status.is_none());
    assert_eq!(allowed.warnings.len(), 1);
    assert!(
        allowed.warnings[0].starts_with("[privileged-port] container \"web\" (dhi.io/nginx:1.31)"),
        "{:?}",
        allowed.warnings
    );
    assert_eq!(reloads("success").await, 1.0);

    // The policy's own mode: audit reports everything and denies nothing.
    server.write_policy("mode: audit\n");
    let audited = eventually(
        "audit mode applies",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let t = t.clone();
            async move {
                let r = t
                    .post_json("/validate", &review(&violating_pod("web-1")))
                    .await
                    .review();
                r.allowed.then_some(r)
            }
        },
    )
    .await;
    assert_eq!(audited.audit_annotations.len(), 3);
    let metrics = t.metrics().await;
    assert_eq!(
        counter(
            &metrics,
            "dhi_admission_requests_total",
            &[
                ("webhook", "validate"),
                ("kind", "Pod"),
                ("operation", "CREATE"),
                ("mode", "audit"),
                ("decision", "allowed")
            ]
        ),
        1.0
    );
    assert_eq!(reloads("success").await, 2.0);
    server.shutdown().await.unwrap();
}

// ===== metrics =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_known_sequence() {
    let server = TestServer::start().await;
    let t = server.target();
    let (status, body_text) = t.get_metrics_port("/healthz").await;
    assert_eq!((status, body_text.as_str()), (200, "ok\n"));
    let (status, body_text) = t.get_metrics_port("/readyz").await;
    assert_eq!((status, body_text.as_str()), (200, "ready\n"));

    let mut conn = t.h1().await;
    let bad = violating_pod("web-1");
    // 1. mutate the Istio pod: 5 mutations, 1 rewrite skipped.
    assert!(
        conn.post("/mutate", fixture_bytes(ISTIO_POD))
            .await
            .review()
            .allowed
    );
    // 2. two denials.
    for _ in 0..2 {
        assert!(
            !conn
                .post_json("/validate", &review(&bad))
                .await
                .review()
                .allowed
        );
    }
    // 3. the same pod audited.
    assert!(
        conn.post_json("/validate/audit", &review(&bad))
            .await
            .review()
            .allowed
    );
    // 4. the Istio pod through /mutate/audit: no mutation counted, the skip is.
    assert!(
        conn.post("/mutate/audit", fixture_bytes(ISTIO_POD))
            .await
            .review()
            .allowed
    );
    // 5. a Deployment.
    assert!(
        conn.post("/validate", fixture_bytes(DEPLOYMENT))
            .await
            .review()
            .allowed
    );
    // 6. malformed JSON, 7. wrong content type, 8. a kind we do not review.
    conn.post("/validate", "{").await.status_doc(400);
    conn.send(Method::POST, "/mutate", Some("text/plain"), "{}")
        .await
        .status_doc(415);
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "default"}});
    assert!(
        !conn
            .post_json("/validate", &review(&service))
            .await
            .review()
            .allowed
    );
    // 9. a DELETE.
    assert!(
        conn.post_json("/validate", &review_op(&Value::Null, "DELETE", Some(&bad)))
            .await
            .review()
            .allowed
    );
    // Not admission requests: not counted.
    conn.post("/nope", "{}").await.status_doc(404);
    conn.send(Method::GET, "/validate", None, "")
        .await
        .status_doc(405);

    let m = t.metrics().await;
    let requests = |webhook: &str, kind: &str, op: &str, mode: &str, decision: &str| {
        counter(
            &m,
            "dhi_admission_requests_total",
            &[
                ("webhook", webhook),
                ("kind", kind),
                ("operation", op),
                ("mode", mode),
                ("decision", decision),
            ],
        )
    };
    assert_eq!(
        requests("mutate", "Pod", "CREATE", "enforce", "allowed"),
        1.0
    );
    assert_eq!(
        requests("validate", "Pod", "CREATE", "enforce", "denied"),
        2.0
    );
    assert_eq!(
        requests("validate", "Pod", "CREATE", "audit", "allowed"),
        1.0
    );
    assert_eq!(requests("mutate", "Pod", "CREATE", "audit", "allowed"), 1.0);
    assert_eq!(
        requests("validate", "Deployment", "CREATE", "enforce", "allowed"),
        1.0
    );
    assert_eq!(
        requests("validate", "unknown", "unknown", "enforce", "error"),
        1.0
    );
    assert_eq!(
        requests("mutate", "unknown", "unknown", "enforce", "error"),
        1.0
    );
    assert_eq!(
        requests("validate", "unknown", "CREATE", "enforce", "error"),
        1.0
    );
    assert_eq!(
        requests("validate", "Pod", "DELETE", "enforce", "allowed"),
        1.0
    );
    assert_eq!(metric_sum(&m, "dhi_admission_requests_total"), 10.0, "{m}");

    let violations = |rule: &str, mode: &str| {
        counter(
            &m,
            "dhi_admission_violations_total",
            &[("rule", rule), ("mode", mode)],
        )
    };
    assert_eq!(violations("run-as-root", "enforce"), 4.0);
    assert_eq!(violations("privileged-port", "enforce"), 2.0);
    assert_eq!(violations("invalid-image", "enforce"), 2.0);
    assert_eq!(violations("run-as-root", "audit"), 2.0);
    assert_eq!(violations("privileged-port", "audit"), 1.0);
    assert_eq!(violations("invalid-image", "audit"), 1.0);
    assert_eq!(metric_sum(&m, "dhi_admission_violations_total"), 12.0);

    for kind in [
        "image_rewrite",
        "run_as_user",
        "run_as_group",
        "run_as_non_root",
        "fs_group",
    ] {
        assert_eq!(
            counter(&m, "dhi_admission_mutations_total", &[("type", kind)]),
            1.0,
            "{kind}"
        );
    }
    assert_eq!(metric_sum(&m, "dhi_admission_mutations_total"), 5.0);
    assert_eq!(
        counter(
            &m,
            "dhi_admission_rewrites_skipped_total",
            &[("reason", "runs_as_root")]
        ),
        2.0
    );
    assert_eq!(metric_sum(&m, "dhi_admission_rewrites_skipped_total"), 2.0);

    assert_eq!(
        metric(
            &m,
            "dhi_admission_request_duration_seconds_count",
            &[("webhook", "mutate")]
        ),
        Some(3.0)
    );
    assert_eq!(
        metric(
            &m,
            "dhi_admission_request_duration_seconds_count",
            &[("webhook", "validate")]
        ),
        Some(7.0)
    );
    assert_eq!(metric_sum(&m, "dhi_admission_reloads_total"), 0.0);
    assert_eq!(
        metric(
            &m,
            "dhi_admission_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "dhi_admission_tls_cert_expiry_timestamp_seconds", &[]),
        Some(not_after_of_pem(&server.current().cert_pem) as f64),
        "the expiry gauge is the serving certificate's notAfter"
    );
    server.shutdown().await.unwrap();
}

// ===== SIGTERM =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_closes_idle_connections() {
    let mut server = BinaryServer::spawn(BinaryOptions {
        shutdown_grace_seconds: 20,
        log_level: "info".to_owned(),
        ..Default::default()
    })
    .await;
    let t = server.target();

    // An idle keep-alive connection, used once.
    let mut idle = t.h1().await;
    assert!(
        idle.post("/validate", fixture_bytes(SMALL_POD))
            .await
            .review()
            .allowed
    );
    let mut idle_h2 = t.h2().await;
    assert!(
        idle_h2
            .post("/validate", fixture_bytes(SMALL_POD))
            .await
            .review()
            .allowed
    );

    // A slow request: headers and half the body now, the rest after SIGTERM.
    let request = fixture_compact(ISTIO_POD);
    let (first, second) = request.split_at(request.len() / 2);
    let mut slow = t.tls(&[b"http/1.1"]).await.unwrap();
    let head = raw_request(
        "POST",
        "/mutate?timeout=10s",
        &[
            ("content-type", JSON.to_owned()),
            ("content-length", request.len().to_string()),
        ],
        first,
    );
    slow.write_all(&head).await.unwrap();
    slow.flush().await.unwrap();
    // The server must have started on it before the signal; nothing observable to poll.
    tokio::time::sleep(Duration::from_millis(500)).await;

    server.sigterm();
    // Draining: not ready any more, while the slow request holds the server open.
    eventually(
        "/readyz turns 503",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || {
            let t = t.clone();
            async move {
                match http_get(t.metrics_addr, "/readyz").await {
                    Ok((503, body)) => Some(body),
                    _ => None,
                }
            }
        },
    )
    .await;
    assert_eq!(
        t.get_metrics_port("/readyz").await,
        (503, "not ready\n".to_owned())
    );
    // The idle connections are closed.
    assert!(
        idle.wait_closed(Duration::from_secs(20)).await,
        "idle HTTP/1.1 connection not closed on drain"
    );
    assert!(
        idle_h2.wait_closed(Duration::from_secs(20)).await,
        "idle HTTP/2 connection not closed on drain"
    );
    // The listener is closed: new connections are refused.
    eventually(
        "the listener closes",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || {
            let addr = t.addr;
            async move {
                tokio::net::TcpStream::connect(addr)
                    .await
                    .is_err()
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        server.wait_exit(Duration::from_millis(100)).await,
        None,
        "must wait for the in-flight request"
    );

    // The in-flight request completes, with `connection: close`.
    slow.write_all(second).await.unwrap();
    slow.flush().await.unwrap();
    let answer = read_response(&mut slow).await.unwrap();
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("connection"), Some("close"));
    let review = answer.to_reply().review();
    assert_eq!(review.uid, "4f1c3a52-8e0d-4b7a-9c65-2d7e1f0b9a13");
    assert_eq!(review.patch, Some(istio_patch()));
    let ending = read_until_closed(&mut slow, Duration::from_secs(20)).await;
    assert!(ending.closed() && ending.bytes().is_empty(), "{ending:?}");

    let status = server
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exits after draining");
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        server.log()
    );
    let log = server.log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}
