//! `certs bootstrap` and `certs arm` against a local stand-in for the few Kubernetes API
//! endpoints they call: Secrets (GET/POST/PUT), EndpointSlices (LIST) and the two webhook
//! configuration kinds (GET/PATCH), with resourceVersions, 409s and JSON Patch like the real
//! API server.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use dhi_admission::certs::{
    CertError, GeneratedCerts, Validity, cert_not_after, generate_pair, generate_pair_with_validity,
};
use dhi_admission::install::{
    ArmOptions, ArmReport, BootstrapArgs, BootstrapOptions, BootstrapOutcome, BootstrapReport,
    Waiting, arm_once, bootstrap, bootstrap_with, service_dns_names,
};
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::Secret;
use serde_json::{Value, json};
use tokio::sync::Barrier;

const NS: &str = "dhi";
const SECRET: &str = "dhi-admission-tls";
const SERVICE: &str = "dhi-admission";
const CONFIG: &str = "dhi-admission";
const SECRET_PATH: &str = "/api/v1/namespaces/dhi/secrets/dhi-admission-tls";
const MUTATING_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/dhi-admission";
const VALIDATING_PATH: &str =
    "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations/dhi-admission";
const SLICES_PATH: &str = "/apis/discovery.k8s.io/v1/namespaces/dhi/endpointslices";

// ---------------------------------------------------------------------------------
// The stand-in API server.

#[derive(Default)]
struct Store {
    /// Objects by their URL path.
    objects: HashMap<String, Value>,
    last_rv: u64,
    /// Every write request received, as "METHOD path", successful or not.
    writes: Vec<String>,
}

impl Store {
    fn next_rv(&mut self) -> String {
        self.last_rv += 1;
        self.last_rv.to_string()
    }
}

/// Makes the first `n` Secret reads wait for each other, forcing concurrent
/// bootstraps to see the same state before either writes.
struct ReadGate {
    barrier: Barrier,
    left: AtomicUsize,
}

/// A concurrent edit to make just before the next PATCH of `path` is applied:
/// insert `webhook` at index 0.
struct PendingEdit {
    path: String,
    webhook: Value,
}

#[derive(Clone, Default)]
struct FakeApi {
    store: Arc<Mutex<Store>>,
    gate: Arc<Mutex<Option<Arc<ReadGate>>>>,
    edit: Arc<Mutex<Option<PendingEdit>>>,
    /// `http://127.0.0.1:PORT`.
    url: String,
}

impl FakeApi {
    async fn start() -> (FakeApi, kube::Client) {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api = FakeApi {
            url: format!("http://{}", listener.local_addr().unwrap()),
            ..FakeApi::default()
        };
        let app = Router::new()
            .route("/api/v1/namespaces/{ns}/secrets", post(create))
            .route(
                "/api/v1/namespaces/{ns}/secrets/{name}",
                get(read).put(replace),
            )
            .route(
                "/apis/admissionregistration.k8s.io/v1/{plural}/{name}",
                get(read).patch(patch),
            )
            .route(
                "/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices",
                get(read),
            )
            .fallback(|uri: Uri| async move {
                status(StatusCode::NOT_FOUND, "NotFound", format!("no route {uri}"))
            })
            .with_state(api.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let config = kube::Config::new(api.url.parse().unwrap());
        (api, kube::Client::try_from(config).unwrap())
    }

    fn insert(&self, path: &str, mut object: Value) {
        let mut store = self.store.lock().unwrap();
        object["metadata"]["resourceVersion"] = json!(store.next_rv());
        store.objects.insert(path.to_owned(), object);
    }

    fn object(&self, path: &str) -> Option<Value> {
        self.store.lock().unwrap().objects.get(path).cloned()
    }

    fn secret(&self) -> Secret {
        serde_json::from_value(self.object(SECRET_PATH).expect("secret stored")).unwrap()
    }

    fn writes(&self) -> Vec<String> {
        self.store.lock().unwrap().writes.clone()
    }

    fn clear_writes(&self) {
        self.store.lock().unwrap().writes.clear();
    }

    fn count_secrets(&self) -> usize {
        let store = self.store.lock().unwrap();
        store
            .objects
            .keys()
            .filter(|k| k.contains("/secrets/"))
            .count()
    }

    fn hold_secret_reads(&self, n: usize) {
        *self.gate.lock().unwrap() = Some(Arc::new(ReadGate {
            barrier: Barrier::new(n),
            left: AtomicUsize::new(n),
        }));
    }

    fn edit_before_next_patch(&self, path: &str, webhook: Value) {
        *self.edit.lock().unwrap() = Some(PendingEdit {
            path: path.to_owned(),
            webhook,
        });
    }

    fn record(&self, method: &str, uri: &Uri) {
        let entry = format!("{method} {}", uri.path());
        self.store.lock().unwrap().writes.push(entry);
    }
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code.as_u16(),
    });
    (code, axum::Json(body)).into_response()
}

