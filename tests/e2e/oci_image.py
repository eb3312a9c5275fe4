#!/usr/bin/env python3
"""Writes a deterministic OCI image layout archive, without a registry or a daemon.

    tests/e2e/oci_image.py --name dhi.io/busybox:1.37 --out busybox.tar \\
        --add /bin/busybox=/bin/busybox:0555 --user-account nonroot:65532 --user nonroot \\
        --entrypoint '["/bin/busybox"]' --env PATH=/bin
    ctr -n k8s.io images import busybox.tar

One uncompressed layer, one config, one manifest; index.json names the image in the
`io.containerd.image.name` annotation, which `ctr images import` uses as the image's name.
Everything is fixed that would otherwise vary: entries are sorted, every mtime is 0, every
owner is 0:0 with no user or group name, modes are the ones given (not the source file's), the
JSON is canonical (sorted keys, no spaces), and the config has no `created` date.
Every entry is owned by 0:0 except the account's home directory. The same
arguments and the same file contents always give the same archive, byte for byte, and so the
same manifest digest, which is printed on stdout.

`--user-account NAME:UID[:GID]` writes /etc/passwd and /etc/group with root and that account
(home /home/NAME, owned by the account, shell /sbin/nologin), as hardened images have them: a config `User` that is
a name is resolved by the runtime through the image's /etc/passwd.
"""

import argparse
import hashlib
import io
import json
import sys
import tarfile

LAYER = "application/vnd.oci.image.layer.v1.tar"
CONFIG = "application/vnd.oci.image.config.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"


def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


class Tree:
    """The files of the layer, by path (no leading slash), each a tar entry to be."""

    def __init__(self):
        self.entries = {}

    def _parents(self, path):
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in self.entries:
                self.entries[d] = ("dir", 0o755, None, (0, 0))

    def add(self, path, kind, mode, data=None, owner=(0, 0)):
        path = path.strip("/")
        if not path:
            raise SystemExit("oci_image.py: an entry needs a path below /")
        self._parents(path)
        self.entries[path] = (kind, mode, data, owner)

    def tar(self):
        out = io.BytesIO()
        with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for path in sorted(self.entries):
                kind, mode, data, owner = self.entries[path]
                info = tarfile.TarInfo(path)
                info.mtime, info.uname, info.gname = 0, "", ""
                info.uid, info.gid = owner
                info.mode = mode
                if kind == "dir":
                    info.type = tarfile.DIRTYPE
                    tar.addfile(info)
                elif kind == "symlink":
                    info.type, info.linkname = tarfile.SYMTYPE, data
                    tar.addfile(info)
                else:
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        return out.getvalue()


def archive(blobs, index):
    """The image layout as a tar: oci-layout, index.json, blobs/sha256/*; sorted, times 0."""
    files = {"oci-layout": canonical({"imageLayoutVersion": "1.0.0"}), "index.json": index}
    for data in blobs:
        files["blobs/sha256/" + hashlib.sha256(data).hexdigest()] = data
    dirs = ["blobs", "blobs/sha256"]
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for path in dirs + sorted(files):
            info = tarfile.TarInfo(path)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path in dirs:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.mode, info.size = 0o644, len(files[path])
                tar.addfile(info, io.BytesIO(files[path]))
    return out.getvalue()


def build(args):
    tree = Tree()
    for spec in args.add:
        src, _, dest = spec.partition("=")
        dest, _, mode = dest.partition(":")
        if not dest:
            raise SystemExit(f"oci_image.py: --add {spec}: expected SRC=DEST[:MODE]")
        with open(src, "rb") as f:
            tree.add(dest, "file", int(mode or "0644", 8), f.read())
    for spec in args.dir:
        path, _, mode = spec.partition(":")
        tree.add(path, "dir", int(mode or "0755", 8))
    for spec in args.symlink:
        path, _, target = spec.partition("=")
        tree.add(path, "symlink", 0o777, target)
    for spec in args.text:
        path, _, rest = spec.partition("=")
        tree.add(path, "file", 0o644, rest.encode())
    if args.user_account:
        name, uid, *gid = args.user_account.split(":")
        gid = gid[0] if gid else uid
        passwd = f"root:x:0:0:root:/root:/sbin/nologin\n{name}:x:{uid}:{gid}:{name}:/home/{name}:/sbin/nologin\n"
        group = f"root:x:0:\n{name}:x:{gid}:\n"
        tree.add("etc/passwd", "file", 0o644, passwd.encode())
        tree.add("etc/group", "file", 0o644, group.encode())
        tree.add(f"home/{name}", "dir", 0o755, owner=(int(uid), int(gid)))
    layer = tree.tar()

    config = {"Env": args.env}
    if args.user:
        config["User"] = args.user
    if args.entrypoint:
        config["Entrypoint"] = json.loads(args.entrypoint)
    if args.cmd:
        config["Cmd"] = json.loads(args.cmd)
    if args.workdir:
        config["WorkingDir"] = args.workdir
    if args.label:
        config["Labels"] = dict(label.split("=", 1) for label in args.label)
    if args.port:
        config["ExposedPorts"] = {f"{p}/tcp": {} for p in args.port}
    image_config = canonical({
        "architecture": args.arch,
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [digest(layer)]},
        "history": [{"created_by": "tests/e2e/oci_image.py"}],
    })
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {"mediaType": CONFIG, "digest": digest(image_config), "size": len(image_config)},
        "layers": [{"mediaType": LAYER, "digest": digest(layer), "size": len(layer)}],
    })
    tag = args.name.rsplit(":", 1)[1] if ":" in args.name.rsplit("/", 1)[-1] else "latest"
    index = canonical({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{
            "mediaType": MANIFEST,
            "digest": digest(manifest),
            "size": len(manifest),
            "platform": {"architecture": args.arch, "os": "linux"},
            "annotations": {
                "io.containerd.image.name": args.name,
                "org.opencontainers.image.ref.name": tag,
            },
        }],
    })
    return archive([layer, image_config, manifest], index), digest(manifest)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--name", required=True, help="the image's full name, e.g. dhi.io/busybox:1.37")
    p.add_argument("--out", required=True, help="the archive to write ('-' for stdout)")
    p.add_argument("--add", action="append", default=[], metavar="SRC=DEST[:MODE]",
                   help="a file of this machine at DEST in the image (mode default 0644)")
    p.add_argument("--dir", action="append", default=[], metavar="DEST[:MODE]")
    p.add_argument("--symlink", action="append", default=[], metavar="DEST=TARGET")
    p.add_argument("--text", action="append", default=[], metavar="DEST=CONTENT",
                   help="a file with this content (mode 0644)")
    p.add_argument("--user-account", metavar="NAME:UID[:GID]",
                   help="/etc/passwd and /etc/group with root and this account")
    p.add_argument("--user", help="the config's User: a name or UID[:GID]")
    p.add_argument("--entrypoint", help="a JSON array")
    p.add_argument("--cmd", help="a JSON array")
    p.add_argument("--env", action="append", default=[], metavar="K=V")
    p.add_argument("--workdir")
    p.add_argument("--label", action="append", default=[], metavar="K=V")
    p.add_argument("--port", action="append", default=[], type=int)
    p.add_argument("--arch", default="amd64")
    args = p.parse_args()
    data, manifest_digest = build(args)
    if args.out == "-":
        sys.stdout.buffer.write(data)
    else:
        with open(args.out, "wb") as f:
            f.write(data)
        print(manifest_digest)


if __name__ == "__main__":
    main()
