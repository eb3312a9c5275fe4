#!/usr/bin/env python3
"""Load-test driver for bench/load.sh (see bench/README.md). Standard library only.

Runs `dhi-admission serve` and the baseline (examples/baseline.rs: the same TLS and HTTP
stack with an echo-uid handler) pinned to CPU 0, drives them with wrk pinned to CPU 1,
and reports per case: requests/s, p50/p99/p99.9 latency, server CPU time per request,
peak RSS and the ratio to the baseline, as medians over the repetitions; plus idle RSS,
start-up time (exec to /readyz 200) and TLS handshakes per second.

Every server start is fresh, so each run's peak RSS (VmHWM) is that case's alone.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
LUA = BENCH / "post.lua"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SERVER_CPU = 0
CLIENT_CPU = 1
# `--nice`: scheduling priority of the server and the load generators (0: unchanged).
NICE = 0


def pinned(cpu: int, argv: list[str]) -> list[str]:
    """`argv` pinned to one CPU (and at priority NICE): taskset and nice exec it, so
    the pid is the program's own."""
    prefix = ["nice", "-n", str(NICE)] if NICE else []
    return [*prefix, "taskset", "-c", str(cpu), *argv]

# Targets from the issue; see bench/README.md.
TARGET_THROUGHPUT_RATIO = 0.85
TARGET_P99_RATIO = 1.2
TARGET_C1_P50_US = 300
TARGET_HANDSHAKES = 1500
TARGET_IDLE_RSS_MIB = 16
TARGET_PEAK_RSS_MIB = 32
TARGET_STARTUP_MS = 100


@dataclass(frozen=True)
class Case:
    """One load shape against one server."""

    name: str
    server: str  # "dhi" or "baseline"
    path: str
    body: str  # key into the bodies dict
    conns: int
    close: bool = False
    tool: str = "wrk"  # or "s_time": TLS handshakes only, `conns` parallel clients

    @property
    def shape(self) -> tuple:
        """What must match for a baseline comparison."""
        return (self.body, self.conns, self.close, self.tool)


DHI_CASES = [
    Case("mutate c1", "dhi", "/mutate", "istio-pod", 1),
    Case("mutate c16", "dhi", "/mutate", "istio-pod", 16),
    Case("mutate c64", "dhi", "/mutate", "istio-pod", 64),
    Case("validate c1", "dhi", "/validate", "istio-pod", 1),
    Case("validate c16", "dhi", "/validate", "istio-pod", 16),
    Case("validate c64", "dhi", "/validate", "istio-pod", 64),
    Case("mutate c16 no-keepalive", "dhi", "/mutate", "istio-pod", 16, close=True),
    Case("mutate 200KB c16", "dhi", "/mutate", "large-pod", 16),
    Case("full handshakes x8", "dhi", "", "none", 8, close=True, tool="s_time"),
]

