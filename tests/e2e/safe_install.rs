//! Ready before failing closed: the configurations as the enforce overlay ships them (every
//! entry Ignore, the intent in `dhi.io/failure-policy`), and `certs arm` as the shipped
//! ServiceAccount with the shipped RBAC (deploy/base/rbac-arm.yaml). Nothing turns to Fail
//! while the Service has no ready endpoint or an entry has no caBundle; then the default
//! entries do, and pods are judged and refused when the webhook is gone. Losing every
//! endpoint does not disarm; uninstalling in the documented order (configurations first)
//! unblocks the namespace. There is no controller-manager: the test writes the Service's
//! EndpointSlice itself, as the EndpointSlice controller would.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use super::certs::service_account_kubeconfig;
use super::cluster::{
    JSON_PATCH, bare, create, eventually, get, patch, pods, rbac_collection, send,
    service_accounts, yaml_documents,
};
use super::webhook::{
    MUTATING, Server, VALIDATING, apply, command, configurations, probe_pod, unregister,
    wait_active,
};

const TEST: &str = "safe-install";
const CONFIG: &str = "dhi-e2e-safe-install";
const SERVICE: &str = "dhi-admission";
const ANNOTATION: &str = "dhi.io/failure-policy";

/// The intent the enforce overlay declares, from its committed render.
fn enforce_intent(kind: &str) -> String {
    yaml_documents("deploy/rendered/enforce.yaml")
        .into_iter()
        .find(|d| d["kind"] == kind)
        .and_then(|d| {
            d["metadata"]["annotations"][ANNOTATION]
                .as_str()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| panic!("enforce.yaml: no {ANNOTATION} on the {kind}"))
}

/// deploy/base/rbac-arm.yaml moved to `ns`, its cluster-scoped names made the test's own,
/// and its resourceNames narrowed to this test's configurations.
async fn apply_arm_rbac(client: &kube::Client, ns: &str) {
    for mut doc in yaml_documents("deploy/base/rbac-arm.yaml") {
        let kind = doc["kind"].as_str().unwrap().to_owned();
        if doc["metadata"]["namespace"].is_string() {
            doc["metadata"]["namespace"] = json!(ns);
        } else {
            doc["metadata"]["name"] = json!(format!("dhi-e2e-{TEST}-arm"));
        }
        if kind == "ClusterRoleBinding" {
            doc["roleRef"]["name"] = json!(format!("dhi-e2e-{TEST}-arm"));
        }
        for subject in doc["subjects"].as_array_mut().into_iter().flatten() {
            subject["namespace"] = json!(ns);
        }
        for rule in doc["rules"].as_array_mut().into_iter().flatten() {
            if rule.get("resourceNames").is_some() {
                rule["resourceNames"] = json!([CONFIG]);
            }
        }
        let path = rbac_collection(&kind, ns);
        let answer = create(client, &path, &doc, false).await;
        assert_eq!(answer.status, 201, "{kind}: {}", answer.body);
    }
}

/// `certs arm` (`--once`, or the loop every second) with `kubeconfig`, for the Service
/// of `ns` and the configurations `config`.
fn arm(kubeconfig: &Path, ns: &str, config: &str, once: bool) -> Command {
    let mut cmd = command();
    cmd.args(["certs", "arm"])
        .args(if once {
            &["--once"][..]
        } else {
            &["--interval-seconds", "1"]
        })
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--namespace", ns, "--service", SERVICE])
        .args(["--webhook-config", config]);
    cmd
}

/// `certs arm` as the ServiceAccount, one round; returns its log.
fn arm_once(kubeconfig: &Path, ns: &str) -> String {
    let out = arm(kubeconfig, ns, CONFIG, true)
        .output()
        .expect("dhi-admission runs");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "certs arm --once failed:\n{log}");
    log
}

/// Each entry's failurePolicy in the configurations `name`, mutating then validating.
async fn policies(client: &kube::Client, name: &str) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for path in [MUTATING, VALIDATING] {
        let answer = get(client, &format!("{path}/{name}")).await;
        answer.assert_status(200);
        for w in answer.body["webhooks"].as_array().unwrap() {
            all.push((
                w["name"].as_str().unwrap().to_owned(),
                w["failurePolicy"].as_str().unwrap().to_owned(),
            ));
        }
    }
    all
}

fn expect(default: &str) -> Vec<(String, String)> {
    ["mutate", "validate"]
        .iter()
        .flat_map(|p| {
            [
                (format!("{p}.dhi.io"), default.to_owned()),
                (format!("{p}-audit.dhi.io"), "Ignore".to_owned()),
                (format!("{p}-warn.dhi.io"), "Ignore".to_owned()),
            ]
        })
        .collect()
}