fn not_found(path: &str) -> Response {
    status(
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{path} not found"),
    )
}

fn parse_body(body: &Bytes) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body)
        .map_err(|e| Box::new(status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string())))
}

async fn read(State(api): State<FakeApi>, uri: Uri) -> Response {
    let gate = api.gate.lock().unwrap().clone();
    if let Some(gate) = gate.filter(|_| uri.path().contains("/secrets/")) {
        let waits = gate
            .left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if waits {
            gate.barrier.wait().await;
        }
    }
    match api.object(uri.path()) {
        Some(object) => axum::Json(object).into_response(),
        None => not_found(uri.path()),
    }
}

async fn create(State(api): State<FakeApi>, uri: Uri, body: Bytes) -> Response {
    api.record("POST", &uri);
    let mut object = match parse_body(&body) {
        Ok(object) => object,
        Err(response) => return *response,
    };
    let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
        return status(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid",
            "name required".into(),
        );
    };
    let path = format!("{}/{name}", uri.path());
    let mut store = api.store.lock().unwrap();
    if store.objects.contains_key(&path) {
        let message = format!("secrets {name:?} already exists");
        return status(StatusCode::CONFLICT, "AlreadyExists", message);
    }
    object["metadata"]["resourceVersion"] = json!(store.next_rv());
    object["metadata"]["uid"] = json!(format!("uid-{}", store.last_rv));
    store.objects.insert(path, object.clone());
    (StatusCode::CREATED, axum::Json(object)).into_response()
}

async fn replace(State(api): State<FakeApi>, uri: Uri, body: Bytes) -> Response {
    api.record("PUT", &uri);
    let mut object = match parse_body(&body) {
        Ok(object) => object,
        Err(response) => return *response,
    };
    let mut store = api.store.lock().unwrap();
    let Some(current) = store.objects.get(uri.path()) else {
        return not_found(uri.path());
    };
    let sent = &object["metadata"]["resourceVersion"];
    if !sent.is_null() && *sent != current["metadata"]["resourceVersion"] {
        let message = "the object has been modified; please apply your changes to the latest \
                       version and try again";
        return status(StatusCode::CONFLICT, "Conflict", message.into());
    }
    object["metadata"]["resourceVersion"] = json!(store.next_rv());
    store.objects.insert(uri.path().to_owned(), object.clone());
    axum::Json(object).into_response()
}

async fn patch(State(api): State<FakeApi>, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    api.record("PATCH", &uri);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    if content_type != Some("application/json-patch+json") {
        let message = format!("unsupported patch type {content_type:?}");
        return status(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "UnsupportedMediaType",
            message,
        );
    }
    let operations: json_patch::Patch = match serde_json::from_slice(&body) {
        Ok(operations) => operations,
        Err(e) => return status(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
    };
    let pending = api.edit.lock().unwrap().take_if(|e| e.path == uri.path());
    let mut store = api.store.lock().unwrap();
    if let Some(edit) = pending {
        let rv = store.next_rv();
        if let Some(object) = store.objects.get_mut(uri.path()) {
            if let Some(list) = object["webhooks"].as_array_mut() {
                list.insert(0, edit.webhook);
            }
            object["metadata"]["resourceVersion"] = json!(rv);
        }
    }
    let Some(mut object) = store.objects.get(uri.path()).cloned() else {
        return not_found(uri.path());
    };
    if let Err(e) = json_patch::patch(&mut object, &operations) {
        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string());
    }
    object["metadata"]["resourceVersion"] = json!(store.next_rv());
    store.objects.insert(uri.path().to_owned(), object.clone());
    axum::Json(object).into_response()
}

// ---------------------------------------------------------------------------------
// Fixtures and helpers.

