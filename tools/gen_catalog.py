#!/usr/bin/env python3
"""Generate crates/dhi-policy/src/catalog/builtin.jsonl from the DHI catalog export (images.json).

Usage: tools/gen_catalog.py [../shared/dhi-catalog/images.json [../shared/dhi-catalog/guides.json]] \
           > crates/dhi-policy/src/catalog/builtin.jsonl

The export lists every tag of every variant definition (18,000 tags, 1 MiB). Tags are
generated in the catalog as version x suffix products (`1.30.3`, `1.30`, `1` times ``,
`-debian13`, `-dev`...), so the compact form stores those products, and the catalog
expands them when the binary starts. One line per repository keeps a refresh reviewable
in a diff. The format is documented in crates/dhi-policy/src/catalog/compact.rs, which
reads it; `crates/dhi-policy/tests/policy/catalog_facts.rs` proves that the expansion answers exactly as the
export for every repository and tag.

From guides.json (what DHI's own guides tell users to set, see GUIDES.md beside it) the
header keeps `root_by_guide`: each repository whose guide's Kubernetes examples set
`runAsUser: 0` for its own image, with the first place that says so. The engine admits
that setting for that image as root by design. It also keeps `bind_by_file_cap`: each
repository whose definitions give a binary the file capability cap_net_bind_service, with
where; through it a nonroot process binds ports below 1024 (Kubernetes sets no ambient
capabilities, so `capabilities.add` alone cannot).
"""
import json
import re
import sys
from collections import Counter

VERSION = re.compile(r"^(v?\d+(\.\d+)*|latest)$")


def compact(value):
    return json.dumps(value, separators=(",", ":"))


def split_tag(tag):
    """`1.30.3-debian13-dev` is (`1.30.3`, `-debian13-dev`); a tag that does not start
    with a version is all suffix."""
    first = tag.split("-")[0]
    if VERSION.match(first):
        return first, tag[len(first):]
    return "", tag


def prefixes(version):
    parts = version.split(".")
    return {".".join(parts[:k]) for k in range(1, len(parts) + 1)}


def encode_versions(versions):
    """A string of space-separated versions, each standing for itself and its prefixes
    (`1.30.3` is `1`, `1.30`, `1.30.3`), when that is exactly the set; else the list."""
    maxima = [v for v in versions if not any(w.startswith(v + ".") for w in versions)]
    if all(maxima) and set().union(*map(prefixes, maxima)) == set(versions):
        return " ".join(maxima)
    return list(versions)


def encode_suffixes(suffixes, tails):
    """A shared tail list's index; `[heads, index]`, each head followed by each tail;
    or the list itself."""
    key = tuple(suffixes)
    if key in tails:
        return tails[key]
    best = None
    for tail, index in tails.items():
        if len(tail) < 2:
            continue
        heads = sorted({s[: len(s) - len(t)] for s in suffixes for t in tail if s.endswith(t)})
        heads = [h for h in heads if all(h + t in suffixes for t in tail)]
        if len(heads) * len(tail) == len(suffixes) and {h + t for h in heads for t in tail} == set(suffixes):
            if best is None or len(heads) < len(best[0]):
                best = (heads, index)
    return list(best) if best else list(suffixes)


def repository(export_repo):
    """Distinct variants (dev, uid, gid, entrypoint, cmd) in the export's order, and the
    tag groups: (variant, versions, suffixes) with every tag their product."""
    variants, tags = [], {}
    for v in export_repo["variants"]:
        key = (v["variant"] == "dev", v["uid"], v["gid"], v.get("entrypoint", []), v.get("cmd", []))
        if key not in variants:
            variants.append(key)
        i = variants.index(key)
        for tag in v["tags"]:
            if tags.setdefault(tag, i) != i and variants[tags[tag]][:3] != key[:3]:
                sys.exit(f"{tag} is listed with two different users")
    by_suffix = {}
    for tag, i in sorted(tags.items()):
        version, suffix = split_tag(tag)
        by_suffix.setdefault((i, suffix), []).append(version)
    groups = {}
    for (i, suffix), versions in by_suffix.items():
        groups.setdefault((i, tuple(versions)), []).append(suffix)
    return variants, groups


