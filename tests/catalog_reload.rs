//! `serve --catalog FILE` over the real TLS server: the file replaces the compiled-in
//! snapshot, is reloaded when it changes, a broken version is refused and counted while
//! the last good catalog stays, and policy and catalog reloads compose.

mod common;

use std::time::Duration;

use common::*;
use dhi_admission::config::Config;
use dhi_admission::server::Server;
use dhi_admission::tls::KeyPairPaths;

/// A catalog export with one repository, `app`, whose runtime variant runs as `uid`.
fn export(date: &str, uid: i64) -> String {
    format!(
        r#"{{"source": "test export ({date})", "images": {{
            "app": {{"variants": [
                {{"variant": "runtime", "tags": ["1", "1.2"], "uid": {uid}, "gid": {uid}}},
                {{"variant": "dev", "tags": ["1-dev"], "uid": 0, "gid": 0}}]}}}}}}"#
    )
}

/// The user the mutating webhook injects for a pod on `image` that sets none.
async fn injected_user(t: &Target, image: &str) -> Option<i64> {
    let object = pod("web", "default", vec![container("app", image)]);
    let answer = t.post_json("/mutate", &review(&object)).await.review();
    assert!(answer.allowed, "{:?}", answer.status);
    let patched = apply_patch(&object, answer.patch.as_ref()?);
    patched["spec"]["containers"][0]["securityContext"]["runAsUser"].as_i64()
}

async fn until_injected(t: &Target, image: &str, uid: i64, what: &str) {
    eventually(
        what,
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async move { (injected_user(t, image).await == Some(uid)).then_some(()) },
    )
    .await;
}

async fn reloads(t: &Target, what: &str, result: &str) -> f64 {
    counter(
        &t.metrics().await,
        "dhi_admission_reloads_total",
        &[("what", what), ("result", result)],
    )
}

/// The `dhi_admission_catalog_info` series: (snapshot, source) of each.
fn catalog_info(metrics: &str) -> Vec<(String, String)> {
    samples(metrics)
        .into_iter()
        .filter(|(name, ..)| name == "dhi_admission_catalog_info")
        .map(|(_, labels, value)| {
            assert_eq!(value, 1.0);
            let label = |k: &str| {
                let found = labels.iter().find(|(name, _)| name == k);
                found.map(|(_, v)| v.clone()).unwrap_or_default()
            };
            (label("snapshot"), label("source"))
        })
        .collect()
}

/// A server with `policy` and the catalog file of 2027-01-31, whose `app` runs as 10001.
async fn start_with_export(policy: &str) -> TestServer {
    TestServer::start_with(ServerOptions {
        policy: policy.to_owned(),
        catalog: Some(export("2027-01-31", 10001)),
        ..Default::default()
    })
    .await
}

/// The (snapshot, source) labels of the catalog `export` wrote for `date`.
fn exported(date: &str) -> (String, String) {
    (date.to_owned(), format!("test export ({date})"))
}