fn webhook(name: &str, ca_bundle: Option<&str>) -> Value {
    let mut client_config = json!({"service": {"namespace": NS, "name": SERVICE, "path": "/x"}});
    if let Some(bundle) = ca_bundle {
        client_config["caBundle"] = json!(bundle);
    }
    json!({
        "name": name, "admissionReviewVersions": ["v1"], "sideEffects": "None",
        "clientConfig": client_config,
    })
}

fn webhook_config(kind: &str, webhooks: Vec<Value>) -> Value {
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
        "metadata": {"name": CONFIG}, "webhooks": webhooks,
    })
}

/// Both configurations, two webhooks each; one already has a stale bundle.
fn seed_configs(api: &FakeApi) {
    api.insert(
        MUTATING_PATH,
        webhook_config(
            "MutatingWebhookConfiguration",
            vec![
                webhook("pods.mutate.dhi", Some("c3RhbGU=")),
                webhook("jobs.mutate.dhi", None),
            ],
        ),
    );
    seed_validating(api);
}

fn seed_validating(api: &FakeApi) {
    api.insert(
        VALIDATING_PATH,
        webhook_config(
            "ValidatingWebhookConfiguration",
            vec![
                webhook("pods.validate.dhi", None),
                webhook("jobs.validate.dhi", None),
            ],
        ),
    );
}

fn seed_secret(api: &FakeApi, data: [(&str, &str); 3]) {
    let data: BTreeMap<&str, ByteString> = data
        .into_iter()
        .map(|(k, v)| (k, ByteString(v.as_bytes().to_vec())))
        .collect();
    let secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls",
        "metadata": {"name": SECRET, "namespace": NS},
        "data": data,
    });
    api.insert(SECRET_PATH, secret);
}

fn seed_secret_from(api: &FakeApi, certs: &GeneratedCerts) {
    seed_secret(
        api,
        [
            ("ca.crt", &certs.ca_cert_pem),
            ("tls.crt", &certs.cert_pem),
            ("tls.key", &certs.key_pem),
        ],
    );
}

fn options() -> BootstrapOptions {
    BootstrapOptions {
        namespace: NS.into(),
        secret_name: SECRET.into(),
        service: SERVICE.into(),
        webhook_config: CONFIG.into(),
        validity: Duration::from_secs(365 * 24 * 3600),
        out_dir: None,
    }
}

fn secret_value(secret: &Secret, key: &str) -> String {
    let data = secret.data.as_ref().expect("data");
    String::from_utf8(data.get(key).expect(key).0.clone()).unwrap()
}

/// The `caBundle` of every webhook entry of both configurations.
fn ca_bundles(api: &FakeApi) -> Vec<Option<Vec<u8>>> {
    let mutating: MutatingWebhookConfiguration =
        serde_json::from_value(api.object(MUTATING_PATH).unwrap()).unwrap();
    let validating: ValidatingWebhookConfiguration =
        serde_json::from_value(api.object(VALIDATING_PATH).unwrap()).unwrap();
    let m = mutating
        .webhooks
        .unwrap()
        .into_iter()
        .map(|w| w.client_config.ca_bundle);
    let v = validating
        .webhooks
        .unwrap()
        .into_iter()
        .map(|w| w.client_config.ca_bundle);
    m.chain(v).map(|b| b.map(|b| b.0)).collect()
}

/// Checks that the stored Secret is what the report says and that every webhook
/// trusts its `ca.crt`.
fn assert_published(api: &FakeApi, report: &BootstrapReport) {
    let secret = api.secret();
    let ca = secret_value(&secret, "ca.crt");
    assert_eq!(ca, report.material.ca_bundle_pem);
    assert_eq!(secret_value(&secret, "tls.crt"), report.material.cert_pem);
    assert_eq!(secret_value(&secret, "tls.key"), report.material.key_pem);
    for bundle in ca_bundles(api) {
        assert_eq!(bundle.as_deref(), Some(ca.as_bytes()));
    }
}

fn cert_blocks(pem: &str) -> Vec<String> {
    pem.split_inclusive("-----END CERTIFICATE-----")
        .filter(|b| b.contains("-----BEGIN CERTIFICATE-----"))
        .map(|b| b.trim().to_owned())
        .collect()
}

fn service_pair(validity: Validity) -> GeneratedCerts {
    generate_pair_with_validity(&service_dns_names(SERVICE, NS), &[], validity).unwrap()
}

// ---------------------------------------------------------------------------------
// Tests.

