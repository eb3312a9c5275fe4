//! The node tier of the end-to-end tests: real pods, run by a real kubelet and containerd, from
//! images built here (no registry).
//!
//! ```sh
//! tests/e2e/controlplane.sh build && tests/e2e/node.sh build   # once per machine
//! DHI_E2E=1 cargo test --test node                             # as root
//! ```
//!
//! One node (tests/e2e/node.sh: a bridge, containerd, the kubelet, controller-manager and
//! scheduler, against a control plane on the bridge address) is started per run of this
//! binary and shared by its tests; it stops by itself when the binary exits, and its stop
//! restores the host. Each test works in its own namespace. `DHI_E2E_CONTAINERD=2` runs the
//! node on containerd 2 instead of 1.6: the assertions that depend on the runtime read which
//! one runs.
//!
//! These tests assert what the kubelet and the runtime do with a hardened image's contract
//! (its user is a name; it binds a port as 65532), with no webhook installed: the facts the
//! webhook's rules are built on; then the shipped enforce overlay on the node, patching the
//! pod the kubelet refused so that it runs. Every namespace but that test's is labelled
//! `dhi.io/mode=off`, so the webhook judges none of the other tests' pods. Without the binaries, or not as root, and without
//! `DHI_E2E`, each test prints one line and passes; with `DHI_E2E=1` a node that does not
//! start fails them; `DHI_E2E=0` skips them.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Once, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;

// Shared with the control plane's tier, whose tests use all of it.
#[path = "e2e/tier.rs"]
#[allow(dead_code)]
mod tier;

use tier::{Tier, remove_stale_runs, run_kubectl, var};

/// What the images built for the tests are called: a hardened image's name, so that the
/// webhook's catalog applies to them (runtime `busybox:1.37` runs as `nonroot`, 65532).
const BUSYBOX: &str = "dhi.io/busybox:1.37";
/// The catalog's user of that image, and the UID its /etc/passwd gives it.
const NONROOT_UID: u32 = 65532;

/// A running node and its control plane (see tests/e2e/node.sh).
#[derive(Debug)]
struct Node {
    dir: PathBuf,
    kubeconfig: PathBuf,
    kubectl: PathBuf,
    /// `1.6` or `2`.
    containerd: String,
    /// The CRI's `enable_unprivileged_ports`: pods may bind ports below 1024.
    unprivileged_ports: bool,
}

static NODE: OnceLock<Result<Node, String>> = OnceLock::new();
static SKIP_NOTICE: Once = Once::new();

const TIER: Tier = Tier {
    name: "node",
    script: "tests/e2e/node.sh",
    how: "run `tests/e2e/controlplane.sh build && tests/e2e/node.sh build`, then, as root, \
          `DHI_E2E=1 cargo test --test node`",
};

fn script() -> PathBuf {
    TIER.script()
}

/// The node, started on first use; `None` when the tier is to be skipped (see
/// [`Tier::runs`]; it also needs root). Panics when the node should run and does not.
fn node() -> Option<&'static Node> {
    if !TIER.runs(&SKIP_NOTICE, || (!is_root()).then_some("not root")) {
        return None;
    }
    match NODE.get_or_init(start) {
        Ok(node) => Some(node),
        Err(e) => panic!("e2e node: {e}"),
    }
}

