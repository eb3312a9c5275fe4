//! Hostile input over real TLS: malformed and adversarial bodies, oversized and deeply
//! nested JSON, wrong types in every field the engine reads, protocol abuse (HTTP/1.0,
//! plaintext on the TLS port, garbage before the handshake, TLS 1.0/1.1) and
//! slowloris. Each case gets its documented answer within a bounded time, and a
//! well-formed request right after it is still served correctly.
//!
//! Peak memory is printed: the in-process server's (shared with the test harness) and
//! the real binary's under the largest bodies.

mod common;

use std::time::{Duration, Instant};

use common::*;
use dhi_admission::config::Limits;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn hostile_limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(4),
        request_timeout: Duration::from_secs(2),
        ..test_limits()
    }
}

/// The cases here load the machine (100,000 containers, 340 connections): run them one
/// at a time so that short timeouts in one are not tripped by CPU spent in another.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn start() -> TestServer {
    TestServer::start_with_limits(hostile_limits()).await
}

/// A well-formed request on a new connection gets exactly the right answer.
async fn still_serving(t: &Target) {
    let mut r = fixture(SMALL_POD);
    let uid = next_uid();
    set_uid(&mut r, &uid);
    let review = t.post_json("/mutate", &r).await.review();
    assert_eq!(review.uid, uid);
    assert!(review.allowed);
    assert_eq!(
        review.patch,
        Some(json!([
            {"op": "add", "path": "/spec/containers/0/securityContext",
             "value": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true}},
            {"op": "add", "path": "/spec/securityContext/fsGroup", "value": 65532}
        ]))
    );
}

/// A pod that sets every field the engine reads, and is admitted without a patch.
fn full_pod() -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "generateName": "web-", "namespace": "default"},
        "spec": {
            "hostNetwork": false,
            "os": {"name": "linux"},
            "imagePullSecrets": [{"name": "regcred"}],
            "securityContext": {
                "runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": true, "fsGroup": 1000,
                "sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]
            },
            "initContainers": [{"name": "init", "image": "dhi.io/busybox:1", "command": ["true"]}],
            "containers": [{
                "name": "web", "image": "dhi.io/nginx:1.29", "command": ["nginx"],
                "ports": [{"containerPort": 8080, "hostPort": 8080}],
                "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": true}
            }],
            "ephemeralContainers": [{"name": "debug", "image": "dhi.io/busybox:1"}]
        }
    })
}

/// The review of `object` serialised, with the value at `pointer` (from the review
/// root) replaced by `raw` JSON text (which may be anything a JSON number can be).
fn with_raw(review: &Value, pointer: &str, raw: &str) -> Vec<u8> {
    let mut r = review.clone();
    let marker = json!("\u{1}RAW\u{1}");
    match r.pointer_mut(pointer) {
        Some(slot) => *slot = marker,
        None => {
            // A field the review does not have yet: add it to its parent object.
            let (parent, key) = pointer.rsplit_once('/').unwrap();
            let parent = r.pointer_mut(parent).and_then(Value::as_object_mut);
            parent
                .unwrap_or_else(|| panic!("no parent for {pointer}"))
                .insert(key.to_owned(), marker);
        }
    }
    let text = serde_json::to_string(&r).unwrap();
    text.replacen("\"\\u0001RAW\\u0001\"", raw, 1).into_bytes()
}

/// An AdmissionReview refusal with the request's uid, code 400, message starting so.
fn assert_review_error(reply: &Reply, uid: &str, prefix: &str, case: &str) {
    let review = reply.review();
    assert_eq!(review.uid, uid, "{case}");
    assert!(!review.allowed, "{case}");
    assert_eq!(review.code(), Some(400), "{case}: {}", review.raw);
    assert_eq!(
        review.status.as_ref().unwrap()["reason"],
        "BadRequest",
        "{case}"
    );
    assert!(
        review.message().starts_with(prefix),
        "{case}: {:?} should start with {prefix:?}",
        review.message()
    );
    assert!(review.patch.is_none(), "{case}");
}

/// A plain 400 Status whose message starts so.
fn assert_bad_request(reply: &Reply, prefix: &str, case: &str) {
    let doc = reply.status_doc(400);
    let message = doc["message"].as_str().unwrap();
    assert!(
        message.starts_with(prefix),
        "{case}: {message:?} should start with {prefix:?}"
    );
}