#[tokio::test]
async fn first_run_creates_secret_and_patches_every_webhook() {
    let (api, client) = FakeApi::start().await;
    seed_configs(&api);
    let out = tempfile::tempdir().unwrap();
    let opts = BootstrapOptions {
        out_dir: Some(out.path().join("tls")),
        ..options()
    };

    let report = bootstrap_with(client, &opts).await.unwrap();

    assert_eq!(report.outcome, BootstrapOutcome::Created);
    assert_eq!(report.patched_webhooks, 4);
    assert_published(&api, &report);
    assert_eq!(ca_bundles(&api).len(), 4);
    let secret = api.secret();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    assert_eq!(cert_blocks(&report.material.ca_bundle_pem).len(), 1);
    assert_eq!(
        cert_blocks(&report.material.cert_pem).len(),
        2,
        "leaf then CA"
    );
    assert_eq!(
        api.writes(),
        [
            "POST /api/v1/namespaces/dhi/secrets".to_owned(),
            format!("PATCH {MUTATING_PATH}"),
            format!("PATCH {VALIDATING_PATH}"),
        ]
    );
    let written = std::fs::read_to_string(out.path().join("tls/tls.crt")).unwrap();
    assert_eq!(written, report.material.cert_pem);
    let key = out.path().join("tls/tls.key");
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        report.material.key_pem
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // The webhook entries kept their other fields.
    let mutating = api.object(MUTATING_PATH).unwrap();
    assert_eq!(mutating["webhooks"][1]["name"], "jobs.mutate.dhi");
    assert_eq!(
        mutating["webhooks"][1]["clientConfig"]["service"]["path"],
        "/x"
    );
}

#[tokio::test]
async fn second_run_is_a_no_op() {
    let (api, client) = FakeApi::start().await;
    seed_configs(&api);
    let first = bootstrap_with(client.clone(), &options()).await.unwrap();
    api.clear_writes();

    let second = bootstrap_with(client, &options()).await.unwrap();

    assert_eq!(second.outcome, BootstrapOutcome::Reused);
    assert_eq!(second.patched_webhooks, 0);
    assert_eq!(second.material, first.material);
    assert_eq!(api.writes(), Vec::<String>::new(), "no write requests");
}

#[tokio::test]
async fn near_expiry_secret_is_renewed_keeping_the_old_ca() {
    let (api, client) = FakeApi::start().await;
    seed_configs(&api);
    let now = time::OffsetDateTime::now_utc();
    // 35 days of validity, 30 of them gone: past the two-thirds point, not expired.
    let old = service_pair(Validity {
        not_before: now - time::Duration::days(30),
        not_after: now + time::Duration::days(5),
    });
    seed_secret_from(&api, &old);

    let report = bootstrap_with(client.clone(), &options()).await.unwrap();

    assert_eq!(report.outcome, BootstrapOutcome::Renewed);
    assert_ne!(report.material.cert_pem, old.cert_pem);
    let bundle = cert_blocks(&report.material.ca_bundle_pem);
    assert_eq!(bundle.len(), 2, "new CA + old CA");
    assert_eq!(bundle[1], old.ca_cert_pem.trim(), "old CA kept second");
    assert!(
        report.material.cert_pem.contains(&bundle[0]),
        "new CA signs the new leaf"
    );
    assert_published(&api, &report);
    assert!(api.writes().contains(&format!("PUT {SECRET_PATH}")));
    let expected_expiry = now.unix_timestamp() + 365 * 24 * 3600;
    assert!((expected_expiry - 120..=expected_expiry + 120).contains(&report.not_after));

    // The renewed Secret is valid: the next run keeps it and its two-CA bundle.
    api.clear_writes();
    let again = bootstrap_with(client, &options()).await.unwrap();
    assert_eq!(again.outcome, BootstrapOutcome::Reused);
    assert_eq!(again.material, report.material);
    assert!(api.writes().is_empty());
}

#[tokio::test]
async fn expired_secret_is_renewed_and_drops_the_expired_ca() {
    let (api, client) = FakeApi::start().await;
    seed_configs(&api);
    let now = time::OffsetDateTime::now_utc();
    let old = service_pair(Validity {
        not_before: now - time::Duration::days(30),
        not_after: now - time::Duration::days(1),
    });
    seed_secret_from(&api, &old);

    let report = bootstrap_with(client, &options()).await.unwrap();

    assert_eq!(report.outcome, BootstrapOutcome::Renewed);
    assert_eq!(cert_blocks(&report.material.ca_bundle_pem).len(), 1);
    assert_published(&api, &report);
}

