//! The shared control plane, clients for it, namespaces, kubectl and the audit log.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use http_body_util::BodyExt as _;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use serde_json::Value;

pub use super::tier::Kubectl;
use super::tier::{Tier, remove_stale_runs, run_kubectl, var};

/// The label that routes a test's namespace to that test's webhook configurations.
pub const TEST_LABEL: &str = "e2e.dhi.io/test";

/// A running control plane (see tests/e2e/controlplane.sh).
#[derive(Debug)]
pub struct ControlPlane {
    /// Where its certificates, logs and kubeconfig are.
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub kubectl: PathBuf,
    pub audit_log: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The CA that signed the API server's certificate.
    pub ca: PathBuf,
}

static CONTROL_PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
static SKIP_NOTICE: Once = Once::new();

const TIER: Tier = Tier {
    name: "e2e",
    script: "tests/e2e/controlplane.sh",
    how: "run `tests/e2e/controlplane.sh build`, then `DHI_E2E=1 cargo test --test e2e`",
};

/// The control plane, started on first use; `None` when the suite is to be skipped (see
/// [`Tier::runs`]). Panics when the control plane should run and does not.
pub fn control_plane() -> Option<&'static ControlPlane> {
    if !TIER.runs(&SKIP_NOTICE, || None) {
        return None;
    }
    match CONTROL_PLANE.get_or_init(start) {
        Ok(cp) => Some(cp),
        Err(e) => panic!("e2e control plane: {e}"),
    }
}

fn start() -> Result<ControlPlane, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("e2e");
    remove_stale_runs(&runs, "etcd.pid");
    let dir = runs.join(std::process::id().to_string());
    let started = Instant::now();
    let env = TIER.start(&dir)?;
    let get = |key: &str| var(&env, key);
    let version = get("DHI_E2E_VERSION")?;
    let cp = ControlPlane {
        kubeconfig: get("KUBECONFIG")?.into(),
        kubectl: get("DHI_E2E_KUBECTL")?.into(),
        audit_log: get("DHI_E2E_AUDIT_LOG")?.into(),
        url: get("DHI_E2E_APISERVER")?,
        ca: get("DHI_E2E_CA")?.into(),
        dir,
    };
    let _ = writeln!(
        std::io::stderr(),
        "e2e: control plane {version} ready in {:.1}s ({})",
        started.elapsed().as_secs_f64(),
        cp.dir.display()
    );
    Ok(cp)
}

impl ControlPlane {
    /// A client as the cluster administrator. One per test: a client belongs to the runtime
    /// it was made on.
    pub async fn client(&self) -> Client {
        client_from(&self.kubeconfig).await
    }