fn is_root() -> bool {
    // The effective UID, from the kernel's view of this process.
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// Unix socket paths live in the node's directory: at most 60 characters (node.sh).
fn run_dir() -> PathBuf {
    let pid = std::process::id().to_string();
    let runs = Path::new(env!("CARGO_TARGET_TMPDIR")).join("node");
    if runs.join(&pid).as_os_str().len() <= 60 {
        runs.join(pid)
    } else {
        std::env::temp_dir().join("dhi-e2e-node").join(pid)
    }
}

fn start() -> Result<Node, String> {
    let dir = run_dir();
    if let Some(runs) = dir.parent() {
        remove_stale_runs(runs, "node.started");
    }
    let started = Instant::now();
    let env = TIER.start(&dir)?;
    let get = |key: &str| var(&env, key);
    let node = Node {
        kubeconfig: get("KUBECONFIG")?.into(),
        kubectl: get("DHI_E2E_KUBECTL")?.into(),
        containerd: get("DHI_E2E_CONTAINERD")?,
        unprivileged_ports: get("DHI_E2E_UNPRIVILEGED_PORTS")? == "true",
        dir,
    };
    node.import_busybox(&get("DHI_E2E_OCI_IMAGE")?)?;
    let _ = writeln!(
        std::io::stderr(),
        "node: Ready in {:.1}s on containerd {} ({})",
        started.elapsed().as_secs_f64(),
        node.containerd,
        node.dir.display()
    );
    Ok(node)
}

impl Node {
    /// Builds [`BUSYBOX`] as a hardened image is made (its user is the name `nonroot`, in its
    /// /etc/passwd; no shell links) from Debian's static busybox, and imports it.
    fn import_busybox(&self, oci_image: &str) -> Result<(), String> {
        let tar = self.dir.join("images/busybox.tar");
        let run = |cmd: &mut Command| -> Result<(), String> {
            let out = cmd
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("{cmd:?}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{cmd:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        run(Command::new("python3").arg(oci_image).args([
            "--name",
            BUSYBOX,
            "--out",
            tar.to_str().unwrap(),
            "--add",
            "/bin/busybox=/bin/busybox:0555",
            "--user-account",
            &format!("nonroot:{NONROOT_UID}"),
            "--user",
            "nonroot",
            "--entrypoint",
            r#"["/bin/busybox"]"#,
            "--env",
            "PATH=/bin",
        ]))?;
        run(Command::new("bash")
            .arg(script())
            .arg("import")
            .arg(&self.dir)
            .arg(&tar))
    }

    /// Runs kubectl; panics showing its stderr when it fails.
    #[track_caller]
    fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> String {
        let run = self.try_kubectl(args, stdin);
        run.assert_ok();
        run.stdout
    }

    fn try_kubectl(&self, args: &[&str], stdin: Option<&str>) -> tier::Kubectl {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        run_kubectl(
            &self.kubectl,
            &self.kubeconfig,
            &args,
            stdin.map(str::to_owned),
        )
    }

    /// Creates namespace `node-<test>` and waits for its `default` ServiceAccount (made by the
    /// controller-manager), without which no pod is admitted. Labelled `dhi.io/mode=off`, so
    /// that the webhook, when a test installs it, never judges the other tests' pods.
    fn namespace(&self, test: &str) -> String {
        self.namespace_with(test, "off")
    }

    /// Like [`Node::namespace`], with `dhi.io/mode` set to `mode` ("enforce": unset).
    fn namespace_with(&self, test: &str, mode: &str) -> String {
        let ns = format!("node-{test}");
        let mut labels = serde_json::json!({});
        if mode != "enforce" {
            labels["dhi.io/mode"] = mode.into();
        }
        self.kubectl(
            &["create", "-f", "-"],
            Some(
                &serde_json::json!({
                    "apiVersion": "v1", "kind": "Namespace",
                    "metadata": {"name": ns, "labels": labels},
                })
                .to_string(),
            ),
        );
        eventually(&format!("ServiceAccount {ns}/default"), || {
            let run = self.try_kubectl(&["get", "serviceaccount", "default", "-n", &ns], None);
            run.ok.then_some(())
        });
        ns
    }

    /// In a namespace of its own ([`Node::namespace`]), a pod named `test` that runs
    /// [`BUSYBOX`] once ([`busybox_pod`]); returns the namespace.
    fn run_once(&self, test: &str, security: Value, args: &[&str]) -> String {
        let ns = self.namespace(test);
        self.create(&ns, &busybox_pod(test, security, args));
        ns
    }

    /// Waits for `what` to roll out; when it does not, fails with its pods' states.
    #[track_caller]
    fn rolled_out(&self, ns: &str, what: &str) {
        let rollout = self.try_kubectl(
            &["rollout", "status", "-n", ns, what, "--timeout=120s"],
            None,
        );
        if !rollout.ok {
            let pods = self.get(ns, "pods");
            let states: Vec<_> = pods["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| {
                    (
                        &p["metadata"]["name"],
                        &p["status"]["initContainerStatuses"],
                        &p["status"]["containerStatuses"],
                    )
                })
                .collect();
            panic!(
                "{what} not rolled out: {}\npods: {states:#?}",
                rollout.stderr
            );
        }
    }

    /// Creates `object` (JSON) in `ns`.
    fn create(&self, ns: &str, object: &Value) {
        self.kubectl(&["create", "-n", ns, "-f", "-"], Some(&object.to_string()));
    }

    /// Tries to create `object` in `ns`: kubectl's stderr when it is refused.
    fn create_refused(&self, ns: &str, object: &Value) -> Option<String> {
        let run = self.try_kubectl(&["create", "-n", ns, "-f", "-"], Some(&object.to_string()));
        (!run.ok).then_some(run.stderr)
    }

    fn get(&self, ns: &str, what: &str) -> Value {
        serde_json::from_str(&self.kubectl(&["get", "-n", ns, what, "-o", "json"], None)).unwrap()
    }

    /// Waits until the pod satisfies `pred` and returns it; panics with its status otherwise.
    fn pod_until(&self, ns: &str, name: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let pod = self.get(ns, &format!("pod/{name}"));
            if pred(&pod) {
                return pod;
            }
            assert!(
                Instant::now() < deadline,
                "pod {ns}/{name}: {what} not within 90s; status: {:#}",
                pod["status"]
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn logs(&self, ns: &str, name: &str) -> String {
        self.kubectl(&["logs", "-n", ns, name], None)
    }
}

/// Retries `check` every 250 ms until it returns `Some`, or panics after 60 s.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within 60s");
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A pod that runs [`BUSYBOX`] once with `args`, with `security` as its pod securityContext.
fn busybox_pod(name: &str, security: Value, args: &[&str]) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": security,
            "containers": [{
                "name": "main", "image": BUSYBOX, "imagePullPolicy": "Never", "args": args,
            }],
        },
    })
}