const NOT_A_REVIEW: &str = "request body is not a valid AdmissionReview: ";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_and_invalid_json() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let t = server.target();
    let mut conn = t.h2().await;
    let review = fixture_compact(ISTIO_POD);
    let mut bodies: Vec<(String, Vec<u8>)> = vec![
        ("empty".into(), b"".to_vec()),
        ("whitespace".into(), b"  \n\t ".to_vec()),
        ("open brace".into(), b"{".to_vec()),
        ("null".into(), b"null".to_vec()),
        ("number".into(), b"42".to_vec()),
        ("string".into(), b"\"AdmissionReview\"".to_vec()),
        ("missing value".into(), br#"{"apiVersion":}"#.to_vec()),
        (
            "single quotes".into(),
            br#"{'apiVersion':'admission.k8s.io/v1'}"#.to_vec(),
        ),
        (
            "trailing comma".into(),
            br#"{"apiVersion":"admission.k8s.io/v1",}"#.to_vec(),
        ),
        ("NaN".into(), br#"{"apiVersion":NaN}"#.to_vec()),
        ("comment".into(), b"// review\n{}".to_vec()),
        (
            "trailing garbage".into(),
            [review.as_slice(), b" garbage"].concat(),
        ),
        (
            "two documents".into(),
            [review.as_slice(), review.as_slice()].concat(),
        ),
        ("NUL bytes".into(), vec![0u8; 64]),
        (
            "BOM".into(),
            [b"\xef\xbb\xbf".as_slice(), review.as_slice()].concat(),
        ),
    ];
    // The Istio review cut at many points, inside strings, numbers, keys and escapes.
    for cut in [
        1,
        17,
        100,
        1000,
        2345,
        5000,
        review.len() / 2,
        review.len() - 2,
        review.len() - 1,
    ] {
        bodies.push((format!("cut at {cut}"), review[..cut].to_vec()));
    }
    for (case, body) in bodies {
        let reply = conn.post("/validate", body).await;
        assert_bad_request(&reply, NOT_A_REVIEW, &case);
        still_serving(&t).await;
    }
    // Syntactically valid, so the uid can be read: refused with it.
    let mut wrong = fixture(SMALL_POD);
    wrong["request"]["operation"] = json!("PATCH");
    let reply = conn.post_json("/mutate", &wrong).await;
    assert_review_error(
        &reply,
        "8d2b6f14-5c3e-4a9d-b1f7-0e6a2c4d8b91",
        NOT_A_REVIEW,
        "PATCH",
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_types_in_every_field_the_engine_reads() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let t = server.target();
    let base = review(&full_pod());
    // The untouched pod is admitted without a patch: every case below differs from it
    // by one value only.
    let mut conn = t.h1().await;
    for path in ["/mutate", "/validate"] {
        let r = conn.post_json(path, &base).await.review();
        assert!(
            r.allowed && r.patch.is_none() && r.status.is_none(),
            "{path}: {}",
            r.raw
        );
    }
    let uid = base["request"]["uid"].as_str().unwrap().to_owned();
    let o = "/request/object";
    let cases: &[(&str, &str, &str)] = &[
        (
            "/spec/containers/0/securityContext/runAsUser",
            r#""0""#,
            "spec.containers[0].securityContext.runAsUser",
        ),
        (
            "/spec/containers/0/securityContext/runAsUser",
            "true",
            "spec.containers[0].securityContext.runAsUser",
        ),
        (
            "/spec/containers/0/securityContext/runAsUser",
            "{}",
            "spec.containers[0].securityContext.runAsUser",
        ),
        (
            "/spec/containers/0/securityContext/runAsUser",
            "[0]",
            "spec.containers[0].securityContext.runAsUser",
        ),
        (
            "/spec/containers/0/securityContext/runAsUser",
            "0.0",
            "spec.containers[0].securityContext.runAsUser",
        ),
        (
            "/spec/containers/0/securityContext/runAsUser",
            "1e30",
            "spec.containers[0].securityContext.runAsUser",
        ),
        (
            "/spec/containers/0/securityContext/runAsUser",
            "-1e30",
            "spec.containers[0].securityContext.runAsUser",
        ),
        (
            "/spec/containers/0/securityContext/runAsUser",
            "99999999999999999999",
            "spec.containers[0].securityContext.runAsUser",
        ),
        (
            "/spec/containers/0/securityContext/runAsUser",
            "9223372036854775808",
            "spec.containers[0].securityContext.runAsUser",
        ),
        (
            "/spec/containers/0/securityContext/runAsUser",
            "-9223372036854775809",
            "spec.containers[0].securityContext.runAsUser",
        ),
        (
            "/spec/containers/0/securityContext/runAsGroup",
            r#""1000""#,
            "spec.containers[0].securityContext.runAsGroup",
        ),
        (
            "/spec/containers/0/securityContext/runAsNonRoot",
            r#""yes""#,
            "spec.containers[0].securityContext.runAsNonRoot",
        ),
        (
            "/spec/containers/0/securityContext/runAsNonRoot",
            "1",
            "spec.containers[0].securityContext.runAsNonRoot",
        ),
        (
            "/spec/containers/0/securityContext",
            r#""privileged""#,
            "spec.containers[0].securityContext",
        ),
        (
            "/spec/containers/0/securityContext",
            "7",
            "spec.containers[0].securityContext",
        ),
        (
            "/spec/containers/0/ports",
            r#"{"containerPort": 80}"#,
            "spec.containers[0].ports",
        ),
        (
            "/spec/containers/0/ports",
            r#""80""#,
            "spec.containers[0].ports",
        ),
        (
            "/spec/containers/0/ports/0",
            "80",
            "spec.containers[0].ports[0]",
        ),
        (
            "/spec/containers/0/ports/0/containerPort",
            r#""80""#,
            "spec.containers[0].ports[0].containerPort",
        ),
        (
            "/spec/containers/0/ports/0/containerPort",
            "80.5",
            "spec.containers[0].ports[0].containerPort",
        ),
        (
            "/spec/containers/0/ports/0/containerPort",
            "1e3",
            "spec.containers[0].ports[0].containerPort",
        ),
        (
            "/spec/containers/0/ports/0/containerPort",
            "99999999999999999999",
            "spec.containers[0].ports[0].containerPort",
        ),
        (
            "/spec/containers/0/ports/0/hostPort",
            r#""8080""#,
            "spec.containers[0].ports[0].hostPort",
        ),
        ("/spec/containers", r#""web""#, "spec.containers"),
        ("/spec/containers", r#"{"name": "web"}"#, "spec.containers"),
        ("/spec/containers", "7", "spec.containers"),
        ("/spec/containers/0", r#""web""#, "spec.containers[0]"),
        ("/spec/containers/0/image", "42", "spec.containers[0].image"),
        (
            "/spec/containers/0/image",
            r#"["dhi.io/nginx:1.29"]"#,
            "spec.containers[0].image",
        ),
        (
            "/spec/containers/0/image",
            r#"{"name": "dhi.io/nginx"}"#,
            "spec.containers[0].image",
        ),
        ("/spec/containers/0/name", "5", "spec.containers[0].name"),
        (
            "/spec/containers/0/command",
            r#""nginx -g 'daemon off;'""#,
            "spec.containers[0].command",
        ),
        (
            "/spec/containers/0/command",
            "[1]",
            "spec.containers[0].command[0]",
        ),
        (
            "/spec/securityContext/runAsUser",
            r#""1000""#,
            "spec.securityContext.runAsUser",
        ),
        (
            "/spec/securityContext/runAsUser",
            "-1.5",
            "spec.securityContext.runAsUser",
        ),
        (
            "/spec/securityContext/runAsNonRoot",
            r#""true""#,
            "spec.securityContext.runAsNonRoot",
        ),
        (
            "/spec/securityContext/fsGroup",
            "{}",
            "spec.securityContext.fsGroup",
        ),
        (
            "/spec/securityContext/sysctls",
            r#""net.ipv4.ip_unprivileged_port_start=0""#,
            "spec.securityContext.sysctls",
        ),
        (
            "/spec/securityContext/sysctls/0/value",
            "0",
            "spec.securityContext.sysctls[0].value",
        ),
        (
            "/spec/securityContext/sysctls/0/name",
            "false",
            "spec.securityContext.sysctls[0].name",
        ),
        ("/spec/securityContext", "true", "spec.securityContext"),
        ("/spec/hostNetwork", r#""true""#, "spec.hostNetwork"),
        ("/spec/hostNetwork", "1", "spec.hostNetwork"),
        ("/spec/os", r#""linux""#, "spec.os"),
        ("/spec/os/name", "1", "spec.os.name"),
        (
            "/spec/imagePullSecrets",
            r#""regcred""#,
            "spec.imagePullSecrets",
        ),
        (
            "/spec/imagePullSecrets/0",
            r#""regcred""#,
            "spec.imagePullSecrets[0]",
        ),
        ("/spec/initContainers", "{}", "spec.initContainers"),
        (
            "/spec/initContainers/0/image",
            "1",
            "spec.initContainers[0].image",
        ),
        ("/spec/ephemeralContainers", "7", "spec.ephemeralContainers"),
        (
            "/spec/ephemeralContainers/0/image",
            "false",
            "spec.ephemeralContainers[0].image",
        ),
        ("/spec", r#""x""#, "spec"),
        ("/spec", "5", "spec"),
        ("/metadata", r#""web""#, "metadata"),
        ("/metadata/name", "5", "metadata.name"),
        ("/metadata/namespace", "[]", "metadata.namespace"),
        ("/metadata/generateName", "1", "metadata.generateName"),
        ("/kind", "1", "kind"),
        ("/apiVersion", "{}", "apiVersion"),
    ];
    let mut checked = 0;
    for (pointer, raw, path) in cases {
        let body = with_raw(&base, &format!("{o}{pointer}"), raw);
        for endpoint in ["/validate", "/mutate"] {
            let reply = conn.post(endpoint, body.clone()).await;
            let case = format!("{endpoint} {pointer} = {raw}");
            assert_review_error(
                &reply,
                &uid,
                &format!("cannot read Pod web: {path}: "),
                &case,
            );
            checked += 1;
        }
    }
    println!("{checked} wrong-type cases answered with the offending field");
    // The same inside a Deployment's template, and in the old object of an UPDATE.
    let deploy = review(&deployment(
        "api",
        "default",
        vec![full_pod()["spec"]["containers"][0].clone()],
    ));
    let duid = deploy["request"]["uid"].as_str().unwrap();
    let body = with_raw(
        &deploy,
        "/request/object/spec/template/spec/containers/0/securityContext/runAsUser",
        r#""0""#,
    );
    assert_review_error(
        &conn.post("/validate", body).await,
        duid,
        "cannot read Deployment api: spec.template.spec.containers[0].securityContext.runAsUser: ",
        "deployment",
    );
    let mut changed = full_pod();
    changed["spec"]["containers"][0]["image"] = json!("dhi.io/nginx:1.30");
    let update = review_op(&changed, "UPDATE", Some(&full_pod()));
    let uuid = update["request"]["uid"].as_str().unwrap();
    let body = with_raw(
        &update,
        "/request/oldObject/spec/containers/0/ports/0/containerPort",
        r#""80""#,
    );
    assert_review_error(
        &conn.post("/validate", body).await,
        uuid,
        "cannot read Pod web: spec.containers[0].ports[0].containerPort: ",
        "old object",
    );

    // Wrong types in the review itself.
    let request_cases: &[(&str, &str)] = &[
        ("/request/kind", r#""Pod""#),
        ("/request/kind/kind", "1"),
        ("/request/operation", "1"),
        ("/request/operation", r#""create""#),
        ("/request/namespace", "7"),
        ("/request/name", "[]"),
        ("/request/subResource", "{}"),
        ("/apiVersion", "1"),
        ("/kind", "[]"),
    ];
    for (pointer, raw) in request_cases {
        let reply = conn.post("/validate", with_raw(&base, pointer, raw)).await;
        assert_review_error(&reply, &uid, NOT_A_REVIEW, &format!("{pointer} = {raw}"));
    }
    // The object itself not an object: read as an object and refused.
    let reply = conn
        .post(
            "/validate",
            with_raw(&base, "/request/object", r#""a pod""#),
        )
        .await;
    assert_review_error(&reply, &uid, "cannot read Pod web: ", "object is a string");
    // Without a readable uid there is no review to answer: plain 400.
    for (pointer, raw) in [
        ("/request/uid", "123"),
        ("/request/uid", "null"),
        ("/request", r#""x""#),
        ("/request/uid", r#"{"a": 1}"#),
    ] {
        let reply = conn.post("/validate", with_raw(&base, pointer, raw)).await;
        assert_bad_request(&reply, NOT_A_REVIEW, &format!("{pointer} = {raw}"));
    }
    assert!(!conn.is_closed());
    still_serving(&t).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nulls_where_objects_are_expected() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let t = server.target();
    let mut conn = t.h1().await;
    let base = review(&full_pod());
    let uid = base["request"]["uid"].as_str().unwrap().to_owned();
    let o = "/request/object";
    // null reads as absent, like the API server: nothing to judge, or the inherited value.
    for pointer in [
        "/spec",
        "/spec/containers",
        "/spec/initContainers",
        "/spec/ephemeralContainers",
        "/metadata",
        "/spec/containers/0/securityContext",
        "/spec/containers/0/ports",
        "/spec/containers/0/command",
        "/spec/containers/0/image",
        "/spec/os",
        "/spec/hostNetwork",
        "/spec/imagePullSecrets",
        "/spec/securityContext/sysctls",
        "/apiVersion",
        "/kind",
    ] {
        let body = with_raw(&base, &format!("{o}{pointer}"), "null");
        for endpoint in ["/validate", "/mutate"] {
            let r = conn.post(endpoint, body.clone()).await.review();
            assert_eq!(r.uid, uid);
            assert!(
                r.allowed && r.status.is_none(),
                "{endpoint} {pointer} = null: {}",
                r.raw
            );
            assert!(r.patch.is_none(), "{endpoint} {pointer} = null: {}", r.raw);
        }
    }
    // A null pod securityContext: the patch creates it, and applies to the object as sent.
    let body = with_raw(&base, &format!("{o}/spec/securityContext"), "null");
    let object: Value =
        serde_json::from_slice::<Value>(&body).unwrap()["request"]["object"].clone();
    let r = conn.post("/mutate", body.clone()).await.review();
    // `web` sets its own user; `init` and `debug` inherited the pod's, now absent.
    let user = json!({"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true});
    assert_eq!(
        r.patch,
        Some(json!([
            {"op": "add", "path": "/spec/initContainers/0/securityContext", "value": user},
            {"op": "add", "path": "/spec/ephemeralContainers/0/securityContext", "value": user},
            {"op": "add", "path": "/spec/securityContext", "value": {"fsGroup": 65532}}
        ]))
    );
    let patched = apply_patch(&object, r.patch.as_ref().unwrap());
    assert_eq!(
        patched["spec"]["securityContext"],
        json!({"fsGroup": 65532})
    );
    // null inside a list is not an entry: refused with the field.
    for (pointer, path) in [
        ("/spec/containers/0", "spec.containers[0]"),
        ("/spec/containers/0/ports/0", "spec.containers[0].ports[0]"),
        ("/spec/imagePullSecrets/0", "spec.imagePullSecrets[0]"),
        (
            "/spec/securityContext/sysctls/0",
            "spec.securityContext.sysctls[0]",
        ),
        ("/spec/containers/0/name", "spec.containers[0].name"),
    ] {
        let reply = conn
            .post(
                "/validate",
                with_raw(&base, &format!("{o}{pointer}"), "null"),
            )
            .await;
        assert_review_error(
            &reply,
            &uid,
            &format!("cannot read Pod web: {path}: "),
            pointer,
        );
    }
    // The review's own fields.
    let reply = conn
        .post("/validate", with_raw(&base, "/request/object", "null"))
        .await;
    assert_review_error(
        &reply,
        &uid,
        "Create request for Pod web has no object",
        "object null",
    );
    let reply = conn
        .post("/validate", with_raw(&base, "/request/kind", "null"))
        .await;
    assert_review_error(&reply, &uid, NOT_A_REVIEW, "kind null");
    let reply = conn
        .post("/validate", with_raw(&base, "/request", "null"))
        .await;
    assert_eq!(
        reply.status_doc(400)["message"],
        "AdmissionReview has no request"
    );
    still_serving(&t).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_and_odd_numbers() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let t = server.target();
    let mut conn = t.h1().await;
    let base = review(&full_pod());
    let o = "/request/object";
    // Values that fit the field are judged as written; the API server's own validation
    // refuses the impossible ones (negative ports) later.
    let cases: &[(&str, &str, bool)] = &[
        (
            "/spec/containers/0/securityContext/runAsUser",
            "9223372036854775807",
            true,
        ),
        ("/spec/containers/0/securityContext/runAsUser", "-1", true),
        ("/spec/containers/0/securityContext/runAsUser", "0", false),
        ("/spec/containers/0/securityContext/runAsUser", "-0", false),
        ("/spec/containers/0/ports/0/containerPort", "-80", true),
        ("/spec/containers/0/ports/0/containerPort", "0", true),
        ("/spec/containers/0/ports/0/containerPort", "65536", true),
        (
            "/spec/containers/0/ports/0/containerPort",
            "9223372036854775807",
            true,
        ),
    ];
    // The sysctl lets nonroot bind from 0; drop it so low ports count.
    let mut base = base;
    base["request"]["object"]["spec"]["securityContext"]["sysctls"] = json!([]);
    for (pointer, raw, allowed) in cases {
        let r = conn
            .post("/validate", with_raw(&base, &format!("{o}{pointer}"), raw))
            .await
            .review();
        assert_eq!(r.allowed, *allowed, "{pointer} = {raw}: {}", r.raw);
    }
    let r = conn
        .post(
            "/validate",
            with_raw(
                &base,
                &format!("{o}/spec/containers/0/ports/0/containerPort"),
                "80",
            ),
        )
        .await
        .review();
    assert!(r.message().contains("[privileged-port]"), "{}", r.raw);
    still_serving(&t).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_nesting_is_answered_without_recursion() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let t = server.target();
    let mut base = review(&full_pod());
    base["request"]["object"]["metadata"]["annotations"] = json!({});
    let uid = base["request"]["uid"].as_str().unwrap().to_owned();
    let nest = |depth: usize, open: &str, close: &str| {
        format!("{}1{}", open.repeat(depth), close.repeat(depth))
    };
    for depth in [10_000usize, 100_000] {
        for (what, open, close) in [("arrays", "[", "]"), ("objects", "{\"a\":", "}")] {
            let deep = nest(depth, open, close);
            let case = |at: &str| format!("{depth} nested {what} at {at}");
            // Where nothing is read (annotations, userInfo, unknown keys), serde_json
            // skips values iteratively: no stack use, normal answer.
            for pointer in ["/request/object/metadata/annotations", "/request/userInfo"] {
                let started = Instant::now();
                let r = t
                    .post("/validate", with_raw(&base, pointer, &deep))
                    .await
                    .review();
                assert_eq!(r.uid, uid, "{}", case(pointer));
                assert!(
                    r.allowed && r.status.is_none(),
                    "{}: {}",
                    case(pointer),
                    r.raw
                );
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "{}: {:?}",
                    case(pointer),
                    started.elapsed()
                );
            }
            // Where a struct is expected, the first `[` or unknown key decides at once.
            let pointer = "/request/object/spec/containers/0/securityContext";
            let reply = t.post("/validate", with_raw(&base, pointer, &deep)).await;
            if open == "[" {
                assert_review_error(
                    &reply,
                    &uid,
                    "cannot read Pod web: spec.containers[0].securityContext",
                    &case(pointer),
                );
            } else {
                // {"a": ...}: an unknown key, skipped; the pod-level user applies.
                assert!(reply.review().allowed, "{}", case(pointer));
            }
            // The whole body nested: not a review (an array is no object; an object of
            // unknown keys has no apiVersion).
            let reply = t.post("/validate", deep.clone()).await;
            let prefix = if open == "[" {
                NOT_A_REVIEW
            } else {
                "expected apiVersion admission.k8s.io/v1"
            };
            assert_bad_request(&reply, prefix, &case("the top"));
        }
        // The one recursive shape the engine reads: spec.template.spec.template...
        // serde_json's recursion limit (128) refuses it instead of overflowing the stack.
        let template = format!(
            "{}{{}}{}",
            "{\"template\":{\"spec\":".repeat(depth),
            "}}".repeat(depth)
        );
        let mut deploy = review(&deployment(
            "api",
            "default",
            vec![container("api", "dhi.io/node:24")],
        ));
        let duid = deploy["request"]["uid"].as_str().unwrap().to_owned();
        deploy["request"]["object"]["spec"]["template"]["spec"] = json!("\u{1}RAW\u{1}");
        let body =
            serde_json::to_string(&deploy)
                .unwrap()
                .replacen("\"\\u0001RAW\\u0001\"", &template, 1);
        let started = Instant::now();
        let reply = t.post("/validate", body).await;
        assert_review_error(
            &reply,
            &duid,
            "cannot read Deployment api: ",
            "recursive templates",
        );
        let message = reply.json()["response"]["status"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(
            message.contains("recursion limit exceeded"),
            "{message:.300}"
        );
        println!(
            "{depth} nested templates refused in {:?}: {:.120}",
            started.elapsed(),
            message
        );
    }
    still_serving(&t).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_containers() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let t = server.target();
    // 100,000 minimal containers: about 3.8 MB, under the 4 MiB limit.
    let n = 100_000;
    let containers: Vec<Value> = (0..n)
        .map(|_| json!({"name": "c", "image": "dhi.io/nginx:1"}))
        .collect();
    let mut object = pod("many", "default", containers);
    object["spec"]["securityContext"] = json!({"runAsUser": 1000});
    let request = review(&object);
    let body = serde_json::to_vec(&request).unwrap();
    println!("100k containers: request body {} bytes", body.len());
    assert!(body.len() < 4 * 1024 * 1024);

    let started = Instant::now();
    let r = t.post("/validate", body.clone()).await.review();
    let validate_time = started.elapsed();
    assert!(r.allowed && r.status.is_none() && r.warnings.is_empty());

    // /mutate: one fsGroup for the pod, nothing per container (the pod sets the user).
    let started = Instant::now();
    let r = t.post("/mutate", body).await.review();
    let mutate_time = started.elapsed();
    assert_eq!(
        r.patch,
        Some(json!([{"op": "add", "path": "/spec/securityContext/fsGroup", "value": 65532}]))
    );

    // Without the pod-level user: a patch of 100,001 operations.
    let mut object = pod(
        "many",
        "default",
        (0..n)
            .map(|_| json!({"name": "c", "image": "dhi.io/nginx:1"}))
            .collect(),
    );
    object["spec"]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    let body = serde_json::to_vec(&review(&object)).unwrap();
    let started = Instant::now();
    let reply = t.post("/mutate", body).await;
    let big_patch_time = started.elapsed();
    println!("100k containers: answer of {} bytes", reply.body.len());
    let r = reply.review();
    let ops = r.patch.unwrap();
    let ops = ops.as_array().unwrap();
    assert_eq!(ops.len(), n + 1);
    assert_eq!(
        ops[n - 1]["path"],
        format!("/spec/containers/{}/securityContext", n - 1)
    );

    // Every container violating (a dev tag runs as root): 100,000 lines of denial.
    let mut object = pod(
        "many",
        "default",
        (0..n)
            .map(|_| json!({"name": "c", "image": "dhi.io/x:dev"}))
            .collect(),
    );
    object["spec"]["securityContext"] = json!({});
    let body = serde_json::to_vec(&review(&object)).unwrap();
    let started = Instant::now();
    let reply = t.post("/validate", body).await;
    let deny_time = started.elapsed();
    let r = reply.review();
    assert!(!r.allowed);
    // Twenty violations listed one by one, the rest counted; warnings capped likewise.
    let lines: Vec<&str> = r.message().lines().collect();
    assert_eq!(lines.len(), 1 + 20 + 1);
    assert_eq!(lines[21], format!("- and {} more", n - 20));
    // The twenty listed are two texts (an unknown repository, a dev variant, for containers
    // all named "c"), each sent once as kube-apiserver would, and the rest counted.
    assert_eq!(r.warnings.len(), 3, "{:?}", r.warnings);
    assert_eq!(r.warnings[2], format!("and {} more warnings", 2 * n - 20));
    println!(
        "100k containers: validate {validate_time:?}, mutate {mutate_time:?}, 100k-op patch {big_patch_time:?}, \
         100k violations {deny_time:?} (denial {} bytes, {} warnings); in-process VmHWM {:?} KiB",
        r.message().len(),
        r.warnings.len(),
        proc_status_kib(None, "VmHWM")
    );
    for (what, time) in [
        ("validate", validate_time),
        ("mutate", mutate_time),
        ("patch", big_patch_time),
        ("deny", deny_time),
    ] {
        assert!(time < Duration::from_secs(60), "{what} took {time:?}");
    }
    still_serving(&t).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_mebibyte_strings() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let t = server.target();
    let mib = 1024 * 1024;
    let long = "a".repeat(mib);

    // In a field the engine skips: answered as usual.
    let mut r = fixture(SMALL_POD);
    r["request"]["object"]["metadata"]["annotations"] = json!({"note": long});
    let answer = t.post_json("/mutate", &r).await.review();
    assert_eq!(answer.patch.as_ref().unwrap().as_array().unwrap().len(), 2);

    // As the image: not a valid reference (a repository component is at most 255... or
    // the grammar fails); refused by invalid-image with the container named.
    let mut r = review(&pod("web", "default", vec![container("web", &long)]));
    let started = Instant::now();
    let answer = t.post_json("/validate", &r).await.review();
    println!("1 MiB image judged in {:?}", started.elapsed());
    assert!(!answer.allowed);
    assert!(
        answer
            .message()
            .contains("[invalid-image] container \"web\""),
        "{}",
        &answer.message()[..200]
    );

    // As the container name of a violating container: the name is in the message.
    r = review(&pod(
        "web",
        "default",
        vec![container(&long, "dhi.io/nginx:1-dev")],
    ));
    let answer = t.post_json("/validate", &r).await.review();
    assert!(!answer.allowed);
    assert!(answer.message().len() > mib);
    // Past 4 KiB, warnings are cut as kube-apiserver cuts them, to 256 characters.
    assert!(
        answer
            .warnings
            .iter()
            .all(|w| w.len() <= dhi_policy::WARNING_CUT),
        "{:?}",
        answer.warnings.iter().map(String::len).collect::<Vec<_>>()
    );

    // As uid, namespace and name: the uid is echoed whole.
    let mut r = review(&low_port_pod("web"));
    r["request"]["uid"] = json!(long);
    r["request"]["namespace"] = json!(long);
    let answer = t.post_json("/validate", &r).await.review();
    assert_eq!(answer.uid.len(), mib);
    assert!(!answer.allowed);

    // An image of 1 MiB of path components and a tag of 1 MiB.
    for image in [
        format!("dhi.io/{}", "a/".repeat(mib / 2 - 4) + "a"),
        format!("dhi.io/nginx:{}", "1".repeat(mib)),
    ] {
        let r = review(&pod("web", "default", vec![container("web", &image)]));
        let started = Instant::now();
        let answer = t.post_json("/validate", &r).await.review();
        assert!(started.elapsed() < Duration::from_secs(30));
        assert!(!answer.allowed, "a 1 MiB reference is not pullable");
    }
    still_serving(&t).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_keys_are_refused_not_guessed() {
    let _serial = SERIAL.lock().await;
    // Go's decoder keeps the last duplicate, serde would keep the first: judging a
    // different value than the API server stores would be a bypass. Duplicates of
    // fields the engine reads are refused instead.
    let server = start().await;
    let t = server.target();
    let mut conn = t.h1().await;
    let base = review(&full_pod());
    let uid = base["request"]["uid"].as_str().unwrap().to_owned();
    let text = serde_json::to_string(&base).unwrap();
    let cases = [
        (
            "image",
            r#""image":"dhi.io/nginx:1.29""#,
            r#""image":"dhi.io/nginx:1.29","image":"dhi.io/nginx:1-dev""#,
            "spec.containers[0]",
        ),
        (
            "runAsUser",
            r#""runAsNonRoot":true,"runAsUser":1000}}]"#,
            r#""runAsNonRoot":true,"runAsUser":1000,"runAsUser":0}}]"#,
            "spec.containers[0].securityContext",
        ),
        (
            "containers",
            r#""containers":["#,
            r#""containers":[],"containers":["#,
            "spec",
        ),
        ("spec", r#""spec":{"#, r#""spec":{},"spec":{"#, "."),
    ];
    for (what, find, replace, _path) in cases {
        assert!(text.contains(find), "{what}: {find} not in {text}");
        let body = text.replacen(find, replace, 1);
        for endpoint in ["/validate", "/mutate"] {
            let reply = conn.post(endpoint, body.clone()).await;
            let review = reply.review();
            assert_eq!(review.uid, uid);
            assert!(
                !review.allowed,
                "{endpoint} duplicate {what}: {}",
                review.raw
            );
            assert_eq!(review.code(), Some(400));
            assert!(
                review.message().contains("duplicate field"),
                "{what}: {}",
                review.message()
            );
        }
    }
    // Duplicates in the review envelope: the uid cannot be trusted, plain 400.
    let body = text.replacen(
        &format!(r#""uid":"{uid}""#),
        &format!(r#""uid":"{uid}","uid":"other""#),
        1,
    );
    assert_bad_request(
        &conn.post("/validate", body).await,
        NOT_A_REVIEW,
        "duplicate uid",
    );
    let body = text.replacen(
        r#""operation":"CREATE""#,
        r#""operation":"DELETE","operation":"CREATE""#,
        1,
    );
    assert_review_error(
        &conn.post("/validate", body).await,
        &uid,
        NOT_A_REVIEW,
        "duplicate operation",
    );
    // In maps the engine does not read (labels), duplicates do not matter.
    let body = text.replacen(
        r#""generateName":"web-""#,
        r#""generateName":"web-","labels":{"a":"1","a":"2"}"#,
        1,
    );
    let r = conn.post("/validate", body).await.review();
    assert!(r.allowed, "{}", r.raw);
    still_serving(&t).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_and_bad_escapes() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let t = server.target();
    let mut conn = t.h1().await;
    let base = serde_json::to_vec(&review(&full_pod())).unwrap();
    let replace = |find: &[u8], with: &[u8]| -> Vec<u8> {
        let pos = base
            .windows(find.len())
            .position(|w| w == find)
            .expect("pattern");
        [&base[..pos], with, &base[pos + find.len()..]].concat()
    };
    let uid = serde_json::from_slice::<Value>(&base).unwrap()["request"]["uid"]
        .as_str()
        .unwrap()
        .to_owned();
    // Not UTF-8, or a lone surrogate: the review cannot be read, but the uid can (the
    // fallback that looks for it skips other strings without decoding them), so the
    // answer is a refusal with the uid.
    let with_uid: Vec<(&str, Vec<u8>)> = vec![
        (
            "0xff in the image",
            replace(b"dhi.io/nginx:1.29", b"dhi.io/ngi\xffx:1.29"),
        ),
        (
            "overlong encoding in a name",
            replace(b"\"web\"", b"\"w\xc0\xafb\""),
        ),
        (
            "truncated sequence in a label",
            replace(b"web-", b"we\xe2\x82"),
        ),
        (
            "surrogate encoded in UTF-8",
            replace(b"\"web\"", b"\"\xed\xa0\x80\""),
        ),
    ];
    for (case, body) in with_uid {
        let reply = conn.post("/validate", body).await;
        assert_review_error(
            &reply,
            &uid,
            "request body is not a valid AdmissionReview: invalid unicode code point",
            case,
        );
        still_serving(&t).await;
    }
    // A lone surrogate escape is only noticed when the image is decoded.
    let body = replace(b"dhi.io/nginx:1.29", b"dhi.io/nginx:1.29\\ud800");
    let reply = conn.post("/validate", body).await;
    assert_review_error(
        &reply,
        &uid,
        "cannot read Pod web: spec.containers[0].image: ",
        "lone surrogate",
    );
    // Not JSON at all: plain 400.
    let unreadable: Vec<(&str, Vec<u8>)> = vec![
        (
            "invalid escape",
            replace(b"dhi.io/nginx:1.29", b"dhi.io/nginx:1.29\\x41"),
        ),
        (
            "raw control character",
            replace(b"dhi.io/nginx:1.29", b"dhi.io/nginx:1.29\x01"),
        ),
        ("0xff in the uid", replace(uid.as_bytes(), b"\xff")),
    ];
    for (case, body) in unreadable {
        let reply = conn.post("/validate", body).await;
        assert_bad_request(&reply, NOT_A_REVIEW, case);
        still_serving(&t).await;
    }
    // Valid escapes of odd characters are fine and judged as decoded.
    let body = replace(b"dhi.io/nginx:1.29", b"dhi.io/ngin\\u0078:1.29");
    let r = conn.post("/validate", body).await.review();
    assert!(r.allowed, "{}", r.raw);
    let body = replace(b"dhi.io/nginx:1.29", b"dhi.io/nginx:1-\\u0064ev");
    let r = conn.post("/validate", body).await.review();
    // `1-\u0064ev` is `1-dev`: judged as the dev variant it names (run as 1000 here, so
    // a warning rather than a denial).
    assert!(r.allowed);
    assert_eq!(r.warnings.len(), 1);
    assert!(
        r.warnings[0].contains("uses dev variant dhi.io/nginx:1-dev"),
        "escapes are decoded before judging: {}",
        r.raw
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn envelope_version_size_and_type() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start_with_limits(hostile_limits()).await;
    let t = server.target();
    let mut conn = t.h1().await;
    for version in ["admission.k8s.io/v1beta1", "admission.k8s.io/v2", "v1", ""] {
        let mut r = fixture(SMALL_POD);
        r["apiVersion"] = json!(version);
        let doc = conn.post_json("/validate", &r).await.status_doc(400);
        assert!(
            doc["message"]
                .as_str()
                .unwrap()
                .starts_with("expected apiVersion admission.k8s.io/v1"),
            "{doc}"
        );
    }
    let mut r = fixture(SMALL_POD);
    r["kind"] = json!("AdmissionResponse");
    conn.post_json("/validate", &r).await.status_doc(400);
    let mut r = fixture(SMALL_POD);
    r.as_object_mut().unwrap().remove("apiVersion");
    conn.post_json("/validate", &r).await.status_doc(400);
    assert_bad_request(
        &conn.post("/validate", "").await,
        NOT_A_REVIEW,
        "empty body",
    );
    // 5 MiB: over the default 4 MiB limit. The server answers as soon as the declared
    // length is seen and closes; a client still sending its body may see the reset
    // before the answer (hyper's client does), so read while writing.
    let mut r = fixture(SMALL_POD);
    r["request"]["object"]["metadata"]["annotations"] = json!({"x": "y".repeat(5 * 1024 * 1024)});
    let big = serde_json::to_vec(&r).unwrap();
    let too_large = format!("request body larger than {} bytes", 4 * 1024 * 1024);
    let doc = t
        .h2()
        .await
        .post("/validate", big.clone())
        .await
        .status_doc(413);
    assert_eq!(doc["message"], too_large);
    let tls = t.tls(&[b"http/1.1"]).await.unwrap();
    let (mut reader, mut writer) = tokio::io::split(tls);
    let request = raw_post("/validate", &big);
    let writing = tokio::spawn(async move {
        let _ = writer.write_all(&request).await; // may fail once the server closes
        writer
    });
    let answer = read_response(&mut reader).await.unwrap();
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["message"], too_large);
    drop(writing);
    let mut conn = t.h1().await;
    let doc = conn
        .send(
            http::Method::POST,
            "/validate",
            Some("application/x-www-form-urlencoded"),
            fixture_bytes(SMALL_POD),
        )
        .await
        .status_doc(415);
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .ends_with("got application/x-www-form-urlencoded")
    );
    still_serving(&t).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_bodies_time_out_with_408() {
    let _serial = SERIAL.lock().await;
    let server = start().await; // request_timeout 2 s
    let t = server.target();
    let body = fixture_compact(SMALL_POD);
    let mut tls = t.tls(&[b"http/1.1"]).await.unwrap();
    let head = raw_post_start("/validate", body.len(), &body[..10]);
    tls.write_all(&head).await.unwrap();
    tls.flush().await.unwrap();
    let started = Instant::now();
    let answer = read_response(&mut tls).await.unwrap();
    assert_eq!(
        answer.status,
        408,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let doc = answer.json();
    assert_eq!(doc["code"], 408);
    assert!(
        doc["message"]
            .as_str()
            .unwrap()
            .starts_with("request body not received within")
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );
    still_serving(&t).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_and_dribbled_headers() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let t = server.target();
    // HTTP/1.0: answered, then closed.
    let body = fixture_compact(SMALL_POD);
    let mut tls = t.tls(&[b"http/1.1"]).await.unwrap();
    let mut request = format!(
        "POST /validate HTTP/1.0\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(&body);
    let answer = exchange(&mut tls, &request).await.unwrap();
    assert_eq!(answer.status, 200);
    assert!(answer.to_reply().review().allowed);
    let ending = read_until_closed(&mut tls, Duration::from_secs(20)).await;
    assert!(
        ending.closed() && ending.bytes().is_empty(),
        "HTTP/1.0 without keep-alive is closed: {ending:?}"
    );

    // Headers dribbled one byte every 200 ms: cut off by the header/idle timer (4 s).
    let mut tls = t.tls(&[b"http/1.1"]).await.unwrap();
    let head = b"POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\nx-padding: ";
    let started = Instant::now();
    let mut cut_after = None;
    for i in 0..200 {
        let byte = head.get(i).copied().unwrap_or(b'a');
        if tls.write_all(&[byte]).await.is_err() || tls.flush().await.is_err() {
            cut_after = Some(started.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let cut_after = match cut_after {
        Some(t) => t,
        None => {
            let ending = read_until_closed(&mut tls, Duration::from_secs(20)).await;
            assert!(ending.closed(), "a dribbling client is cut off: {ending:?}");
            started.elapsed()
        }
    };
    println!("dribbled headers cut off after {cut_after:?} (idle_timeout 4 s)");
    assert!(cut_after < Duration::from_secs(30));
    still_serving(&t).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_plaintext_on_the_tls_port() {
    let _serial = SERIAL.lock().await;
    let server = start().await;
    let t = server.target();
    let plaintext = raw_post("/validate", &fixture_compact(SMALL_POD));
    let mut garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    garbage[0] = 0x00; // not a TLS content type
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("plaintext HTTP request", plaintext),
        (
            "plaintext GET",
            b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n".to_vec(),
        ),
        ("random bytes", garbage),
        (
            "a TLS record header announcing 16 MiB",
            vec![0x16, 0x03, 0x01, 0xff, 0xff],
        ),
        (
            "an SSLv2 ClientHello",
            vec![
                0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10,
            ],
        ),
    ];
    for (case, bytes) in cases {
        let mut tcp = TcpStream::connect(t.addr).await.unwrap();
        tcp.write_all(&bytes).await.unwrap();
        let started = Instant::now();
        let ending = read_until_closed(&mut tcp, Duration::from_secs(20)).await;
        assert!(ending.closed(), "{case}: still open: {ending:?}");
        let got = ending.bytes();
        assert!(
            !got.starts_with(b"HTTP/"),
            "{case}: no HTTP is spoken before TLS"
        );
        assert!(
            got.is_empty() || got[0] == 0x15,
            "{case}: at most a TLS alert: {got:?}"
        );
        println!(
            "{case}: closed after {:?} with {} byte(s)",
            started.elapsed(),
            got.len()
        );
        still_serving(&t).await;
    }
    server.shutdown().await.unwrap();
}

/// A ClientHello offering only `version` (no supported_versions extension), with the
/// signature_algorithms extension (a TLS 1.2 extension some old clients send) or not.
fn legacy_client_hello(version: [u8; 2], signature_algorithms: bool) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version);
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    let suites: [u16; 7] = [0xc00a, 0xc009, 0xc014, 0xc013, 0x0035, 0x002f, 0x000a];
    body.extend_from_slice(&((suites.len() * 2) as u16).to_be_bytes());
    for s in suites {
        body.extend_from_slice(&s.to_be_bytes());
    }
    body.extend_from_slice(&[1, 0]); // null compression
    let mut ext = Vec::new();
    // server_name: localhost
    let name = b"localhost";
    let mut sni = Vec::new();
    sni.extend_from_slice(&((name.len() + 3) as u16).to_be_bytes());
    sni.push(0);
    sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
    sni.extend_from_slice(name);
    ext.extend_from_slice(&[0x00, 0x00]);
    ext.extend_from_slice(&(sni.len() as u16).to_be_bytes());
    ext.extend_from_slice(&sni);
    // supported_groups: secp256r1, x25519; ec_point_formats: uncompressed
    ext.extend_from_slice(&[0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x17, 0x00, 0x1d]);
    ext.extend_from_slice(&[0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]);
    if signature_algorithms {
        // ecdsa_secp256r1_sha256, rsa_pkcs1_sha256, rsa_pkcs1_sha1, ecdsa_sha1
        ext.extend_from_slice(&[
            0x00, 0x0d, 0x00, 0x0a, 0x00, 0x08, 0x04, 0x03, 0x04, 0x01, 0x02, 0x01, 0x02, 0x03,
        ]);
    }
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut handshake = vec![0x01];
    handshake.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_0_and_1_1_are_refused() {
    let _serial = SERIAL.lock().await;
    let server = TestServer::start().await; // the default 10 s handshake timeout: openssl is slow to start
    let t = server.target();
    // A genuine TLS 1.0/1.1 ClientHello has no signature_algorithms extension; rustls
    // requires it first and answers handshake_failure (40). With it, the version check
    // answers protocol_version (70). Either way: one fatal alert, no ServerHello.
    for (name, version) in [("TLS 1.0", [3u8, 1u8]), ("TLS 1.1", [3, 2])] {
        for (sig_algs, alert) in [(false, 40u8), (true, 70u8)] {
            let mut tcp = TcpStream::connect(t.addr).await.unwrap();
            tcp.write_all(&legacy_client_hello(version, sig_algs))
                .await
                .unwrap();
            let ending = read_until_closed(&mut tcp, Duration::from_secs(20)).await;
            assert!(ending.closed(), "{name}: {ending:?}");
            let got = ending.bytes();
            assert_eq!(got.len(), 7, "{name}: exactly one alert record: {got:?}");
            assert_eq!(got[0], 0x15, "{name}: an alert record");
            assert_eq!(&got[3..5], &[0, 2], "{name}");
            assert_eq!(
                (got[5], got[6]),
                (2, alert),
                "{name} (signature_algorithms: {sig_algs}): fatal alert {alert}"
            );
            println!("{name} ClientHello (signature_algorithms: {sig_algs}): fatal alert {alert}");
        }
    }
    // A TLS 1.2-only client is served.
    let config = t
        .trust
        .client_config_versions(&[b"http/1.1"], &[&rustls::version::TLS12]);
    let tls = t.tls_with(config).await.unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );

    // And the same with OpenSSL, when it is installed.
    let has_openssl = std::process::Command::new("openssl")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_openssl {
        println!("openssl not on PATH: skipping the s_client checks");
    } else {
        let port = t.addr.port();
        let s_client = move |flag: &'static str| {
            tokio::task::spawn_blocking(move || {
                std::process::Command::new("timeout")
                    .args([
                        "20",
                        "openssl",
                        "s_client",
                        "-connect",
                        &format!("127.0.0.1:{port}"),
                    ])
                    .args([
                        "-servername",
                        "localhost",
                        flag,
                        "-cipher",
                        "DEFAULT@SECLEVEL=0",
                    ])
                    .stdin(std::process::Stdio::null())
                    .output()
                    .expect("run openssl")
            })
        };
        let control = s_client("-tls1_2").await.unwrap();
        let control_out = String::from_utf8_lossy(&control.stdout).into_owned()
            + &String::from_utf8_lossy(&control.stderr);
        assert!(
            control_out.contains("TLSv1.2"),
            "openssl -tls1_2 should connect: {control_out}"
        );
        for flag in ["-tls1", "-tls1_1"] {
            let out = s_client(flag).await.unwrap();
            let text = String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr);
            if text.contains("no protocols available") {
                println!(
                    "openssl {flag}: this OpenSSL will not offer it; the hand-written ClientHello covers it"
                );
                continue;
            }
            assert!(!out.status.success(), "openssl {flag} must fail: {text}");
            assert!(text.contains("Cipher is (NONE)"), "openssl {flag}: {text}");
            assert!(
                text.contains("alert handshake failure") || text.contains("alert protocol version"),
                "openssl {flag}: {text}"
            );
            println!("openssl s_client {flag}: refused with a fatal alert");
        }
    }
    still_serving(&t).await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_three_hundred_silent_connections() {
    let _serial = SERIAL.lock().await;
    let server = start().await; // handshake_timeout 2 s
    let t = server.target();
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(TcpStream::connect(t.addr).await.unwrap());
    }
    // Half a ClientHello, and TLS done but half a request head.
    let mut partial_hello = Vec::new();
    for _ in 0..20 {
        let mut tcp = TcpStream::connect(t.addr).await.unwrap();
        tcp.write_all(&legacy_client_hello([3, 3], true)[..20])
            .await
            .unwrap();
        partial_hello.push(tcp);
    }
    let mut partial_head = Vec::new();
    for _ in 0..20 {
        let mut tls = t.tls(&[b"http/1.1"]).await.unwrap();
        tls.write_all(b"POST /validate HTTP/1.1\r\nhost: localhost\r\n")
            .await
            .unwrap();
        tls.flush().await.unwrap();
        partial_head.push(tls);
    }
    // While they are all held, a well-formed client is served.
    let started = Instant::now();
    still_serving(&t).await;
    println!(
        "served while 340 connections stall, in {:?}",
        started.elapsed()
    );

    let started = Instant::now();
    let mut waits = Vec::new();
    for mut tcp in silent.into_iter().chain(partial_hello) {
        waits.push(tokio::spawn(async move {
            read_until_closed(&mut tcp, Duration::from_secs(40)).await
        }));
    }
    for mut tls in partial_head {
        waits.push(tokio::spawn(async move {
            read_until_closed(&mut tls, Duration::from_secs(40)).await
        }));
    }
    let mut closed = 0;
    for (i, wait) in waits.into_iter().enumerate() {
        let ending = wait.await.unwrap();
        assert!(ending.closed(), "connection {i} still open: {ending:?}");
        if i < 320 {
            assert!(
                ending.bytes().is_empty() || ending.bytes()[0] == 0x15,
                "connection {i}: {ending:?}"
            );
        } else {
            assert!(
                !ending.bytes().starts_with(b"HTTP/1.1 200"),
                "connection {i}: {ending:?}"
            );
        }
        closed += 1;
    }
    let elapsed = started.elapsed();
    println!("all {closed} stalled connections closed within {elapsed:?}");
    assert_eq!(closed, 340);
    still_serving(&t).await;
    let metrics = t.metrics().await;
    // None of them reached the admission handler.
    assert_eq!(
        metric_sum(&metrics, "dhi_admission_requests_total"),
        2.0,
        "{metrics}"
    );
    server.shutdown().await.unwrap();
}

/// More idle HTTP/2 connections than the cap, each answering pings: the longest idle
/// make room, and a new client is served at once instead of waiting in the accept
/// queue.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_flood_past_the_connection_cap() {
    let _serial = SERIAL.lock().await;
    let cap = 64;
    let server = TestServer::start_with(ServerOptions {
        limits: Limits {
            max_connections: cap,
            idle_timeout: Duration::from_secs(60),
            ..hostile_limits()
        },
        ..Default::default()
    })
    .await;
    let t = server.target();
    let mut flood = Vec::new();
    for _ in 0..cap + 36 {
        let mut conn = t.h2_pinging(Duration::from_millis(250)).await;
        conn.assert_allowed("/validate", fixture_bytes(SMALL_POD))
            .await;
        flood.push(conn);
    }
    // Each connection past the cap evicted the longest idle one: the first 36.
    eventually(
        "36 evictions",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let closed = flood.iter().filter(|c| c.is_closed()).count();
            async move { (closed == 36).then_some(()) }
        },
    )
    .await;
    assert!(flood[..36].iter().all(Conn::is_closed));
    assert!(!flood[36..].iter().any(Conn::is_closed));
    let started = Instant::now();
    still_serving(&t).await;
    let served_in = started.elapsed();
    println!(
        "{} idle HTTP/2 connections (cap {cap}): a new client served in {served_in:?}",
        flood.len()
    );
    let m = t.metrics().await;
    assert_counter(
        &m,
        "dhi_admission_connections_closed_total",
        &[("reason", "evicted")],
        37.0,
    );
    let open = metric(&m, "dhi_admission_connections", &[]).unwrap();
    assert!(open <= cap as f64, "{open} connections open: {m}");
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peak_rss_of_the_binary_under_the_largest_bodies() {
    let _serial = SERIAL.lock().await;
    let mut server = BinaryServer::spawn(BinaryOptions::default()).await;
    let t = server.target();
    let idle_rss = server.rss_kib().unwrap_or(0);
    let n = 100_000;
    let bodies: Vec<(&str, &str, Vec<u8>)> = vec![
        ("100k containers, 100k-op patch", "/mutate", {
            let mut object = pod(
                "many",
                "default",
                (0..n)
                    .map(|_| json!({"name": "c", "image": "dhi.io/nginx"}))
                    .collect(),
            );
            object["spec"]
                .as_object_mut()
                .unwrap()
                .remove("securityContext");
            serde_json::to_vec(&review(&object)).unwrap()
        }),
        ("100k violations", "/validate", {
            let object = pod(
                "many",
                "default",
                (0..n)
                    .map(|_| json!({"name": "c", "image": "dhi.io/x:dev"}))
                    .collect(),
            );
            serde_json::to_vec(&review(&object)).unwrap()
        }),
        ("1 MiB container name", "/validate", {
            serde_json::to_vec(&review(&pod(
                "web",
                "default",
                vec![container(&"a".repeat(1 << 20), "dhi.io/nginx:1-dev")],
            )))
            .unwrap()
        }),
        ("10k nested arrays", "/validate", {
            let mut r = review(&full_pod());
            r["request"]["object"]["metadata"]["annotations"] = json!("\u{1}RAW\u{1}");
            serde_json::to_string(&r)
                .unwrap()
                .replacen(
                    "\"\\u0001RAW\\u0001\"",
                    &format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
                    1,
                )
                .into_bytes()
        }),
    ];
    let mut after_round = Vec::new();
    for round in 0..2 {
        for (case, path, body) in &bodies {
            let started = Instant::now();
            let reply = t.post(path, body.clone()).await;
            assert!(
                reply.status == 200 || reply.status == 400,
                "{case}: {}",
                reply.status
            );
            if round == 0 {
                println!(
                    "binary, {case}: {} -> {} bytes in {:?}; VmRSS {:?} KiB, VmHWM {:?} KiB",
                    body.len(),
                    reply.body.len(),
                    started.elapsed(),
                    server.rss_kib(),
                    server.peak_rss_kib()
                );
            }
        }
        after_round.push(server.peak_rss_kib().unwrap_or(0));
    }
    still_serving(&t).await;
    println!("binary: peak RSS after each round of the largest bodies: {after_round:?} KiB");
    // The same bodies again must not raise the high-water mark much: memory kept from
    // the first round (a leak) would add to the second round's peak.
    assert!(
        after_round[1] <= after_round[0] + after_round[0] / 4 + 32 * 1024,
        "{after_round:?}"
    );
    let peak = server.peak_rss_kib().expect("VmHWM of the child");
    let after = server.rss_kib().unwrap_or(0);
    println!("binary: idle RSS {idle_rss} KiB, peak RSS (VmHWM) {peak} KiB, RSS after {after} KiB");
    // Bounded: the largest answer is ~40 MB; 1 GiB would mean a blow-up.
    assert!(peak < 1024 * 1024, "peak RSS {peak} KiB");
    server.sigterm();
    let status = server
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exit");
    assert!(status.success());
}