/// Writes the Service's EndpointSlice with one endpoint, ready or not.
async fn endpoint(client: &kube::Client, ns: &str, ready: bool) {
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{SERVICE}-e2e"), "namespace": ns,
                     "labels": {"kubernetes.io/service-name": SERVICE}},
        "addressType": "IPv4",
        // Not loopback: the API refuses loopback endpoint addresses.
        "endpoints": [{"addresses": ["10.0.0.10"], "conditions": {"ready": ready}}],
        "ports": [{"name": "https", "port": 8443, "protocol": "TCP"}],
    });
    let path = format!("/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices");
    let existing = get(client, &format!("{path}/{SERVICE}-e2e")).await;
    let answer = if existing.status == 200 {
        let mut slice = slice;
        slice["metadata"]["resourceVersion"] = existing.body["metadata"]["resourceVersion"].clone();
        send(
            client,
            "PUT",
            &format!("{path}/{SERVICE}-e2e"),
            "application/json",
            Some(&slice),
        )
        .await
    } else {
        create(client, &path, &slice, false).await
    };
    assert!(answer.status < 300, "EndpointSlice: {}", answer.body);
}

/// Sets the caBundle of every entry of both configurations (what bootstrap does).
async fn publish_ca(client: &kube::Client, ca_pem: &str) {
    let bundle = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    for path in [MUTATING, VALIDATING] {
        let ops: Vec<Value> = (0..3)
            .map(|i| json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": bundle}))
            .collect();
        let path = format!("{path}/{CONFIG}");
        patch(client, &path, JSON_PATCH, &Value::Array(ops))
            .await
            .assert_status(200);
    }
}

#[tokio::test]
async fn fail_is_armed_only_once_a_replica_is_ready() {
    let Some(bare) = bare(TEST, true).await else {
        return;
    };
    let (cp, client, ns, dir) = (bare.cp, bare.client, bare.ns, bare.dir);
    service_accounts(&client, &ns, &[SERVICE]).await;
    apply_arm_rbac(&client, &ns).await;
    let kubeconfig = service_account_kubeconfig(cp, &client, &ns, &dir).await;
    let server = Server::start(&dir, &[]).await;

    // As shipped: every entry Ignore, the enforce intent in the annotation, no caBundle.
    let mut configs = configurations(CONFIG, TEST, &server.url, None);
    for (config, kind) in configs.iter_mut().zip([
        "MutatingWebhookConfiguration",
        "ValidatingWebhookConfiguration",
    ]) {
        config["metadata"]["annotations"] = json!({ ANNOTATION: enforce_intent(kind) });
        for webhook in config["webhooks"].as_array_mut().unwrap() {
            webhook["failurePolicy"] = json!("Ignore");
        }
    }
    apply(&client, &configs).await;
    let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": SERVICE},
                     "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]}});
    let answer = create(
        &client,
        &format!("/api/v1/namespaces/{ns}/services"),
        &svc,
        false,
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);

    // No endpoint at all, then one that is not ready: nothing turns to Fail.
    let log = arm_once(&kubeconfig, &ns);
    assert!(
        log.contains(&format!("Service {ns}/{SERVICE} has no ready endpoint")),
        "{log}"
    );
    assert_eq!(policies(&client, CONFIG).await, expect("Ignore"));
    endpoint(&client, &ns, false).await;
    let log = arm_once(&kubeconfig, &ns);
    assert!(log.contains("has no ready endpoint"), "{log}");
    assert_eq!(policies(&client, CONFIG).await, expect("Ignore"));

    // A ready endpoint, but no caBundle yet: still nothing.
    endpoint(&client, &ns, true).await;
    let log = arm_once(&kubeconfig, &ns);
    assert!(
        log.contains("MutatingWebhookConfiguration entry mutate.dhi.io has no caBundle"),
        "{log}"
    );
    assert_eq!(policies(&client, CONFIG).await, expect("Ignore"));

    // The sidecar's way: the loop, which arms by itself once the bundle lands.
    let mut sidecar = arm(&kubeconfig, &ns, CONFIG, false)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("arm.log")).unwrap())
        .spawn()
        .expect("certs arm runs");
    publish_ca(&client, &server.ca_pem).await;
    eventually("certs arm to set Fail", Duration::from_secs(15), || async {
        (policies(&client, CONFIG).await == expect("Fail")).then_some(())
    })
    .await;
    // SIGTERM (what the kubelet sends) ends it promptly and cleanly.
    let term = Command::new("kill")
        .args(["-TERM", &sidecar.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = sidecar.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "certs arm ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(status.success(), "certs arm exited with {status}");
    let log = std::fs::read_to_string(dir.join("arm.log")).unwrap();
    assert!(
        log.contains("armed: every entry has its intended failure policy"),
        "{log}"
    );

    // Armed: violations are denied, and with the webhook gone pods are refused (Fail).
    wait_active(&client, &ns, false).await;
    drop(server);
    let answer = create(&client, &pods(&ns), &compliant_pod(), true).await;
    assert_eq!(
        answer.status, 500,
        "fail closed without a webhook: {}",
        answer.body
    );
    answer.assert_message(|m| m.contains("failed calling webhook"));

    // Every endpoint gone: arming never goes back to Ignore by itself.
    endpoint(&client, &ns, false).await;
    arm_once(&kubeconfig, &ns);
    assert_eq!(policies(&client, CONFIG).await, expect("Fail"));

    // Uninstall, configurations first: the namespace is unblocked at once.
    unregister(&client, CONFIG).await;
    eventually(
        "pods admitted once the configurations are gone",
        Duration::from_secs(20),
        || async {
            let answer = create(&client, &pods(&ns), &compliant_pod(), true).await;
            (answer.status == 201).then_some(())
        },
    )
    .await;
}

/// The intent is the overlay's to change: an intended Ignore (enforce -> audit) is applied
/// at once, with nothing ready.
#[tokio::test]
async fn an_intended_ignore_needs_no_ready_replica() {
    let test = "safe-install-ignore";
    let Some(bare) = bare(test, true).await else {
        return;
    };
    let (cp, client, ns) = (bare.cp, bare.client, bare.ns);
    let name = format!("dhi-e2e-{test}");
    let mut configs = configurations(&name, test, "https://127.0.0.1:9", None);
    for config in &mut configs {
        let prefix = if config["kind"] == "MutatingWebhookConfiguration" {
            "mutate"
        } else {
            "validate"
        };
        config["metadata"]["annotations"] = json!({
            ANNOTATION: format!("{prefix}.dhi.io=Ignore,{prefix}-audit.dhi.io=Ignore,{prefix}-warn.dhi.io=Ignore")
        });
    }
    apply(&client, &configs).await;
    let out = arm(&cp.kubeconfig, &ns, &name, true).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (webhook, policy) in policies(&client, &name).await {
        assert_eq!(policy, "Ignore", "{webhook}");
    }
    unregister(&client, &name).await;
}

/// A pod the policy admits unchanged (not a hardened image): only the webhook's
/// availability decides its fate once the entries Fail.
fn compliant_pod() -> Value {
    let mut pod = probe_pod();
    pod["metadata"]["name"] = json!("plain");
    pod["spec"]["containers"] = json!([{"name": "app", "image": "dhi.io/nginx:1.31"}]);
    pod
}

/// The validating conditions on large pods, through the real API server's CEL cost
/// accounting (strict for webhooks since 1.32): an evaluation over budget is an error,
/// which `failurePolicy: Fail` turns into a refusal. 150 containers with long upstream
/// images (every one scanned, none matching) are admitted with the webhook down, so the
/// conditions evaluated to false within budget; with a hardened container last, the
/// webhook is called and denies it, so they evaluated to true. A pod far past the budget
/// is refused by the Fail entry, not let through.
#[tokio::test]
async fn large_pods_stay_within_the_cel_cost_budget() {
    let test = "cel-cost";
    let Some(bare) = bare(test, true).await else {
        return;
    };
    let (client, ns) = (bare.client, bare.ns);
    let server = Server::start(&bare.dir, &[]).await;
    let name = format!("dhi-e2e-{test}");
    // The validating configuration alone: the mutating one has no conditions, and its
    // calls would fail while the webhook is down.
    let configs = configurations(&name, test, &server.url, Some(&server.ca_pem));
    let answer = create(&client, VALIDATING, &configs[1], false).await;
    assert_eq!(answer.status, 201, "{}", answer.body);

    let upstream = |list: &str, i: usize| {
        json!({"name": format!("{list}-{i}"),
               "image": format!("registry.example.com/platform-team-{i}/a-rather-long-repository-name-to-scan-{i}/service:1.2.{i}-build")})
    };
    let sized_pod = |per_list: usize, hardened_last: bool| {
        let init: Vec<Value> = (0..per_list).map(|i| upstream("init", i)).collect();
        let mut containers: Vec<Value> = (0..per_list).map(|i| upstream("app", i)).collect();
        if hardened_last {
            containers[per_list - 1] = json!({"name": "web", "image": "dhi.io/nginx:1.31",
                                              "ports": [{"containerPort": 80}]});
        }
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "large"},
               "spec": {"initContainers": init, "containers": containers}})
    };
    let large_pod = |hardened_last: bool| sized_pod(75, hardened_last);

    // The webhook is called only once the configuration is live: wait for its denial.
    let denied = eventually(
        "the webhook to deny the large pod",
        Duration::from_secs(20),
        || async {
            let answer = create(&client, &pods(&ns), &large_pod(true), true).await;
            (answer.status == 403).then_some(answer)
        },
    )
    .await;
    denied.assert_message(|m| m.contains("[privileged-port]"));

    drop(server);
    let answer = create(&client, &pods(&ns), &large_pod(false), true).await;
    assert_eq!(
        answer.status, 201,
        "the conditions skipped the call within the cost budget: {}",
        answer.body
    );
    let answer = create(&client, &pods(&ns), &large_pod(true), true).await;
    assert_eq!(
        answer.status, 500,
        "and the webhook is really down: {}",
        answer.body
    );
    // Past the budget (measured: 500 + 500 such containers fit, 750 + 750 do not), the
    // evaluation is an error and the Fail entry refuses the pod: never waved through.
    let answer = create(&client, &pods(&ns), &sized_pod(1000, false), true).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    answer.assert_message(|m| {
        m.ends_with("resulted in error: operation cancelled: actual cost limit exceeded")
    });
    unregister(&client, &name).await;
}
