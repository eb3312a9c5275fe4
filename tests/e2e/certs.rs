//! `dhi-admission certs bootstrap` against the real API server, as the shipped
//! ServiceAccount with the shipped RBAC (deploy/base/rbac.yaml): the Secret is created, the
//! CA bundle lands in both configurations and the API server then trusts the webhook;
//! a second run writes nothing; a Secret past two thirds of its life is renewed.

use std::path::Path;
use std::time::Duration;

use dhi_admission::certs::{Validity, generate_pair_with_validity};
use dhi_admission::install::service_dns_names;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

use super::cluster::{
    create, eventually, namespace, pods, rbac_collection, service_accounts, yaml_documents,
};
use super::webhook::{Server, apply, configurations, probe_pod, run, wait_active};

const CONFIG: &str = "dhi-admission";
const SECRET: &str = "dhi-admission-tls";
const SERVICE: &str = "dhi-admission";

/// The shipped RBAC, moved from dhi-system to `ns`.
async fn apply_rbac(client: &kube::Client, ns: &str) {
    for mut doc in yaml_documents("deploy/base/rbac.yaml") {
        let kind = doc["kind"].as_str().unwrap().to_owned();
        if doc["metadata"]["namespace"].is_string() {
            doc["metadata"]["namespace"] = json!(ns);
        }
        if let Some(subjects) = doc["subjects"].as_array_mut() {
            for s in subjects {
                s["namespace"] = json!(ns);
            }
        }
        let path = rbac_collection(&kind, ns);
        let answer = create(client, &path, &doc, false).await;
        assert_eq!(answer.status, 201, "{kind}: {}", answer.body);
    }
}

/// A kubeconfig acting as the ServiceAccount `dhi-admission` of `ns`, with a token from the
/// TokenRequest API (the API server signs it itself: no controller needed).
pub(super) async fn service_account_kubeconfig(
    cp: &super::cluster::ControlPlane,
    client: &kube::Client,
    ns: &str,
    dir: &Path,
) -> std::path::PathBuf {
    let answer = create(
        client,
        &format!("/api/v1/namespaces/{ns}/serviceaccounts/{SERVICE}/token"),
        &json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
                "spec": {"expirationSeconds": 3600}}),
        false,
    )
    .await;
    assert_eq!(answer.status, 201, "{}", answer.body);
    let token = answer.body["status"]["token"].as_str().unwrap();
    let kubeconfig = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {}\n    certificate-authority: {}\n\
         users:\n- name: bootstrap\n  user:\n    token: {token}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: bootstrap, namespace: {ns}}}\n\
         current-context: e2e\n",
        cp.url,
        cp.ca.display()
    );
    let path = dir.join("bootstrap.kubeconfig");
    std::fs::write(&path, kubeconfig).unwrap();
    path
}

fn bootstrap(kubeconfig: &Path, secret: &str, out: &Path) -> std::process::Output {
    run(&[
        "certs",
        "bootstrap",
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "--secret",
        secret,
        "--service",
        SERVICE,
        "--webhook-config",
        CONFIG,
        "--out",
        out.to_str().unwrap(),
    ])
}

#[track_caller]
fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "certs bootstrap failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

fn data(secret: &Secret, key: &str) -> String {
    let bytes = &secret.data.as_ref().unwrap()[key].0;
    String::from_utf8(bytes.clone()).unwrap()
}

