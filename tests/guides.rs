//! Root by design from DHI's own guides (issue 23, point 2): a `runAsUser: 0` that the
//! image's own guide prescribes (guides.json, folded into the catalog by
//! tools/gen_catalog.py) is admitted with a warning that cites the guide; a policy can
//! still deny it. Through the engine, `check` on the guides' examples, and the TLS server.

mod common;

use common::cli::{Run, dhi};
use common::engine::decide_pod;
use common::*;
use dhi_policy::{Decision, Engine, PolicyFile, RuleId, Webhook};
use serde_json::{Value, json};

fn engine(yaml: &str) -> Engine {
    Engine::new(PolicyFile::from_yaml(yaml).expect("policy"))
}

fn pod(spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "agent", "namespace": "default"},
        "spec": spec})
}

fn validate(engine: &Engine, object: &Value) -> Decision {
    decide_pod(engine, object, Webhook::Validate)
}

fn root(image: &str) -> Value {
    pod(json!({"containers": [{"name": "agent", "image": image,
        "securityContext": {"runAsUser": 0}}]}))
}

const CITED: &str = "container \"agent\": runAsUser: 0 admitted as root by design, as the \
    image's own guide prescribes (image/clamav/guides.md:201 in DHI's catalog); to deny it, set \
    guides.rootByDesign: false in the dhi-admission policy. Image: dhi.io/clamav:1.5";

#[test]
fn the_catalog_knows_which_guides_run_their_image_as_root() {
    let catalog = Engine::default();
    let catalog = catalog.catalog();
    for (repo, at) in [
        (
            "aws-efs-csi-driver",
            "image/aws-efs-csi-driver/guides.md:293",
        ),
        ("clamav", "image/clamav/guides.md:201"),
        ("multus-cni", "image/multus-cni/guides.md:80"),
        (
            "node-problem-detector",
            "image/node-problem-detector/guides.md:56",
        ),
        (
            "openebs-lvm-driver",
            "image/openebs-lvm-driver/guides.md:49",
        ),
        (
            "opentelemetry-autoinstrumentation-go",
            "image/opentelemetry-autoinstrumentation-go/guides.md:35",
        ),
    ] {
        assert_eq!(catalog.root_by_guide(repo), Some(at), "{repo}");
    }
    // Prose and another image's example are no prescription: piraeus-operator's guide
    // runs busybox as root, alpine-base's says "if root is needed".
    for repo in [
        "piraeus-operator",
        "busybox",
        "alpine-base",
        "nginx",
        "python",
    ] {
        assert_eq!(catalog.root_by_guide(repo), None, "{repo}");
    }
}

#[test]
fn a_root_setting_the_guide_prescribes_is_admitted_with_the_guide_cited() {
    let e = Engine::default();
    let d = validate(&e, &root("dhi.io/clamav:1.5"));
    assert!(d.allowed && d.violations.is_empty(), "{:?}", d.violations);
    assert_eq!(d.warnings, [CITED]);
    // At the pod level too; and a privileged agent binds its low port as root.
    let d = validate(
        &e,
        &pod(
            json!({"securityContext": {"runAsUser": 0}, "containers": [{"name": "agent",
            "image": "dhi.io/node-problem-detector:1.36.0", "securityContext": {"privileged": true},
            "ports": [{"containerPort": 80}]}]}),
        ),
    );
    assert!(d.allowed, "{:?}", d.violations);
    assert!(d.warnings[0].contains("image/node-problem-detector/guides.md:56"));
    // Other images' root is still denied with the old fix.
    let d = validate(&e, &root("dhi.io/nginx:1.31"));
    assert_eq!(d.violations[0].rule, RuleId::RunAsRoot);
    // The dev variant's own root is not what the guide prescribes: still denied.
    let d = validate(
        &e,
        &pod(json!({"containers": [{"name": "agent", "image": "dhi.io/multus-cni:4.3.0-dev"}]})),
    );
    assert_eq!(d.violations[0].rule, RuleId::RunAsRoot);
}

#[test]
fn a_policy_can_still_deny_it_and_unknown_keys_stay_errors() {
    let strict = engine("guides: {rootByDesign: false}\n");
    let d = validate(&strict, &root("dhi.io/clamav:1.5"));
    assert!(!d.allowed);
    assert_eq!(
        d.violations[0].message,
        "container \"agent\" (dhi.io/clamav:1.5) would run as root because its securityContext \
         sets runAsUser: 0; hardened images are built to run as nonroot. Fix: remove runAsUser: \
         0, or set the container's runAsUser to 65532"
    );
    // run-as-root at warn: the guide's case is still told apart.
    let warned = engine("rules: {run-as-root: warn}\n");
    assert_eq!(
        validate(&warned, &root("dhi.io/clamav:1.5")).warnings,
        [CITED]
    );
    let err = PolicyFile::from_yaml("guides: {rootByDesgn: false}\n").unwrap_err();
    assert!(
        err.to_string().contains("unknown field `rootByDesgn`"),
        "{err}"
    );
}

/// `check` on the guides' own examples: admitted, each root container with the guide cited.
#[test]
fn check_admits_the_guides_own_examples() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/guides");
    let run = Run::from(dhi(&["check", "-o", "json", dir]).output().unwrap());
    assert_eq!(run.code, 0, "{}", run.stdout);
    let report = run.json();
    let objects = report["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 2);
    for object in objects {
        assert_eq!(object["allowed"], true, "{object:#}");
        let warnings = object["warnings"].as_array().unwrap();
        assert!(!warnings.is_empty());
        for w in warnings {
            assert!(
                w.as_str().unwrap().contains(
                    "admitted as root by design, as the image's own guide prescribes (image/"
                ),
                "{w}"
            );
        }
    }
    let policy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(policy.path(), "guides: {rootByDesign: false}\n").unwrap();
    let mut check = dhi(&["check", "--config"]);
    let run = Run::from(check.arg(policy.path()).arg(dir).output().unwrap());
    assert_eq!(run.code, 1, "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tls_server_admits_the_guides_root_with_its_warning() {
    let server = TestServer::start().await;
    let t = server.target();
    let mut conn = t.connect(Proto::H2).await;
    let mut clamav = root("dhi.io/clamav:1.5");
    clamav["metadata"]["namespace"] = json!("security");
    let request = review(&clamav);
    let verdict = conn.post_json("/validate", &request).await.review();
    assert!(
        verdict.allowed && verdict.status.is_none(),
        "{}",
        verdict.raw
    );
    assert_eq!(verdict.warnings, [CITED]);
    let mutated = conn.post_json("/mutate", &request).await.review();
    assert!(mutated.allowed);
    // Its explicit user is kept: nothing injected into the container.
    let patch = mutated.patch.unwrap_or(json!([]));
    assert!(!patch.to_string().contains("runAsUser"), "{patch}");
}
