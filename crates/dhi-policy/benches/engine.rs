//! The engine alone, without HTTP or TLS: `answer::handle` on realistic bodies,
//! image-reference parsing and catalog look-ups.
//!
//! ```text
//! cargo bench --bench engine                     # everything
//! cargo bench --bench engine -- review/istio     # one group
//! cargo test  --bench engine                     # allocation checks + one pass of each bench
//! ENGINE_PROFILE=istio-pod/mutate:20000 target/release/deps/engine-<hash>   # a plain loop, for callgrind
//! ```
//!
//! Before the benchmarks, a counting allocator (around mimalloc, the server's allocator)
//! checks that a catalog look-up allocates nothing, even with a policy that adds a
//! thousand repositories, and reports the allocations per review. A look-up that
//! allocates fails the run.
//!
//! Bodies are the review fixtures of `tests/common/fixtures.rs` (the files under
//! `tests/fixtures/reviews/` and the generated ~200 KB pod), serialised compactly as
//! kube-apiserver sends them. `bench/load.py` sends byte-identical bodies
//! (`ENGINE_DUMP_BODIES=<dir>` writes them out for comparison).

use std::alloc::{GlobalAlloc, Layout};
use std::collections::HashMap;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use dhi_policy::answer::{self, Answer};
use dhi_policy::catalog::{Catalog, RepoOverride};
use dhi_policy::image_ref::ImageRef;
use dhi_policy::{Engine, Mode, Webhook};

#[path = "../../../tests/common/fixtures.rs"]
mod fixtures;

// === counting allocator ===

/// mimalloc with counters that are only touched while `COUNTING` is on, so the timed
/// benchmarks pay one relaxed load per allocation.
struct CountingMimalloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

fn record(size: usize) {
    if COUNTING.load(Ordering::Relaxed) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to mimalloc; the counters have no effect
// on the memory returned.
unsafe impl GlobalAlloc for CountingMimalloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: same contract as ours.
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: same contract as ours.
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: same contract as ours.
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingMimalloc = CountingMimalloc;

/// Allocations (count, bytes; reallocs count as one) made by `f`, run `n` times.
fn count_allocs_once<R>(f: impl FnOnce() -> R) -> (R, (u64, u64)) {
    ALLOCS.store(0, Ordering::SeqCst);
    BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    let out = f();
    COUNTING.store(false, Ordering::SeqCst);
    (
        out,
        (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst)),
    )
}

fn count_allocs<R>(n: u64, mut f: impl FnMut() -> R) -> (u64, u64) {
    ALLOCS.store(0, Ordering::SeqCst);
    BYTES.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    for _ in 0..n {
        black_box(f());
    }
    COUNTING.store(false, Ordering::SeqCst);
    (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst))
}

// === bodies ===

struct Case {
    /// `istio-pod/mutate`
    name: String,
    webhook: Webhook,
    body: Vec<u8>,
}

fn cases() -> Vec<Case> {
    let istio = fixtures::fixture_compact(fixtures::ISTIO_POD);
    // Generated before any other review, so its uid (and bytes) are the same every run.
    let large = serde_json::to_vec(&fixtures::large_pod_review()).expect("serialise");
    let mut cases = Vec::new();
    let mut add = |name: &str, webhook: Webhook, body: &[u8]| {
        cases.push(Case {
            name: format!("{name}/{}", webhook.as_str()),
            webhook,
            body: body.to_vec(),
        });
    };
    add("istio-pod", Webhook::Mutate, &istio);
    add("istio-pod", Webhook::Validate, &istio);
    add(
        "small-pod",
        Webhook::Mutate,
        &fixtures::fixture_compact(fixtures::SMALL_POD),
    );
    add(
        "deployment",
        Webhook::Mutate,
        &fixtures::fixture_compact(fixtures::DEPLOYMENT),
    );
    add("large-pod", Webhook::Mutate, &large);
    add("large-pod", Webhook::Validate, &large);
    cases
}

fn handle(engine: &Engine, case: &Case) -> Answer {
    answer::handle(engine, case.webhook, Mode::Enforce, &case.body)
}

const IMAGES: &[(&str, &str)] = &[
    ("upstream", "docker.io/istio/proxyv2:1.30.3"),
    ("short", "nginx"),
    ("hardened", "dhi.io/python:3.13"),
    (
        "digest",
        "registry.example.com:5000/team/app:2.1@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
    ),
];

const LOOKUPS: &[(&str, &str, &str)] = &[
    ("exact-tag", "istio-proxyv2", "1.30.3"),
    ("guessed-tag", "python", "3.13"),
    ("dev-tag", "python", "3.13-debian13-dev"),
    // Unlisted tags: resolved through the repository's family index.
    ("family-tag", "k8s-device-plugin", "0.20.1-compat"),
    ("flavor-tag", "nginx", "1.32-debian11-dev"),
    ("unknown-repo", "not-in-catalog", "1.0"),
];

// === checks ===

