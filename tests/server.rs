//! The server over real TLS: the admission protocol over HTTP/1.1 keep-alive and HTTP/2,
//! error answers on a live connection, bodies over the limit, certificate and policy reloads under
//! traffic, metrics, connection timeouts, and SIGTERM draining of the real binary.

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::expect::*;
use common::*;
use dhi_admission::config::Limits;
use http::Method;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

// ===== the admission protocol =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutate_istio_pod_returns_the_exact_patch_over_both_protocols() {
    let server = TestServer::start().await;
    let t = server.target();
    let raw = fixture_bytes(ISTIO_POD);
    let object = fixture(ISTIO_POD)["request"]["object"].clone();
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = t.connect(proto).await;
        // The fixture as stored (pretty-printed), then compact as the API server sends it.
        for bytes in [raw.clone(), fixture_compact(ISTIO_POD)] {
            let review = conn.post("/mutate", bytes).await.review();
            assert_eq!(review.uid, "4f1c3a52-8e0d-4b7a-9c65-2d7e1f0b9a13");
            assert!(review.allowed);
            assert!(review.status.is_none(), "{}", review.raw);
            assert_eq!(review.patch_type.as_deref(), Some("JSONPatch"));
            assert_eq!(review.patch.as_ref(), Some(&istio_patch()), "{proto:?}");
            assert_eq!(review.warnings, vec![ISTIO_INIT_SKIPPED.to_owned()]);
            assert!(review.audit_annotations.is_empty());

            // What kube-apiserver does next: apply the patch, then (reinvocationPolicy:
            // IfNeeded) call the webhook again with the patched object.
            let patched = apply_patch(&object, review.patch.as_ref().unwrap());
            assert_eq!(
                patched["spec"]["containers"][1]["image"],
                "dhi.io/istio-proxyv2:1.30.3"
            );
            assert_eq!(
                patched["spec"]["initContainers"][0]["image"],
                "docker.io/istio/proxyv2:1.30.3"
            );
            let mut again = fixture(ISTIO_POD);
            again["request"]["object"] = patched.clone();
            set_uid(&mut again, "reinvocation-1");
            let second = conn.post_json("/mutate", &again).await.review();
            assert_eq!(second.uid, "reinvocation-1");
            assert!(second.allowed);
            assert_eq!(second.patch, None, "a patched object needs no second patch");
            assert_eq!(second.patch_type, None);
            assert_eq!(second.warnings, vec![ISTIO_INIT_SKIPPED.to_owned()]);

            // The patched pod also passes validation.
            let mut validate = fixture(ISTIO_POD);
            validate["request"]["object"] = patched;
            let verdict = conn.post_json("/validate", &validate).await.review();
            assert!(verdict.allowed && verdict.status.is_none() && verdict.warnings.is_empty());
        }
        assert!(!conn.is_closed());
        assert_eq!(conn.answered, 6);
    }
    server.shutdown().await.unwrap();
}

// ===== connections =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_and_http2_multiplexing() {
    let server = TestServer::start().await;
    let t = server.target();

    // HTTP/1.1: twenty requests on one connection, every endpoint.
    let mut h1 = t.h1().await;
    for i in 0..20 {
        let path = ["/mutate", "/validate", "/mutate/audit", "/validate/audit"][i % 4];
        let mut r = fixture(SMALL_POD);
        set_uid(&mut r, &format!("keepalive-{i}"));
        let answer = h1.post_json(path, &r).await;
        assert_eq!(
            answer.header("connection"),
            None,
            "no close on a kept-alive connection"
        );
        assert_eq!(answer.review().uid, format!("keepalive-{i}"));
    }
    assert_eq!(h1.answered, 20);
    assert!(!h1.is_closed());

    // HTTP/2: fifty concurrent streams on one connection, each answer matched by uid.
    let h2 = t.h2().await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let mut stream = h2.stream();
        tasks.push(tokio::spawn(async move {
            let mut r = if i % 2 == 0 {
                fixture(ISTIO_POD)
            } else {
                review(&violating_pod("web-1"))
            };
            let uid = format!("stream-{i}");
            set_uid(&mut r, &uid);
            let path = if i % 2 == 0 { "/mutate" } else { "/validate" };
            let answer = stream.post_json(path, &r).await.review();
            assert_eq!(answer.uid, uid);
            if i % 2 == 0 {
                assert_eq!(answer.patch, Some(istio_patch()));
            } else {
                assert_denied(&answer, "Pod web-1", VIOLATIONS);
            }
        }));
    }
    for task in tasks {
        bounded("stream", task).await.unwrap();
    }
    assert!(!h2.is_closed());
    assert_eq!(h2.tls_version, Some(rustls::ProtocolVersion::TLSv1_3));
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_survive_a_few_seconds() {
    let server = TestServer::start().await; // idle timeout 120 s (the default)
    let t = server.target();
    let mut h1 = t.h1().await;
    let mut h2 = t.h2().await;
    for conn in [&mut h1, &mut h2] {
        conn.post("/validate", fixture_bytes(SMALL_POD))
            .await
            .review();
    }
    // Waiting is the point here: nothing to poll.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for conn in [&mut h1, &mut h2] {
        assert!(
            !conn.is_closed(),
            "{:?} connection closed while idle 4 s",
            conn.proto
        );
        let r = conn
            .post("/validate", fixture_bytes(SMALL_POD))
            .await
            .review();
        assert!(r.allowed);
    }
    server.shutdown().await.unwrap();
}

