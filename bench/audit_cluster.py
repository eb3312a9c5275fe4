#!/usr/bin/env python3
"""The cluster bench/audit.sh measures the background audit on, and the one change it times.

    audit_cluster.py populate NAMESPACES WORKLOADS PODS   create the objects
    audit_cluster.py rejudge REPORT RUNS                  time a change until its report shows it

Talks to the API server of the end-to-end tier directly (DHI_E2E_APISERVER, DHI_E2E_CA,
DHI_E2E_TOKEN from the control plane's env file), with a few threads: kubectl would spend
most of the time starting up, once per object. Standard library only.
"""

import json
import ssl
import statistics
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

SERVER = None
CONTEXT = None
TOKEN = None


def setup():
    global SERVER, CONTEXT, TOKEN
    import os

    SERVER = os.environ["DHI_E2E_APISERVER"]
    CONTEXT = ssl.create_default_context(cafile=os.environ["DHI_E2E_CA"])
    TOKEN = os.environ["DHI_E2E_TOKEN"]


def call(method, path, body=None, content_type="application/json"):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(SERVER + path, data=data, method=method)
    request.add_header("Authorization", "Bearer " + TOKEN)
    request.add_header("Content-Type", content_type)
    request.add_header("Accept", "application/json")
    try:
        with urllib.request.urlopen(request, context=CONTEXT, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"null")


def create(path, body):
    status, answer = call("POST", path, body)
    if status not in (201, 409):
        raise SystemExit(f"POST {path}: {status} {answer}")


# Four kinds of workload, in turn: what a brownfield namespace holds.
IMAGES = [
    ("dhi.io/nginx:1.31", 80),  # hardened, port 80: privileged-port fails
    ("docker.io/library/nginx:1.31", 8080),  # upstream with an equivalent: hardened-image warns
    ("dhi.io/python:3.13", 8000),  # hardened, clean
    ("quay.io/example/inhouse:2.4.1", 9000),  # upstream, no equivalent
]


def container(name, image, port):
    # Sized like real workloads: env, resources, probes, mounts (objects of a few KB).
    return {
        "name": name,
        "image": image,
        "ports": [{"containerPort": port, "name": "http"}],
        "env": [{"name": f"SETTING_{i}", "value": f"value-{i}-" + "x" * 24} for i in range(12)],
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}, "limits": {"memory": "256Mi"}},
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 5},
        "volumeMounts": [{"name": "config", "mountPath": "/etc/app"}],
    }


def pod_spec(name, image, port):
    return {
        "containers": [container(name, image, port)],
        "volumes": [{"name": "config", "configMap": {"name": name}}],
    }


def labels(name):
    return {"app": name, "team": "payments", "tier": "backend", "app.kubernetes.io/version": "2.4.1"}


def namespace_objects(ns, workloads, pods):
    """(path, object) of every object in one namespace, owners before what they own."""
    out = [(f"/api/v1/namespaces/{ns}/serviceaccounts", {"metadata": {"name": "default"}})]
    for w in range(workloads):
        name = f"app-{w}"
        image, port = IMAGES[w % len(IMAGES)]
        spec = pod_spec(name, image, port)
        template = {"metadata": {"labels": labels(name)}, "spec": spec}
        stateful = w % 5 == 4
        kind = "StatefulSet" if stateful else "Deployment"
        plural = "statefulsets" if stateful else "deployments"
        workload = {
            "metadata": {"name": name, "labels": labels(name),
                         "annotations": {"description": "bench workload " + "y" * 64}},
            "spec": {"selector": {"matchLabels": {"app": name}}, "template": template},
        }
        if stateful:
            workload["spec"]["serviceName"] = name
        out.append((f"/apis/apps/v1/namespaces/{ns}/{plural}", workload))
        # The controllers' objects, as a controller-manager would make them (none runs here).
        owner_kind, owner = kind, name
        if not stateful:
            owner_kind, owner = "ReplicaSet", f"{name}-7d9c5b"
            out.append((f"/apis/apps/v1/namespaces/{ns}/replicasets", {
                "metadata": {"name": owner, "labels": labels(name), "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": "Deployment", "name": name,
                    "uid": f"00000000-0000-0000-0000-{w:012d}", "controller": True}]},
                "spec": {"selector": {"matchLabels": {"app": name}}, "template": template},
            }))
        for p in range(pods):
            out.append((f"/api/v1/namespaces/{ns}/pods", {
                "metadata": {"name": f"{owner}-{p}", "labels": labels(name), "ownerReferences": [{
                    "apiVersion": "apps/v1", "kind": owner_kind, "name": owner,
                    "uid": f"00000000-0000-0000-0001-{w:012d}", "controller": True}]},
                "spec": spec,
            }))
    return out


def populate(namespaces, workloads, pods):
    started = time.monotonic()
    names = [f"bench-{n}" for n in range(namespaces)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda ns: create("/api/v1/namespaces", {"metadata": {"name": ns}}), names))

        def fill(ns):
            for path, body in namespace_objects(ns, workloads, pods):
                create(path, body)

        list(pool.map(fill, names))
    print(f"populated {namespaces} namespaces x {workloads} workloads x {pods} pods "
          f"in {time.monotonic() - started:.1f}s")


def result(report, workload, rule):
    for r in report.get("results") or []:
        if r["resources"][0]["name"] == workload and r["rule"] == rule:
            return r["result"]
    return None


def rejudge(report_name, runs):
    """Moves bench-0/app-0 between ports 80 and 8080; times each change until the
    namespace's PolicyReport shows its privileged-port result flip."""
    path = f"/apis/wgpolicyk8s.io/v1alpha2/namespaces/bench-0/policyreports/{report_name}"
    deployment = "/apis/apps/v1/namespaces/bench-0/deployments/app-0"
    times = []
    port = 80
    for _ in range(runs):
        port = 8080 if port == 80 else 80
        want = "pass" if port == 8080 else "fail"
        patch = [{"op": "replace", "path": "/spec/template/spec/containers/0/ports/0/containerPort",
                  "value": port}]
        started = time.monotonic()
        status, answer = call("PATCH", deployment, patch, "application/json-patch+json")
        if status != 200:
            raise SystemExit(f"PATCH {deployment}: {status} {answer}")
        while True:
            _, report = call("GET", path)
            if result(report or {}, "app-0", "privileged-port") == want:
                break
            if time.monotonic() - started > 30:
                raise SystemExit("the report did not change within 30 s")
            time.sleep(0.02)
        times.append(time.monotonic() - started)
        time.sleep(1)
    print("rejudge seconds: " + " ".join(f"{t:.3f}" for t in times))
    print(f"rejudge median: {statistics.median(times):.3f}s")


def main():
    setup()
    match sys.argv[1:]:
        case ["populate", namespaces, workloads, pods]:
            populate(int(namespaces), int(workloads), int(pods))
        case ["rejudge", report_name, runs]:
            rejudge(report_name, int(runs))
        case _:
            raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