#[tokio::test]
async fn secret_for_another_service_is_renewed() {
    let (api, client) = FakeApi::start().await;
    seed_configs(&api);
    let other = generate_pair(
        &service_dns_names("other", NS),
        &[],
        Duration::from_secs(30 * 24 * 3600),
    )
    .unwrap();
    seed_secret_from(&api, &other);

    let report = bootstrap_with(client, &options()).await.unwrap();

    assert_eq!(report.outcome, BootstrapOutcome::Renewed);
    assert_published(&api, &report);
}

/// Two bootstraps at once, both past their read of the Secret before either writes:
/// one does `winner`, the other adopts its result.
async fn race(
    api: &FakeApi,
    client: kube::Client,
    winner: BootstrapOutcome,
) -> (BootstrapReport, BootstrapReport) {
    api.hold_secret_reads(2);
    let opts = options();
    let (a, b) = tokio::join!(
        bootstrap_with(client.clone(), &opts),
        bootstrap_with(client, &opts)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    let mut outcomes = [a.outcome, b.outcome];
    outcomes.sort_by_key(|o| format!("{o:?}"));
    assert_eq!(outcomes, [BootstrapOutcome::AdoptedFromPeer, winner]);
    (a, b)
}

#[tokio::test]
async fn concurrent_bootstraps_agree_on_one_secret() {
    let (api, client) = FakeApi::start().await;
    seed_configs(&api);
    let (a, b) = race(&api, client, BootstrapOutcome::Created).await;
    assert_eq!(a.material, b.material, "both use the same certificate");
    assert_eq!(api.count_secrets(), 1);
    let posts = api
        .writes()
        .iter()
        .filter(|w| w.starts_with("POST"))
        .count();
    assert_eq!(posts, 2, "both tried to create; one got AlreadyExists");
    assert_published(&api, &a);
}

#[tokio::test]
async fn concurrent_renewals_agree_on_the_winner() {
    let (api, client) = FakeApi::start().await;
    seed_configs(&api);
    let now = time::OffsetDateTime::now_utc();
    let old = service_pair(Validity {
        not_before: now - time::Duration::days(30),
        not_after: now + time::Duration::days(5),
    });
    seed_secret_from(&api, &old);
    let (a, b) = race(&api, client, BootstrapOutcome::Renewed).await;
    assert_eq!(a.material, b.material);
    let puts = api.writes().iter().filter(|w| w.starts_with("PUT")).count();
    assert_eq!(puts, 2, "both tried to update; one got a Conflict");
    assert_published(&api, &a);
}

#[tokio::test]
async fn garbage_certificate_is_replaced() {
    let (api, client) = FakeApi::start().await;
    seed_configs(&api);
    let valid = service_pair(Validity {
        not_before: time::OffsetDateTime::now_utc(),
        not_after: time::OffsetDateTime::now_utc() + time::Duration::days(30),
    });
    seed_secret(
        &api,
        [
            ("ca.crt", &valid.ca_cert_pem),
            ("tls.crt", "garbage"),
            ("tls.key", &valid.key_pem),
        ],
    );

    let report = bootstrap_with(client.clone(), &options()).await.unwrap();

    assert_eq!(report.outcome, BootstrapOutcome::Renewed);
    assert_published(&api, &report);
    assert!(
        report
            .material
            .cert_pem
            .starts_with("-----BEGIN CERTIFICATE-----")
    );
    let again = bootstrap_with(client, &options()).await.unwrap();
    assert_eq!(again.outcome, BootstrapOutcome::Reused);
}

#[tokio::test]
async fn secret_missing_a_key_is_replaced() {
    let (api, client) = FakeApi::start().await;
    seed_configs(&api);
    let store_secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": SECRET, "namespace": NS, "labels": {"keep": "me"}},
        "data": {"other": "eA=="},
    });
    api.insert(SECRET_PATH, store_secret);

    let report = bootstrap_with(client, &options()).await.unwrap();

    assert_eq!(report.outcome, BootstrapOutcome::Renewed);
    assert_published(&api, &report);
    let secret = api.secret();
    assert_eq!(
        secret.type_.as_deref(),
        Some("Opaque"),
        "type is immutable: kept"
    );
    assert_eq!(secret.metadata.labels.unwrap()["keep"], "me");
    assert!(secret.data.unwrap().contains_key("other"));
}