# The baseline runs every shape once (it answers /validate as /mutate): "baseline c1", ...
CASES = DHI_CASES + [
    replace(c, name=f"baseline {c.name.removeprefix('mutate ')}", server="baseline")
    for c in DHI_CASES
    if c.path != "/validate"
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# === files and processes ===


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def compact(value) -> bytes:
    """Compact JSON with sorted keys: byte for byte what serde_json writes for a
    `serde_json::Value`, so these bodies are the ones `cargo bench` measures."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def large_pod_shape() -> tuple[int, int]:
    """(containers, env vars) of `large_pod()` in tests/common/fixtures.rs."""
    text = (ROOT / "tests/common/fixtures.rs").read_text()
    found = re.search(r"fn large_pod\(\) -> Value \{\s*large_pod_sized\((\d+),\s*(\d+)\)", text)
    return (int(found.group(1)), int(found.group(2))) if found else (24, 88)


def large_pod_review() -> dict:
    """`large_pod_review()` of tests/common/fixtures.rs (~200 KB), with the uid the
    first generated review gets there. `ENGINE_DUMP_BODIES=<dir>` on the bench binary
    writes the Rust version, to compare byte for byte."""
    n_containers, n_env = large_pod_shape()
    images = ["dhi.io/python:3.13", "docker.io/istio/proxyv2:1.30.3", "dhi.io/node:24",
              "docker.io/library/nginx:1.31"]
    containers = []
    for i in range(n_containers):
        image = images[i % len(images)]
        c = {
            "name": f"worker-{i:03}", "image": image, "resources": {},
            "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
            "imagePullPolicy": "IfNotPresent",
            "ports": [{"name": "http", "containerPort": 8000 + i, "protocol": "TCP"}],
            "env": [{"name": f"WORKER_{i:03}_SETTING_{j:03}",
                     "value": f"value-{i:03}-{j:03}-0123456789abcdefghijklmnopqrstuv"} for j in range(n_env)],
            "args": ["--worker", str(i), "--log-format=json"],
        }
        if "istio" in image:
            c["securityContext"] = {"runAsUser": 1337, "runAsGroup": 1337, "runAsNonRoot": True}
        containers.append(c)
    pod = {
        "kind": "Pod", "apiVersion": "v1",
        "metadata": {"name": "batch-workers", "namespace": "data", "labels": {"app": "batch-workers"},
                     "annotations": {"example.com/owner": "data-platform"}},
        "spec": {"containers": containers, "restartPolicy": "Always", "dnsPolicy": "ClusterFirst",
                 "securityContext": {}, "schedulerName": "default-scheduler"},
        "status": {},
    }
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    return {
        "kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1",
        "request": {
            "uid": "00000000-0000-4000-8000-000000000001",
            "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
            "name": "batch-workers", "namespace": "data", "operation": "CREATE",
            "userInfo": {"username": "kubernetes-admin", "groups": ["system:masters", "system:authenticated"]},
            "object": pod, "oldObject": None, "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


def write_bodies(out: Path) -> dict[str, Path]:
    """The request bodies: the Istio pod fixture and the generated ~200 KB pod."""
    out.mkdir(parents=True, exist_ok=True)
    istio = ROOT / "tests/fixtures/reviews/istio-pod.json"
    sources = {"istio-pod": json.loads(istio.read_text()), "large-pod": large_pod_review()}
    bodies = {}
    for key, value in sources.items():
        dst = out / f"{key}.json"
        dst.write_bytes(compact(value))
        bodies[key] = dst
        log(f"body {key}: {dst.stat().st_size} bytes")
    return bodies


def make_certs(dhi: Path, out: Path) -> tuple[Path, Path, Path]:
    """An ECDSA P-256 CA and serving certificate for localhost: (cert, key, ca)."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [str(dhi), "certs", "generate", "--out", str(out), "--dns", "localhost"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    cert, key, ca = out / "tls.crt", out / "tls.key", out / "ca.crt"
    if done.returncode == 0 and cert.is_file() and key.is_file():
        return cert, key, ca if ca.is_file() else cert
    log(f"`dhi-admission certs generate` failed ({done.stderr.strip()[:200]}); using openssl")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60,
    )
    return cert, key, cert


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int, field: str) -> int:
    """A `kB` field of /proc/PID/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def proc_cpu_ticks(pid: int) -> int:
    """utime + stime of the whole process (all threads, dead ones included), in ticks."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[11]) + int(fields[12])


