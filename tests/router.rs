//! The admission protocol through the webhook router, in process (`oneshot`, no
//! socket): every answer's status code, uid echo and routing, for every kind of request
//! and every bad input. Transport (TLS, HTTP/1.1 and HTTP/2, timeouts, reloads) is tested
//! over real sockets in `tests/server.rs` and `tests/hostile.rs`.

mod common;

use common::app::App;
use common::expect::*;
use common::*;
use http::Method;
use serde_json::{Value, json};

#[tokio::test]
async fn small_pod_and_deployment_fixtures() {
    let mut conn = App::new();

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
}

#[tokio::test]
async fn validate_allows_compliant_and_denies_with_every_violation() {
    let mut conn = App::new();
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

#[tokio::test]
async fn audit_paths_report_without_enforcing() {
    let mut conn = App::new();

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
        // kube-apiserver may cut a warning to its first 256 characters: the fix is there.
        let head = &warning[..warning.len().min(dhi_policy::WARNING_CUT)];
        assert!(head.contains(": Fix: "), "{warning:?}");
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
    let (listed, findings): (
        std::collections::BTreeMap<_, _>,
        std::collections::BTreeMap<_, _>,
    ) = audit
        .audit_annotations
        .clone()
        .into_iter()
        .partition(|(key, _)| key.starts_with("violation."));
    assert_eq!(listed, expected);
    // Beside each rule's list, its complete findings, each with its fix.
    assert_eq!(
        findings.keys().collect::<Vec<_>>(),
        [
            "finding.invalid-image",
            "finding.privileged-port",
            "finding.run-as-root"
        ]
    );
    assert_eq!(findings["finding.run-as-root"].lines().count(), 2);
    for finding in findings.values().flat_map(|f| f.lines()) {
        assert!(
            finding.starts_with("container \"") && finding.contains(". Fix: "),
            "{finding}"
        );
    }

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
}

/// `dhi.io/mode: warn` namespaces come by the /warn paths: patched as in enforce, the
/// violations as warnings, never denied, and no audit annotations (audit's).
#[tokio::test]
async fn warn_paths_patch_and_warn_without_denying() {
    let mut conn = App::new();

    let request = review(&violating_pod("web-1"));
    let warned = conn.post_json("/validate/warn", &request).await.review();
    assert_eq!(warned.uid, request["request"]["uid"]);
    assert!(warned.allowed);
    assert!(warned.status.is_none() && warned.patch.is_none());
    assert!(
        warned.audit_annotations.is_empty(),
        "{:?}",
        warned.audit_annotations
    );
    assert_eq!(warned.warnings.len(), 5, "{:#?}", warned.warnings);
    for (warning, (rule, container, _)) in warned.warnings.iter().zip(VIOLATIONS) {
        let prefix = format!("warn: [{rule}] container \"{container}\"");
        assert!(
            warning.starts_with(&prefix),
            "{warning:?} should start with {prefix:?}"
        );
    }
    assert_eq!(warned.warnings[4], DEV_WARNING);
    // The same request on the default path is denied: only the path made the difference.
    let denied = conn.post_json("/validate", &request).await.review();
    assert_denied(&denied, "Pod web-1", VIOLATIONS);

    let patched = conn
        .post("/mutate/warn", fixture_bytes(ISTIO_POD))
        .await
        .review();
    assert!(patched.allowed && patched.status.is_none());
    assert_eq!(
        patched.patch,
        Some(istio_patch()),
        "warn patches as enforce does"
    );
    assert_eq!(patched.patch_type.as_deref(), Some("JSONPatch"));
    assert!(patched.audit_annotations.is_empty());
}

/// A mode path only relaxes: with the server in audit mode (the audit overlay), a warn
/// namespace is audited, never patched; with the server in warn mode, /audit still audits.
#[tokio::test]
async fn mode_paths_are_never_stricter_than_the_server() {
    let planned =
        "image_rewrite x1, run_as_user x1, run_as_group x1, run_as_non_root x1, fs_group x1";
    let mut audit_server = App::with_mode(Some(dhi_policy::Mode::Audit));
    for path in ["/mutate/warn", "/mutate"] {
        let r = audit_server
            .post(path, fixture_bytes(ISTIO_POD))
            .await
            .review();
        assert!(r.allowed, "{path}");
        assert_eq!(r.patch, None, "{path}: the audit server never patches");
        assert_eq!(r.audit_annotations["planned-mutations"], planned, "{path}");
    }

    let mut warn_server = App::with_mode(Some(dhi_policy::Mode::Warn));
    let request = review(&violating_pod("web-1"));
    let r = warn_server
        .post_json("/validate/audit", &request)
        .await
        .review();
    assert!(r.allowed);
    // Three rules, each with its list of containers and its complete findings.
    assert_eq!(r.audit_annotations.len(), 6, "{:?}", r.audit_annotations);
    assert!(r.warnings[0].starts_with("audit: "), "{:?}", r.warnings);
    let r = warn_server.post_json("/validate", &request).await.review();
    assert!(r.allowed && r.audit_annotations.is_empty());
    assert!(r.warnings[0].starts_with("warn: "), "{:?}", r.warnings);
    let r = warn_server
        .post("/mutate/audit", fixture_bytes(ISTIO_POD))
        .await
        .review();
    assert_eq!(r.patch, None, "/audit never patches");
}

#[tokio::test]
async fn request_kinds_operations_and_namespaces() {
    let mut conn = App::new();
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
    assert!(r.allowed && r.audit_annotations.len() == 6);
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
}

#[tokio::test]
async fn ephemeral_containers_subresource_is_validated_alone() {
    let mut conn = App::new();
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
}

#[tokio::test]
async fn update_with_unchanged_pod_spec_is_allowed() {
    let mut conn = App::new();
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
    let r = conn
        .post_json("/validate", &review_op(&scaled, "UPDATE", Some(&old)))
        .await
        .review();
    assert!(
        r.allowed && r.status.is_none() && r.warnings.is_empty(),
        "{}",
        r.raw
    );

    // Any change to the pod spec is judged again, fields the rules don't read included:
    // the new pods would be judged at creation anyway.
    let mut resized = scaled.clone();
    resized["spec"]["template"]["spec"]["containers"][0]["resources"] =
        json!({"limits": {"cpu": "2"}});
    let r = conn
        .post_json("/validate", &review_op(&resized, "UPDATE", Some(&scaled)))
        .await
        .review();
    assert_denied(&r, "Deployment legacy", VIOLATIONS);

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
}

#[tokio::test]
async fn every_bad_input_gets_its_exact_answer() {
    let mut conn = App::new();

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
        "/mutate/warn/",
        "/validate/Warn",
        "/metrics",
        "/healthz",
    ] {
        let doc = conn.post(path, small.clone()).await.status_doc(404);
        assert_eq!(doc["reason"], "NotFound", "{path}");
        assert_eq!(
            doc["message"],
            "unknown path: the webhook serves /mutate, /validate, and both under /audit and /warn"
        );
    }
    assert!(conn.post("/validate", small).await.review().allowed);
}