#[tokio::test]
async fn missing_webhook_configuration_is_named_in_the_error() {
    let (api, client) = FakeApi::start().await;
    api.insert(
        MUTATING_PATH,
        webhook_config(
            "MutatingWebhookConfiguration",
            vec![webhook("pods.mutate.dhi", None)],
        ),
    );

    let err = bootstrap_with(client, &options()).await.unwrap_err();

    match &err {
        CertError::WebhookConfigNotFound { kind, name } => {
            assert_eq!(*kind, "ValidatingWebhookConfiguration");
            assert_eq!(name, CONFIG);
        }
        other => panic!("unexpected error: {other}"),
    }
    let message = err.to_string();
    assert!(
        message.contains("ValidatingWebhookConfiguration") && message.contains(CONFIG),
        "{message}"
    );
}

#[tokio::test]
async fn configuration_edited_between_read_and_patch_is_reread() {
    let (api, client) = FakeApi::start().await;
    seed_configs(&api);
    // Just before our patch lands, someone inserts a webhook at index 0: our `test`
    // of the name at each index fails (422) and the bootstrap must re-read.
    api.edit_before_next_patch(MUTATING_PATH, webhook("inserted.mutate.dhi", None));

    let report = bootstrap_with(client, &options()).await.unwrap();

    assert_eq!(
        report.patched_webhooks, 5,
        "3 mutating after the edit + 2 validating"
    );
    assert_published(&api, &report);
    assert_eq!(ca_bundles(&api).len(), 5);
    let patches = api
        .writes()
        .iter()
        .filter(|w| w.starts_with("PATCH"))
        .count();
    assert_eq!(
        patches, 3,
        "one rejected mutating patch, then one per configuration"
    );
    let mutating = api.object(MUTATING_PATH).unwrap();
    assert_eq!(mutating["webhooks"][0]["name"], "inserted.mutate.dhi");
    assert_eq!(mutating["webhooks"][1]["name"], "pods.mutate.dhi");
}

