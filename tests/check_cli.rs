//! `dhi-admission check` as users run it: the real binary on the manifests in
//! `tests/fixtures/check/`, with exact exit codes, reports, patches and errors, and the
//! verdicts compared with what the admission handler answers for the same objects.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use base64::Engine as _;
use dhi_admission::admission;
use dhi_policy::{Engine, Mode, Webhook};
use serde_json::{Value, json};

const FIXTURES: &str = "tests/fixtures/check";

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

/// The outcome of one run.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|err| panic!("{err}: {}", self.stdout))
    }
}

/// Runs `dhi-admission check ARGS` from the package root, feeding `stdin`.
fn check_with_stdin(args: &[&str], stdin: &str) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dhi-admission"))
        .arg("check")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let Output {
        status,
        stdout,
        stderr,
    } = child.wait_with_output().unwrap();
    Run {
        code: status.code().unwrap(),
        stdout: String::from_utf8(stdout).unwrap(),
        stderr: String::from_utf8(stderr).unwrap(),
    }
}

fn check(args: &[&str]) -> Run {
    check_with_stdin(args, "")
}

/// `check -o json` on one fixture: exit code and the single object reported.
fn check_object(name: &str, extra: &[&str]) -> (i32, Value) {
    let path = fixture(name);
    let mut args = vec!["-o", "json", path.as_str()];
    args.extend(extra);
    let run = check(&args);
    let report = run.json();
    assert_eq!(report["objects"].as_array().unwrap().len(), 1, "{report:#}");
    (run.code, report["objects"][0].clone())
}

fn rules(object: &Value) -> Vec<(&str, &str, &str)> {
    object["violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let field = |name: &str| v[name].as_str().unwrap();
            (field("rule"), field("container"), field("image"))
        })
        .collect()
}

#[test]
fn a_compliant_pod_is_admitted_with_nothing_to_patch() {
    let run = check(&[&fixture("compliant-pod.yaml")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "ADMITTED Pod shop/api (tests/fixtures/check/compliant-pod.yaml, document 1)\n\
         1 object: 1 admitted, 0 denied, 0 skipped\n"
    );
    assert_eq!(run.stderr, "");
}

#[test]
fn a_dev_variant_running_as_root_is_denied() {
    let (code, pod) = check_object("python-dev-root-pod.yaml", &[]);
    assert_eq!(code, 1);
    assert_eq!(pod["allowed"], false);
    assert_eq!(
        (
            pod["kind"].as_str(),
            pod["namespace"].as_str(),
            pod["name"].as_str()
        ),
        (Some("Pod"), Some("data"), Some("notebook"))
    );
    assert_eq!(
        rules(&pod),
        [("run-as-root", "app", "dhi.io/python:3.13-dev")]
    );
    let message = pod["violations"][0]["message"].as_str().unwrap();
    assert!(message.contains("use the runtime variant"), "{message}");
    assert!(
        pod["warnings"][0]
            .as_str()
            .unwrap()
            .contains("uses dev variant dhi.io/python:3.13-dev")
    );
    assert_eq!(pod["patch"], json!([]));
}

#[test]
fn nginx_on_port_80_is_denied_and_its_template_patch_shown() {
    let (code, deploy) = check_object("nginx-port-80-deployment.yaml", &[]);
    assert_eq!(code, 1);
    assert_eq!(
        rules(&deploy),
        [("privileged-port", "nginx", "dhi.io/nginx:1.31")]
    );
    assert_eq!(
        deploy["patch"],
        json!([
            {"op": "add", "path": "/spec/template/spec/containers/0/securityContext",
             "value": {"runAsUser": 65532, "runAsGroup": 65532, "runAsNonRoot": true}},
            {"op": "add", "path": "/spec/template/spec/securityContext", "value": {"fsGroup": 65532}},
        ])
    );
    assert_eq!(deploy["patchTarget"], "pods");

    let text = check(&[&fixture("nginx-port-80-deployment.yaml")]).stdout;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "DENIED  Deployment default/web (tests/fixtures/check/nginx-port-80-deployment.yaml, document 1)"
    );
    assert!(
        lines[1].starts_with(
            "  [privileged-port] container \"nginx\" (dhi.io/nginx:1.31) declares port 80"
        ),
        "{text}"
    );
    assert_eq!(
        lines[2],
        "  patch (applied by the webhook when the pods are created):"
    );
    assert_eq!(
        lines[3],
        r#"    add /spec/template/spec/containers/0/securityContext {"runAsGroup":65532,"runAsNonRoot":true,"runAsUser":65532}"#
    );
    assert_eq!(
        lines.last(),
        Some(&"1 object: 0 admitted, 1 denied, 0 skipped")
    );
}