    /// A directory for one test's files, inside the run's directory.
    pub fn test_dir(&self, test: &str) -> PathBuf {
        let dir = self.dir.join("tests").join(test);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// Runs kubectl against the control plane, feeding `stdin` (on the blocking pool: the
    /// test's own servers keep running meanwhile).
    pub async fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Kubectl {
        let kubectl = self.kubectl.clone();
        let kubeconfig = self.kubeconfig.clone();
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let stdin = stdin.map(str::to_owned);
        tokio::task::spawn_blocking(move || run_kubectl(&kubectl, &kubeconfig, &args, stdin))
            .await
            .unwrap()
    }

    /// The audit events written so far.
    pub fn audit_events(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.audit_log).unwrap_or_default();
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Waits until the audit event of the creation of `name` (of `resource`, in `ns`) has
    /// been written, and returns it.
    pub async fn create_event(&self, ns: &str, resource: &str, name: &str) -> Value {
        let what = format!("the audit event of {resource} {ns}/{name}");
        self.audit_event(&what, |e| {
            e["objectRef"]["namespace"] == ns
                && e["objectRef"]["resource"] == resource
                && e["objectRef"]["name"] == name
                && e["verb"] == "create"
                && e["stage"] == "ResponseComplete"
        })
        .await
    }

    /// `kubectl apply -n ns -f` a file of the repository.
    pub async fn kubectl_apply(&self, ns: &str, path: &str) -> Kubectl {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
        let file = file.to_str().unwrap();
        self.kubectl(&["apply", "-n", ns, "-f", file], None).await
    }

    /// Waits until an audit event matching `pred` has been written, and returns it.
    pub async fn audit_event(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        eventually(what, Duration::from_secs(15), || async {
            self.audit_events().into_iter().find(|e| pred(e))
        })
        .await
    }
}

/// A client from a kubeconfig file.
pub async fn client_from(kubeconfig: &Path) -> Client {
    let file = Kubeconfig::read_from(kubeconfig).unwrap();
    let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

/// What a test that runs its own webhook, or none, starts from.
pub struct Bare {
    pub cp: &'static ControlPlane,
    pub client: Client,
    /// `e2e-<test>`, see [`namespace_with`].
    pub ns: String,
    /// See [`ControlPlane::test_dir`].
    pub dir: PathBuf,
}

/// The control plane, a client, the test's namespace (routed to the test's webhooks when
/// `routed`) and its directory; `None` when the suite is skipped (see [`control_plane`]).
pub async fn bare(test: &str, routed: bool) -> Option<Bare> {
    let cp = control_plane()?;
    let client = cp.client().await;
    let ns = namespace_with(&client, test, routed, &[]).await;
    Some(Bare {
        cp,
        dir: cp.test_dir(test),
        client,
        ns,
    })
}

/// Creates the namespace `e2e-<test>` with the test label and `labels`, and the
/// ServiceAccounts `default` (there is no controller-manager to make it) and `accounts`.
pub async fn namespace(client: &Client, test: &str, labels: &[(&str, &str)]) -> String {
    namespace_with(client, test, true, labels).await
}

/// Like [`namespace`], without the test label when `routed` is false (no webhook sees it).
pub async fn namespace_with(
    client: &Client,
    test: &str,
    routed: bool,
    labels: &[(&str, &str)],
) -> String {
    let name = format!("e2e-{test}");
    let mut all: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if routed {
        all.insert(TEST_LABEL.into(), test.into());
    }
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(all),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    service_accounts(client, &name, &["default"]).await;
    name
}

/// Creates ServiceAccounts, which the ServiceAccount admission plugin requires of pods.
pub async fn service_accounts(client: &Client, ns: &str, names: &[&str]) {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    for name in names {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..ObjectMeta::default()
            },
            ..ServiceAccount::default()
        };
        api.create(&PostParams::default(), &sa).await.unwrap();
    }
}

/// An answer of the API server to a raw request: what the typed client hides (warnings).
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub warnings: Vec<String>,
}

impl Answer {
    /// The Status message of a refusal.
    pub fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or_default()
    }

    /// Asserts the HTTP status, showing the body otherwise.
    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        assert_eq!(self.status, status, "{}", self.body);
        self
    }

    /// Asserts that the Status message satisfies `pred`, showing it otherwise.
    #[track_caller]
    pub fn assert_message(&self, pred: impl Fn(&str) -> bool) -> &Self {
        assert!(pred(self.message()), "{}", self.message());
        self
    }

    /// Asserts that there is no warning, showing them otherwise.
    #[track_caller]
    pub fn assert_no_warnings(&self) -> &Self {
        assert!(self.warnings.is_empty(), "{:?}", self.warnings);
        self
    }

    /// Asserts that a warning satisfies `pred`, showing every warning otherwise.
    #[track_caller]
    pub fn assert_warning(&self, pred: impl Fn(&str) -> bool) -> &Self {
        self.warning(pred);
        self
    }

    /// The first warning satisfying `pred`; panics showing every warning when none does.
    #[track_caller]
    pub fn warning(&self, pred: impl Fn(&str) -> bool) -> &str {
        match self.warnings.iter().find(|w| pred(w)) {
            Some(w) => w,
            None => panic!("no such warning in {:?}", self.warnings),
        }
    }
}

/// Sends a request with a JSON body (`Content-Type` as given) and returns the answer.
pub async fn send(
    client: &Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<&Value>,
) -> Answer {
    send_with(client, method, path, content_type, body, &[]).await
}

/// Like [`send`], with extra `headers` (e.g. `Impersonate-User`).
pub async fn send_with(
    client: &Client,
    method: &str,
    path: &str,
    content_type: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> Answer {
    let bytes = body
        .map(|b| serde_json::to_vec(b).unwrap())
        .unwrap_or_default();
    let mut request = http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::ACCEPT, "application/json");
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(kube::client::Body::from(bytes)).unwrap();
    let response = client.send(request).await.unwrap();
    let status = response.status().as_u16();
    let warnings = response
        .headers()
        .get_all(http::header::WARNING)
        .iter()
        // Not `to_str`: the API server passes a webhook's UTF-8 through in the header
        // (ours sends ASCII, but a test must see whatever came), which `to_str` refuses.
        .map(|v| decode_warning(&String::from_utf8_lossy(v.as_bytes())))
        .collect();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Answer {
        status,
        body,
        warnings,
    }
}