def root_by_guide(guides):
    """`{repo: "image/REPO/guides.md:LINE"}` for each repository whose guide's Kubernetes
    examples run its own image (`image_repo` unset or the repository) with `runAsUser: 0`
    on the container or the pod. Prose and `docker run` lines are not prescriptions for
    a cluster, and an example for another image (piraeus-operator's busybox) is that
    image's business."""
    out = {}
    for name, facts in sorted(guides["repos"].items()):
        for example in facts["kubernetes_examples"]:
            if example.get("image_repo") not in (None, name):
                continue
            contexts = (example.get("securityContext") or {}, example.get("podSecurityContext") or {})
            if any(c.get("runAsUser") == 0 for c in contexts):
                out[name] = f"{facts['guide'].rsplit('/', 1)[0]}/{example['at']}"
                break
    return out


# setcap in the catalog repository's package/ definitions, which guides.json does not read
# (GUIDES.md, Caveats, names coredns among the packages that run setcap there): its binary
# gets cap_net_bind_service so that it binds port 53 as nonroot.
PACKAGE_BIND_CAPS = {"coredns": "package/coredns definition (setcap cap_net_bind_service=+ep)"}


def bind_by_file_cap(guides):
    """`{repo: "DEFINITION (PATH CAPS)"}` for each repository with a binary whose file
    capabilities include cap_net_bind_service, in the runtime variant where it says."""
    out = dict(PACKAGE_BIND_CAPS)
    for name, facts in sorted(guides["repos"].items()):
        caps = [c for c in facts["file_capabilities"] if "cap_net_bind_service" in c["caps"]]
        caps.sort(key=lambda c: c.get("variant") != "runtime")
        if caps:
            c = caps[0]
            out[name] = f"{c['definition']} ({c['path']} {c['caps']})"
    return dict(sorted(out.items()))


def main():
    path = sys.argv[1] if len(sys.argv) > 1 else "../shared/dhi-catalog/images.json"
    with open(path) as f:
        export = json.load(f)
    guides_path = sys.argv[2] if len(sys.argv) > 2 else "../shared/dhi-catalog/guides.json"
    with open(guides_path) as f:
        guides = json.load(f)
    repos = [(name, *repository(export["images"][name])) for name in sorted(export["images"])]
    # Suffix lists that more than one group uses (`["", "-debian", "-debian13"]`) are
    # written once, in the header.
    used = Counter(tuple(s) for _, _, groups in repos for s in groups.values())
    shared = [list(s) for s, n in used.most_common() if n > 1]
    tails = {tuple(s): i for i, s in enumerate(shared)}
    print(compact({"source": export["source"], "tails": shared,
                   "guides": guides["source"], "root_by_guide": root_by_guide(guides),
                   "bind_by_file_cap": bind_by_file_cap(guides)}))
    for name, variants, groups in repos:
        out_variants, start = [], ([], [])
        for dev, uid, gid, entrypoint, cmd in variants:
            ids = f"{uid}" if uid == gid else f"{uid}:{gid}"
            item = [("dev " if dev else "run ") + ids]
            if (entrypoint, cmd) != start:
                item.append(entrypoint)
                if cmd:
                    item.append(cmd)
            start = (entrypoint, cmd)
            out_variants.append(item)
        version_sets, out_groups = [], []
        for (i, versions), suffixes in groups.items():
            encoded = encode_versions(versions)
            if encoded not in version_sets:
                version_sets.append(encoded)
            out_groups.append([i, version_sets.index(encoded), encode_suffixes(suffixes, tails)])
        print(compact([name, out_variants, version_sets, out_groups]))


if __name__ == "__main__":
    main()
