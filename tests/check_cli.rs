//! `dhi-admission check` as users run it: the real binary on the manifests in
//! `tests/fixtures/check/`, with exact exit codes, reports, patches and errors, and the
//! verdicts compared with what the admission handler answers for the same objects;
//! empty input, passed-over files, `--quiet`, SARIF, `--fix` per file, and the README's
//! example output.

#[path = "common/cli.rs"]
mod cli;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use dhi_policy::answer;
use dhi_policy::{Engine, Mode, Webhook};
use serde_json::{Value, json};

use cli::{Run, dhi, output_with_stdin};

const FIXTURES: &str = "tests/fixtures/check";

fn fixture(name: &str) -> String {
    format!("{FIXTURES}/{name}")
}

/// Runs `dhi-admission check ARGS` from the package root, feeding `stdin`.
fn check_with_stdin(args: &[&str], stdin: &str) -> Run {
    let mut command = dhi(&["check"]);
    command.args(args).current_dir(env!("CARGO_MANIFEST_DIR"));
    output_with_stdin(command, stdin.as_bytes()).into()
}

/// `check ARGS` exits with `code` and prints exactly `stdout`.
fn assert_prints(args: &[&str], code: i32, stdout: &str) {
    let run = check(args);
    assert_eq!(run.code, code, "{}", run.stderr);
    assert_eq!(run.stdout, stdout);
}

/// Bad input: exit code 2, and exactly this on stderr.
fn assert_bad_input(run: &Run, stderr: impl AsRef<str>) {
    assert_eq!((run.code, run.stderr.as_str()), (2, stderr.as_ref()));
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
    assert_prints(
        &[&fixture("multi-doc.yaml")],
        0,
        "SKIPPED Service shop/storefront (tests/fixtures/check/multi-doc.yaml, document 1): no pod spec\n\
         ADMITTED Deployment shop/storefront (tests/fixtures/check/multi-doc.yaml, document 2)\n  \
           patch (applied by the webhook when the pods are created):\n    \
             add /spec/template/spec/containers/0/securityContext {\"runAsGroup\":65532,\"runAsNonRoot\":true,\"runAsUser\":65532}\n    \
             add /spec/template/spec/securityContext {\"fsGroup\":65532}\n\
         SKIPPED ConfigMap shop/storefront-site (tests/fixtures/check/multi-doc.yaml, document 3): no pod spec\n\
         1 object: 1 admitted, 0 denied, 2 skipped\n",
    );
}

