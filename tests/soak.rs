//! Soak: the real binary under sustained concurrent load over HTTP/2 and HTTP/1.1 with a
//! mix of admitted, denied and malformed requests, while the serving certificate is
//! rotated every 2 s (kubelet-style symlink swap) and the policy file is rewritten every
//! 1.5 s, alternating valid versions (which must not change any verdict of the mix) and
//! invalid ones (which must be refused). Then SIGTERM under load.
//!
//! Duration: `DHI_SOAK_SECONDS` (default 8 s for CI; run by hand for 600 s:
//! `DHI_SOAK_SECONDS=600 cargo test --test soak -- --nocapture`). The binary is the
//! debug build Cargo made for the tests unless `DHI_ADMISSION_BIN` names another (a
//! release build, for representative throughput and memory figures).
//!
//! Pass criteria: every answer to a well-formed request is exactly right, nothing is
//! lost during rotation or drain (requests in flight at SIGTERM complete; new
//! connections after the listener closed are counted apart), `requests_total` on the
//! server equals the answers the clients received, and the resident set does not grow.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// Policies the soak alternates between. The valid ones differ only in what cannot
/// affect the mix (an exemption for images it does not use, a catalog entry for a
/// repository it does not use); the invalid ones must be refused.
const POLICIES: [&str; 4] = [
    "exempt:\n  namespaces: [kube-system]\n  images: [\"registry.example.com/unrelated/*\"]\n",
    "rules: {run-as-root: maybe}\n",
    "exempt:\n  namespaces: [kube-system]\ncatalog:\n  unrelated-app: {uid: 10001}\n",
    "exempt: [\n",
];

/// One kind of request in the mix, with its expected answer.
struct Case {
    name: &'static str,
    path: &'static str,
    /// The body with `__UID__` where the uid goes.
    template: String,
    /// The expected answer: a review's `response` without its uid, or a whole body.
    expected: Expected,
}

enum Expected {
    Review(Value),
    Status(u16, Value),
}

impl Case {
    fn body(&self, uid: &str) -> Bytes {
        Bytes::from(self.template.replacen("__UID__", uid, 1))
    }