fn phase(pod: &Value) -> &str {
    pod["status"]["phase"].as_str().unwrap_or_default()
}

fn container_state(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]["state"]
}

/// A hardened image's user is a name; the runtime resolves it through the image's
/// /etc/passwd, so the process runs as 65532 without any runAsUser.
#[test]
fn image_user_name_runs_as_its_uid() {
    let Some(node) = node() else { return };
    let ns = node.run_once(
        "uid",
        serde_json::json!({}),
        &["grep", "-E", "^(Uid|Gid):", "/proc/self/status"],
    );
    let pod = node.pod_until(&ns, "uid", "phase Succeeded or Failed", |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    });
    assert_eq!(phase(&pod), "Succeeded", "{:#}", pod["status"]);
    assert_eq!(container_state(&pod)["terminated"]["exitCode"], 0);
    let ids = format!("{NONROOT_UID}\t{NONROOT_UID}\t{NONROOT_UID}\t{NONROOT_UID}");
    assert_eq!(node.logs(&ns, "uid"), format!("Uid:\t{ids}\nGid:\t{ids}\n"));
}

/// runAsNonRoot with an image whose user is a name, and no runAsUser: the kubelet cannot
/// tell the name's UID and refuses to create the container. This is what the webhook's
/// runAsUser patch for hardened images prevents.
#[test]
fn run_as_non_root_with_a_named_user_is_refused_by_the_kubelet() {
    let Some(node) = node() else { return };
    let ns = node.run_once(
        "named-user",
        serde_json::json!({"runAsNonRoot": true}),
        &["true"],
    );
    let pod = node.pod_until(&ns, "named-user", "a waiting reason", |p| {
        container_state(p)["waiting"]["reason"]
            .as_str()
            .is_some_and(|r| r != "ContainerCreating")
    });
    assert_eq!(phase(&pod), "Pending");
    let waiting = &container_state(&pod)["waiting"];
    assert_eq!(waiting["reason"], "CreateContainerConfigError");
    let message = waiting["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "container has runAsNonRoot and image has non-numeric user (nonroot), cannot verify user is non-root"
        ),
        "{message}"
    );
}