#[test]
fn the_upstream_istio_proxy_is_rewritten_to_its_hardened_image() {
    let (code, pod) = check_object("istio-proxy-pod.yaml", &[]);
    assert_eq!(code, 0);
    assert_eq!(pod["allowed"], true);
    assert_eq!(pod["violations"], json!([]));
    assert_eq!(
        pod["patch"],
        json!([
            {"op": "replace", "path": "/spec/containers/0/image", "value": "dhi.io/istio-proxyv2:1.30.3"},
            {"op": "add", "path": "/spec/containers/0/securityContext",
             "value": {"runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": true}},
            {"op": "add", "path": "/spec/securityContext", "value": {"fsGroup": 1337}},
        ])
    );
    assert_eq!(pod["patchTarget"], "object");
}

#[test]
fn audit_mode_admits_and_reports_violations_as_warnings() {
    let (code, pod) = check_object("python-dev-root-pod.yaml", &["--mode", "audit"]);
    assert_eq!(code, 0);
    assert_eq!(pod["allowed"], true);
    assert_eq!(pod["violations"], json!([]));
    let warnings = pod["warnings"].as_array().unwrap();
    assert!(
        warnings.iter().any(|w| w
            .as_str()
            .unwrap()
            .starts_with("audit: [run-as-root] container \"app\"")),
        "{warnings:?}"
    );
}

#[test]
fn the_policy_file_sets_the_mode_unless_the_command_line_does() {
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("policy.yaml");
    std::fs::write(&policy, "mode: audit\n").unwrap();
    let policy = policy.to_str().unwrap();
    let pod = fixture("python-dev-root-pod.yaml");
    assert_eq!(check(&["--config", policy, &pod]).code, 0);
    assert_eq!(
        check(&["--config", policy, "--mode", "enforce", &pod]).code,
        1
    );

    std::fs::write(
        dir.path().join("policy.yaml"),
        "rules: {run-as-root: warn}\n",
    )
    .unwrap();
    let (code, object) = check_object("python-dev-root-pod.yaml", &["--config", policy]);
    assert_eq!(code, 0);
    assert!(
        object["warnings"][0]
            .as_str()
            .unwrap()
            .starts_with("[run-as-root]"),
        "{object}"
    );
}

#[test]
fn list_items_are_checked_one_by_one() {
    let run = check(&["-o", "json", &fixture("list.yaml")]);
    assert_eq!(run.code, 1);
    let report = run.json();
    let objects: Vec<_> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            (
                o["path"].as_str().unwrap(),
                o["name"].as_str().unwrap(),
                o["allowed"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        objects,
        [("/items/0", "worker", true), ("/items/2", "builder", false)]
    );
    assert_eq!(report["skipped"][0]["path"], "/items/1");
    assert_eq!(report["skipped"][0]["kind"], "ConfigMap");
    assert_eq!(
        report["summary"],
        json!({"objects": 2, "admitted": 1, "denied": 1, "skipped": 1, "errors": 0})
    );
}

#[test]
fn an_admission_review_is_judged_as_its_request() {
    let (code, pod) = check_object("kubectl-debug-review.json", &[]);
    assert_eq!(code, 1);
    assert_eq!(pod["path"], "/request/object");
    assert_eq!(
        (pod["namespace"].as_str(), pod["name"].as_str()),
        (Some("shop"), Some("checkout-7d4b9c6f5-x2x9p"))
    );
    // Only the ephemeral container is judged: the app container's image is not hardened.
    assert_eq!(
        rules(&pod),
        [("run-as-root", "debugger-r2kqz", "dhi.io/python:3.13-dev")]
    );
    // The mutating webhook sees `kubectl debug` too; a root dev image gets no user.
    assert_eq!(pod["patchTarget"], "object");
    assert_eq!(pod["patch"], json!([]));

    let review: Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("kubectl-debug-review.json")).unwrap(),
    )
    .unwrap();
    let answer = webhook(&review, Webhook::Validate, Mode::Enforce);
    assert_eq!(answer["allowed"], false);
    let status = answer["status"]["message"].as_str().unwrap();
    assert!(
        status.contains(pod["violations"][0]["message"].as_str().unwrap()),
        "{status}"
    );
}

