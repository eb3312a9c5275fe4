//! The memory and connection flood of issue 12, against a running `dhi-admission serve`:
//! `bench/flood.sh` builds, starts the server and runs this client.
//!
//! 1. Opens `--idle` HTTP/2 connections (1,100: past the 1,024 cap), each sends one
//!    review and then idles, answering the server's pings and pinging on its own.
//! 2. Starts `--uploads` HTTP/1.1 uploads (200) of a `--upload-bytes` review (4 MiB),
//!    each sent slowly (the whole body over about 6 s, under the 10 s body timeout);
//!    a shed upload (503) tries again 100 ms later, so the pressure lasts.
//! 3. All along (3 s before the flood, for comparison, then through both phases),
//!    every 100 ms, sends the 9.5 KB Istio pod review on a kept-alive HTTP/1.1
//!    connection and on a new connection, and times the answers.
//! 4. Samples the server's RSS every 20 ms (`/proc/<pid>/status`), reads its peak
//!    (`VmHWM`) and its metrics, prints a summary, and fails (exit 1) when the peak
//!    RSS reaches `--max-rss-mib` (128) or, during the flood, a review on the kept-alive
//!    connection took longer than `--max-review-ms` (50) or failed.
//!
//! ```text
//! cargo run --release --example flood -- --addr 127.0.0.1:8443 --metrics 127.0.0.1:9090 \
//!     --ca certs/ca.crt --pid "$(pidof dhi-admission)"
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

#[derive(Parser)]
#[command(about = "Connection and memory flood against dhi-admission serve (bench/flood.sh)")]
struct Args {
    /// The webhook's TLS address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    addr: SocketAddr,
    /// The metrics address (plain HTTP).
    #[arg(long, default_value = "127.0.0.1:9090")]
    metrics: SocketAddr,
    /// The CA that signed the serving certificate.
    #[arg(long)]
    ca: PathBuf,
    /// The server's process id, for its RSS.
    #[arg(long)]
    pid: u32,
    /// Idle HTTP/2 connections.
    #[arg(long, default_value_t = 1100)]
    idle: usize,
    /// Slow uploads at once.
    #[arg(long, default_value_t = 200)]
    uploads: usize,
    /// Size of each upload.
    #[arg(long, default_value_t = 4 << 20)]
    upload_bytes: usize,
    /// Time over which each upload sends its body, in seconds.
    #[arg(long, default_value_t = 6.0)]
    upload_seconds: f64,
    /// Pause before a shed (or finished) upload tries again, in milliseconds.
    #[arg(long, default_value_t = 100)]
    retry_ms: u64,
    /// How long the uploads keep coming, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Fail when the server's peak RSS reaches this, in MiB.
    #[arg(long, default_value_t = 128)]
    max_rss_mib: u64,
    /// Fail when a review on the kept-alive connection takes longer, in milliseconds.
    #[arg(long, default_value_t = 50)]
    max_review_ms: u64,
}

const ISTIO_POD: &[u8] = include_bytes!("../tests/fixtures/reviews/istio-pod.json");

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let failed = runtime.block_on(run(args))?;
    std::process::exit(i32::from(failed));
}

struct Client {
    addr: SocketAddr,
    tls: TlsConnector,
}

impl Client {
    async fn tls(&self) -> anyhow::Result<TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(self.addr).await?;
        tcp.set_nodelay(true)?;
        let name = ServerName::try_from("localhost")?;
        Ok(self.tls.connect(name, tcp).await?)
    }

    /// An HTTP/2 connection that answers pings and sends its own every 10 s.
    async fn h2(&self) -> anyhow::Result<hyper::client::conn::http2::SendRequest<Full<Bytes>>> {
        let io = TokioIo::new(self.tls().await?);
        let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(10))
            .keep_alive_while_idle(true)
            .handshake(io)
            .await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }

    async fn h1(&self) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        let io = TokioIo::new(self.tls().await?);
        let (sender, conn) = hyper::client::conn::http1::handshake(io).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(sender)
    }
}

fn review_request(uri: &str) -> http::Request<Full<Bytes>> {
    http::Request::post(uri)
        .header(http::header::HOST, "localhost")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(ISTIO_POD)))
        .expect("request")
}