/// `299 - "text"` (RFC 7234 warn-text, as the API server writes it) to `text`.
fn decode_warning(header: &str) -> String {
    let text = header
        .strip_prefix("299 - ")
        .unwrap_or(header)
        .trim_matches('"');
    text.replace("\\\"", "\"").replace("\\\\", "\\")
}

/// GETs `path`.
pub async fn get(client: &Client, path: &str) -> Answer {
    send(client, "GET", path, "application/json", None).await
}

/// DELETEs `path`.
pub async fn delete(client: &Client, path: &str) -> Answer {
    send(client, "DELETE", path, "application/json", None).await
}

/// The content type of a JSON Patch (RFC 6902).
pub const JSON_PATCH: &str = "application/json-patch+json";

/// PATCHes `path` with `patch`, of `content_type` (e.g. [`JSON_PATCH`]).
pub async fn patch(client: &Client, path: &str, content_type: &str, patch: &Value) -> Answer {
    send(client, "PATCH", path, content_type, Some(patch)).await
}

/// POSTs `object` to the collection at `path` (with `?dryRun=All` when `dry_run`).
pub async fn create(client: &Client, path: &str, object: &Value, dry_run: bool) -> Answer {
    let path = if dry_run {
        format!("{path}?dryRun=All")
    } else {
        path.to_owned()
    };
    send(client, "POST", &path, "application/json", Some(object)).await
}

/// Creates each of `objects` in the collection at `path`, asserting each is created.
pub async fn create_all(client: &Client, path: &str, objects: impl IntoIterator<Item = Value>) {
    for object in objects {
        let created = create(client, path, &object, false).await;
        assert_eq!(created.status, 201, "{:?}", created.body);
    }
}

/// The collection path of an RBAC kind, namespaced ones in `ns`.
pub fn rbac_collection(kind: &str, ns: &str) -> String {
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    match kind {
        "Role" => format!("{rbac}/namespaces/{ns}/roles"),
        "RoleBinding" => format!("{rbac}/namespaces/{ns}/rolebindings"),
        "ClusterRole" => format!("{rbac}/clusterroles"),
        "ClusterRoleBinding" => format!("{rbac}/clusterrolebindings"),
        other => panic!("{other} is not an RBAC kind"),
    }
}

/// The stored pod `name` of `ns`, as JSON.
pub async fn stored_pod(client: &Client, ns: &str, name: &str) -> Value {
    let pod = Api::<Pod>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .unwrap();
    serde_json::to_value(pod).unwrap()
}

/// The collection path of pods in `ns`.
pub fn pods(ns: &str) -> String {
    format!("/api/v1/namespaces/{ns}/pods")
}

/// The collection path of `apps/v1` `plural` in `ns`.
pub fn apps(ns: &str, plural: &str) -> String {
    format!("/apis/apps/v1/namespaces/{ns}/{plural}")
}

/// GET over plain HTTP/1.1 (the harness's [`super::common::http_get`]); the body of a
/// 200, else `None`.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    match super::common::http_get(addr, path).await {
        Ok((200, body)) => Some(body),
        _ => None,
    }
}

/// A loopback port that was free a moment ago.
pub use super::common::free_port;

/// Retries `check` every 200 ms until it returns `Some`, or panics after `within` (the
/// harness's [`super::common::eventually`]).
pub async fn eventually<T, Fut>(what: &str, within: Duration, check: impl FnMut() -> Fut) -> T
where
    Fut: std::future::Future<Output = Option<T>>,
{
    super::common::eventually(what, within, Duration::from_millis(200), check).await
}

/// Reads a YAML file of the repository into JSON.
pub fn yaml(path: &str) -> Value {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every document of a multi-document YAML file of the repository.
pub fn yaml_documents(path: &str) -> Vec<Value> {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_saphyr::from_multiple::<Value>(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A bare pod named `name` running `containers`.
pub fn pod(name: &str, containers: Value) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": containers},
    })
}

/// A pod as the controller of `workload` would create it from its template.
pub fn pod_from_template(workload: &Value, name: &str) -> Value {
    let template = &workload["spec"]["template"];
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": template["metadata"]["labels"],
                     "annotations": template["metadata"]["annotations"]},
        "spec": template["spec"],
    })
}