fn short_limits() -> Limits {
    Limits {
        handshake_timeout: Duration::from_secs(2),
        idle_timeout: Duration::from_secs(2),
        ..test_limits()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_keep_alive_connections() {
    let server = TestServer::start_with_limits(short_limits()).await;
    let t = server.target();
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = t.connect(proto).await;
        conn.post("/validate", fixture_bytes(SMALL_POD))
            .await
            .review();
        let idle_since = Instant::now();
        assert!(
            conn.wait_closed(Duration::from_secs(20)).await,
            "{proto:?}: idle connection still open after 20 s"
        );
        let idle = idle_since.elapsed();
        // Timers never fire early: the connection lived at least most of its idle timeout.
        assert!(
            idle >= Duration::from_millis(1500),
            "{proto:?}: closed after only {idle:?}"
        );
        println!("{proto:?} idle connection closed after {idle:?} (idle_timeout 2 s)");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_connections_are_closed_after_the_handshake_timeout() {
    let server = TestServer::start_with_limits(short_limits()).await;
    let t = server.target();
    // TLS completed, then nothing.
    let mut tls = t.tls(&[b"http/1.1"]).await.unwrap();
    let started = Instant::now();
    let ending = read_until_closed(&mut tls, Duration::from_secs(20)).await;
    assert!(
        ending.closed(),
        "silent TLS connection still open: {ending:?}"
    );
    assert!(
        ending.bytes().is_empty(),
        "nothing is sent to a silent client: {ending:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "closed after {:?}",
        started.elapsed()
    );
    // TCP connected, no ClientHello.
    let mut tcp = tokio::net::TcpStream::connect(t.addr).await.unwrap();
    let started = Instant::now();
    let ending = read_until_closed(&mut tcp, Duration::from_secs(20)).await;
    assert!(
        ending.closed(),
        "silent TCP connection still open: {ending:?}"
    );
    assert!(started.elapsed() >= Duration::from_millis(700));
    // And the server still serves.
    t.assert_allowed("/validate", fixture_bytes(SMALL_POD))
        .await;
    server.shutdown().await.unwrap();
}

/// Idle is "no request in flight": pings both ways are not activity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_answering_pings_close_at_the_idle_timeout() {
    // Idle 2 s: the server pings every 500 ms.
    let server = TestServer::start_with_limits(short_limits()).await;
    let t = server.target();
    // The client answers the server's pings and sends its own every 100 ms.
    let mut idle = t.h2_pinging(Duration::from_millis(100)).await;
    idle.assert_allowed("/validate", fixture_bytes(SMALL_POD))
        .await;
    let idle_since = Instant::now();
    let watcher = tokio::spawn(async move {
        while !idle.is_closed() && idle_since.elapsed() < Duration::from_secs(20) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        idle.is_closed().then(|| idle_since.elapsed())
    });
    // Meanwhile a connection that keeps sending requests is kept past the idle timeout.
    let mut busy = t.h2_pinging(Duration::from_millis(100)).await;
    let mut answered = 0;
    while idle_since.elapsed() < Duration::from_secs(4) {
        busy.assert_allowed("/validate", fixture_bytes(SMALL_POD))
            .await;
        answered += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!busy.is_closed(), "a connection with requests is not idle");
    let lived = watcher
        .await
        .unwrap()
        .expect("an idle HTTP/2 connection answering pings is still open");
    println!(
        "pinging idle HTTP/2 connection closed after {lived:?} (idle_timeout 2 s); \
         the busy one answered {answered} requests in 4 s"
    );
    assert!(lived >= Duration::from_millis(1500), "{lived:?}");
    assert!(lived < Duration::from_millis(3500), "{lived:?}");
    let m = t.metrics().await;
    assert!(
        counter(
            &m,
            "dhi_admission_connections_closed_total",
            &[("reason", "idle")]
        ) >= 1.0,
        "{m}"
    );
    server.shutdown().await.unwrap();
}

/// Headers get their own timeout, shorter than the idle one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_headers_on_a_kept_alive_connection_are_cut_at_the_header_timeout() {
    let server = TestServer::with_limits(|l| {
        l.header_timeout = Duration::from_secs(1);
        l.idle_timeout = Duration::from_secs(30);
    })
    .await;
    let t = server.target();
    let mut tls = t.tls(&[b"http/1.1"]).await.unwrap();
    let answer = exchange(
        &mut tls,
        &raw_post("/validate", &fixture_compact(SMALL_POD)),
    )
    .await
    .unwrap();
    assert!(answer.to_reply().review().allowed);
    // Idle for longer than the header timeout: still open.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let answer = exchange(
        &mut tls,
        &raw_post("/validate", &fixture_compact(SMALL_POD)),
    )
    .await
    .unwrap();
    assert!(
        answer.to_reply().review().allowed,
        "idle is not a header timeout"
    );
    // Half a head, then nothing: cut at the header timeout, long before the idle one.
    tls.write_all(b"POST /validate HTTP/1.1\r\nhost: localhost\r\n")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let started = Instant::now();
    let ending = read_until_closed(&mut tls, Duration::from_secs(20)).await;
    let cut = started.elapsed();
    assert!(ending.closed(), "{ending:?}");
    println!("half a request head cut after {cut:?} (header_timeout 1 s, idle_timeout 30 s)");
    assert!(
        cut >= Duration::from_millis(800) && cut < Duration::from_secs(5),
        "{cut:?}"
    );
    eventually(
        "the header timeout is counted",
        Duration::from_secs(10),
        Duration::from_millis(50),
        || {
            let t = t.clone();
            async move {
                let m = t.metrics().await;
                (counter(
                    &m,
                    "dhi_admission_connections_closed_total",
                    &[("reason", "header_timeout")],
                ) == 1.0)
                    .then_some(())
            }
        },
    )
    .await;
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_past_their_maximum_age_close_gracefully() {
    let server = TestServer::with_limits(|l| {
        l.max_connection_age = Duration::from_secs(2);
    })
    .await;
    let t = server.target();

    // HTTP/2, busy all along: GOAWAY at 1.8-2 s. Every request sent is answered; the
    // ones after the GOAWAY are refused by the client before they leave.
    let h2 = t.h2().await;
    let born = Instant::now();
    let mut answered = 0;
    let mut refused = None;
    while born.elapsed() < Duration::from_secs(10) {
        let mut stream = h2.stream();
        let mut r = fixture(SMALL_POD);
        set_uid(&mut r, &format!("age-{answered}"));
        match stream.try_send(Outgoing::json("/validate", body(&r))).await {
            Ok(reply) => {
                assert_eq!(reply.review().uid, format!("age-{answered}"));
                answered += 1;
            }
            Err(err) => {
                refused = Some((born.elapsed(), err));
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (at, err) = refused.expect("the connection outlived its maximum age");
    println!("HTTP/2 connection refused new streams after {at:?} ({err}), {answered} answered");
    // The server counts the age from the accept, before the handshakes.
    assert!(
        at >= Duration::from_millis(1300) && at < Duration::from_secs(5),
        "{at:?}"
    );
    assert!(h2.wait_closed(Duration::from_secs(10)).await);

    // HTTP/1.1 with a request in flight at the limit: answered, with `Connection: close`.
    let request = fixture_compact(SMALL_POD);
    let (first, second) = request.split_at(request.len() / 2);
    let mut tls = t.tls(&[b"http/1.1"]).await.unwrap();
    let head = raw_post_start("/validate", request.len(), first);
    tls.write_all(&head).await.unwrap();
    tls.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    tls.write_all(second).await.unwrap();
    tls.flush().await.unwrap();
    let answer = read_response(&mut tls).await.unwrap();
    assert_eq!(answer.header("connection"), Some("close"));
    assert!(answer.to_reply().review().allowed);
    let ending = read_until_closed(&mut tls, Duration::from_secs(10)).await;
    assert!(ending.closed() && ending.bytes().is_empty(), "{ending:?}");

    let m = t.metrics().await;
    assert_counter(
        &m,
        "dhi_admission_connections_closed_total",
        &[("reason", "max_age")],
        2.0,
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_the_longest_idle_connection_is_evicted() {
    let server = TestServer::with_limits(|l| {
        l.max_connections = 8;
    })
    .await;
    let t = server.target();
    // Eight connections, used in order: the first is the longest idle.
    let mut conns = Vec::new();
    for i in 0..8 {
        let mut conn = t
            .connect(if i % 2 == 0 { Proto::H2 } else { Proto::H1 })
            .await;
        conn.assert_allowed("/validate", fixture_bytes(SMALL_POD))
            .await;
        conns.push(conn);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A ninth is admitted and served at once; the first one goes.
    let started = Instant::now();
    let mut ninth = t.h1().await;
    ninth
        .assert_allowed("/validate", fixture_bytes(SMALL_POD))
        .await;
    println!(
        "ninth connection served in {:?} at the cap of 8",
        started.elapsed()
    );
    assert!(
        conns[0].wait_closed(Duration::from_secs(10)).await,
        "longest idle kept"
    );
    for (i, conn) in conns.iter_mut().enumerate().skip(1) {
        assert!(!conn.is_closed(), "connection {i} closed");
        conn.assert_allowed("/validate", fixture_bytes(SMALL_POD))
            .await;
    }
    // Now the ninth is the longest idle: a tenth evicts it.
    t.assert_allowed("/validate", fixture_bytes(SMALL_POD))
        .await;
    assert!(ninth.wait_closed(Duration::from_secs(10)).await);
    let m = t.metrics().await;
    assert_counter(
        &m,
        "dhi_admission_connections_closed_total",
        &[("reason", "evicted")],
        2.0,
    );
    server.shutdown().await.unwrap();
}

/// A client certificate signed by a new `--client-ca` is accepted once the file
/// changes, and the old CA's certificates are refused from then on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_ca_is_reloaded() {
    let (ca1, cert1, key1) = generate_client_ca_and_cert("first");
    let (ca2, cert2, key2) = generate_client_ca_and_cert("second");
    let server = TestServer::start_with(ServerOptions {
        client_ca: Some(ca1),
        ..Default::default()
    })
    .await;
    let t = server.target();
    let h1 = [Proto::H1.alpn()];
    let with_first = server.trust.client_config_with_cert(&h1, &cert1, &key1);
    let with_second = server.trust.client_config_with_cert(&h1, &cert2, &key2);
    let served = |config: Arc<rustls::ClientConfig>| {
        let t = t.clone();
        async move {
            match t.try_connect_with(Proto::H1, config, None).await {
                Ok(mut conn) => conn
                    .try_send(Outgoing::json("/validate", fixture_bytes(SMALL_POD)))
                    .await
                    .is_ok_and(|reply| reply.status == 200),
                Err(_) => false,
            }
        }
    };
    assert!(served(with_first.clone()).await);
    assert!(!served(with_second.clone()).await);
    assert!(
        !served(server.trust.client_config(&h1)).await,
        "no certificate"
    );
    // An unusable file is refused; the first CA stays.
    write_atomic(&server.client_ca_path(), b"not a certificate");
    eventually(
        "the broken CA is refused",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let t = t.clone();
            async move {
                let m = t.metrics().await;
                (counter(
                    &m,
                    "dhi_admission_reloads_total",
                    &[("what", "client_ca"), ("result", "failure")],
                ) == 1.0)
                    .then_some(())
            }
        },
    )
    .await;
    assert!(served(with_first.clone()).await);
    // The second CA.
    write_atomic(&server.client_ca_path(), ca2.as_bytes());
    eventually(
        "the second CA is in force",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || {
            let served = served(with_second.clone());
            async move { served.await.then_some(()) }
        },
    )
    .await;
    assert!(
        !served(with_first).await,
        "the old CA's certificate is refused"
    );
    let m = t.metrics().await;
    assert_counter(
        &m,
        "dhi_admission_reloads_total",
        &[("what", "client_ca"), ("result", "success")],
        1.0,
    );
    server.shutdown().await.unwrap();
}

// ===== bad input =====

/// Every status code is asserted in `tests/router.rs`; here, over TLS, that an error
/// answer leaves the keep-alive connection usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_answers_keep_the_connection_open() {
    let server = TestServer::start().await;
    let t = server.target();
    for proto in [Proto::H1, Proto::H2] {
        let mut conn = t.connect(proto).await;
        let small = fixture_bytes(SMALL_POD);
        let mut truncated = fixture_compact(SMALL_POD);
        truncated.truncate(truncated.len() / 2);
        conn.post("/validate", truncated).await.status_doc(400);
        conn.send(Method::POST, "/validate", Some("text/plain"), small.clone())
            .await
            .status_doc(415);
        conn.send(Method::GET, "/validate", Some(JSON), small.clone())
            .await
            .status_doc(405);
        conn.post("/nope", small.clone()).await.status_doc(404);
        assert!(!conn.is_closed(), "{proto:?}");
        conn.assert_allowed("/validate", small).await;
        assert_eq!(conn.answered, 5, "{proto:?}: all on one connection");
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_get_413() {
    let server = TestServer::with_limits(|l| {
        l.max_body = 4096;
    })
    .await;
    let t = server.target();
    let too_large = "request body larger than 4096 bytes";

    // Over the limit with Content-Length, on HTTP/1.1 and HTTP/2.
    let mut big = review(&low_port_pod("web"));
    big["request"]["object"]["metadata"]["annotations"] = json!({"a": "x".repeat(5000)});
    for proto in [Proto::H1, Proto::H2] {
        let doc = t
            .connect(proto)
            .await
            .post_json("/validate", &big)
            .await
            .status_doc(413);
        assert_eq!(doc["reason"], "RequestEntityTooLarge");
        assert_eq!(doc["message"], too_large);
    }
    // Exactly at the limit is fine: pad a review to 4096 bytes.
    let mut exact = review(&low_port_pod("web"));
    let base = body(&exact).len();
    exact["request"]["object"]["metadata"]["annotations"] = json!({"a": ""});
    let pad = 4096 - body(&exact).len();
    exact["request"]["object"]["metadata"]["annotations"]["a"] = json!("x".repeat(pad));
    assert_eq!(body(&exact).len(), 4096, "base {base}");
    assert!(!t.post_json("/validate", &exact).await.review().allowed);

    // A declared length over the limit is refused before the body is sent.
    let mut tls = t.tls(&[b"http/1.1"]).await.unwrap();
    let head = raw_request(
        "POST",
        "/validate",
        &[
            ("content-type", JSON.to_owned()),
            ("content-length", "10000000".to_owned()),
        ],
        b"",
    );
    let answer = exchange(&mut tls, &head).await.unwrap();
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["message"], too_large);

    // With `Expect: 100-continue` the client never gets a 100: the refusal comes first.
    let mut tls = t.tls(&[b"http/1.1"]).await.unwrap();
    let head = raw_request(
        "POST",
        "/validate",
        &[
            ("content-type", JSON.to_owned()),
            ("content-length", "10000000".to_owned()),
            ("expect", "100-continue".to_owned()),
        ],
        b"",
    );
    let answer = exchange(&mut tls, &head).await.unwrap();
    assert_eq!(answer.status, 413);

    // Chunked, no length announced: cut off once the limit is passed.
    let mut tls = t.tls(&[b"http/1.1"]).await.unwrap();
    let mut request = raw_request(
        "POST",
        "/validate",
        &[
            ("content-type", JSON.to_owned()),
            ("transfer-encoding", "chunked".to_owned()),
        ],
        b"",
    );
    for _ in 0..3 {
        request.extend_from_slice(format!("{:x}\r\n{}\r\n", 2000, "x".repeat(2000)).as_bytes());
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let answer = exchange(&mut tls, &request).await.unwrap();
    assert_eq!(answer.status, 413);
    assert_eq!(answer.json()["message"], too_large);

    let metrics = t.metrics().await;
    let errors = counter(
        &metrics,
        "dhi_admission_requests_total",
        &[
            ("webhook", "validate"),
            ("kind", "unknown"),
            ("operation", "unknown"),
            ("mode", "enforce"),
            ("decision", "error"),
        ],
    );
    assert_eq!(errors, 5.0, "{metrics}");
    server.shutdown().await.unwrap();
}

/// Past the budget of body bytes held at once, a request waits briefly, then gets a
/// fast 503 without its body being read; small reviews keep their share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_body_budget_requests_are_shed_with_503() {
    // Large bodies may hold 6 MiB of the budget.
    let server = TestServer::with_limits(|l| {
        l.body_budget = 8 << 20;
        l.body_budget_wait = Duration::from_millis(200);
    })
    .await;
    let t = server.target();
    // A slow 4 MiB upload holds 4 MiB of the budget.
    let mut slow = t.tls(&[b"http/1.1"]).await.unwrap();
    let head = raw_post_start("/validate", 4 << 20, b"{\"apiVersion\": ");
    slow.write_all(&head).await.unwrap();
    slow.flush().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Another 4 MiB announced, no byte of body sent: 503 after the short wait.
    let mut tls = t.tls(&[b"http/1.1"]).await.unwrap();
    let head = raw_post_start("/validate", 4 << 20, b"");
    let started = Instant::now();
    let answer = exchange(&mut tls, &head).await.unwrap();
    let waited = started.elapsed();
    let doc = answer.to_reply().status_doc(503);
    assert_eq!(doc["reason"], "ServiceUnavailable");
    let message = doc["message"].as_str().unwrap();
    assert!(
        message.starts_with("server busy: no room within 200ms in the budget of 8388608 bytes"),
        "{message}"
    );
    assert!(message.contains("the body was not read"), "{message}");
    println!("shed after {waited:?}: {message}");
    assert!(
        waited >= Duration::from_millis(150) && waited < Duration::from_secs(3),
        "{waited:?}"
    );

    // Over HTTP/2, a 3 MiB body: shed as well.
    let mut big = review(&pod(
        "big",
        "default",
        vec![container("web", "dhi.io/nginx:1.31")],
    ));
    big["request"]["object"]["metadata"]["annotations"] = json!({"a": "x".repeat(3 << 20)});
    let reply = t.h2().await.post_json("/validate", &big).await;
    reply.status_doc(503);

    // A normal review still fits in the share kept for small bodies, and is quick.
    let started = Instant::now();
    t.assert_allowed("/validate", fixture_bytes(SMALL_POD))
        .await;
    println!(
        "small review answered in {:?} while the budget is held",
        started.elapsed()
    );

    let m = t.metrics().await;
    assert_counter(
        &m,
        "dhi_admission_requests_shed_total",
        &[("reason", "body_memory")],
        2.0,
    );
    // The slow upload gives up: its room is freed and a large body is served again.
    drop(slow);
    eventually(
        "room for a 3 MiB body again",
        Duration::from_secs(20),
        Duration::from_millis(100),
        || {
            let t = t.clone();
            let big = big.clone();
            async move {
                let reply = t.h2().await.post_json("/validate", &big).await;
                (reply.status == 200).then(|| reply.review())
            }
        },
    )
    .await;
    server.shutdown().await.unwrap();
}

// ===== reloads =====

/// A validate request for the small pod and a check of its answer, without panicking.
async fn probe(conn: &mut Conn, n: u64) -> Result<(), String> {
    let mut r = fixture(SMALL_POD);
    let uid = format!("probe-{n}");
    set_uid(&mut r, &uid);
    let reply = conn.try_send(Outgoing::json("/validate", body(&r))).await?;
    if reply.status != 200 {
        return Err(format!(
            "status {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        ));
    }
    let v: Value = serde_json::from_slice(&reply.body).map_err(|e| e.to_string())?;
    if v["response"]["uid"] != uid.as_str() || v["response"]["allowed"] != true {
        return Err(format!("wrong answer: {v}"));
    }
    Ok(())
}

async fn rotation_under_traffic(layout: CertLayout) {
    let server = TestServer::start_with(ServerOptions {
        layout,
        reload_interval: Duration::from_millis(100),
        ..Default::default()
    })
    .await;
    let t = server.target();
    let initial = serial_of_pem(&server.current().cert_pem);
    let stop = Arc::new(AtomicBool::new(false));

    // New connections, alternating HTTP/1.1 and HTTP/2, one request each.
    let fresh = {
        let (t, stop) = (t.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failures, mut serials) = (0u64, Vec::new(), BTreeSet::new());
            for i in 0..100_000u64 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let proto = if i % 2 == 0 { Proto::H1 } else { Proto::H2 };
                match t.try_connect(proto).await {
                    Ok(mut conn) => {
                        serials.insert(conn.peer_serial.clone());
                        match probe(&mut conn, i).await {
                            Ok(()) => ok += 1,
                            Err(err) => failures.push(format!("new {proto:?} #{i}: {err}")),
                        }
                    }
                    Err(err) => failures.push(format!("connect {proto:?} #{i}: {err}")),
                }
            }
            (ok, failures, serials)
        })
    };
    // Kept-alive connections opened before the first rotation.
    let kept = {
        let (t, stop) = (t.clone(), stop.clone());
        tokio::spawn(async move {
            let mut conns = [t.h1().await, t.h2().await];
            let (mut ok, mut failures) = (0u64, Vec::new());
            for i in 0..100_000u64 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let conn = &mut conns[(i % 2) as usize];
                match probe(conn, 1_000_000 + i).await {
                    Ok(()) => ok += 1,
                    Err(err) => failures.push(format!("kept {:?} #{i}: {err}", conn.proto)),
                }
            }
            let open = conns.iter().all(|c| !c.is_closed());
            (ok, failures, open, conns[0].peer_serial.clone())
        })
    };

    let mut rotated = Vec::new();
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        rotated.push(server.rotate());
    }
    // Let the last one be picked up under traffic too.
    let last = rotated.last().unwrap().clone();
    let last_serial = serial_of_pem(&last.cert_pem);
    t.until_served("a new connection sees the last certificate", &last_serial)
        .await;
    stop.store(true, Ordering::SeqCst);
    let (fresh_ok, fresh_failures, serials) = bounded("fresh loop", fresh).await.unwrap();
    let (kept_ok, kept_failures, kept_open, kept_serial) =
        bounded("kept loop", kept).await.unwrap();
    println!(
        "{layout:?}: {fresh_ok} requests on new connections ({} certificates seen), {kept_ok} on kept-alive ones",
        serials.len()
    );
    assert!(fresh_failures.is_empty(), "{fresh_failures:#?}");
    assert!(kept_failures.is_empty(), "{kept_failures:#?}");
    assert!(
        fresh_ok >= 10 && kept_ok >= 10,
        "too little traffic: {fresh_ok} / {kept_ok}"
    );
    assert!(kept_open, "kept-alive connections survive rotation");
    assert_eq!(
        kept_serial, initial,
        "an open connection keeps the certificate it was opened with"
    );
    let known: BTreeSet<Vec<u8>> = std::iter::once(initial.clone())
        .chain(rotated.iter().map(|c| serial_of_pem(&c.cert_pem)))
        .collect();
    assert!(
        serials.is_subset(&known),
        "only certificates we installed were served"
    );
    assert!(
        serials.len() >= 2,
        "new connections saw the rotation: {} serial(s)",
        serials.len()
    );

    let metrics = t.metrics().await;
    let reloaded = counter(
        &metrics,
        "dhi_admission_reloads_total",
        &[("what", "certificate"), ("result", "success")],
    );
    assert!(
        (1.0..=8.0).contains(&reloaded),
        "{reloaded} reloads for 8 rotations"
    );
    assert_counter(
        &metrics,
        "dhi_admission_reloads_total",
        &[("what", "certificate"), ("result", "failure")],
        0.0,
    );
    assert_eq!(
        metric(
            &metrics,
            "dhi_admission_tls_cert_expiry_timestamp_seconds",
            &[]
        ),
        Some(not_after_of_pem(&last.cert_pem) as f64),
        "the expiry gauge follows the served certificate"
    );
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_traffic_by_rename() {
    rotation_under_traffic(CertLayout::Files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_rotation_under_traffic_by_kubelet_symlink_swap() {
    rotation_under_traffic(CertLayout::Kubelet).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiry_gauge_follows_a_pair_written_in_two_steps() {
    // The key lands first; the reloader sees a mismatched pair, waits, and reads again
    // once the certificate has landed too. The gauge must describe what is served.
    let server = TestServer::start().await;
    let t = server.target();
    for _ in 0..3 {
        let next = generate_certs(90 + rand_days());
        server.trust.add_ca_pem(&next.ca_cert_pem);
        write_atomic(&server.key_path, next.key_pem.as_bytes());
        tokio::time::sleep(Duration::from_millis(150)).await; // inside the reloader's retry window
        write_atomic(&server.cert_path, next.cert_pem.as_bytes());
        let serial = serial_of_pem(&next.cert_pem);
        t.until_served("the new pair is served", &serial).await;
        let metrics = t.metrics().await;
        assert_eq!(
            metric(
                &metrics,
                "dhi_admission_tls_cert_expiry_timestamp_seconds",
                &[]
            ),
            Some(not_after_of_pem(&next.cert_pem) as f64),
            "the gauge shows the served certificate's notAfter"
        );
    }
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_made_while_the_server_starts_are_not_missed() {
    // Between `Server::bind` (which loads certificate and policy) and the reloader's
    // first poll, kubelet may swap the Secret or the ConfigMap. The reloader must
    // compare with what was loaded, not with what it finds when it starts.
    let mut server = TestServer::start_with(ServerOptions {
        hold_serve: true,
        ..Default::default()
    })
    .await;
    let next = server.rotate();
    server.write_policy("rules:\n  privileged-port: warn\n");
    server.release();
    let t = server.target();
    let serial = serial_of_pem(&next.cert_pem);
    t.until_served("the certificate written during startup is served", &serial)
        .await;
    t.until_allowed(
        "the policy written during startup applies",
        "/validate",
        &review(&low_port_pod("web")),
    )
    .await;
    server.shutdown().await.unwrap();
}

/// 0..=9 days, different from call to call.
fn rand_days() -> u64 {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(3, Ordering::Relaxed) % 10
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_certificate_pairs_are_refused() {
    let server = TestServer::start_with(ServerOptions {
        layout: CertLayout::Kubelet,
        ..Default::default()
    })
    .await;
    let t = server.target();
    let original = server.current();
    let serial = serial_of_pem(&original.cert_pem);
    let reloads = |what: &'static str, result: &'static str| {
        let t = t.clone();
        async move {
            counter(
                &t.metrics().await,
                "dhi_admission_reloads_total",
                &[("what", what), ("result", result)],
            )
        }
    };

    // Certificate of one pair, key of another.
    let a = generate_certs(30);
    let b = generate_certs(30);
    server.trust.add_ca_pem(&a.ca_cert_pem);
    server.write_pems(a.cert_pem.as_bytes(), b.key_pem.as_bytes());
    eventually(
        "the mismatched pair is counted as a failure",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { (reloads("certificate", "failure").await == 1.0).then_some(()) },
    )
    .await;
    // Counted once, however many times it is seen; the old certificate stays.
    for _ in 0..10 {
        let mut conn = t.h1().await;
        assert_eq!(
            conn.peer_serial, serial,
            "the previous certificate is still served"
        );
        probe(&mut conn, 0).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(reloads("certificate", "failure").await, 1.0);
    assert_eq!(reloads("certificate", "success").await, 0.0);

    // Not PEM at all.
    server.write_pems(b"-----BEGIN CERTIFICATE-----\nnot base64\n", b"garbage");
    eventually(
        "garbage is counted",
        Duration::from_secs(20),
        Duration::from_millis(50),
        || async { (reloads("certificate", "failure").await == 2.0).then_some(()) },
    )
    .await;
    assert_eq!(t.h1().await.peer_serial, serial);
    let metrics = t.metrics().await;
    assert_eq!(
        metric(
            &metrics,
            "dhi_admission_tls_cert_expiry_timestamp_seconds",
            &[]
        ),
        Some(not_after_of_pem(&original.cert_pem) as f64),
        "a refused certificate does not move the expiry gauge"
    );

    // A good pair again is applied.
    let good = server.rotate();
    let good_serial = serial_of_pem(&good.cert_pem);
    t.until_served("the good pair is served", &good_serial)
        .await;
    assert_eq!(reloads("certificate", "success").await, 1.0);
    assert_eq!(reloads("certificate", "failure").await, 2.0);
    server.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_reloads_keep_the_last_good_policy() {
    let server = TestServer::start().await;
    let t = server.target();
    let reloads = |result: &'static str| {
        let t = t.clone();
        async move {
            counter(
                &t.metrics().await,
                "dhi_admission_reloads_total",
                &[("what", "config"), ("result", result)],
            )
        }
    };
    let low_port = review(&low_port_pod("web"));
    let denied = t.post_json("/validate", &low_port).await.review();
    assert_denied(
        &denied,
        "Pod web",
        &[("privileged-port", "web", "dhi.io/nginx:1.31")],
    );

    // Invalid: refused, counted once, the policy in force stays.
    for invalid in [
        "rules: {privileged-port: maybe}\n",
        "rewirte: {}\n",
        "rules: [\n",
    ] {
        let before = reloads("failure").await;
        server.write_policy(invalid);
        eventually(
            "the invalid policy is refused",
            Duration::from_secs(20),
            Duration::from_millis(50),
            || async { (reloads("failure").await == before + 1.0).then_some(()) },
        )
        .await;
        let still = t
            .post_json("/validate", &review(&low_port_pod("web")))
            .await
            .review();
        assert_denied(
            &still,
            "Pod web",
            &[("privileged-port", "web", "dhi.io/nginx:1.31")],
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await; // several reload ticks
    assert_eq!(
        reloads("failure").await,
        3.0,
        "each refused version counted once"
    );
    assert_eq!(reloads("success").await, 0.0);

    // Valid: the verdict flips to a warning.
    server.write_policy("rules:\n  privileged-port: warn\nexempt:\n  namespaces: [kube-system]\n");
    let allowed = t
        .until_allowed(
            "the new policy applies",
            "/validate",
            &review(&low_port_pod("web")),
        )
        .await;
    assert!(allowed.status.is_none());
    assert_eq!(allowed.warnings.len(), 1);
    assert!(
        allowed.warnings[0].starts_with("[privileged-port] container \"web\": Fix: listen on 8080"),
        "{:?}",
        allowed.warnings
    );
    assert_eq!(reloads("success").await, 1.0);

    // The policy's own mode: audit reports everything and denies nothing.
    server.write_policy("mode: audit\n");
    let audited = t
        .until_allowed(
            "audit mode applies",
            "/validate",
            &review(&violating_pod("web-1")),
        )
        .await;
    // Three rules, each with its list of containers and its complete findings.
    assert_eq!(audited.audit_annotations.len(), 6);
    let metrics = t.metrics().await;
    assert_eq!(
        counter(
            &metrics,
            "dhi_admission_requests_total",
            &[
                ("webhook", "validate"),
                ("kind", "Pod"),
                ("operation", "CREATE"),
                ("mode", "audit"),
                ("decision", "allowed")
            ]
        ),
        1.0
    );
    assert_eq!(reloads("success").await, 2.0);
    server.shutdown().await.unwrap();
}

// ===== metrics =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_after_a_known_sequence() {
    let server = TestServer::start().await;
    let t = server.target();
    let (status, body_text) = t.get_metrics_port("/healthz").await;
    assert_eq!((status, body_text.as_str()), (200, "ok\n"));
    let (status, body_text) = t.get_metrics_port("/readyz").await;
    assert_eq!((status, body_text.as_str()), (200, "ready\n"));

    let mut conn = t.h1().await;
    let bad = violating_pod("web-1");
    // 1. mutate the Istio pod: 5 mutations, 1 rewrite skipped.
    conn.assert_allowed("/mutate", fixture_bytes(ISTIO_POD))
        .await;
    // 2. two denials.
    for _ in 0..2 {
        assert!(
            !conn
                .post_json("/validate", &review(&bad))
                .await
                .review()
                .allowed
        );
    }
    // 3. the same pod audited.
    assert!(
        conn.post_json("/validate/audit", &review(&bad))
            .await
            .review()
            .allowed
    );
    // 4. the Istio pod through /mutate/audit: no mutation counted, the skip is.
    conn.assert_allowed("/mutate/audit", fixture_bytes(ISTIO_POD))
        .await;
    // 5. a Deployment.
    conn.assert_allowed("/validate", fixture_bytes(DEPLOYMENT))
        .await;
    // 6. malformed JSON, 7. wrong content type, 8. a kind we do not review.
    conn.post("/validate", "{").await.status_doc(400);
    conn.send(Method::POST, "/mutate", Some("text/plain"), "{}")
        .await
        .status_doc(415);
    let service = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "default"}});
    assert!(
        !conn
            .post_json("/validate", &review(&service))
            .await
            .review()
            .allowed
    );
    // 9. a DELETE.
    assert!(
        conn.post_json("/validate", &review_op(&Value::Null, "DELETE", Some(&bad)))
            .await
            .review()
            .allowed
    );
    // Not admission requests: not counted.
    conn.post("/nope", "{}").await.status_doc(404);
    conn.send(Method::GET, "/validate", None, "")
        .await
        .status_doc(405);

    let m = t.metrics().await;
    let requests = |webhook: &str, kind: &str, op: &str, mode: &str, decision: &str| {
        counter(
            &m,
            "dhi_admission_requests_total",
            &[
                ("webhook", webhook),
                ("kind", kind),
                ("operation", op),
                ("mode", mode),
                ("decision", decision),
            ],
        )
    };
    assert_eq!(
        requests("mutate", "Pod", "CREATE", "enforce", "allowed"),
        1.0
    );
    assert_eq!(
        requests("validate", "Pod", "CREATE", "enforce", "denied"),
        2.0
    );
    assert_eq!(
        requests("validate", "Pod", "CREATE", "audit", "allowed"),
        1.0
    );
    assert_eq!(requests("mutate", "Pod", "CREATE", "audit", "allowed"), 1.0);
    assert_eq!(
        requests("validate", "Deployment", "CREATE", "enforce", "allowed"),
        1.0
    );
    assert_eq!(
        requests("validate", "unknown", "unknown", "enforce", "error"),
        1.0
    );
    assert_eq!(
        requests("mutate", "unknown", "unknown", "enforce", "error"),
        1.0
    );
    assert_eq!(
        requests("validate", "unknown", "CREATE", "enforce", "error"),
        1.0
    );
    assert_eq!(
        requests("validate", "Pod", "DELETE", "enforce", "allowed"),
        1.0
    );
    assert_eq!(metric_sum(&m, "dhi_admission_requests_total"), 10.0, "{m}");

    let violations = |rule: &str, mode: &str| {
        counter(
            &m,
            "dhi_admission_violations_total",
            &[("rule", rule), ("mode", mode)],
        )
    };
    assert_eq!(violations("run-as-root", "enforce"), 4.0);
    assert_eq!(violations("privileged-port", "enforce"), 2.0);
    assert_eq!(violations("invalid-image", "enforce"), 2.0);
    assert_eq!(violations("run-as-root", "audit"), 2.0);
    assert_eq!(violations("privileged-port", "audit"), 1.0);
    assert_eq!(violations("invalid-image", "audit"), 1.0);
    assert_eq!(metric_sum(&m, "dhi_admission_violations_total"), 12.0);

    for kind in [
        "image_rewrite",
        "run_as_user",
        "run_as_group",
        "run_as_non_root",
        "fs_group",
    ] {
        assert_eq!(
            counter(&m, "dhi_admission_mutations_total", &[("type", kind)]),
            1.0,
            "{kind}"
        );
    }
    assert_eq!(metric_sum(&m, "dhi_admission_mutations_total"), 5.0);
    assert_eq!(
        counter(
            &m,
            "dhi_admission_rewrites_skipped_total",
            &[("reason", "runs_as_root")]
        ),
        2.0
    );
    assert_eq!(metric_sum(&m, "dhi_admission_rewrites_skipped_total"), 2.0);

    assert_eq!(
        metric_where(
            &m,
            "dhi_admission_request_duration_seconds_count",
            &[("webhook", "mutate")]
        ),
        3.0
    );
    assert_eq!(
        metric_where(
            &m,
            "dhi_admission_request_duration_seconds_count",
            &[("webhook", "validate")]
        ),
        7.0
    );
    assert_eq!(metric_sum(&m, "dhi_admission_reloads_total"), 0.0);
    for what in ["certificate", "client_ca", "config"] {
        for result in ["success", "failure"] {
            assert_eq!(
                metric(
                    &m,
                    "dhi_admission_reloads_total",
                    &[("what", what), ("result", result)]
                ),
                Some(0.0),
                "every reload series exists from the start"
            );
        }
    }
    assert_eq!(
        metric(
            &m,
            "dhi_admission_request_duration_seconds_count",
            &[("webhook", "validate"), ("decision", "denied")]
        )
        .map(|n| n > 0.0),
        Some(true),
        "latency by decision"
    );
    let loaded = metric(
        &m,
        "dhi_admission_reload_last_success_timestamp_seconds",
        &[("what", "config")],
    )
    .unwrap();
    assert!(
        loaded > 1.7e9,
        "the policy's load time is set at start: {loaded}"
    );
    assert_eq!(
        metric(
            &m,
            "dhi_admission_reload_last_success_timestamp_seconds",
            &[("what", "client_ca")]
        ),
        Some(0.0),
        "no client CA configured"
    );
    assert!(metric(&m, "process_resident_memory_bytes", &[]).is_some_and(|rss| rss > 0.0));
    assert_eq!(
        metric(
            &m,
            "dhi_admission_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(&m, "dhi_admission_tls_cert_expiry_timestamp_seconds", &[]),
        Some(not_after_of_pem(&server.current().cert_pem) as f64),
        "the expiry gauge is the serving certificate's notAfter"
    );
    server.shutdown().await.unwrap();
}

// ===== SIGTERM =====

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_closes_idle_connections() {
    let mut server = BinaryServer::spawn(BinaryOptions {
        shutdown_grace_seconds: 20,
        log_level: "info".to_owned(),
        ..Default::default()
    })
    .await;
    let t = server.target();

    // An idle keep-alive connection, used once.
    let mut idle = t.h1().await;
    idle.assert_allowed("/validate", fixture_bytes(SMALL_POD))
        .await;
    let mut idle_h2 = t.h2().await;
    idle_h2
        .assert_allowed("/validate", fixture_bytes(SMALL_POD))
        .await;

    // A slow request: headers and half the body now, the rest after SIGTERM.
    let request = fixture_compact(ISTIO_POD);
    let (first, second) = request.split_at(request.len() / 2);
    let mut slow = t.tls(&[b"http/1.1"]).await.unwrap();
    let head = raw_post_start("/mutate?timeout=10s", request.len(), first);
    slow.write_all(&head).await.unwrap();
    slow.flush().await.unwrap();
    // The server must have started on it before the signal; nothing observable to poll.
    tokio::time::sleep(Duration::from_millis(500)).await;

    server.sigterm();
    // Draining: not ready any more, while the slow request holds the server open.
    eventually(
        "/readyz turns 503",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || {
            let t = t.clone();
            async move {
                match http_get(t.metrics_addr, "/readyz").await {
                    Ok((503, body)) => Some(body),
                    _ => None,
                }
            }
        },
    )
    .await;
    assert_eq!(
        t.get_metrics_port("/readyz").await,
        (503, "not ready\n".to_owned())
    );
    // The idle connections are closed.
    assert!(
        idle.wait_closed(Duration::from_secs(20)).await,
        "idle HTTP/1.1 connection not closed on drain"
    );
    assert!(
        idle_h2.wait_closed(Duration::from_secs(20)).await,
        "idle HTTP/2 connection not closed on drain"
    );
    // The listener is closed: new connections are refused.
    eventually(
        "the listener closes",
        Duration::from_secs(20),
        Duration::from_millis(20),
        || {
            let addr = t.addr;
            async move {
                tokio::net::TcpStream::connect(addr)
                    .await
                    .is_err()
                    .then_some(())
            }
        },
    )
    .await;
    assert_eq!(
        server.wait_exit(Duration::from_millis(100)).await,
        None,
        "must wait for the in-flight request"
    );

    // The in-flight request completes, with `connection: close`.
    slow.write_all(second).await.unwrap();
    slow.flush().await.unwrap();
    let answer = read_response(&mut slow).await.unwrap();
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    assert_eq!(answer.header("connection"), Some("close"));
    let review = answer.to_reply().review();
    assert_eq!(review.uid, "4f1c3a52-8e0d-4b7a-9c65-2d7e1f0b9a13");
    assert_eq!(review.patch, Some(istio_patch()));
    let ending = read_until_closed(&mut slow, Duration::from_secs(20)).await;
    assert!(ending.closed() && ending.bytes().is_empty(), "{ending:?}");

    let status = server
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("exits after draining");
    assert!(
        status.success(),
        "exit status {status:?}; log:\n{}",
        server.log()
    );
    let log = server.log();
    assert!(log.contains("shutting down"), "{log}");
    assert!(log.contains("stopped"), "{log}");
}