def core_busy_ticks(cpu: int) -> tuple[int, int]:
    """(busy, steal) ticks of one CPU from /proc/stat."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{cpu} "):
            v = [int(x) for x in line.split()[1:]]
            user, nice, system, _idle, _iowait, irq, softirq, steal = v[:8]
            return user + nice + system + irq + softirq + steal, steal
    raise KeyError(cpu)


def readyz(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(b"GET /readyz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.1 200")
    except OSError:
        return False


class Server:
    """A server process pinned to SERVER_CPU, started and timed to /readyz 200."""

    def __init__(self, kind: str, bins: dict[str, Path], certs: tuple[Path, Path, Path], logfile: Path):
        self.kind = kind
        self.port = free_port()
        self.metrics_port = free_port()
        cert, key, _ = certs
        common = [
            "--listen", f"127.0.0.1:{self.port}",
            "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
            "--tls-cert", str(cert), "--tls-key", str(key),
        ]
        if kind == "dhi":
            argv = [str(bins["dhi"]), "serve", *common]
        else:
            argv = [str(bins["baseline"]), *common]
        self.log = open(logfile, "ab")
        env = dict(os.environ)
        env.setdefault("DHI_LOG", "info")
        started = time.perf_counter()
        self.proc = subprocess.Popen(
            pinned(SERVER_CPU, argv), stdout=self.log, stderr=self.log, env=env
        )
        deadline = started + 15.0
        try:
            while not readyz(self.metrics_port):
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{kind} exited with {self.proc.returncode}; see {logfile}")
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"{kind} not ready within 15 s; see {logfile}")
        except BaseException:
            self.stop()
            raise
        self.startup_ms = (time.perf_counter() - started) * 1000
        self.pid = self.proc.pid  # taskset execs the server: same pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=25)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.log.close()


def check_answer(server: Server, path: str, body: bytes, ca: Path) -> dict:
    """One request through Python's TLS stack: the answer must be a well-formed review."""
    ctx = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("localhost", server.port, context=ctx, timeout=10)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    if resp.status != 200:
        raise RuntimeError(f"{server.kind} {path}: HTTP {resp.status}: {data[:300]!r}")
    review = json.loads(data)
    response = review["response"]
    uid = json.loads(body)["request"]["uid"]
    if review.get("kind") != "AdmissionReview" or response.get("uid") != uid:
        raise RuntimeError(f"{server.kind} {path}: unexpected answer {data[:300]!r}")
    # A denial (403) is a policy answer; any other status in the review (400: the server
    # could not read the request) is an error, even though HTTP said 200.
    status = response.get("status") or {}
    if status.get("code") not in (None, 403):
        raise RuntimeError(f"{server.kind} {path}: error answer {data[:300]!r}")
    return {
        "allowed": response.get("allowed"),
        "patch": response.get("patchType") is not None,
        "warnings": len(response.get("warnings", [])),
        "bytes": len(data),
    }


def trim_log(path: Path, keep: int = 40) -> None:
    """Server logs hold a line per request with warnings (the Istio pod has one): keep
    the head and tail of big ones, and the count of each message."""
    if not path.exists() or path.stat().st_size < 1 << 20:
        return
    lines = path.read_text(errors="replace").splitlines()
    counts: dict[str, int] = {}
    for line in lines:
        parts = line.split(None, 3)
        key = " ".join(parts[1:3]) + " " + (parts[3].split(" uid=")[0][:80] if len(parts) > 3 else "")
        counts[key] = counts.get(key, 0) + 1
    summary = [f"... {len(lines) - 2 * keep} lines omitted; messages in the whole log:"]
    summary += [f"...   {n:>9} x {k}" for k, n in sorted(counts.items(), key=lambda kv: -kv[1])]
    path.write_text("\n".join(lines[:keep] + summary + lines[-keep:]) + "\n")


def run_wrk(server: Server, case: Case, body: Path, seconds: int, out: Path | None) -> dict:
    argv = pinned(CLIENT_CPU, [
        "wrk", "-t1", f"-c{case.conns}", f"-d{seconds}s", "--timeout", "5s", "-s", str(LUA),
    ])
    if case.close:
        argv += ["-H", "Connection: close"]
    # A host name, not an IP literal: SNI carries it, as kube-apiserver's does for the
    # service name (rustls warns about every IP-literal SNI, which would be logged).
    argv.append(f"https://localhost:{server.port}{case.path}")
    env = dict(os.environ, WRK_BODY=str(body))
    if out is not None:
        env["WRK_JSON"] = str(out)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr.strip()}")
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"client_cpu_s": client_cpu, "stdout": done.stdout}