/// A policy that adds `n` repositories: look-ups must not get any dearer in allocations.
fn big_override_catalog(n: usize) -> Catalog {
    let overrides: HashMap<String, RepoOverride> = (0..n)
        .map(|i| {
            let over = RepoOverride {
                uid: Some(10_000 + i as i64),
                tags: [(
                    format!("{i}.0-custom"),
                    dhi_policy::catalog::Ids { uid: 1, gid: 1 },
                )]
                .into(),
                ..Default::default()
            };
            (format!("team-app-{i}"), over)
        })
        .collect();
    Catalog::new(overrides)
}

fn allocation_checks(engine: &Engine, cases: &[Case]) {
    const N: u64 = 1000;
    println!("== allocation checks (counting allocator around mimalloc) ==");
    let builtin = engine.catalog();
    let extended = big_override_catalog(1000);
    let mut failed = Vec::new();
    for (catalog_name, catalog) in [
        ("built-in", builtin),
        ("built-in + 1000 policy repos", &extended),
    ] {
        let mut lookups: Vec<(&str, &str)> = LOOKUPS.iter().map(|(_, r, t)| (*r, *t)).collect();
        lookups.push(("team-app-999", "999.0-custom"));
        lookups.push(("team-app-0", "latest"));
        for (repo, tag) in lookups {
            black_box(catalog.lookup(repo, tag));
            let (allocs, bytes) =
                count_allocs(N, || catalog.lookup(black_box(repo), black_box(tag)));
            let verdict = if allocs == 0 { "ok" } else { "FAIL" };
            println!(
                "catalog lookup {repo}:{tag} [{catalog_name}]: {} allocations, {} bytes per lookup ({N} lookups) {verdict}",
                allocs as f64 / N as f64,
                bytes as f64 / N as f64,
            );
            if allocs != 0 {
                failed.push(format!("{repo}:{tag} [{catalog_name}]"));
            }
            // The rewrite's tag check, on the same path.
            let (allocs, _) = count_allocs(N, || catalog.has_tag(black_box(repo), black_box(tag)));
            if allocs != 0 {
                println!(
                    "catalog has_tag {repo}:{tag} [{catalog_name}]: {allocs} allocations FAIL"
                );
                failed.push(format!("has_tag {repo}:{tag} [{catalog_name}]"));
            }
        }
    }
    for (name, image) in IMAGES {
        let (allocs, bytes) = count_allocs(N, || ImageRef::parse(black_box(image)));
        println!(
            "ImageRef::parse {name} ({image}): {} allocations, {} bytes per parse",
            allocs as f64 / N as f64,
            bytes as f64 / N as f64
        );
    }
    for case in cases {
        let answer = handle(engine, case);
        let (allocs, bytes) = count_allocs(100, || handle(engine, case));
        println!(
            "review {} ({} bytes in): {} allocations, {} bytes allocated per request; \
             answer: HTTP {}, {}, {} mutations, {} violations, {} bytes out",
            case.name,
            case.body.len(),
            allocs / 100,
            bytes / 100,
            answer.status,
            answer.outcome.as_str(),
            answer.mutations.len(),
            answer.violations.len(),
            answer.body.len(),
        );
        assert_eq!(
            answer.status,
            200,
            "{}: {}",
            case.name,
            String::from_utf8_lossy(&answer.body)
        );
    }
    assert!(failed.is_empty(), "catalog look-ups allocated: {failed:?}");
    println!();
}

// === benchmarks ===

fn bench_reviews(c: &mut Criterion, engine: &Engine, cases: &[Case]) {
    let mut group = c.benchmark_group("review");
    for case in cases {
        group.throughput(Throughput::Bytes(case.body.len() as u64));
        group.bench_function(&case.name, |b| b.iter(|| handle(engine, black_box(case))));
    }
    group.finish();
}

/// The review with the object kept as raw JSON (as `answer::handle` reads a body whose
/// object it could not decode): here only to hand `decode_object` its input.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    #[serde(borrow)]
    request: EnvelopeRequest<'a>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct EnvelopeRequest<'a> {
    #[serde(borrow)]
    object: Option<&'a serde_json::value::RawValue>,
}

/// What the load-test baseline (examples/baseline.rs) reads: the uid, every other value
/// skipped. The floor of one JSON pass over the body.
#[derive(serde::Deserialize)]
struct UidOnly<'a> {
    #[serde(borrow)]
    request: UidRequest<'a>,
}

#[derive(serde::Deserialize)]
struct UidRequest<'a> {
    #[serde(borrow)]
    uid: std::borrow::Cow<'a, str>,
}