#[test]
fn a_multi_document_file_lists_what_it_skips() {
    let run = check(&[&fixture("multi-doc.yaml")]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "SKIPPED Service shop/storefront (tests/fixtures/check/multi-doc.yaml, document 1): no pod spec\n\
         ADMITTED Deployment shop/storefront (tests/fixtures/check/multi-doc.yaml, document 2)\n  \
           patch (applied by the webhook when the pods are created):\n    \
             add /spec/template/spec/containers/0/securityContext {\"runAsGroup\":65532,\"runAsNonRoot\":true,\"runAsUser\":65532}\n    \
             add /spec/template/spec/securityContext {\"fsGroup\":65532}\n\
         SKIPPED ConfigMap shop/storefront-site (tests/fixtures/check/multi-doc.yaml, document 3): no pod spec\n\
         1 object: 1 admitted, 0 denied, 2 skipped\n"
    );
}

#[test]
fn broken_yaml_names_the_file_the_document_and_the_line() {
    let run = check(&[&fixture("broken.yaml")]);
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr,
        "error: tests/fixtures/check/broken.yaml, document 2: invalid YAML: unclosed bracket '{' at line 13, column 16\n"
    );
    // The document before the mistake is still read.
    assert!(
        run.stdout
            .starts_with("SKIPPED ConfigMap fine (tests/fixtures/check/broken.yaml, document 1)")
    );
    assert!(
        run.stdout
            .ends_with("0 objects: 0 admitted, 0 denied, 1 skipped, 1 error\n")
    );

    let report = check(&["-o", "json", &fixture("broken.yaml")]).json();
    assert_eq!(
        report["errors"][0]["source"],
        "tests/fixtures/check/broken.yaml"
    );
    assert_eq!(report["errors"][0]["document"], 2);
    assert_eq!(report["summary"]["errors"], 1);
}

#[test]
fn a_field_of_the_wrong_type_is_bad_input_naming_its_path() {
    let run = check(&[&fixture("run-as-user-string.yaml")]);
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr,
        "error: tests/fixtures/check/run-as-user-string.yaml, document 2: cannot read Deployment: \
         spec.template.spec.containers[0].securityContext.runAsUser: invalid type: string \"zero\", expected i64\n"
    );
}

#[test]
fn standard_input_is_read_with_a_dash() {
    let pod = std::fs::read_to_string(fixture("python-dev-root-pod.yaml")).unwrap();
    let run = check_with_stdin(&["-o", "json", "-"], &pod);
    assert_eq!(run.code, 1);
    let report = run.json();
    assert_eq!(report["objects"][0]["source"], "<stdin>");
    assert_eq!(report["objects"][0]["document"], 1);

    let review = std::fs::read_to_string(fixture("kubectl-debug-review.json")).unwrap();
    let run = check_with_stdin(&["-"], &review);
    assert_eq!(run.code, 1);
    assert!(
        run.stdout.starts_with(
            "DENIED  Pod shop/checkout-7d4b9c6f5-x2x9p (<stdin>, document 1, request.object)"
        ),
        "{}",
        run.stdout
    );
}