#[tokio::test]
async fn command_entry_point_uses_the_kubeconfig_and_its_namespace() {
    let (api, _) = FakeApi::start().await;
    seed_configs(&api);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let yaml = format!(
        "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
         clusters: [{{name: fake, cluster: {{server: \"{}\"}}}}]\n\
         users: [{{name: nobody, user: {{}}}}]\n\
         contexts: [{{name: test, context: {{cluster: fake, user: nobody, namespace: {NS}}}}}]\n",
        api.url
    );
    std::fs::write(&kubeconfig, yaml).unwrap();
    let (_, namespace) = dhi_admission::kube_client::connect(
        Some(&kubeconfig),
        dhi_admission::kube_client::Fallback::InCluster,
    )
    .await
    .unwrap();
    assert_eq!(namespace, NS);

    let args = BootstrapArgs {
        kubeconfig: Some(kubeconfig),
        namespace: None,
        secret: SECRET.into(),
        service: SERVICE.into(),
        webhook_config: CONFIG.into(),
        out: Some(dir.path().join("out")),
        days: 30,
        config: None,
    };
    bootstrap(args).await.unwrap();

    let cert_pem = secret_value(&api.secret(), "tls.crt");
    let written = std::fs::read_to_string(dir.path().join("out/tls.crt")).unwrap();
    assert_eq!(written, cert_pem);
    let not_after = cert_not_after(&cert_pem).unwrap();
    let expected = time::OffsetDateTime::now_utc().unix_timestamp() + 30 * 24 * 3600;
    assert!((expected - 120..=expected).contains(&not_after));
}

// ---------------------------------------------------------------------------------
// certs arm

/// The Service's EndpointSlices: one endpoint, ready or not.
fn seed_endpoint(api: &FakeApi, ready: bool) {
    api.insert(
        SLICES_PATH,
        json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": {},
               "items": [{"metadata": {"name": "dhi-admission-x7k2p",
                                       "labels": {"kubernetes.io/service-name": SERVICE}},
                          "addressType": "IPv4",
                          "endpoints": [{"addresses": ["10.0.0.7"],
                                         "conditions": {"ready": ready}}]}]}),
    );
}

/// Both configurations with a bundle in every entry, Ignore, and the enforce intent.
fn seed_armable(api: &FakeApi) {
    for (path, kind, prefix) in [
        (MUTATING_PATH, "MutatingWebhookConfiguration", "mutate"),
        (
            VALIDATING_PATH,
            "ValidatingWebhookConfiguration",
            "validate",
        ),
    ] {
        let entries = [format!("{prefix}.dhi.io"), format!("{prefix}-audit.dhi.io")]
            .iter()
            .map(|name| {
                let mut w = webhook(name, Some("UEVN"));
                w["failurePolicy"] = json!("Ignore");
                w
            })
            .collect();
        let mut config = webhook_config(kind, entries);
        config["metadata"]["annotations"] = json!({
            "dhi.io/failure-policy": format!("{prefix}.dhi.io=Fail,{prefix}-audit.dhi.io=Ignore")
        });
        api.insert(path, config);
    }
}

fn arm_options() -> ArmOptions {
    ArmOptions {
        namespace: NS.into(),
        service: SERVICE.into(),
        webhook_config: CONFIG.into(),
    }
}

fn failure_policies(api: &FakeApi, path: &str) -> Vec<(String, String)> {
    let config = api.object(path).unwrap();
    config["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let policy = w["failurePolicy"].as_str().unwrap_or("<unset>");
            (w["name"].as_str().unwrap().to_owned(), policy.to_owned())
        })
        .collect()
}

#[tokio::test]
async fn arm_waits_for_a_ready_endpoint_then_sets_fail_once() {
    let (api, client) = FakeApi::start().await;
    seed_armable(&api);
    seed_endpoint(&api, false);
    let report = arm_once(&client, &arm_options()).await.unwrap();
    assert_eq!(
        report,
        ArmReport {
            patched: 0,
            waiting: Some(Waiting::NoReadyEndpoint {
                service: format!("{NS}/{SERVICE}")
            }),
        }
    );
    assert!(api.writes().is_empty(), "{:?}", api.writes());

    seed_endpoint(&api, true);
    let report = arm_once(&client, &arm_options()).await.unwrap();
    assert_eq!(
        report,
        ArmReport {
            patched: 2,
            waiting: None
        }
    );
    assert_eq!(
        failure_policies(&api, MUTATING_PATH),
        [
            ("mutate.dhi.io".to_owned(), "Fail".to_owned()),
            ("mutate-audit.dhi.io".to_owned(), "Ignore".to_owned()),
        ]
    );
    assert_eq!(failure_policies(&api, VALIDATING_PATH)[0].1, "Fail");
    assert_eq!(
        api.writes(),
        [
            format!("PATCH {MUTATING_PATH}"),
            format!("PATCH {VALIDATING_PATH}")
        ]
    );

    // Armed: a further round writes nothing.
    api.clear_writes();
    let report = arm_once(&client, &arm_options()).await.unwrap();
    assert_eq!(report.patched, 0);
    assert!(api.writes().is_empty(), "{:?}", api.writes());
}

#[tokio::test]
async fn arm_rereads_a_configuration_edited_between_read_and_patch() {
    let (api, client) = FakeApi::start().await;
    seed_armable(&api);
    seed_endpoint(&api, true);
    // Someone inserts an entry at index 0 just before our patch: the `test` of the name at
    // index 0 fails (422), and the re-read finds mutate.dhi.io at index 1.
    let mut inserted = webhook("inserted.example.com", Some("UEVN"));
    inserted["failurePolicy"] = json!("Ignore");
    api.edit_before_next_patch(MUTATING_PATH, inserted);

    let report = arm_once(&client, &arm_options()).await.unwrap();

    assert_eq!(report.patched, 2);
    assert_eq!(
        failure_policies(&api, MUTATING_PATH),
        [
            ("inserted.example.com".to_owned(), "Ignore".to_owned()),
            ("mutate.dhi.io".to_owned(), "Fail".to_owned()),
            ("mutate-audit.dhi.io".to_owned(), "Ignore".to_owned()),
        ],
        "only the named entry changes, wherever it moved"
    );
    let patches = api
        .writes()
        .iter()
        .filter(|w| w.starts_with("PATCH"))
        .count();
    assert_eq!(patches, 3, "one rejected patch, then one per configuration");
}

#[tokio::test]
async fn arm_names_a_missing_configuration() {
    let (api, client) = FakeApi::start().await;
    seed_endpoint(&api, true);
    let err = arm_once(&client, &arm_options()).await.unwrap_err();
    assert!(
        matches!(&err, CertError::WebhookConfigNotFound { kind: "MutatingWebhookConfiguration", name } if name == CONFIG),
        "{err:?}"
    );
}