fn cert_count(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

/// Every webhook's caBundle, and each configuration's resourceVersion.
async fn bundles(client: &kube::Client) -> (Vec<Option<String>>, Vec<String>) {
    let m = Api::<MutatingWebhookConfiguration>::all(client.clone())
        .get(CONFIG)
        .await
        .unwrap();
    let v = Api::<ValidatingWebhookConfiguration>::all(client.clone())
        .get(CONFIG)
        .await
        .unwrap();
    let to_string =
        |b: &Option<ByteString>| b.as_ref().map(|b| String::from_utf8(b.0.clone()).unwrap());
    let mut all: Vec<Option<String>> = m
        .webhooks
        .iter()
        .flatten()
        .map(|w| to_string(&w.client_config.ca_bundle))
        .collect();
    all.extend(
        v.webhooks
            .iter()
            .flatten()
            .map(|w| to_string(&w.client_config.ca_bundle)),
    );
    let versions = vec![
        m.metadata.resource_version.unwrap(),
        v.metadata.resource_version.unwrap(),
    ];
    (all, versions)
}

#[tokio::test]
async fn bootstrap_creates_publishes_and_renews_against_the_real_api() {
    let Some(cp) = super::cluster::control_plane() else {
        return;
    };
    let client = cp.client().await;
    let test = "certs";
    let dir = cp.test_dir(test);
    let ns = namespace(&client, test, &[]).await;
    service_accounts(&client, &ns, &[SERVICE]).await;
    apply_rbac(&client, &ns).await;

    // The shipped configurations (named dhi-admission, as the ClusterRole's resourceNames
    // require), pointed at the port the server will listen on, without a caBundle.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("https://127.0.0.1:{port}");
    apply(&client, &configurations(CONFIG, test, &url, None)).await;

    // Before the bootstrap nothing can be trusted, and the enforce entries fail closed.
    let refused = eventually(
        "pods to be refused while the webhook is down",
        Duration::from_secs(20),
        || async {
            let answer = create(&client, &pods(&ns), &probe_pod(), true).await;
            (answer.status >= 500 || answer.message().contains("failed calling webhook"))
                .then_some(answer)
        },
    )
    .await;
    refused.assert_message(|m| m.contains("failed calling webhook \"mutate.dhi.io\""));

    // First run, as the ServiceAccount: creates the Secret and patches all four entries.
    let kubeconfig = service_account_kubeconfig(cp, &client, &ns, &dir).await;
    let out_dir = dir.join("tls");
    assert_success(&bootstrap(&kubeconfig, SECRET, &out_dir));
    let secrets = Api::<Secret>::namespaced(client.clone(), &ns);
    let secret = secrets.get(SECRET).await.unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let ca = data(&secret, "ca.crt");
    assert_eq!(cert_count(&ca), 1);
    assert_eq!(
        data(&secret, "tls.crt"),
        std::fs::read_to_string(out_dir.join("tls.crt")).unwrap()
    );
    let (published, versions) = bundles(&client).await;
    assert_eq!(published.len(), 6, "three entries in each configuration");
    assert!(
        published.iter().all(|b| b.as_deref() == Some(ca.as_str())),
        "{published:?}"
    );

    // The API server now trusts the bootstrapped certificate (it also covers 127.0.0.1).
    let server = Server::start_with(
        &dir,
        &out_dir.join("tls.crt"),
        &out_dir.join("tls.key"),
        ca.clone(),
        Some(port),
        &[],
    )
    .await;
    wait_active(&client, &ns, false).await;

    // Second run: everything is valid, nothing is written.
    let rv = secret.metadata.resource_version.clone();
    assert_success(&bootstrap(&kubeconfig, SECRET, &out_dir));
    assert_eq!(
        secrets.get(SECRET).await.unwrap().metadata.resource_version,
        rv
    );
    assert_eq!(
        bundles(&client).await.1,
        versions,
        "configurations untouched"
    );

    // A Secret past two thirds of its life is renewed, keeping the old CA in the bundle.
    let now = time::OffsetDateTime::now_utc();
    let old = generate_pair_with_validity(
        &service_dns_names(SERVICE, &ns),
        &[],
        Validity {
            not_before: now - time::Duration::days(300),
            not_after: now + time::Duration::days(30),
        },
    )
    .unwrap();
    let mut aged = secrets.get(SECRET).await.unwrap();
    aged.data = Some(
        [
            ("ca.crt", &old.ca_cert_pem),
            ("tls.crt", &old.cert_pem),
            ("tls.key", &old.key_pem),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect(),
    );
    secrets
        .replace(SECRET, &PostParams::default(), &aged)
        .await
        .unwrap();
    assert_success(&bootstrap(&kubeconfig, SECRET, &out_dir));
    let renewed = secrets.get(SECRET).await.unwrap();
    let bundle = data(&renewed, "ca.crt");
    assert_eq!(cert_count(&bundle), 2, "new CA, then the previous one");
    assert!(
        bundle.ends_with(old.ca_cert_pem.trim_end()) || bundle.contains(old.ca_cert_pem.trim()),
        "old CA kept"
    );
    assert_ne!(data(&renewed, "tls.crt"), old.cert_pem);
    let (published, _) = bundles(&client).await;
    assert!(
        published
            .iter()
            .all(|b| b.as_deref() == Some(bundle.as_str())),
        "{published:?}"
    );

    // The server reloads the renewed pair from --out, and the API server trusts it. (Until
    // it has, it serves the first pair, whose CA this test's forged Secret dropped.)
    eventually(
        "the server to reload its certificate",
        Duration::from_secs(10),
        || async {
            let log = std::fs::read_to_string(&server.log).unwrap_or_default();
            log.contains("serving certificate reloaded").then_some(())
        },
    )
    .await;
    let answer = create(&client, &pods(&ns), &probe_pod(), true).await;
    assert_eq!(answer.status, 403, "{}", answer.body);
    answer.assert_message(|m| m.contains("[privileged-port]"));

    // The Role names one Secret: any other is forbidden to the bootstrap.
    let out = bootstrap(&kubeconfig, "someone-elses-tls", &dir.join("other"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("forbidden"), "{stderr}");

    drop(server);
    super::webhook::unregister(&client, CONFIG).await;
}