#[test]
fn fix_prints_patched_manifests_that_check_clean() {
    let files = [
        "istio-proxy-pod.yaml",
        "multi-doc.yaml",
        "list.yaml",
        "compliant-pod.yaml",
    ]
    .map(fixture);
    let mut args = vec!["--fix", "-o", "json"];
    args.extend(files.iter().map(String::as_str));
    let fixed = check(&args);
    // The builder in list.yaml is still denied: no patch makes a -dev image nonroot.
    assert_eq!(fixed.code, 1, "{}", fixed.stderr);
    let report: Value = serde_json::from_str(&fixed.stderr).unwrap();
    assert_eq!(
        report["objects"][0]["patch"][0]["value"],
        "dhi.io/istio-proxyv2:1.30.3"
    );

    let documents: Vec<Value> = serde_saphyr::from_multiple(&fixed.stdout).unwrap();
    let kinds: Vec<&str> = documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["Pod", "Service", "Deployment", "ConfigMap", "List", "Pod"]
    );
    let proxy = &documents[0]["spec"]["containers"][0];
    assert_eq!(proxy["image"], "dhi.io/istio-proxyv2:1.30.3");
    assert_eq!(proxy["securityContext"]["runAsUser"], 1337);
    let service: Value = serde_saphyr::from_multiple::<Value>(
        &std::fs::read_to_string(fixture("multi-doc.yaml")).unwrap(),
    )
    .unwrap()
    .remove(0);
    assert_eq!(
        documents[1], service,
        "skipped documents are printed unchanged"
    );

    // Checking the output again: the same verdicts, and nothing left to patch.
    let again = check_with_stdin(&["-o", "json", "-"], &fixed.stdout);
    assert_eq!(again.code, fixed.code);
    let again = again.json();
    let verdicts = |report: &Value| -> Vec<(Value, Value)> {
        let objects = report["objects"].as_array().unwrap();
        objects
            .iter()
            .map(|o| (o["name"].clone(), o["allowed"].clone()))
            .collect()
    };
    assert_eq!(verdicts(&again), verdicts(&report));
    for object in again["objects"].as_array().unwrap() {
        assert_eq!(object["patch"], json!([]), "{object}");
    }
}

#[test]
fn fix_on_compliant_input_exits_zero_and_is_idempotent() {
    let fixed = check(&["--fix", &fixture("istio-proxy-pod.yaml")]);
    assert_eq!(fixed.code, 0, "{}", fixed.stderr);
    assert!(
        fixed
            .stderr
            .contains("patch (applied to this object by the webhook, and by --fix):"),
        "{}",
        fixed.stderr
    );
    let again = check_with_stdin(&["--fix", "-"], &fixed.stdout);
    assert_eq!(again.code, 0);
    assert_eq!(again.stdout, fixed.stdout);
    assert!(!again.stderr.contains("patch"), "{}", again.stderr);
}

#[test]
fn fix_prints_nothing_when_input_is_bad() {
    let run = check(&[
        "--fix",
        &fixture("istio-proxy-pod.yaml"),
        &fixture("broken.yaml"),
    ]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, "");
    assert!(
        run.stderr.contains("broken.yaml, document 2: invalid YAML"),
        "{}",
        run.stderr
    );
}

#[test]
fn directories_are_walked_in_sorted_order() {
    let run = check(&["-o", "json", FIXTURES]);
    assert_eq!(
        run.code, 2,
        "broken.yaml and run-as-user-string.yaml are bad input"
    );
    let report = run.json();
    let mut sources: Vec<String> = Vec::new();
    for section in ["objects", "skipped", "errors"] {
        for entry in report[section].as_array().unwrap() {
            sources.push(entry["source"].as_str().unwrap().to_owned());
        }
    }
    let found: BTreeSet<String> = sources.into_iter().collect();
    let mut expected: Vec<PathBuf> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURES))
            .unwrap()
            .map(|e| Path::new(FIXTURES).join(e.unwrap().file_name()))
            .collect();
    expected.sort();
    let expected: BTreeSet<String> = expected.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(found, expected);
    let objects: Vec<&str> = report["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["source"].as_str().unwrap())
        .collect();
    let mut sorted = objects.clone();
    sorted.sort();
    assert_eq!(objects, sorted);
}