/// The catalog the info gauge names, and when it was last loaded.
async fn catalog_loaded(t: &Target) -> (Vec<(String, String)>, f64) {
    let metrics = t.metrics().await;
    let at = metric(
        &metrics,
        "dhi_admission_reload_last_success_timestamp_seconds",
        &[("what", "catalog")],
    )
    .expect("a catalog was loaded");
    (catalog_info(&metrics), at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catalog_file_replaces_the_snapshot_and_reloads_like_the_policy() {
    let server = start_with_export(DEFAULT_POLICY).await;
    let t = server.target();
    // The file is in force: `app` is known, `nginx` (compiled in) is not.
    assert_eq!(injected_user(&t, "dhi.io/app:1.2").await, Some(10001));
    assert_eq!(injected_user(&t, "dhi.io/app:1.3").await, Some(10001));
    let unknown = t
        .post_json(
            "/validate",
            &review(&pod(
                "web",
                "default",
                vec![container("app", "dhi.io/nginx:1.31")],
            )),
        )
        .await
        .review();
    assert_eq!(
        unknown.warnings,
        [
            "container \"app\": dhi.io/nginx is not in the catalog snapshot of 2027-01-31; \
          UID 65532 assumed"
        ]
    );
    let (info, loaded_at) = catalog_loaded(&t).await;
    assert_eq!(info, [exported("2027-01-31")]);
    assert!(loaded_at > 0.0, "loaded at start: {loaded_at}");

    // Broken versions: each refused and counted once; the catalog in force stays.
    let broken = [
        "{".to_owned(),
        r#"{"source": "no date", "images": {"app": {"variants": []}}}"#.to_owned(),
        // A tag listed with two users: the engine could not decide with it.
        r#"{"source": "x (2027-02-01)", "images": {"app": {"variants": [
            {"variant": "runtime", "tags": ["1"], "uid": 1, "gid": 1},
            {"variant": "runtime", "tags": ["1"], "uid": 2, "gid": 2}]}}}"#
            .to_owned(),
        // Over the size cap (4 MiB): refused without being parsed.
        format!(
            "{}{}",
            export("2027-02-02", 7),
            " ".repeat(dhi_admission::policy_source::MAX_CATALOG_BYTES as usize)
        ),
    ];
    for (n, text) in broken.iter().enumerate() {
        server.material.write_catalog(text);
        eventually(
            "the broken catalog is refused",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async { (reloads(&t, "catalog", "failure").await == (n + 1) as f64).then_some(()) },
        )
        .await;
        assert_eq!(injected_user(&t, "dhi.io/app:1.2").await, Some(10001));
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // several reload ticks
    assert_eq!(
        reloads(&t, "catalog", "failure").await,
        4.0,
        "each counted once"
    );
    assert_eq!(reloads(&t, "catalog", "success").await, 0.0);
    assert_eq!(catalog_info(&t.metrics().await), [exported("2027-01-31")]);

    // A good version is applied, and named by the info gauge.
    server.material.write_catalog(&export("2027-03-01", 20002));
    until_injected(&t, "dhi.io/app:1.2", 20002, "the new catalog applies").await;
    assert_eq!(reloads(&t, "catalog", "success").await, 1.0);
    let (info, reloaded_at) = catalog_loaded(&t).await;
    assert_eq!(info, [exported("2027-03-01")]);
    assert!(reloaded_at >= loaded_at, "{reloaded_at} < {loaded_at}");
    // The policy file's reload counters did not move.
    assert_eq!(reloads(&t, "config", "success").await, 0.0);
    assert_eq!(reloads(&t, "config", "failure").await, 0.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_and_catalog_reloads_compose() {
    // The policy's `catalog:` additions layer over whichever snapshot is in force.
    let server = start_with_export("catalog:\n  team-app: {uid: 4242}\n").await;
    let t = server.target();
    assert_eq!(injected_user(&t, "dhi.io/app:1.2").await, Some(10001));
    assert_eq!(injected_user(&t, "dhi.io/team-app:1").await, Some(4242));

    // A new policy keeps the loaded catalog.
    server
        .material
        .write_policy("catalog:\n  team-app: {uid: 4343}\n");
    until_injected(&t, "dhi.io/team-app:1", 4343, "the new policy applies").await;
    assert_eq!(injected_user(&t, "dhi.io/app:1.2").await, Some(10001));

    // A new catalog keeps the policy in force.
    server.material.write_catalog(&export("2027-03-01", 20002));
    until_injected(&t, "dhi.io/app:1.2", 20002, "the new catalog applies").await;
    assert_eq!(injected_user(&t, "dhi.io/team-app:1").await, Some(4343));

    // And a policy that overrides a repository of the loaded catalog.
    server
        .material
        .write_policy("catalog:\n  app: {uid: 30003}\n");
    until_injected(&t, "dhi.io/app:1.2", 30003, "the override applies").await;
    server.material.write_policy("{}\n");
    until_injected(&t, "dhi.io/app:1.2", 20002, "the override is gone").await;
    assert_eq!(reloads(&t, "config", "success").await, 3.0);
    assert_eq!(reloads(&t, "catalog", "success").await, 1.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_catalog_at_start_is_an_error_that_names_it() {
    let material = Material::new(CertLayout::Files, DEFAULT_POLICY);
    let catalog = material.catalog_path();
    let config = |catalog: &std::path::Path| Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        metrics_listen: "127.0.0.1:0".parse().unwrap(),
        tls: KeyPairPaths {
            cert: material.cert_path.clone(),
            key: material.key_path.clone(),
        },
        client_ca: None,
        policy: Some(material.policy_path.clone()),
        catalog: Some(catalog.to_owned()),
        mode: None,
        limits: test_limits(),
        reload_interval: Duration::from_millis(100),
    };
    let error = |config: Config| async move {
        match Server::bind(config).await {
            Ok(_) => panic!("bound with a broken catalog"),
            Err(err) => format!("{err:#}"),
        }
    };
    let shown = catalog.display().to_string();
    assert_eq!(
        error(config(&catalog)).await,
        format!("cannot read catalog {shown}: No such file or directory (os error 2)")
    );
    write_atomic(&catalog, br#"{"source": "x (2027-01-31)", "images": {}}"#);
    assert_eq!(
        error(config(&catalog)).await,
        format!("catalog {shown}: invalid catalog: no repositories")
    );
    write_atomic(&catalog, b"[1, 2]");
    let err = error(config(&catalog)).await;
    assert!(
        err.starts_with(&format!("catalog {shown}: not a DHI catalog export: ")),
        "{err}"
    );
    write_atomic(&catalog, export("2027-01-31", 1).as_bytes());
    let server = Server::bind(config(&catalog))
        .await
        .expect("a good catalog binds");
    drop(server);
}