/// A valid review of exactly `size` bytes (a padding annotation).
fn upload_body(size: usize) -> Vec<u8> {
    let mut review: serde_json::Value = serde_json::from_slice(ISTIO_POD).expect("fixture");
    review["request"]["object"]["metadata"]["annotations"] =
        serde_json::json!({"flood.example.com/padding": ""});
    let base = serde_json::to_vec(&review).expect("encode").len();
    review["request"]["object"]["metadata"]["annotations"]["flood.example.com/padding"] =
        serde_json::Value::from("x".repeat(size.saturating_sub(base)));
    serde_json::to_vec(&review).expect("encode")
}

#[derive(Default)]
struct UploadStats {
    started: AtomicU64,
    answered_200: AtomicU64,
    shed_503: AtomicU64,
    timed_out_408: AtomicU64,
    other: AtomicU64,
    errors: AtomicU64,
}

/// One uploader: a new connection per attempt, the head at once, the body slowly.
async fn uploader(
    client: Arc<Client>,
    body: Arc<Vec<u8>>,
    pace: Duration,
    retry: Duration,
    stop: Arc<AtomicBool>,
    stats: Arc<UploadStats>,
) {
    const CHUNK: usize = 32 * 1024;
    while !stop.load(Ordering::Relaxed) {
        stats.started.fetch_add(1, Ordering::Relaxed);
        let Ok(tls) = client.tls().await else {
            stats.errors.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (mut reader, mut writer) = tokio::io::split(tls);
        let head = format!(
            "POST /validate HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        let send = {
            let body = body.clone();
            async move {
                writer.write_all(head.as_bytes()).await?;
                for chunk in body.chunks(CHUNK) {
                    writer.write_all(chunk).await?;
                    writer.flush().await?;
                    tokio::time::sleep(pace).await;
                }
                std::future::pending::<()>().await;
                Ok::<_, std::io::Error>(())
            }
        };
        let receive = async {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = reader.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            Ok::<_, std::io::Error>(got)
        };
        let answer = tokio::select! {
            biased;
            got = receive => got,
            sent = send => sent.map(|()| Vec::new()),
        };
        let status = answer.ok().and_then(|got| {
            String::from_utf8_lossy(&got)
                .split(' ')
                .nth(1)
                .map(str::to_owned)
        });
        let counter = match status.as_deref() {
            Some("200") => &stats.answered_200,
            Some("503") => &stats.shed_503,
            Some("408") => &stats.timed_out_408,
            Some(_) => &stats.other,
            None => &stats.errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(retry).await;
    }
}

const CALM: u8 = 0;
const IDLE_FLOOD: u8 = 1;
const UPLOAD_FLOOD: u8 = 2;

/// One round of the prober.
struct Probe {
    phase: u8,
    kept: Option<Duration>,
    fresh: Option<Duration>,
    errors: Vec<String>,
}

/// Every 100 ms: the Istio review on the kept-alive connection, then on a new one.
async fn probe(client: Arc<Client>, phase: Arc<AtomicU8>, stop: Arc<AtomicBool>) -> Vec<Probe> {
    let mut out = Vec::new();
    let mut kept = None;
    while !stop.load(Ordering::Relaxed) {
        let mut round = Probe {
            phase: phase.load(Ordering::Relaxed),
            kept: None,
            fresh: None,
            errors: Vec::new(),
        };
        if kept.is_none() {
            match client.h1().await {
                Ok(sender) => kept = Some(sender),
                Err(err) => round.errors.push(format!("kept-alive connect: {err}")),
            }
        }
        if let Some(sender) = kept.as_mut() {
            let t = Instant::now();
            let sent = async {
                sender.ready().await?;
                let answer = sender.send_request(review_request("/mutate")).await?;
                let status = answer.status();
                answer.into_body().collect().await?;
                anyhow::ensure!(status == 200, "HTTP {status}");
                Ok(())
            };
            match tokio::time::timeout(Duration::from_secs(10), sent).await {
                Ok(Ok(())) => round.kept = Some(t.elapsed()),
                Ok(Err(err)) => {
                    round.errors.push(format!("kept-alive: {err}"));
                    kept = None;
                }
                Err(_) => {
                    round
                        .errors
                        .push("kept-alive: no answer in 10 s".to_owned());
                    kept = None;
                }
            }
        }
        let t = Instant::now();
        let fresh = async {
            let mut sender = client.h1().await?;
            let answer = sender.send_request(review_request("/mutate")).await?;
            let status = answer.status();
            answer.into_body().collect().await?;
            anyhow::ensure!(status == 200, "HTTP {status}");
            Ok(())
        };
        match tokio::time::timeout(Duration::from_secs(10), fresh).await {
            Ok(Ok(())) => round.fresh = Some(t.elapsed()),
            Ok(Err(err)) => round.errors.push(format!("new connection: {err}")),
            Err(_) => round
                .errors
                .push("new connection: no answer in 10 s".to_owned()),
        }
        out.push(round);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out
}

async fn metrics_text(addr: SocketAddr) -> anyhow::Result<String> {
    let mut tcp = TcpStream::connect(addr).await?;
    tcp.write_all(b"GET /metrics HTTP/1.1\r\nhost: metrics\r\nconnection: close\r\n\r\n")
        .await?;
    let mut out = String::new();
    tcp.read_to_string(&mut out).await?;
    Ok(out)
}

fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU time (user + system) of the process so far.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat(5): 11 and 12 after the state.
    Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / 100.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn run(args: Args) -> anyhow::Result<bool> {
    let pem = std::fs::read(&args.ca).with_context(|| format!("reading {}", args.ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert?)?;
    }
    let config = |alpn: &[u8]| {
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots.clone())
            .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        TlsConnector::from(Arc::new(config))
    };
    let h2 = Arc::new(Client {
        addr: args.addr,
        tls: config(b"h2"),
    });
    let h1 = Arc::new(Client {
        addr: args.addr,
        tls: config(b"http/1.1"),
    });
    let rss_before = status_kib(args.pid, "VmRSS").unwrap_or(0);

    // RSS sampler.
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        let pid = args.pid;
        tokio::spawn(async move {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(status_kib(pid, "VmRSS").unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            peak
        })
    };

    // Reviews all along: a kept-alive connection (kube-apiserver's) and a new one.
    let phase = Arc::new(AtomicU8::new(CALM));
    // On its own thread and runtime: queued behind the flood's own tasks in this
    // process, the probe would time the client, not the server.
    let prober = {
        let (client, phase, stop) = (h1.clone(), phase.clone(), stop.clone());
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("probe runtime")
                .block_on(probe(client, phase, stop))
        })
    };
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 1. Idle HTTP/2 connections.
    phase.store(IDLE_FLOOD, Ordering::Relaxed);
    let started = Instant::now();
    let mut idle = Vec::with_capacity(args.idle);
    let mut idle_errors = 0;
    for _ in 0..args.idle {
        match h2.h2().await {
            Ok(mut sender) => {
                let ok = async {
                    sender.ready().await?;
                    let answer = sender
                        .send_request(review_request("https://localhost/validate"))
                        .await?;
                    answer.into_body().collect().await?;
                    Ok::<_, anyhow::Error>(())
                }
                .await;
                if ok.is_err() {
                    idle_errors += 1;
                }
                idle.push(sender);
            }
            Err(_) => idle_errors += 1,
        }
    }
    let idle_opened_in = started.elapsed();
    let rss_idle = status_kib(args.pid, "VmRSS").unwrap_or(0);
    eprintln!(
        "flood: {} idle HTTP/2 connections opened in {idle_opened_in:?} ({idle_errors} errors); server RSS {} KiB",
        idle.len(),
        rss_idle
    );

    // 2. Slow uploads, the idle connections still open.
    phase.store(UPLOAD_FLOOD, Ordering::Relaxed);
    let cpu_before_uploads = cpu_time(args.pid);
    let uploads_started = Instant::now();
    let body = Arc::new(upload_body(args.upload_bytes));
    let chunks = body.len().div_ceil(32 * 1024) as f64;
    let pace = Duration::from_secs_f64(args.upload_seconds / chunks);
    let stats = Arc::new(UploadStats::default());
    let upload_stop = Arc::new(AtomicBool::new(false));
    let uploaders: Vec<_> = (0..args.uploads)
        .map(|_| {
            tokio::spawn(uploader(
                h1.clone(),
                body.clone(),
                pace,
                Duration::from_millis(args.retry_ms),
                upload_stop.clone(),
                stats.clone(),
            ))
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let upload_cpu = (cpu_time(args.pid).saturating_sub(cpu_before_uploads)).as_secs_f64()
        / uploads_started.elapsed().as_secs_f64();
    upload_stop.store(true, Ordering::Relaxed);
    for uploader in uploaders {
        uploader.abort();
    }
    stop.store(true, Ordering::Relaxed);
    let sampled_peak = sampler.await?;
    let probes = prober
        .join()
        .map_err(|_| anyhow::anyhow!("the probe thread panicked"))?;
    let peak = status_kib(args.pid, "VmHWM").unwrap_or(0).max(sampled_peak);
    let idle_open = idle.iter().filter(|s| !s.is_closed()).count();
    let metrics = metrics_text(args.metrics).await.unwrap_or_default();

    let ms = |d: Duration| format!("{:.2} ms", d.as_secs_f64() * 1000.0);
    println!("flood summary ({} s of uploads)", args.seconds);
    println!(
        "  idle HTTP/2 connections opened      {} in {idle_opened_in:?} ({idle_errors} errors), still open at the end: {idle_open}",
        idle.len()
    );
    println!(
        "  uploads of {} B: attempts {}, answered 200: {}, shed 503: {}, 408: {}, other: {}, transport errors: {}",
        body.len(),
        stats.started.load(Ordering::Relaxed),
        stats.answered_200.load(Ordering::Relaxed),
        stats.shed_503.load(Ordering::Relaxed),
        stats.timed_out_408.load(Ordering::Relaxed),
        stats.other.load(Ordering::Relaxed),
        stats.errors.load(Ordering::Relaxed)
    );
    let mut flood_kept_max = Duration::ZERO;
    let mut flood_errors = 0;
    for (p, name) in [
        (CALM, "before the flood"),
        (IDLE_FLOOD, "opening idle connections"),
        (UPLOAD_FLOOD, "uploads + idle connections"),
    ] {
        let mut kept: Vec<Duration> = probes
            .iter()
            .filter(|r| r.phase == p)
            .filter_map(|r| r.kept)
            .collect();
        let mut fresh: Vec<Duration> = probes
            .iter()
            .filter(|r| r.phase == p)
            .filter_map(|r| r.fresh)
            .collect();
        let errors: Vec<&String> = probes
            .iter()
            .filter(|r| r.phase == p)
            .flat_map(|r| &r.errors)
            .collect();
        kept.sort();
        fresh.sort();
        let kept_max = kept.last().copied().unwrap_or_default();
        if p != CALM {
            flood_kept_max = flood_kept_max.max(kept_max);
            flood_errors += errors.len();
        }
        println!(
            "  review, {name:<27} kept-alive n={} p50 {} p99 {} max {}; new connection n={} p50 {} max {}; errors {}{}",
            kept.len(),
            ms(percentile(&kept, 0.5)),
            ms(percentile(&kept, 0.99)),
            ms(kept_max),
            fresh.len(),
            ms(percentile(&fresh, 0.5)),
            ms(fresh.last().copied().unwrap_or_default()),
            errors.len(),
            errors
                .first()
                .map(|e| format!(" (first: {e})"))
                .unwrap_or_default()
        );
    }
    println!(
        "  server CPU during the uploads: {:.0}% of one core",
        upload_cpu * 100.0
    );
    println!(
        "  server RSS: before {} KiB, with idle connections {} KiB, peak {} KiB ({:.1} MiB)",
        rss_before,
        rss_idle,
        peak,
        peak as f64 / 1024.0
    );
    println!(
        "  server metrics: shed (body_memory) {}, connections evicted {}, closed idle {}, open now {}",
        sample(
            &metrics,
            "dhi_admission_requests_shed_total{reason=\"body_memory\"}"
        ),
        sample(
            &metrics,
            "dhi_admission_connections_closed_total{reason=\"evicted\"}"
        ),
        sample(
            &metrics,
            "dhi_admission_connections_closed_total{reason=\"idle\"}"
        ),
        sample(&metrics, "dhi_admission_connections ")
    );
    let buckets: Vec<String> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("dhi_admission_request_duration_seconds_bucket{") && l.contains("mutate")
        })
        .map(|l| {
            l.trim_start_matches("dhi_admission_request_duration_seconds_bucket")
                .to_owned()
        })
        .collect();
    println!(
        "  server-side /mutate durations (handler): {}",
        buckets.join(" ")
    );
    let kept_max = flood_kept_max;
    let review_errors = flood_errors;
    let mut failed = false;
    if peak >= args.max_rss_mib * 1024 {
        println!("FAIL: peak RSS {peak} KiB >= {} MiB", args.max_rss_mib);
        failed = true;
    }
    if kept_max > Duration::from_millis(args.max_review_ms) || review_errors > 0 {
        println!(
            "FAIL: during the flood a review on the kept-alive connection took up to {} (limit {} ms); {} review errors",
            ms(kept_max),
            args.max_review_ms,
            review_errors
        );
        failed = true;
    }
    if !failed {
        println!(
            "PASS: peak RSS under {} MiB, every review answered within {} ms",
            args.max_rss_mib, args.max_review_ms
        );
    }
    Ok(failed)
}