def run_s_time(server: Server, case: Case, seconds: int) -> dict:
    """`case.conns` parallel `openssl s_time -new`: full TLS handshakes (no session
    resumption), no HTTP request. Returns wrk-like figures, latency unknown."""
    argv = pinned(CLIENT_CPU, [
        "openssl", "s_time", "-connect", f"localhost:{server.port}", "-new", "-time", str(seconds),
    ])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(case.conns)]
    total, failed = 0, 0
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        found = re.search(r"(\d+) connections in (\d+) real seconds", out)
        if proc.returncode != 0 or not found:
            failed += 1
            log(f"s_time failed: {err.strip()[:300]}")
            continue
        total += int(found.group(1))
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "client_cpu_s": client_cpu,
        "wrk": {
            "requests": total,
            "duration_us": int(wall * 1e6),
            "errors": {"connect": failed, "read": 0, "write": 0, "status": 0, "timeout": 0},
            "latency_us": None,
        },
    }


def measure(case: Case, bins, certs, bodies, results: Path, rep: int, args) -> dict:
    tag = f"{case.name.replace(' ', '_')}.{rep}"
    logfile = results / "logs" / f"{tag}.{case.server}.log"
    server = Server(case.server, bins, certs, logfile)
    try:
        time.sleep(0.2)
        idle_rss = proc_status(server.pid, "VmRSS")
        body = bodies.get(case.body)
        answer = check_answer(server, case.path, body.read_bytes(), certs[2]) if body else None
        if args.warmup > 0 and case.tool == "wrk":
            run_wrk(server, case, body, args.warmup, None)
        out = results / "wrk" / f"{tag}.json"
        cpu0 = proc_cpu_ticks(server.pid)
        core0, steal0 = core_busy_ticks(SERVER_CPU)
        t0 = time.perf_counter()
        if case.tool == "wrk":
            client = run_wrk(server, case, body, args.duration, out)
        else:
            client = run_s_time(server, case, args.duration)
            out.write_text(json.dumps(client["wrk"]) + "\n")
        wall = time.perf_counter() - t0
        cpu1 = proc_cpu_ticks(server.pid)
        core1, steal1 = core_busy_ticks(SERVER_CPU)
        peak_rss = proc_status(server.pid, "VmHWM")
        rss_after = proc_status(server.pid, "VmRSS")
    finally:
        server.stop()
        trim_log(logfile)
    w = json.loads(out.read_text())
    latency = w["latency_us"] or {"p50": None, "p99": None, "p999": None, "max": None}
    requests = w["requests"]
    seconds = w["duration_us"] / 1e6
    server_cpu_s = (cpu1 - cpu0) / CLK_TCK
    foreign = max(0, (core1 - core0) - (cpu1 - cpu0)) / CLK_TCK
    errors = sum(w["errors"].values())
    run = {
        "case": case.name,
        "server": case.server,
        "rep": rep,
        "requests": requests,
        "errors": w["errors"],
        "rps": requests / seconds if seconds else 0.0,
        "p50_us": latency["p50"],
        "p99_us": latency["p99"],
        "p999_us": latency["p999"],
        "max_us": latency["max"],
        "cpu_us_per_req": server_cpu_s * 1e6 / requests if requests else 0.0,
        "server_cpu_util": server_cpu_s / wall,
        "client_cpu_util": client["client_cpu_s"] / wall,
        "core0_foreign_util": foreign / wall,
        "core0_steal_util": (steal1 - steal0) / CLK_TCK / wall,
        "peak_rss_kib": peak_rss,
        "rss_after_kib": rss_after,
        "idle_rss_kib": idle_rss,
        "startup_ms": server.startup_ms,
        "answer": answer,
        "loadavg": os.getloadavg()[0],
    }
    flag = f" ERRORS={errors}" if errors else ""
    log(
        f"  {case.name:<28} rep {rep}: {run['rps']:9.0f} req/s  p50 {run['p50_us'] or '-':>6} us  "
        f"p99 {run['p99_us'] or '-':>6} us  {run['cpu_us_per_req']:6.1f} us CPU/req  "
        f"server {run['server_cpu_util']:.0%} wrk {run['client_cpu_util']:.0%} "
        f"other-on-cpu0 {run['core0_foreign_util']:.0%}  HWM {peak_rss / 1024:.1f} MiB  "
        f"start {server.startup_ms:.1f} ms{flag}"
    )
    return run