/// UID 65532 binding port 80: refused where the runtime leaves unprivileged ports off
/// (containerd 1.6 and 1.7), allowed where it turns them on (containerd 2), and allowed
/// everywhere with the pod sysctl net.ipv4.ip_unprivileged_port_start=0.
#[test]
fn port_80_as_nonroot_depends_on_the_runtime_and_the_sysctl() {
    let Some(node) = node() else { return };
    let ns = node.namespace("port-80");
    let nonroot = serde_json::json!({
        "runAsUser": NONROOT_UID, "runAsGroup": NONROOT_UID, "runAsNonRoot": true,
    });
    let mut with_sysctl = nonroot.clone();
    with_sysctl["sysctls"] =
        serde_json::json!([{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]);
    let httpd = ["httpd", "-f", "-p", "80", "-h", "/etc"];
    node.create(&ns, &busybox_pod("plain", nonroot, &httpd));
    node.create(&ns, &busybox_pod("sysctl", with_sysctl, &httpd));

    // Serving is the proof that the bind worked: a pod is Running for a moment before
    // httpd exits on a failed bind.
    let serves = |name: &str| {
        let pod = node.pod_until(&ns, name, "phase Running", |p| phase(p) == "Running");
        let ip = pod["status"]["podIP"].as_str().unwrap().to_owned();
        let passwd = eventually(&format!("GET http://{ip}:80/passwd"), || {
            http_get(&ip, 80, "/passwd")
        });
        assert!(passwd.contains("nonroot:x:65532:65532:"), "{passwd}");
    };
    serves("sysctl");
    if node.unprivileged_ports {
        serves("plain");
    } else {
        let plain = node.pod_until(&ns, "plain", "phase Failed or Succeeded", |p| {
            matches!(phase(p), "Failed" | "Succeeded")
        });
        assert_eq!(phase(&plain), "Failed", "{:#}", plain["status"]);
        assert_eq!(container_state(&plain)["terminated"]["exitCode"], 1);
        assert_eq!(node.logs(&ns, "plain"), "httpd: bind: Permission denied\n");
    }
}

/// The body of a 200 answer to a plain HTTP/1.0 GET, else `None`.
fn http_get(ip: &str, port: u16, path: &str) -> Option<String> {
    use std::io::Read as _;
    let addr = std::net::SocketAddr::new(ip.parse().ok()?, port);
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    (head.split(' ').nth(1) == Some("200")).then(|| body.to_owned())
}

/// The controllers run: a Deployment's two replicas are scheduled on the node, get their
/// service-account token, and the Service's EndpointSlice lists both.
#[test]
fn deployment_replicas_are_scheduled_into_an_endpointslice() {
    let Some(node) = node() else { return };
    let ns = node.namespace("deployment");
    let labels = serde_json::json!({"app": "web"});
    node.create(
        &ns,
        &serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "securityContext": {"runAsUser": NONROOT_UID, "runAsNonRoot": true},
                        "containers": [{
                            "name": "httpd", "image": BUSYBOX, "imagePullPolicy": "Never",
                            "args": ["httpd", "-f", "-p", "8080", "-h", "/etc"],
                            "ports": [{"name": "http", "containerPort": 8080}],
                            "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
                        }],
                    },
                },
            },
        }),
    );
    node.create(
        &ns,
        &serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web"},
            "spec": {"selector": labels, "ports": [{"name": "http", "port": 80, "targetPort": "http"}]},
        }),
    );
    let addresses = eventually("an EndpointSlice with two ready addresses", || {
        let slices = node.get(&ns, "endpointslices");
        let ready: Vec<String> = slices["items"]
            .as_array()?
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .filter_map(|e| e["addresses"][0].as_str().map(str::to_owned))
            .collect();
        (ready.len() == 2).then_some(ready)
    });
    let pods = node.get(&ns, "pods");
    let pods = pods["items"].as_array().unwrap();
    assert_eq!(pods.len(), 2);
    for pod in pods {
        assert_eq!(pod["spec"]["nodeName"], "dhi-e2e-node");
        assert!(addresses.iter().any(|a| pod["status"]["podIP"] == *a));
        let token =
            pod["spec"]["volumes"][0]["projected"]["sources"][0]["serviceAccountToken"].is_object();
        assert!(token, "{:#}", pod["spec"]["volumes"]);
    }
}