#[test]
fn broken_yaml_names_the_file_the_document_and_the_line() {
    let run = check(&[&fixture("broken.yaml")]);
    assert_bad_input(
        &run,
        "error: tests/fixtures/check/broken.yaml, document 2: invalid YAML: unclosed bracket '{' at line 13, column 16\n",
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
    assert_bad_input(
        &run,
        "error: tests/fixtures/check/run-as-user-string.yaml, document 2: cannot read Deployment: \
         spec.template.spec.containers[0].securityContext.runAsUser: invalid type: string \"zero\", expected i64\n",
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
    assert!(
        fixed
            .stdout
            .starts_with("---\n# Source: tests/fixtures/check/istio-proxy-pod.yaml\n"),
        "{}",
        fixed.stdout
    );
    let again = check_with_stdin(&["--fix", "-"], &fixed.stdout);
    assert_eq!(again.code, 0);
    assert_eq!(
        again.stdout,
        fixed.stdout.replace(
            "# Source: tests/fixtures/check/istio-proxy-pod.yaml",
            "# Source: <stdin>"
        )
    );
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
    let answer = answer::handle(
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
                // The webhook sends the warnings `check` prints, cut only as kube-apiserver
                // would cut them.
                let reported: Vec<String> = object["warnings"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect();
                let reported: BTreeSet<String> = dhi_policy::as_api_server_sends(&reported)
                    .into_iter()
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
    let info = dhi(&["catalog", "info", "--catalog", catalog])
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
    assert_bad_input(
        &run,
        format!(
            "error: catalog {catalog}: invalid catalog: source \"x\" names no date (YYYY-MM-DD)\n"
        ),
    );
}

/// A directory of its own for one test, with `files` (path, content) in it.
fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
    dir
}

fn read_fixture(name: &str) -> String {
    std::fs::read_to_string(fixture(name)).unwrap()
}

const EMPTY: &str = "no Kubernetes objects found; nothing was checked (pass --allow-empty if an \
                     empty input is expected)";

#[test]
fn input_without_objects_fails_unless_allowed() {
    let run = check_with_stdin(&["-"], "");
    assert_bad_input(&run, format!("error: <stdin>: {EMPTY}\n"));
    assert_eq!(
        run.stdout,
        "0 objects: 0 admitted, 0 denied, 0 skipped, 1 error\n"
    );
    // Comments and `---` only: what `helm template` prints when every template is off.
    let run = check_with_stdin(&["-"], "---\n# Source: chart/templates/off.yaml\n---\n");
    assert_eq!(run.code, 2);

    let allowed = check_with_stdin(&["--allow-empty", "-"], "");
    assert_eq!(allowed.code, 0, "{}", allowed.stderr);
    assert_eq!(
        allowed.stdout,
        "0 objects: 0 admitted, 0 denied, 0 skipped\n"
    );
    assert_eq!(allowed.stderr, "");

    // Each path must hold an object: a rendered directory that stayed empty fails even
    // next to a good file. Values files are not Kubernetes objects.
    let dir = tree(&[
        ("empty/README.md", "# nothing\n"),
        ("values/values.yaml", "replicas: 2\n"),
    ]);
    for sub in ["empty", "values"] {
        let path = dir.path().join(sub);
        let run = check(&[&fixture("compliant-pod.yaml"), path.to_str().unwrap()]);
        assert_eq!(run.code, 2, "{sub}");
        assert_eq!(run.stderr, format!("error: {}: {EMPTY}\n", path.display()));
    }
    let path = dir.path().join("empty");
    let run = check(&[
        "--allow-empty",
        &fixture("compliant-pod.yaml"),
        path.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.stderr);

    // Objects that are not judged are objects: nothing to fail on.
    let service = "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n";
    assert_eq!(check_with_stdin(&["-"], service).code, 0);
    // With --fix, nothing is printed either.
    let fixed = check_with_stdin(&["--fix", "-"], "");
    assert_eq!((fixed.code, fixed.stdout.as_str()), (2, ""));
}

#[test]
fn hidden_entries_and_links_that_are_not_followed_are_named() {
    let dir = tree(&[
        ("pod.yaml", &read_fixture("compliant-pod.yaml")),
        (".hidden.yaml", "kind: [broken\n"),
        (".git/config.yaml", "kind: [broken\n"),
        (".gitignore", "*.tmp\n"),
        ("notes.txt", "not a manifest\n"),
    ]);
    let root = dir.path();
    std::os::unix::fs::symlink(root.join("gone.yaml"), root.join("dangling.yaml")).unwrap();
    std::os::unix::fs::symlink(root.join(".git"), root.join("linked")).unwrap();
    let run = check(&[root.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let root = root.display();
    assert_eq!(
        run.stderr,
        format!(
            "note: {root}/.git: not read: hidden (its name starts with a dot)\n\
             note: {root}/.hidden.yaml: not read: hidden (its name starts with a dot)\n\
             note: {root}/dangling.yaml: not read: a symbolic link to nothing\n\
             note: {root}/linked: not read: a symbolic link to a directory (not followed: it \
             may loop); name it to check it\n"
        )
    );
    assert_eq!(
        run.stdout,
        format!(
            "ADMITTED Pod shop/api ({root}/pod.yaml, document 1)\n\
             1 object: 1 admitted, 0 denied, 0 skipped\n"
        )
    );
}

#[test]
fn kinds_with_a_pod_spec_that_are_not_judged_are_named() {
    let rollout = "apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: web, namespace: shop}
spec:
  template:
    spec:
      containers: [{name: web, image: 'dhi.io/python:3.13-dev'}]
";
    let run = check_with_stdin(&["-"], rollout);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "SKIPPED Rollout shop/web (<stdin>, document 1): kind not supported: \
         argoproj.io/v1alpha1 Rollout has a pod spec, but only Pod, PodTemplate, \
         ReplicationController, Deployment, StatefulSet, DaemonSet, ReplicaSet, Job, CronJob \
         are judged as written; the webhook judges the pods it creates\n\
         0 objects: 0 admitted, 0 denied, 1 skipped\n"
    );
    let service =
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec: {ports: [{port: 80}]}\n";
    let run = check_with_stdin(&["-"], service);
    assert!(
        run.stdout
            .starts_with("SKIPPED Service web (<stdin>, document 1): no pod spec\n"),
        "{}",
        run.stdout
    );
}

#[test]
fn an_unrendered_helm_template_gets_a_hint() {
    let template = "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ include \"chart.fullname\" . }}
  labels:
    {{- include \"chart.labels\" . | nindent 4 }}
";
    let run = check_with_stdin(&["-"], template);
    assert_bad_input(
        &run,
        "error: <stdin>, document 1: invalid YAML: \"-\" is only valid inside a block at line \
         6, column 7; it looks like an unrendered Helm template: render it first (helm \
         template RELEASE CHART | dhi-admission check -)\n",
    );
    // Without template actions, no hint.
    let run = check_with_stdin(&["-"], "kind: [a\n");
    assert!(!run.stderr.contains("Helm"), "{}", run.stderr);
}

#[test]
fn quiet_shows_denials_and_warnings_only() {
    let files = [
        "compliant-pod.yaml",
        "multi-doc.yaml",
        "python-dev-root-pod.yaml",
    ]
    .map(fixture);
    let mut args = vec!["--quiet"];
    args.extend(files.iter().map(String::as_str));
    let run = check(&args);
    assert_eq!(run.code, 1);
    assert_eq!(
        run.stdout,
        "DENIED  Pod data/notebook (tests/fixtures/check/python-dev-root-pod.yaml, document 1)\n  \
           [run-as-root] container \"app\" (dhi.io/python:3.13-dev) would run as root because it \
         is a dev variant, which runs as root; hardened images are built to run as nonroot. \
         Fix: use the runtime variant (tag without -dev), which runs as nonroot, or set a \
         non-zero runAsUser\n  \
           warning: container \"app\" uses dev variant dhi.io/python:3.13-dev (root, shell, \
         package manager): use the runtime variant (tag without -dev) in production\n\
         3 objects: 2 admitted, 1 denied, 2 skipped\n"
    );
    // An admitted object with a warning is shown, with its warning and no patch.
    let run = check_with_stdin(&["-q", "-"], OLD_RELAY);
    assert_eq!(run.code, 0);
    assert_eq!(
        run.stdout,
        "ADMITTED Deployment hubble-relay (<stdin>, document 1)\n  \
         warning: container \"hubble-relay\": quay.io/cilium/hubble-relay:v1.16.5 not rewritten: \
         dhi.io/hubble-relay has no tag 1.16.5; available lines: 1.18, 1.19, 1.20\n\
         1 object: 1 admitted, 0 denied, 0 skipped\n"
    );
}

/// Checks the required properties of each SARIF 2.1.0 object a log of ours holds, as
/// the schema (sarif-schema-2.1.0.json) lists them, and the enumerations and formats
/// it constrains: levels, line numbers from 1, rule indexes into the driver's rules.
fn assert_valid_sarif(log: &Value) {
    let required = |object: &Value, what: &str, fields: &[&str]| {
        let map = object
            .as_object()
            .unwrap_or_else(|| panic!("{what} is not an object: {object}"));
        for field in fields {
            assert!(map.contains_key(*field), "{what} lacks {field}: {object}");
        }
    };
    let message = |object: &Value, what: &str| {
        required(object, what, &["text"]);
        assert!(object["text"].is_string(), "{what}: {object}");
    };
    let level = |object: &Value| {
        let level = object["level"].as_str().unwrap();
        assert!(
            ["none", "note", "warning", "error"].contains(&level),
            "{level}"
        );
    };
    required(log, "sarifLog", &["version", "runs"]);
    assert_eq!(log["version"], "2.1.0");
    assert!(
        log["$schema"]
            .as_str()
            .unwrap()
            .ends_with("sarif-schema-2.1.0.json")
    );
    for run in log["runs"].as_array().unwrap() {
        required(run, "run", &["tool"]);
        required(&run["tool"], "tool", &["driver"]);
        let driver = &run["tool"]["driver"];
        required(driver, "toolComponent", &["name"]);
        let rules = driver["rules"].as_array().unwrap();
        for rule in rules {
            required(rule, "reportingDescriptor", &["id"]);
            message(&rule["shortDescription"], "shortDescription");
            message(&rule["help"], "help");
            level(&rule["defaultConfiguration"]);
        }
        for invocation in run["invocations"].as_array().unwrap() {
            required(invocation, "invocation", &["executionSuccessful"]);
            assert!(invocation["executionSuccessful"].is_boolean());
            for notification in invocation["toolExecutionNotifications"].as_array().unwrap() {
                required(notification, "notification", &["message"]);
                message(&notification["message"], "notification message");
                level(notification);
            }
        }
        for result in run["results"].as_array().unwrap() {
            required(result, "result", &["message"]);
            message(&result["message"], "result message");
            level(result);
            let index = result["ruleIndex"].as_u64().unwrap() as usize;
            assert_eq!(rules[index]["id"], result["ruleId"]);
            for location in result["locations"].as_array().unwrap() {
                if let Some(physical) = location.get("physicalLocation") {
                    // anyOf: address or artifactLocation.
                    required(physical, "physicalLocation", &["artifactLocation"]);
                    assert!(physical["artifactLocation"]["uri"].is_string());
                    assert!(physical["region"]["startLine"].as_u64().unwrap() >= 1);
                }
                for logical in location["logicalLocations"].as_array().unwrap() {
                    assert!(logical["fullyQualifiedName"].is_string());
                }
            }
        }
    }
}

/// (ruleId, level, uri, line) of each result.
fn sarif_results(log: &Value) -> Vec<(String, String, String, u64)> {
    log["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let physical = &r["locations"][0]["physicalLocation"];
            (
                r["ruleId"].as_str().unwrap().to_owned(),
                r["level"].as_str().unwrap().to_owned(),
                physical["artifactLocation"]["uri"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
                physical["region"]["startLine"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn sarif_puts_each_finding_on_its_line() {
    let files = [
        "deploy/examples/violations-deployment.yaml",
        "deploy/examples/admission-review.json",
        "tests/fixtures/check/list.yaml",
    ];
    let mut args = vec!["-o", "sarif"];
    args.extend(files);
    let run = check(&args);
    assert_eq!(run.code, 1, "{}", run.stderr);
    let log = run.json();
    assert_valid_sarif(&log);
    let owned = |(rule, level, uri, line): (&str, &str, &str, u64)| {
        (rule.to_owned(), level.to_owned(), uri.to_owned(), line)
    };
    let text = |path: &str| std::fs::read_to_string(path).unwrap();
    let line_of = |path: &str, needle: &str| {
        text(path).lines().position(|l| l.contains(needle)).unwrap() as u64 + 1
    };
    let violations = "deploy/examples/violations-deployment.yaml";
    let review = "deploy/examples/admission-review.json";
    let list = "tests/fixtures/check/list.yaml";
    assert_eq!(
        sarif_results(&log),
        [
            (
                "privileged-port",
                "error",
                violations,
                line_of(violations, "image: dhi.io/nginx:1.31")
            ),
            (
                "run-as-root",
                "error",
                violations,
                line_of(violations, "image: dhi.io/python:3.13-dev")
            ),
            (
                "dhi-warning",
                "warning",
                violations,
                line_of(violations, "image: dhi.io/python:3.13-dev")
            ),
            (
                "dhi-warning",
                "warning",
                review,
                line_of(review, "\"image\": \"docker.io/istio/proxyv2")
            ),
            (
                "run-as-root",
                "error",
                list,
                line_of(list, "dhi.io/python:3.13-dev")
            ),
            (
                "dhi-warning",
                "warning",
                list,
                line_of(list, "dhi.io/python:3.13-dev")
            ),
        ]
        .map(owned)
    );
    // The lines are those of the images.
    assert_eq!(line_of(violations, "image: dhi.io/nginx:1.31"), 26);
    let rules: Vec<&str> = log["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        rules,
        [
            "run-as-root",
            "privileged-port",
            "invalid-image",
            "dhi-warning"
        ]
    );
    assert_eq!(
        log["runs"][0]["invocations"][0]["executionSuccessful"],
        true
    );

    // Audit mode: the same findings, as warnings under their rules.
    let audit = check(&["-o", "sarif", "--mode", "audit", violations]).json();
    assert_valid_sarif(&audit);
    let found: Vec<(String, String)> = sarif_results(&audit)
        .into_iter()
        .map(|(rule, level, ..)| (rule, level))
        .collect();
    let expected = [
        ("privileged-port", "warning"),
        ("run-as-root", "warning"),
        ("dhi-warning", "warning"),
    ]
    .map(|(r, l)| (r.to_owned(), l.to_owned()));
    assert_eq!(found, expected, "{audit:#}");

    // Input that cannot be read: a notification, and the run did not succeed.
    let broken = check(&["-o", "sarif", &fixture("broken.yaml")]);
    assert_eq!(broken.code, 2);
    let log = broken.json();
    assert_valid_sarif(&log);
    let invocation = &log["runs"][0]["invocations"][0];
    assert_eq!(invocation["executionSuccessful"], false);
    let notification = &invocation["toolExecutionNotifications"][0];
    assert_eq!(notification["level"], "error");
    assert_eq!(
        notification["locations"][0]["physicalLocation"]["artifactLocation"]["uri"],
        "tests/fixtures/check/broken.yaml"
    );
}

#[test]
fn fix_writes_a_mirrored_tree_with_out_dir() {
    let dir = tree(&[
        ("in/compliant-pod.yaml", &read_fixture("compliant-pod.yaml")),
        ("in/apps/proxy.yaml", &read_fixture("istio-proxy-pod.yaml")),
        (
            "in/apps/debug.json",
            &read_fixture("kubectl-debug-review.json"),
        ),
        (
            "in/apps/relay.json",
            &serde_json::to_string(&serde_saphyr::from_str::<Value>(OLD_RELAY).unwrap()).unwrap(),
        ),
    ]);
    let root = dir.path();
    let out = root.join("out");
    let run = dhi(&["check", "--fix", "--out-dir", "out", "in"])
        .current_dir(root)
        .output()
        .unwrap();
    let stderr = String::from_utf8(run.stderr).unwrap();
    assert_eq!(
        run.status.code(),
        Some(1),
        "the debug review is denied: {stderr}"
    );
    assert!(
        stderr.starts_with(
            "note: in/apps/debug.json: not written: it holds an AdmissionReview, which kubectl \
             apply refuses\n\
             wrote out/apps/proxy.yaml\n\
             wrote out/apps/relay.json\n\
             wrote out/compliant-pod.yaml\n"
        ),
        "{stderr}"
    );
    assert_eq!(
        String::from_utf8(run.stdout).unwrap(),
        "",
        "nothing on standard output"
    );
    let mut written: Vec<String> = Vec::new();
    for sub in ["", "apps"] {
        for entry in std::fs::read_dir(out.join(sub)).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                written.push(path.strip_prefix(&out).unwrap().display().to_string());
            }
        }
    }
    written.sort();
    assert_eq!(
        written,
        ["apps/proxy.yaml", "apps/relay.json", "compliant-pod.yaml"]
    );
    // Nothing to patch: copied byte for byte, comments and all.
    assert_eq!(
        std::fs::read_to_string(out.join("compliant-pod.yaml")).unwrap(),
        read_fixture("compliant-pod.yaml")
    );
    // Patched: the fixed object, in the file's own format, checking clean.
    let proxy: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(out.join("apps/proxy.yaml")).unwrap())
            .unwrap();
    assert_eq!(
        proxy["spec"]["containers"][0]["image"],
        "dhi.io/istio-proxyv2:1.30.3"
    );
    let relay: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("apps/relay.json")).unwrap())
            .unwrap();
    assert_eq!(
        relay["spec"]["template"]["spec"]["securityContext"],
        Value::Null
    );
    let again = check(&["-o", "json", out.to_str().unwrap()]).json();
    for object in again["objects"].as_array().unwrap() {
        assert_eq!(object["patch"], json!([]), "{object}");
    }
    // The inputs are untouched.
    assert_eq!(
        std::fs::read_to_string(root.join("in/apps/proxy.yaml")).unwrap(),
        read_fixture("istio-proxy-pod.yaml")
    );
}

#[test]
fn fix_in_place_rewrites_only_what_it_patches() {
    let dir = tree(&[
        (
            "k8s/compliant-pod.yaml",
            &read_fixture("compliant-pod.yaml"),
        ),
        ("k8s/proxy.yaml", &read_fixture("istio-proxy-pod.yaml")),
        ("k8s/multi-doc.yaml", &read_fixture("multi-doc.yaml")),
    ]);
    let k8s = dir.path().join("k8s");
    let run = check(&["--fix", "--in-place", k8s.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(run.stdout, "");
    let k = k8s.display();
    assert!(
        run.stderr
            .starts_with(&format!("wrote {k}/multi-doc.yaml\nwrote {k}/proxy.yaml\n")),
        "{}",
        run.stderr
    );
    assert_eq!(
        std::fs::read_to_string(k8s.join("compliant-pod.yaml")).unwrap(),
        read_fixture("compliant-pod.yaml"),
        "nothing to patch: untouched"
    );
    let documents: Vec<Value> =
        serde_saphyr::from_multiple(&std::fs::read_to_string(k8s.join("multi-doc.yaml")).unwrap())
            .unwrap();
    let kinds: Vec<&str> = documents
        .iter()
        .map(|d| d["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["Service", "Deployment", "ConfigMap"]);
    // A second run has nothing left to patch and writes nothing.
    let again = check(&["--fix", "--in-place", k8s.to_str().unwrap()]);
    assert_eq!(again.code, 0);
    assert!(!again.stderr.contains("wrote"), "{}", again.stderr);

    // Bad input anywhere: no file is written.
    let broken = tree(&[
        ("proxy.yaml", &read_fixture("istio-proxy-pod.yaml")),
        ("broken.yaml", &read_fixture("broken.yaml")),
    ]);
    let run = check(&["--fix", "--in-place", broken.path().to_str().unwrap()]);
    assert_eq!(run.code, 2);
    assert_eq!(
        std::fs::read_to_string(broken.path().join("proxy.yaml")).unwrap(),
        read_fixture("istio-proxy-pod.yaml")
    );
}

#[test]
fn fix_marks_sources_and_leaves_out_admission_reviews() {
    let run = check(&[
        "--fix",
        &fixture("compliant-pod.yaml"),
        &fixture("kubectl-debug-review.json"),
        &fixture("multi-doc.yaml"),
    ]);
    assert_eq!(run.code, 1, "the review is denied");
    let markers: Vec<&str> = run.stdout.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(
        markers,
        [
            "# Source: tests/fixtures/check/compliant-pod.yaml",
            "# Source: tests/fixtures/check/multi-doc.yaml",
            "# Source: tests/fixtures/check/multi-doc.yaml",
            "# Source: tests/fixtures/check/multi-doc.yaml",
        ]
    );
    assert!(!run.stdout.contains("AdmissionReview"), "{}", run.stdout);
    assert!(
        run.stderr.starts_with(
            "note: tests/fixtures/check/kubectl-debug-review.json, document 1: an \
             AdmissionReview, left out of the fixed manifests (kubectl apply refuses it); the \
             report has its verdict\n"
        ),
        "{}",
        run.stderr
    );

    // Files are written only from files.
    let run = check_with_stdin(&["--fix", "--out-dir", "/nonexistent", "-"], OLD_RELAY);
    assert_bad_input(
        &run,
        "error: --out-dir and --in-place write files: standard input (-) has none to write; \
         use --fix alone to print the fixed manifests\n",
    );
    assert_eq!(
        check(&["--in-place", &fixture("compliant-pod.yaml")]).code,
        2,
        "needs --fix"
    );
    let both = check(&[
        "--fix",
        "--in-place",
        "--out-dir",
        "x",
        &fixture("compliant-pod.yaml"),
    ]);
    assert_eq!(both.code, 2);
}

/// The README's example of `check` is what the binary prints.
#[test]
fn the_readme_shows_what_check_prints() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let command = "$ dhi-admission check deploy/examples/\n";
    let start = readme
        .find(command)
        .expect("the README runs check on deploy/examples/")
        + command.len();
    let end = start + readme[start..].find("$ echo $?\n").unwrap();
    let run = check(&["deploy/examples/"]);
    assert_eq!(run.stdout, &readme[start..end]);
    assert_eq!(run.code, 1);
    assert_eq!(&readme[end..end + 12], "$ echo $?\n1\n");

    // In a list item: indented by two spaces.
    let quiet = "  $ dhi-admission check --quiet deploy/examples/\n";
    let start = readme.find(quiet).expect("the README shows --quiet") + quiet.len();
    let end = start + readme[start..].find("  ```").unwrap();
    let shown: String = readme[start..end]
        .lines()
        .map(|line| format!("{}\n", line.strip_prefix("  ").unwrap_or(line)))
        .collect();
    assert_eq!(check(&["--quiet", "deploy/examples/"]).stdout, shown);
}