#[test]
fn unreadable_oversized_and_invalid_arguments_exit_2() {
    let missing = check(&[&fixture("missing.yaml")]);
    assert_eq!(missing.code, 2);
    assert!(
        missing
            .stderr
            .starts_with("error: tests/fixtures/check/missing.yaml: cannot read: "),
        "{}",
        missing.stderr
    );

    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.yaml");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(64 * 1024 * 1024 + 1)
        .unwrap();
    let run = check(&[big.to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .ends_with("big.yaml: larger than 64 MiB; check smaller files\n"),
        "{}",
        run.stderr
    );

    std::fs::write(dir.path().join("policy.yaml"), "rewirte: {}\n").unwrap();
    let policy = dir.path().join("policy.yaml");
    let run = check(&[
        "--config",
        policy.to_str().unwrap(),
        &fixture("compliant-pod.yaml"),
    ]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.starts_with("error: policy "), "{}", run.stderr);
    assert!(run.stderr.contains("rewirte"), "{}", run.stderr);

    assert_eq!(check(&[]).code, 2, "a path is required");
    assert_eq!(
        check(&["--mode", "strict", &fixture("compliant-pod.yaml")]).code,
        2
    );
}

/// The admission handler's response to a review.
fn webhook(review: &Value, webhook: Webhook, mode: Mode) -> Value {
    let answer = admission::handle(
        &Engine::default(),
        webhook,
        mode,
        review.to_string().as_bytes(),
    );
    let body: Value = serde_json::from_slice(&answer.body).unwrap();
    body["response"].clone()
}

/// The CREATE review kube-apiserver would send for a manifest.
fn create_review(object: &Value) -> Value {
    let (group, version) = match object["apiVersion"].as_str().unwrap().rsplit_once('/') {
        Some((group, version)) => (group, version),
        None => ("", object["apiVersion"].as_str().unwrap()),
    };
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "check-cli",
            "kind": {"group": group, "version": version, "kind": object["kind"]},
            "operation": "CREATE",
            "namespace": object["metadata"]["namespace"],
            "name": object["metadata"]["name"],
            "object": object,
        },
    })
}

#[test]
fn verdicts_warnings_and_pod_patches_are_the_webhooks() {
    let files = [
        "compliant-pod.yaml",
        "python-dev-root-pod.yaml",
        "nginx-port-80-deployment.yaml",
        "istio-proxy-pod.yaml",
        "list.yaml",
        "multi-doc.yaml",
    ];
    for mode in [Mode::Enforce, Mode::Audit] {
        for file in files {
            let path = fixture(file);
            let report = check(&["-o", "json", "--mode", mode.as_str(), &path]).json();
            let documents: Vec<Value> =
                serde_saphyr::from_multiple(&std::fs::read_to_string(&path).unwrap()).unwrap();
            for object in report["objects"].as_array().unwrap() {
                let document = &documents[object["document"].as_u64().unwrap() as usize - 1];
                let manifest = document.pointer(object["path"].as_str().unwrap()).unwrap();
                let review = create_review(manifest);
                let validate = webhook(&review, Webhook::Validate, mode);
                let mutate = webhook(&review, Webhook::Mutate, mode);
                let context = format!("{file} {} in {mode}", object["name"]);
                assert_eq!(object["allowed"], validate["allowed"], "{context}");
                let expected: BTreeSet<&str> = [&validate, &mutate]
                    .into_iter()
                    .flat_map(|r| r["warnings"].as_array().into_iter().flatten())
                    .filter_map(Value::as_str)
                    .collect();
                // The webhook cuts warnings to kube-apiserver's limit; `check` keeps them whole.
                let reported: BTreeSet<String> = object["warnings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_str)
                    .map(|w| dhi_policy::shorten(w.to_owned()))
                    .collect();
                let expected: BTreeSet<String> = expected.into_iter().map(str::to_owned).collect();
                assert_eq!(reported, expected, "{context}");
                for violation in object["violations"].as_array().unwrap() {
                    let status = validate["status"]["message"].as_str().unwrap();
                    assert!(
                        status.contains(violation["message"].as_str().unwrap()),
                        "{context}"
                    );
                }
                if object["kind"] == "Pod" && mode == Mode::Enforce {
                    let patch = mutate["patch"].as_str().map_or(json!([]), |b64| {
                        serde_json::from_slice(
                            &base64::engine::general_purpose::STANDARD
                                .decode(b64)
                                .unwrap(),
                        )
                        .unwrap()
                    });
                    assert_eq!(object["patch"], patch, "{context}");
                } else {
                    assert!(mutate.get("patch").is_none(), "{context}: {mutate}");
                }
            }
        }
    }
}

/// A Deployment of upstream hubble-relay, on stdin.
const OLD_RELAY: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: hubble-relay}
spec:
  template:
    spec:
      containers:
        - {name: hubble-relay, image: 'quay.io/cilium/hubble-relay:v1.16.5'}