    fn check(&self, reply: &Reply, uid: &str) -> Result<(), String> {
        let body: Value = serde_json::from_slice(&reply.body).map_err(|e| {
            format!(
                "{}: not JSON ({e}): {}",
                self.name,
                String::from_utf8_lossy(&reply.body)
            )
        })?;
        match &self.expected {
            Expected::Review(want) => {
                if reply.status != 200 {
                    return Err(format!("{}: status {}: {body}", self.name, reply.status));
                }
                let mut response = body["response"].clone();
                if response["uid"] != uid {
                    return Err(format!("{}: uid {} for {uid}", self.name, response["uid"]));
                }
                response.as_object_mut().unwrap().remove("uid");
                if body["apiVersion"] != "admission.k8s.io/v1"
                    || body["kind"] != "AdmissionReview"
                    || &response != want
                {
                    return Err(format!("{}: wrong answer {body}", self.name));
                }
            }
            Expected::Status(code, want) => {
                if reply.status != *code || &body != want {
                    return Err(format!(
                        "{}: wrong answer {} {body}",
                        self.name, reply.status
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Serialises a review with the uid replaced by a placeholder.
fn template(mut review: Value) -> String {
    review["request"]["uid"] = json!("__UID__");
    serde_json::to_string(&review).unwrap()
}

/// The mix, with expected answers taken from the server before any load or reload and
/// checked against what the tests elsewhere establish.
async fn mix(t: &Target) -> Vec<Case> {
    let mut cases = vec![
        ("istio pod, mutate", "/mutate", template(fixture(ISTIO_POD)), true),
        ("small pod, mutate", "/mutate", template(fixture(SMALL_POD)), true),
        ("violating pod, validate", "/validate", template(review(&violating_pod("web-1"))), true),
        ("deployment, validate", "/validate", template(fixture(DEPLOYMENT)), true),
        ("violating pod, audit", "/validate/audit", template(review(&violating_pod("web-2"))), true),
        ("malformed", "/validate", "{\"apiVersion\":\"admission.k8s.io/v1\",\"kind\":\"AdmissionReview\",\"request\":{\"uid\":\"__UID__\"".to_owned(), false),
    ]
    .into_iter()
    .map(|(name, path, template, _)| Case {
        name,
        path,
        template,
        expected: Expected::Status(0, Value::Null),
    })
    .collect::<Vec<_>>();
    let mut conn = t.h1().await;
    for case in &mut cases {
        let reply = conn.post(case.path, case.body("golden0000000000")).await;
        case.expected = if reply.status == 200 {
            let review = reply.review();
            let mut response = review.raw["response"].clone();
            response.as_object_mut().unwrap().remove("uid");
            Expected::Review(response)
        } else {
            Expected::Status(reply.status, reply.json())
        };
    }
    // Sanity: the golden answers are the ones the other suites pin down.
    let allowed = |i: usize| match &cases[i].expected {
        Expected::Review(r) => r["allowed"].as_bool(),
        Expected::Status(..) => None,
    };
    assert_eq!(allowed(0), Some(true));
    assert_eq!(allowed(1), Some(true));
    assert_eq!(allowed(2), Some(false));
    assert_eq!(allowed(3), Some(true));
    assert_eq!(allowed(4), Some(true));
    assert!(matches!(&cases[0].expected, Expected::Review(r) if r["patchType"] == "JSONPatch"));
    assert!(matches!(&cases[5].expected, Expected::Status(400, _)));
    cases
}

#[derive(Default, Debug)]
struct Stats {
    /// Answers received and checked.
    answered: u64,
    /// Answers that were wrong, or failures before the drain began.
    errors: Vec<String>,
    /// After SIGTERM: requests on connections the server closed before reading them.
    closed_by_drain: u64,
    /// After SIGTERM: new connections refused once the listener closed.
    refused_after_close: u64,
    /// New connections made.
    connections: u64,
}

/// One client: a connection (renewed every 50 requests, so handshakes keep happening
/// across rotations), requests from the mix in turn.
async fn client(
    id: usize,
    proto: Proto,
    t: Target,
    cases: Arc<Vec<Case>>,
    stop: Arc<AtomicBool>,
    draining: Arc<AtomicBool>,
    stats: Arc<Mutex<Stats>>,
) {
    let mut conn: Option<Conn> = None;
    for n in 0..10_000_000u64 {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        if conn
            .as_ref()
            .is_none_or(|c| c.answered >= 50 || c.is_closed())
        {
            conn = None;
            match t.try_connect(proto).await {
                Ok(c) => {
                    conn = Some(c);
                    stats.lock().unwrap().connections += 1;
                }
                Err(err) => {
                    let mut s = stats.lock().unwrap();
                    if draining.load(Ordering::SeqCst) {
                        s.refused_after_close += 1;
                        break;
                    }
                    s.errors
                        .push(format!("client {id} ({proto:?}) connect: {err}"));
                    continue;
                }
            }
        }
        let case = &cases[(id + n as usize) % cases.len()];
        // Fixed width, so that the malformed case's error (which names a column) is
        // the same for every uid.
        let uid = format!("s{id:03}-{n:011}");
        let sent = conn
            .as_mut()
            .unwrap()
            .try_send(Outgoing::json(case.path, case.body(&uid)))
            .await;
        let mut s = stats.lock().unwrap();
        match sent {
            Ok(reply) => match case.check(&reply, &uid) {
                Ok(()) => s.answered += 1,
                Err(err) => {
                    s.answered += 1;
                    s.errors.push(format!("client {id} ({proto:?}): {err}"));
                }
            },
            Err(err) => {
                conn = None;
                if draining.load(Ordering::SeqCst) {
                    s.closed_by_drain += 1;
                } else {
                    s.errors
                        .push(format!("client {id} ({proto:?}) {}: {err}", case.name));
                }
            }
        }
    }
}

fn spawn_clients(
    t: &Target,
    cases: &Arc<Vec<Case>>,
    stop: &Arc<AtomicBool>,
    draining: &Arc<AtomicBool>,
    stats: &Arc<Mutex<Stats>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..16)
        .map(|id| {
            let proto = if id % 2 == 0 { Proto::H2 } else { Proto::H1 };
            tokio::spawn(client(
                id,
                proto,
                t.clone(),
                cases.clone(),
                stop.clone(),
                draining.clone(),
                stats.clone(),
            ))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_with_rotation_reloads_and_drain() {
    let seconds: u64 = std::env::var("DHI_SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
        .max(3);
    let mut server = BinaryServer::spawn(BinaryOptions {
        policy: POLICIES[0].to_owned(),
        layout: CertLayout::Kubelet,
        reload_interval_ms: 200,
        shutdown_grace_seconds: 30,
        ..Default::default()
    })
    .await;
    let t = server.target();
    let cases = Arc::new(mix(&t).await);
    let golden_requests = cases.len() as u64;

    // ===== phase 1: load, rotations, reloads =====
    let stop = Arc::new(AtomicBool::new(false));
    let draining = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(Stats::default()));
    let started = Instant::now();
    let clients = spawn_clients(&t, &cases, &stop, &draining, &stats);

    let pid = server.pid();
    let sampler = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut samples = Vec::new();
            for _ in 0..100_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                if let Some(kib) = proc_status_kib(Some(pid), "VmRSS") {
                    samples.push(kib);
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            samples
        })
    };
    let (mut rotations, mut policy_writes, mut invalid_writes) = (0u64, 0u64, 0u64);
    let mut last_cert = server.current();
    let mut next_rotation = started + Duration::from_secs(2);
    let mut next_policy = started + Duration::from_millis(1500);
    let end = started + Duration::from_secs(seconds);
    while Instant::now() < end {
        let now = Instant::now();
        if now >= next_rotation {
            last_cert = server.rotate();
            rotations += 1;
            next_rotation += Duration::from_secs(2);
        }
        if now >= next_policy {
            policy_writes += 1;
            let policy = POLICIES[(policy_writes as usize) % POLICIES.len()];
            if policy_writes % 2 == 1 {
                invalid_writes += 1;
            }
            server.write_policy(policy);
            next_policy += Duration::from_millis(1500);
        }
        let wake = next_rotation.min(next_policy).min(end);
        tokio::time::sleep(wake.saturating_duration_since(Instant::now())).await;
    }
    // End on a valid policy, and let the last rotation be seen.
    server.write_policy(POLICIES[0]);
    let serial = serial_of_pem(&last_cert.cert_pem);
    eventually(
        "the last certificate is served",
        Duration::from_secs(30),
        Duration::from_millis(50),
        || {
            let t = t.clone();
            let serial = serial.clone();
            async move {
                t.try_connect(Proto::H1)
                    .await
                    .ok()
                    .filter(|c| c.peer_serial == serial)
                    .map(|_| ())
            }
        },
    )
    .await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        bounded("client", client).await.unwrap();
    }
    let samples = bounded("sampler", sampler).await.unwrap();
    let phase1 = std::mem::take(&mut *stats.lock().unwrap());
    let elapsed = started.elapsed();

    let metrics = t.metrics().await;
    let served = metric_sum(&metrics, "dhi_admission_requests_total") as u64;
    let reloads = |what: &str, result: &str| {
        counter(
            &metrics,
            "dhi_admission_reloads_total",
            &[("what", what), ("result", result)],
        )
    };
    println!(
        "soak phase 1: {seconds} s, {} answers ({:.0}/s) on {} connections, {} errors; {rotations} rotations, \
         {policy_writes} policy writes ({invalid_writes} invalid); reloads: certificate {}/{} ok/failed, config {}/{} ok/failed",
        phase1.answered,
        phase1.answered as f64 / elapsed.as_secs_f64(),
        phase1.connections,
        phase1.errors.len(),
        reloads("certificate", "success"),
        reloads("certificate", "failure"),
        reloads("config", "success"),
        reloads("config", "failure"),
    );
    assert!(
        phase1.errors.is_empty(),
        "{} errors, first: {:#?}",
        phase1.errors.len(),
        &phase1.errors[..phase1.errors.len().min(10)]
    );
    assert!(
        phase1.answered >= 100,
        "too little load: {}",
        phase1.answered
    );
    assert_eq!(
        served,
        phase1.answered + golden_requests,
        "requests_total must equal the answers received"
    );
    assert!(reloads("certificate", "success") >= 1.0);
    assert_eq!(reloads("certificate", "failure"), 0.0, "{metrics}");
    if invalid_writes > 0 {
        assert!(
            reloads("config", "failure") >= 1.0,
            "invalid policies are refused"
        );
    }
    assert!(reloads("config", "success") >= 1.0 || policy_writes < 2);

    // Resident set: no growth trend once warmed up.
    println!("soak VmRSS samples (KiB, 1/s): {samples:?}");
    let warm: Vec<u64> = samples.iter().copied().skip(samples.len() / 4).collect();
    if warm.len() >= 3 {
        let third = warm.len() / 3;
        let first = *warm[..third.max(1)].iter().max().unwrap();
        let last = *warm[warm.len() - third.max(1)..].iter().max().unwrap();
        assert!(
            last <= first + first / 4 + 16 * 1024,
            "RSS grew from {first} KiB to {last} KiB: {samples:?}"
        );
    }
    let peak = server.peak_rss_kib().unwrap_or(0);

    // ===== phase 2: SIGTERM under load =====
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Mutex::new(Stats::default()));
    let clients = spawn_clients(&t, &cases, &stop, &draining, &stats);
    tokio::time::sleep(Duration::from_secs(1)).await; // load running
    // Requests in flight when the signal arrives: headers and half the body sent.
    let mut in_flight = Vec::new();
    for i in 0..4 {
        let mut review = fixture(ISTIO_POD);
        set_uid(&mut review, &format!("in-flight-{i}"));
        let body = serde_json::to_vec(&review).unwrap();
        let mut tls = t.tls(&[b"http/1.1"]).await.unwrap();
        let head = raw_post_start("/mutate", body.len(), &body[..body.len() / 2]);
        tls.write_all(&head).await.unwrap();
        tls.flush().await.unwrap();
        in_flight.push((tls, body));
    }
    tokio::time::sleep(Duration::from_millis(300)).await; // nothing to poll: let them arrive
    draining.store(true, Ordering::SeqCst);
    server.sigterm();
    // Clients run into the closed listener and stop by themselves; bound it anyway.
    let deadline = Instant::now() + Duration::from_secs(20);
    for client in &clients {
        while !client.is_finished() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        bounded("client", client).await.unwrap();
    }
    let phase2 = std::mem::take(&mut *stats.lock().unwrap());
    // The server is still draining (the in-flight requests hold it): its count now must
    // equal every answer the clients got. A request the server read but whose answer
    // was lost would make it larger.
    let (status, readyz) = t.get_metrics_port("/readyz").await;
    assert_eq!((status, readyz.as_str()), (503, "not ready\n"));
    let metrics = t.metrics().await;
    let served = metric_sum(&metrics, "dhi_admission_requests_total") as u64;
    assert_eq!(
        served,
        golden_requests + phase1.answered + phase2.answered,
        "every request the server answered reached its client"
    );
    // The in-flight requests complete, with `connection: close`.
    for (i, (mut tls, body)) in in_flight.into_iter().enumerate() {
        tls.write_all(&body[body.len() / 2..]).await.unwrap();
        tls.flush().await.unwrap();
        let answer = read_response(&mut tls).await.unwrap();
        assert_eq!(answer.status, 200, "in-flight {i}");
        assert_eq!(answer.header("connection"), Some("close"), "in-flight {i}");
        let review = answer.to_reply().review();
        assert_eq!(review.uid, format!("in-flight-{i}"));
        assert_eq!(review.patch_type.as_deref(), Some("JSONPatch"));
    }
    let exit = server
        .wait_exit(Duration::from_secs(40))
        .await
        .expect("the server exits after draining");
    assert!(
        exit.success(),
        "exit status {exit:?}; log:\n{}",
        server.log()
    );
    println!(
        "soak phase 2 (SIGTERM under load): {} answers, {} requests on connections closed by the drain, \
         {} connections refused after the listener closed, {} errors; 4/4 in-flight requests completed",
        phase2.answered,
        phase2.closed_by_drain,
        phase2.refused_after_close,
        phase2.errors.len()
    );
    assert!(phase2.errors.is_empty(), "{:#?}", phase2.errors);
    println!(
        "soak: requests served {}, errors 0, peak RSS {peak} KiB ({:.1} MiB)",
        golden_requests + phase1.answered + phase2.answered + 4,
        peak as f64 / 1024.0
    );
}

/// Idle HTTP/2 connections whose client answers the server's pings, and pings on its
/// own, are closed at the idle timeout: pings are not requests. With
/// `DHI_IDLE_SOAK=1` it runs with the production timeouts (the binary's defaults:
/// idle 120 s, server pings every 30 s; about 2.5 minutes), by default with a 3 s
/// idle timeout (pings every 750 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_answering_pings_are_closed() {
    let production = std::env::var_os("DHI_IDLE_SOAK").is_some();
    let (idle, ping_every, extra_args) = if production {
        (
            Duration::from_secs(120),
            Duration::from_secs(10),
            Vec::new(),
        )
    } else {
        (
            Duration::from_secs(3),
            Duration::from_millis(200),
            vec!["--idle-timeout-seconds".to_owned(), "3".to_owned()],
        )
    };
    let server = BinaryServer::spawn(BinaryOptions {
        extra_args,
        ..Default::default()
    })
    .await;
    let t = server.target();
    // Each connection's idle time counts from the end of its own request.
    let mut conns = Vec::new();
    for _ in 0..20 {
        let mut conn = t.h2_pinging(ping_every).await;
        conn.assert_allowed("/validate", fixture_bytes(SMALL_POD))
            .await;
        conns.push((conn, Instant::now()));
    }
    let since = Instant::now();
    let mut closed_after: Vec<Option<Duration>> = vec![None; conns.len()];
    while closed_after.iter().any(Option::is_none)
        && since.elapsed() < idle + Duration::from_secs(60)
    {
        for ((conn, idle_from), closed) in conns.iter().zip(closed_after.iter_mut()) {
            if closed.is_none() && conn.is_closed() {
                *closed = Some(idle_from.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let closed: Vec<Duration> = closed_after
        .iter()
        .map(|c| {
            c.expect("an idle HTTP/2 connection answering pings outlived the idle timeout by 60 s")
        })
        .collect();
    let first = *closed.iter().min().unwrap();
    let last = *closed.iter().max().unwrap();
    println!(
        "20 idle HTTP/2 connections answering pings (client pings every {ping_every:?}): \
         closed between {first:?} and {last:?} after their last request (idle timeout {idle:?})"
    );
    assert!(first >= idle - Duration::from_millis(100), "{first:?}");
    assert!(last <= idle + Duration::from_secs(5), "{last:?}");
    let m = t.metrics().await;
    assert_counter(
        &m,
        "dhi_admission_connections_closed_total",
        &[("reason", "idle")],
        20.0,
    );
    t.assert_allowed("/validate", fixture_bytes(SMALL_POD))
        .await;
}