# === summary ===

METRICS = [
    "rps", "p50_us", "p99_us", "p999_us", "cpu_us_per_req", "peak_rss_kib", "idle_rss_kib",
    "startup_ms", "server_cpu_util", "client_cpu_util", "core0_foreign_util", "core0_steal_util",
]


def median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def medians(runs: list[dict]) -> dict:
    out = {m: median(r[m] for r in runs) for m in METRICS}
    out["errors"] = sum(sum(r["errors"].values()) for r in runs)
    out["requests"] = sum(r["requests"] for r in runs)
    out["reps"] = len(runs)
    return out


def summarize(cases: list[Case], runs: list[dict]) -> tuple[dict, str]:
    by_case = {c.name: medians([r for r in runs if r["case"] == c.name]) for c in cases}
    base_by_shape = {c.shape: by_case[c.name] for c in cases if c.server == "baseline"}
    lines = [
        "| case | req/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/req | req/s per server CPU-s "
        "| peak RSS MiB | req/s vs baseline | (per CPU-s) | p99 vs baseline | server CPU | wrk CPU "
        "| other load on CPU 0 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases:
        m = by_case[c.name]
        base = base_by_shape.get(c.shape) if c.server == "dhi" else None
        m["rps_per_cpu"] = 1e6 / m["cpu_us_per_req"] if m["cpu_us_per_req"] else 0.0
        if base:
            m["rps_ratio"] = m["rps"] / base["rps"] if base["rps"] else 0.0
            m["cpu_ratio"] = base["cpu_us_per_req"] / m["cpu_us_per_req"] if m["cpu_us_per_req"] else 0.0
            if m["p99_us"] is not None and base["p99_us"]:
                m["p99_ratio"] = m["p99_us"] / base["p99_us"]
        ratio = f"{m['rps_ratio']:.2f}" if "rps_ratio" in m else "—"
        p99r = f"{m['p99_ratio']:.2f}" if "p99_ratio" in m else "—"
        cpur = f"{m['cpu_ratio']:.2f}" if "cpu_ratio" in m else "—"
        err = f" ({m['errors']} errors)" if m["errors"] else ""
        def us(v):
            return "—" if v is None else f"{v:.0f}"

        lines.append(
            f"| {c.name}{err} | {m['rps']:,.0f} | {us(m['p50_us'])} | {us(m['p99_us'])} | {us(m['p999_us'])} "
            f"| {m['cpu_us_per_req']:.1f} | {m['rps_per_cpu']:,.0f} | {m['peak_rss_kib'] / 1024:.1f} "
            f"| {ratio} | {cpur} | {p99r} | {m['server_cpu_util']:.0%} | {m['client_cpu_util']:.0%} "
            f"| {m['core0_foreign_util']:.0%} |"
        )

    dhi_runs = [r for r in runs if r["server"] == "dhi"]
    base_runs = [r for r in runs if r["server"] == "baseline"]
    general = {
        "dhi_idle_rss_kib": statistics.median(r["idle_rss_kib"] for r in dhi_runs) if dhi_runs else None,
        "dhi_startup_ms": statistics.median(r["startup_ms"] for r in dhi_runs) if dhi_runs else None,
        "dhi_startup_ms_max": max(r["startup_ms"] for r in dhi_runs) if dhi_runs else None,
        "baseline_idle_rss_kib": statistics.median(r["idle_rss_kib"] for r in base_runs) if base_runs else None,
        "baseline_startup_ms": statistics.median(r["startup_ms"] for r in base_runs) if base_runs else None,
        "starts": len(dhi_runs),
    }
    lines.append("")
    if dhi_runs:
        lines.append(
            f"dhi-admission: idle RSS {general['dhi_idle_rss_kib'] / 1024:.1f} MiB, start-up to /readyz 200 "
            f"{general['dhi_startup_ms']:.1f} ms median ({general['dhi_startup_ms_max']:.1f} ms max) over "
            f"{general['starts']} starts"
        )
    if base_runs:
        lines.append(
            f"baseline:      idle RSS {general['baseline_idle_rss_kib'] / 1024:.1f} MiB, start-up "
            f"{general['baseline_startup_ms']:.1f} ms median"
        )

    checks = []

    def check(name: str, ok: bool, detail: str) -> None:
        checks.append({"target": name, "met": ok, "measured": detail})

    for c in cases:
        m = by_case[c.name]
        if c.server != "dhi":
            continue
        if c.conns == 64 and not c.close and "rps_ratio" in m:
            check(f"{c.name}: throughput >= {TARGET_THROUGHPUT_RATIO:.0%} of baseline",
                  m["rps_ratio"] >= TARGET_THROUGHPUT_RATIO, f"{m['rps_ratio']:.0%}")
            check(f"{c.name}: throughput per server CPU-second >= {TARGET_THROUGHPUT_RATIO:.0%} of baseline",
                  m["cpu_ratio"] >= TARGET_THROUGHPUT_RATIO, f"{m['cpu_ratio']:.0%}")
            check(f"{c.name}: p99 <= {TARGET_P99_RATIO}x baseline",
                  m["p99_ratio"] <= TARGET_P99_RATIO, f"{m['p99_ratio']:.2f}x")
        if c.conns == 64 and not c.close:
            check(f"{c.name}: peak RSS < {TARGET_PEAK_RSS_MIB} MiB",
                  m["peak_rss_kib"] / 1024 < TARGET_PEAK_RSS_MIB, f"{m['peak_rss_kib'] / 1024:.1f} MiB")
        if c.conns == 1 and not c.close:
            check(f"{c.name}: p50 < {TARGET_C1_P50_US} µs", m["p50_us"] < TARGET_C1_P50_US, f"{m['p50_us']:.0f} µs")
        if c.close and m["cpu_us_per_req"]:
            check(f"{c.name}: >= {TARGET_HANDSHAKES} handshakes/s", m["rps"] >= TARGET_HANDSHAKES,
                  f"{m['rps']:,.0f}/s (capacity {1e6 / m['cpu_us_per_req']:,.0f}/s per server CPU-second)")
    if dhi_runs:
        check(f"idle RSS < {TARGET_IDLE_RSS_MIB} MiB", general["dhi_idle_rss_kib"] / 1024 < TARGET_IDLE_RSS_MIB,
              f"{general['dhi_idle_rss_kib'] / 1024:.1f} MiB")
        check(f"start-up < {TARGET_STARTUP_MS} ms", general["dhi_startup_ms"] < TARGET_STARTUP_MS,
              f"{general['dhi_startup_ms']:.1f} ms")
    lines.append("")
    lines.append("| target | measured | met |")
    lines.append("|---|---:|:---:|")
    for c in checks:
        lines.append(f"| {c['target']} | {c['measured']} | {'yes' if c['met'] else '**no**'} |")
    return {"cases": by_case, "general": general, "targets": checks}, "\n".join(lines)


def environment() -> dict:
    def cmd(argv):
        try:
            return subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "kernel": platform.release(),
        "commit": cmd(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]),
        "rustc": cmd(["rustc", "--version"]),
        "wrk": cmd(["wrk", "--version"]).splitlines()[0] if shutil.which("wrk") else "",
        "loadavg_start": os.getloadavg(),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CI mode: 2 s per case, 1 repetition")
    p.add_argument("--duration", type=int, help="seconds per measured run [5; quick: 2]")
    p.add_argument("--reps", type=int, help="repetitions per case, medians reported [3; quick: 1]")
    p.add_argument("--warmup", type=int, help="seconds of load before each measured run [1]")
    p.add_argument("--cases", help="only cases whose name contains this (baselines are kept for ratios)")
    p.add_argument("--out", type=Path, help="results directory [bench/results/<timestamp>]")
    p.add_argument("--nice", type=int, default=0,
                   help="run server and load generators at this nice level (e.g. -10 on a shared "
                        "machine; needs root for negative values) [0]")
    p.add_argument("--no-build", action="store_true", help="(load.sh) use the binaries already built")
    args = p.parse_args()
    args.duration = args.duration or (2 if args.quick else 5)
    args.reps = args.reps or (1 if args.quick else 3)
    args.warmup = 1 if args.warmup is None else args.warmup
    global NICE
    NICE = args.nice

    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs CPUs 0 and 1: the server on one, wrk on the other")
    # The driver itself (start-up poller, /proc readers) stays off the server's CPU.
    os.sched_setaffinity(0, {CLIENT_CPU})

    bins = {
        "dhi": target_dir() / "release" / "dhi-admission",
        "baseline": target_dir() / "release" / "examples" / "baseline",
    }
    for b in bins.values():
        if not b.is_file():
            raise SystemExit(f"{b} missing: run bench/load.sh (it builds), or cargo build --release "
                             f"--locked --bin dhi-admission --example baseline")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    results = args.out or (BENCH / "results" / stamp)
    (results / "logs").mkdir(parents=True, exist_ok=True)
    (results / "wrk").mkdir(exist_ok=True)
    certs = make_certs(bins["dhi"], results / "certs")
    bodies = write_bodies(results / "bodies")

    cases = CASES
    if args.cases:
        chosen = [c for c in CASES if args.cases in c.name]
        shapes = {c.shape for c in chosen}
        cases = [c for c in CASES if c in chosen or (c.server == "baseline" and c.shape in shapes)]
    env = environment()
    log(f"{len(cases)} cases x {args.reps} reps x {args.duration} s (+{args.warmup} s warm-up); "
        f"server on CPU {SERVER_CPU}, wrk on CPU {CLIENT_CPU}; results in {results}")

    runs = []
    with open(results / "runs.jsonl", "w") as jsonl:
        # Repetitions are the outer loop so slow drifts in machine load hit server and
        # baseline alike.
        for rep in range(1, args.reps + 1):
            for case in cases:
                try:
                    run = measure(case, bins, certs, bodies, results, rep, args)
                except (RuntimeError, OSError, subprocess.SubprocessError) as err:
                    # A server that does not start, or answers wrongly: the run is void.
                    log(f"load.py: FAILED: {case.name} rep {rep}: {err}")
                    return 1
                runs.append(run)
                jsonl.write(json.dumps(run) + "\n")
                jsonl.flush()

    summary, table = summarize(cases, runs)
    summary["environment"] = env
    summary["settings"] = {"duration_s": args.duration, "reps": args.reps, "warmup_s": args.warmup,
                           "nice": args.nice,
                           "bodies": {k: v.stat().st_size for k, v in bodies.items()}}
    (results / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    header = (
        f"# dhi-admission load test {stamp}\n\n"
        f"{env['cpu']} ({env['cpus']} CPUs), kernel {env['kernel']}, {env['rustc']}, {env['wrk']}, "
        f"commit {env['commit']}; {args.duration} s x {args.reps} reps per case, medians; nice {args.nice}; "
        f"bodies: " + ", ".join(f"{k} {v.stat().st_size} B" for k, v in bodies.items()) + "\n\n"
    )
    (results / "summary.md").write_text(header + table + "\n")
    latest = BENCH / "results" / "latest"
    if results.parent == BENCH / "results":
        if latest.is_symlink() or latest.exists():
            latest.unlink()
        latest.symlink_to(results.name)
    print(header + table)
    # Missed targets are for people to read (exit 0); errors are not.
    failed = [f"{r['case']} rep {r['rep']}: {r['errors']}" for r in runs if sum(r["errors"].values())]
    if failed:
        log("load.py: FAILED: the load generator saw errors (connect/read/write/non-2xx/timeout): "
            + "; ".join(failed))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