";

#[test]
fn a_rewrite_to_a_tag_the_catalog_lacks_is_skipped_and_fix_agrees() {
    let run = check_with_stdin(&["-"], OLD_RELAY);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "ADMITTED Deployment hubble-relay (<stdin>, document 1)\n  \
         warning: container \"hubble-relay\": quay.io/cilium/hubble-relay:v1.16.5 not rewritten: \
         dhi.io/hubble-relay has no tag 1.16.5; available lines: 1.18, 1.19, 1.20\n\
         1 object: 1 admitted, 0 denied, 0 skipped\n"
    );
    // --fix leaves the image as it is.
    let fixed = check_with_stdin(&["--fix", "-"], OLD_RELAY);
    assert_eq!(fixed.code, 0);
    assert!(
        fixed
            .stdout
            .contains("image: quay.io/cilium/hubble-relay:v1.16.5"),
        "{}",
        fixed.stdout
    );
}

#[test]
fn a_catalog_file_replaces_the_compiled_in_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("images.json");
    std::fs::write(
        &path,
        r#"{"source": "mirror export (2027-02-01)", "images": {"hubble-relay": {"variants": [
            {"variant": "runtime", "tags": ["1.16", "1.16.5"], "uid": 65532, "gid": 65532}]}}}"#,
    )
    .unwrap();
    let catalog = path.to_str().unwrap();
    let run = check_with_stdin(&["--catalog", catalog, "-"], OLD_RELAY);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "ADMITTED Deployment hubble-relay (<stdin>, document 1)\n  \
         patch (applied by the webhook when the pods are created):\n    \
         replace /spec/template/spec/containers/0/image \"dhi.io/hubble-relay:1.16.5\"\n    \
         add /spec/template/spec/containers/0/securityContext {\"runAsGroup\":65532,\"runAsNonRoot\":true,\"runAsUser\":65532}\n    \
         add /spec/template/spec/securityContext {\"fsGroup\":65532}\n\
         1 object: 1 admitted, 0 denied, 0 skipped\n"
    );
    let info = Command::new(env!("CARGO_BIN_EXE_dhi-admission"))
        .args(["catalog", "info", "--catalog", catalog])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(info.stdout).unwrap(),
        format!(
            "catalog: {catalog}\nsource: mirror export (2027-02-01)\ndate: 2027-02-01\n\
             repositories: 1\ntags: 2\n"
        )
    );
    // A broken file is refused, naming it.
    std::fs::write(&path, r#"{"source": "x", "images": {}}"#).unwrap();
    let run = check_with_stdin(&["--catalog", catalog, "-"], OLD_RELAY);
    assert_eq!(run.code, 2);
    assert_eq!(
        run.stderr,
        format!(
            "error: catalog {catalog}: invalid catalog: source \"x\" names no date (YYYY-MM-DD)\n"
        )
    );
}