/// The parts of one Istio-pod review, timed apart: where the 8 KB request goes.
fn bench_components(c: &mut Criterion, cases: &[Case]) {
    let Some(case) = cases.iter().find(|c| c.name == "istio-pod/mutate") else {
        return;
    };
    let envelope: Envelope<'_> = serde_json::from_slice(&case.body).expect("envelope");
    let object = envelope.request.object.expect("object").get();
    let images: Vec<String> = {
        let view = dhi_policy::decode_object(object).expect("decode");
        let spec = view.spec.as_ref().expect("spec");
        [&spec.init_containers, &spec.containers]
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|c| c.image.as_deref().map(str::to_owned))
            .collect()
    };
    let mut group = c.benchmark_group("istio_pod_parts");
    group.bench_function("1-skim-like-the-baseline", |b| {
        b.iter(|| {
            serde_json::from_slice::<UidOnly<'_>>(black_box(&case.body))
                .map(|e| e.request.uid.len())
        })
    });
    group.bench_function("2-decode_object", |b| {
        b.iter(|| dhi_policy::decode_object(black_box(object)).is_ok())
    });
    group.bench_function(format!("3-parse-{}-images", images.len()), |b| {
        b.iter(|| {
            images
                .iter()
                .filter(|i| ImageRef::parse(black_box(i)).is_ok())
                .count()
        })
    });
    group.finish();
}

fn bench_image_refs(c: &mut Criterion) {
    let mut group = c.benchmark_group("image_ref_parse");
    for (name, image) in IMAGES {
        group.bench_function(*name, |b| b.iter(|| ImageRef::parse(black_box(image))));
    }
    group.finish();
}

fn bench_lookups(c: &mut Criterion, engine: &Engine) {
    let mut group = c.benchmark_group("catalog_lookup");
    let catalog = engine.catalog();
    for (name, repo, tag) in LOOKUPS {
        group.bench_function(*name, |b| {
            b.iter(|| catalog.lookup(black_box(repo), black_box(tag)))
        });
    }
    let extended = big_override_catalog(1000);
    group.bench_function("exact-tag+1000-policy-repos", |b| {
        b.iter(|| extended.lookup(black_box("istio-proxyv2"), black_box("1.30.3")))
    });
    group.finish();
}

/// `ENGINE_PROFILE=<case>:<n>`: run one review (or `catalog_lookup/<name>` look-up) `n`
/// times and exit (for callgrind: instruction counts do not depend on the neighbours).
fn profile_loop(spec: &str, engine: &Engine, cases: &[Case]) {
    let (name, n) = spec.rsplit_once(':').unwrap_or((spec, "10000"));
    let n: u64 = n.parse().expect("ENGINE_PROFILE=<case>:<iterations>");
    if let Some(lookup) = name.strip_prefix("catalog_lookup/") {
        let (_, repo, tag) = LOOKUPS
            .iter()
            .find(|(l, ..)| *l == lookup)
            .unwrap_or_else(|| panic!("unknown look-up {lookup}; one of {LOOKUPS:?}"));
        let catalog = engine.catalog();
        for _ in 0..n {
            black_box(catalog.lookup(black_box(repo), black_box(tag)));
        }
        println!("ran {name} {n} times");
        return;
    }
    let case = cases.iter().find(|c| c.name == name).unwrap_or_else(|| {
        panic!(
            "unknown case {name}; one of {:?}",
            cases.iter().map(|c| &c.name).collect::<Vec<_>>()
        )
    });
    for _ in 0..n {
        black_box(handle(engine, black_box(case)));
    }
    println!("ran {name} {n} times");
}

/// The first `Engine` of a process: what a server pays before it can answer.
fn engine_construction() -> Engine {
    let rss_before = vm_rss_kib();
    let started = Instant::now();
    let (engine, (allocs, bytes)) = count_allocs_once(Engine::default);
    let first = started.elapsed();
    let rss_after = vm_rss_kib();
    let started = Instant::now();
    black_box(Engine::default());
    let second = started.elapsed();
    println!("== engine construction ==");
    println!(
        "first Engine::default(): {:.1} ms, {allocs} allocations, {:.1} MiB allocated, RSS +{:.1} MiB; \
         a second one: {:.3} ms",
        first.as_secs_f64() * 1e3,
        bytes as f64 / 1048576.0,
        rss_after.saturating_sub(rss_before) as f64 / 1024.0,
        second.as_secs_f64() * 1e3,
    );
    println!();
    engine
}

fn vm_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let engine = if std::env::var_os("ENGINE_PROFILE").is_some() {
        Engine::default()
    } else {
        engine_construction()
    };
    let cases = cases();
    if let Ok(dir) = std::env::var("ENGINE_DUMP_BODIES") {
        std::fs::create_dir_all(&dir).expect("creating ENGINE_DUMP_BODIES");
        for case in &cases {
            let file = case.name.split('/').next().unwrap_or(&case.name);
            std::fs::write(format!("{dir}/{file}.json"), &case.body).expect("writing a body");
        }
    }
    if let Ok(spec) = std::env::var("ENGINE_PROFILE") {
        profile_loop(&spec, &engine, &cases);
        return;
    }
    allocation_checks(&engine, &cases);
    // Short defaults for a shared machine; `--measurement-time` and `--warm-up-time`
    // on the command line win.
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    bench_reviews(&mut c, &engine, &cases);
    bench_components(&mut c, &cases);
    bench_image_refs(&mut c);
    bench_lookups(&mut c, &engine);
    c.final_summary();
}