/// The image archives are deterministic: the same arguments and file contents give the same
/// bytes, whatever the source files' times and modes; the digest printed is the manifest's,
/// and index.json names the image for `ctr images import`. Needs python3 and tar only (without
/// python3 it is skipped, unless `DHI_E2E=1`).
#[test]
fn oci_image_archives_are_deterministic() {
    let python = Command::new("python3").arg("--version").output();
    if !python.is_ok_and(|o| o.status.success()) && std::env::var("DHI_E2E").as_deref() != Ok("1") {
        let _ = writeln!(
            std::io::stderr(),
            "node: oci_image.py not tested (no python3)"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let program = tmp.path().join("program");
    std::fs::write(&program, b"#!/not/run\n").unwrap();
    let build = |out: &str, env: &str| -> (Vec<u8>, String) {
        let out = tmp.path().join(out);
        let run = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/e2e/oci_image.py"))
            .args(["--name", BUSYBOX, "--out"])
            .arg(&out)
            .arg("--add")
            .arg(format!("{}=/bin/program:0555", program.display()))
            .args(["--user-account", "nonroot:65532", "--user", "nonroot"])
            .args(["--entrypoint", r#"["/bin/program"]"#, "--env", env])
            .output()
            .expect("python3 runs");
        assert!(
            run.status.success(),
            "{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let digest = String::from_utf8(run.stdout).unwrap().trim().to_owned();
        (std::fs::read(out).unwrap(), digest)
    };
    let (first, digest) = build("first.tar", "PATH=/bin");
    // Another mtime and mode on the source: neither reaches the image.
    std::thread::sleep(Duration::from_millis(1100));
    std::fs::write(&program, b"#!/not/run\n").unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o700)).unwrap();
    let (second, again) = build("second.tar", "PATH=/bin");
    assert!(first == second, "two builds of the same image differ");
    assert_eq!(digest, again);
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest}"
    );
    let (_, other) = build("other.tar", "PATH=/usr/bin");
    assert_ne!(digest, other, "a different config, the same digest");

    let layout = tmp.path().join("layout");
    std::fs::create_dir(&layout).unwrap();
    let untar = Command::new("tar")
        .arg("-xf")
        .arg(tmp.path().join("first.tar"))
        .arg("-C")
        .arg(&layout)
        .status()
        .unwrap();
    assert!(untar.success());
    let json = |path: &str| -> Value {
        serde_json::from_slice(&std::fs::read(layout.join(path)).unwrap()).unwrap()
    };
    let blob = |digest: &Value| json(&format!("blobs/sha256/{}", &digest.as_str().unwrap()[7..]));
    let index = json("index.json");
    let entry = &index["manifests"][0];
    assert_eq!(entry["digest"], digest.as_str());
    assert_eq!(entry["annotations"]["io.containerd.image.name"], BUSYBOX);
    let manifest = blob(&entry["digest"]);
    let config = blob(&manifest["config"]["digest"]);
    assert_eq!(
        config["config"],
        serde_json::json!({"User": "nonroot", "Entrypoint": ["/bin/program"], "Env": ["PATH=/bin"]})
    );
    assert_eq!(
        config["rootfs"]["diff_ids"][0],
        manifest["layers"][0]["digest"]
    );
}

/// The shipped enforce overlay, unchanged, on the node: the webhook's image (the test build
/// of the binary, with the libraries ldd lists) runs as the Deployment says, `certs bootstrap`
/// and `certs arm` reach the API server through the `kubernetes` Service, and the API server
/// calls the webhook through its Service's EndpointSlice. The pod the kubelet refuses without
/// the webhook (runAsNonRoot, a named user) is patched to UID 65532 and runs; a pod that sets
/// runAsUser: 0 on a hardened image is denied.
#[test]
fn enforce_overlay_patches_the_named_user_pod_so_that_it_runs() {
    let Some(node) = node() else { return };
    let tar = node.dir.join("images/dhi-admission.tar");
    let image = Command::new("bash")
        .arg(script())
        .arg("webhook-image")
        .arg(env!("CARGO_BIN_EXE_dhi-admission"))
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        image.status.success(),
        "{}",
        String::from_utf8_lossy(&image.stderr)
    );
    let import = Command::new("bash")
        .arg(script())
        .arg("import")
        .arg(&node.dir)
        .arg(&tar)
        .output()
        .unwrap();
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );
    let overlay = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/overlays/enforce");
    node.kubectl(&["apply", "-k", overlay.to_str().unwrap()], None);
    node.rolled_out("dhi-system", "deployment/dhi-admission");
    // `certs arm` sets Fail once every entry has its caBundle and the Service a ready endpoint.
    eventually("mutate.dhi.io armed (failurePolicy Fail)", || {
        let config = node.get("default", "mutatingwebhookconfiguration/dhi-admission");
        (config["webhooks"][0]["failurePolicy"] == "Fail").then_some(())
    });

    let ns = node.namespace_with("webhook", "enforce");
    let pod = busybox_pod(
        "named-user",
        serde_json::json!({"runAsNonRoot": true}),
        &["grep", "^Uid:", "/proc/self/status"],
    );
    node.create(&ns, &pod);
    let pod = node.pod_until(&ns, "named-user", "phase Succeeded or Failed", |p| {
        matches!(phase(p), "Succeeded" | "Failed")
    });
    assert_eq!(phase(&pod), "Succeeded", "{:#}", pod["status"]);
    assert_eq!(
        pod["spec"]["containers"][0]["securityContext"]["runAsUser"],
        NONROOT_UID
    );
    let uid = NONROOT_UID;
    assert_eq!(
        node.logs(&ns, "named-user"),
        format!("Uid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    );

    let as_root = busybox_pod("as-root", serde_json::json!({"runAsUser": 0}), &["true"]);
    let refused = node
        .create_refused(&ns, &as_root)
        .expect("a root pod is denied");
    assert!(
        refused.contains(r#"admission webhook "validate.dhi.io" denied the request"#)
            && refused.contains("[run-as-root] container \"main\" (dhi.io/busybox:1.37)"),
        "{refused}"
    );
}
