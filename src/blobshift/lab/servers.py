"""Lab daemons for the `lab.yml` playbook: S3 "clusters" (SeaweedFS or Ceph RGW), seed
data, the app.

    python -m blobshift.lab.servers s3-start --name old --ip 127.0.0.2 --base-port 9000 \
        --dir /var/lib/blobshift-lab/s3-old --bucket blobdb
    python -m blobshift.lab.servers s3-start --name old-2 --ip 127.0.0.4 --base-port 9020 \
        --dir /var/lib/blobshift-lab/s3-old-2 --bucket blobdb --node-of 127.0.0.2:9000
    python -m blobshift.lab.servers s3-start --kind ceph --name new --ip 127.0.0.3 \
        --base-port 9100 --dir /var/lib/blobshift-lab/s3-new --bucket blobdb
    python -m blobshift.lab.servers s3-start --kind ceph --name new-2 --ip 127.0.0.5 \
        --base-port 9120 --dir /var/lib/blobshift-lab/s3-new-2 --bucket blobdb \
        --node-of 127.0.0.3:9100 --cluster-dir /var/lib/blobshift-lab/s3-new
    python -m blobshift.lab.servers s3-stop --dir /var/lib/blobshift-lab/s3-old
    python -m blobshift.lab.servers s3-kill --dir ...        # kill -9 (fault tests)
    python -m blobshift.lab.servers s3-start-again --dir ... # as it was last started
    python -m blobshift.lab.servers s3-run ARGS     # s3-start's ARGS, in the foreground
    python -m blobshift.lab.servers s3-ready ARGS   # wait for that node, make its bucket

s3-run and s3-ready are a systemd unit's ExecStart and ExecStartPost (roles/lab_s3 on
hosts with systemd, SeaweedFS only): the unit, not a pid file, keeps the node running.
    python -m blobshift.lab.servers seed --settings .../localsettings.py --state-dir ... -n 20000
    python -m blobshift.lab.servers app-start --settings ... --state-dir ... --rate 20
    python -m blobshift.lab.servers app-stop --state-dir ...

Credentials come from DIR/credentials.json (a JSON list of [access key, secret key]
pairs, the first one used to create the bucket), never from the command line or the
environment, which show in `ps` and in `ansible-playbook -vvv`. Each command prints one
JSON line with `changed`, for Ansible's `changed_when`.

A Ceph cluster (`--kind ceph`, blobshift.lab.ceph) outlives the command that starts it:
its first node's DIR is the cluster's data_dir (ceph.conf, pid files in run/), and a
further node is one more radosgw started with that ceph.conf (`--cluster-dir`), its pid
file beside the others. A node is its radosgw: s3-kill kills only that, and
s3-start-again starts it again over the running cluster, data intact. s3-stop of the
first node stops the whole cluster (every radosgw, the OSD, the mon): the data is in the
OSD's memory (memstore), so starting that node again makes a fresh, empty cluster.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from blobshift.lab.ceph import CephGateway, CephRGW
from blobshift.lab.seaweed import SeaweedGateway, SeaweedServer
from blobshift.lab.seed import SeedSpec, seed_store
from blobshift.lab.tls import make_lab_ca
from blobshift.settings import load_settings


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().split()[0])
        os.kill(pid, 0)
        # A killed process not yet reaped by its new parent is a zombie: dead.
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return None
    except (OSError, ValueError, IndexError):
        return None
    return pid


def _stop(pid_file: Path, timeout: float = 20.0) -> bool:
    pid = _alive(pid_file)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            break
        time.sleep(0.1)
    else:
        os.killpg(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    return True


SEAWEEDFS, CEPH = "seaweedfs", "ceph"
# CephRGW.start() names the first node's radosgw so; a further node's is named after it.
CEPH_FIRST_GATEWAY = "client.rgw.n1"
# The daemons that hold a Ceph cluster's data: while they run, a gateway can (re)join it.
CEPH_CORE = ("mon.a", "osd.0")
# The OSD's capacity in MiB (memstore: the data is in the OSD's memory, which grows with
# the data stored, not with this; ~2x it, measured: `make demo`'s 20,000 seed blobs, 1.3 GiB,
# gave an OSD of 2.7 GB). Room for those and what the app writes; a lab asked for more
# fails with "full" rather than taking the machine's memory.
CEPH_MEMSTORE_MIB = 2048
# What s3-start records in DIR/node.json, for s3-start-again, s3-stop and s3-kill.
NODE_FIELDS = (
    "name",
    "ip",
    "base_port",
    "bucket",
    "tls",
    "node_of",
    "kind",
    "cluster_dir",
    "memstore_mib",
)


def _read_node(node_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((node_dir / "node.json").read_text())
    except FileNotFoundError:
        return None


def _keys(node_dir: Path) -> list[tuple[str, str]]:
    pairs = json.loads((node_dir / "credentials.json").read_text())
    return [(access, secret) for access, secret in pairs]


def _ceph_node(
    node_dir: Path, node: dict[str, Any], keys: list[tuple[str, str]] | None = None
) -> tuple[CephRGW, str]:
    """A handle on the Ceph cluster a node belongs to (this process did not start it: its
    daemons are found through the pid files in its data_dir) and the node's radosgw name.
    `keys`: only needed to start something (the first pair is the user's)."""
    (access, secret), *extra = keys or [("", "")]
    if node.get("node_of"):
        ip, _, base = str(node["node_of"]).rpartition(":")
        data_dir, gateway = Path(node["cluster_dir"]), f"client.rgw.{node['name']}"
    else:
        ip, base, data_dir, gateway = node["ip"], node["base_port"], node_dir, CEPH_FIRST_GATEWAY
    cluster = CephRGW(
        ip,
        int(base),
        data_dir,
        access,
        secret,
        buckets=[node["bucket"]],
        extra_keys=extra,
        memstore_bytes=int(node.get("memstore_mib") or CEPH_MEMSTORE_MIB) << 20,
    )
    return cluster, gateway


def _node_running(node_dir: Path, node: dict[str, Any]) -> bool:
    if node.get("kind", SEAWEEDFS) == CEPH:
        cluster, gateway = _ceph_node(node_dir, node)
        running = cluster.leftovers()
        return gateway in running or (not node.get("node_of") and bool(running))
    return _alive(node_dir / "weed.pid") is not None


def _seaweed_node(args: argparse.Namespace) -> SeaweedServer:
    """The SeaweedFS node s3-start's arguments describe (not started)."""
    tls = None
    if args.tls:
        _, cert, key = make_lab_ca(args.dir / "tls", args.ip)
        tls = (cert, key)
    (access, secret), *extra = _keys(args.dir)
    if args.node_of:
        # Another node of a running cluster: an S3 gateway on that `weed mini`'s filer.
        ip, _, base = args.node_of.rpartition(":")
        filer = SeaweedServer(ip, int(base), args.dir, access, secret).filer_address
        return SeaweedGateway(
            args.ip, args.base_port, args.dir, access, secret, [], extra, tls=tls, filer=filer
        )
    return SeaweedServer(
        args.ip, args.base_port, args.dir, access, secret, [args.bucket], extra, tls=tls
    )


def _start_seaweed(args: argparse.Namespace) -> str | None:
    """Start a SeaweedFS node; its URL, or None if it runs already."""
    pid_file = args.dir / "weed.pid"
    if _alive(pid_file):
        return None
    server = _seaweed_node(args)
    server.start()
    assert server.process is not None
    pid_file.write_text(f"{server.process.pid}\n")
    return server.url


def _start_ceph(node_dir: Path, node: dict[str, Any], timeout: float = 90.0) -> str | None:
    """Start a Ceph node (a fresh cluster, or a radosgw over the running one); its URL, or
    None if its radosgw runs already."""
    if node["tls"]:
        raise SystemExit(f"{node['name']}: --tls is not supported with --kind ceph")
    cluster, gateway = _ceph_node(node_dir, node, _keys(node_dir))
    if node.get("node_of"):
        recorded = _read_node(cluster.data_dir) or {}
        if f"{recorded.get('ip')}:{recorded.get('base_port')}" != node["node_of"]:
            raise SystemExit(
                f"{node['name']}: {cluster.data_dir} is not the first node of the Ceph "
                f"cluster at {node['node_of']} (no such node.json there)"
            )
    running = cluster.leftovers()
    if gateway in running:
        return None
    if not all(name in running for name in CEPH_CORE):
        if node.get("node_of"):
            raise SystemExit(
                f"{node['name']}: the Ceph cluster of {node['node_of']} is not running "
                "(start its first node first)"
            )
        # A fresh cluster; whatever is left of an old one on this data_dir is stopped first.
        cluster.stop()
        cluster.start(timeout)
        return f"http://{node['ip']}:{node['base_port']}"
    # The cluster runs (so does its data): only this node's radosgw is down.
    started = CephGateway(cluster, gateway, node["ip"], node["base_port"])
    try:
        cluster.start_gateway(started, time.monotonic() + timeout)
    except BaseException:
        # Only the radosgw spawned here: cluster.stop() would stop the whole cluster.
        for daemon in cluster.daemons:
            daemon.send(signal.SIGKILL)
            daemon.process.wait()
        raise
    return started.url


def s3_start(args: argparse.Namespace) -> dict:
    node = {k: getattr(args, k, None) for k in NODE_FIELDS}
    node["kind"] = node["kind"] or SEAWEEDFS  # a node.json from before `kind` existed
    if node["cluster_dir"] is not None:
        node["cluster_dir"] = str(node["cluster_dir"])
    if node["kind"] == CEPH and node["node_of"] and not node["cluster_dir"]:
        raise SystemExit(f"{args.name}: a further node of a Ceph cluster needs --cluster-dir")
    previous = _read_node(args.dir)
    if (
        previous is not None
        and previous.get("kind", SEAWEEDFS) != node["kind"]
        and _node_running(args.dir, previous)
    ):
        raise SystemExit(
            f"{args.name}: a {previous.get('kind', SEAWEEDFS)} node runs in {args.dir}: "
            "s3-stop it first"
        )
    url = _start_ceph(args.dir, node) if node["kind"] == CEPH else _start_seaweed(args)
    if url is None:
        return {"changed": False, "msg": f"{args.name} already running"}
    (args.dir / "node.json").write_text(json.dumps(node) + "\n")
    return {"changed": True, "msg": f"{args.name} started at {url}"}


def s3_run(args: argparse.Namespace) -> dict:
    """Become a SeaweedFS node in the foreground (exec, so a service manager's main process
    is `weed` itself and a kill -9 of it is the node's crash): a systemd unit's ExecStart."""
    if args.kind != SEAWEEDFS:
        raise SystemExit(f"{args.name}: s3-run supports --kind {SEAWEEDFS} only")
    server = _seaweed_node(args)
    server.write_identities()
    argv = server.command()
    os.execv(argv[0], argv)


def s3_ready(args: argparse.Namespace) -> dict:
    """Wait until a node started by s3-run answers a signed request, and create the first
    node's bucket: a unit's ExecStartPost, so that `systemctl start` returns a ready node."""
    server = _seaweed_node(args)
    server.wait_ready(args.timeout)
    for bucket in server.buckets:
        server.create_bucket(bucket)
    return {"changed": False, "msg": f"{args.name} ready at {server.url}"}


def s3_start_again(args: argparse.Namespace) -> dict:
    """Start a node that was stopped or killed, as s3-start last started it (DIR/node.json)."""
    node = json.loads((args.dir / "node.json").read_text())
    return s3_start(argparse.Namespace(dir=args.dir, **node))


def _end_ceph_daemon(cluster: CephRGW, name: str, signals: list[int], timeout: float) -> int | None:
    """Signal a daemon of `cluster` (its process group), each of `signals` in turn until it
    is gone; its pid, or None if it was not running."""
    pid = cluster.leftovers().get(name)
    if pid is None:
        return None
    for sig in signals:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if name not in cluster.leftovers():
                return pid
            time.sleep(0.05)
    raise SystemExit(f"Ceph {name} of {cluster.data_dir} (pid {pid}) did not exit")


def s3_stop(args: argparse.Namespace) -> dict:
    node = _read_node(args.dir)
    if node is None or node.get("kind", SEAWEEDFS) != CEPH:
        return {"changed": _stop(args.dir / "weed.pid")}
    cluster, gateway = _ceph_node(args.dir, node)
    if node.get("node_of"):
        stopped = _end_ceph_daemon(cluster, gateway, [signal.SIGTERM, signal.SIGKILL], 20)
        return {"changed": stopped is not None}
    # The first node: the whole cluster, every radosgw of it included.
    running = bool(cluster.leftovers())
    cluster.stop()
    return {"changed": running}


def s3_kill(args: argparse.Namespace) -> dict:
    """kill -9 a node (a fault for the reliability tests); s3-start-again brings it back.
    For a Ceph node, its radosgw only (the cluster's data lives in its OSD's memory)."""
    node = _read_node(args.dir)
    if node is not None and node.get("kind", SEAWEEDFS) == CEPH:
        cluster, gateway = _ceph_node(args.dir, node)
        pid = _end_ceph_daemon(cluster, gateway, [signal.SIGKILL], 10)
        return {"changed": pid is not None, **({"pid": pid} if pid is not None else {})}
    pid = _alive(args.dir / "weed.pid")
    if pid is None:
        return {"changed": False}
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while _alive(args.dir / "weed.pid") and time.monotonic() < deadline:
        time.sleep(0.05)
    return {"changed": True, "pid": pid}


def seed(args: argparse.Namespace) -> dict:
    """Seed the old store once; the digests and manifest let the audit check every blob."""
    digests_file = args.state_dir / "seed-digests.json"
    if digests_file.exists():
        return {"changed": False, "msg": "already seeded"}
    settings = load_settings(args.settings)
    store = settings.old or settings.new
    args.state_dir.mkdir(parents=True, exist_ok=True)
    digests = asyncio.run(seed_store(store, args.state_dir / "manifest.jsonl", SeedSpec(args.n)))
    tmp = digests_file.with_suffix(".tmp")
    tmp.write_text(json.dumps(digests))
    tmp.replace(digests_file)
    return {"changed": True, "msg": f"seeded {len(digests)} blobs into {store.describe()}"}


def app_start(args: argparse.Namespace) -> dict:
    pid_file = args.state_dir / "app.pid"
    if _alive(pid_file):
        return {"changed": False, "msg": "app already running"}
    args.state_dir.mkdir(parents=True, exist_ok=True)
    log = open(args.state_dir / "app.log", "ab")  # noqa: SIM115 - handed to the child
    cmd = [
        sys.executable,
        "-m",
        "blobshift.lab.app",
        "--settings",
        str(args.settings),
        "--state-dir",
        str(args.state_dir),
        "--rate",
        str(args.rate),
    ]
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
    )
    log.close()
    stats = args.state_dir / "stats.json"
    deadline = time.monotonic() + 30
    while not (stats.exists() and json.loads(stats.read_text()).get("pid") == proc.pid):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"the app did not start; see {args.state_dir / 'app.log'}")
        time.sleep(0.1)
    return {"changed": True, "msg": f"app started, pid {proc.pid}"}


def app_stop(args: argparse.Namespace) -> dict:
    return {"changed": _stop(args.state_dir / "app.pid")}


def _node_arguments(p: argparse.ArgumentParser) -> None:
    """The arguments that describe a node (s3-start, s3-run, s3-ready)."""
    p.add_argument("--name", required=True)
    p.add_argument("--ip", required=True)
    p.add_argument("--base-port", type=int, required=True)
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--tls", action="store_true", help="also serve HTTPS (lab CA in DIR/tls)")
    p.add_argument(
        "--node-of",
        metavar="IP:BASE_PORT",
        help="a further node of the cluster whose first node has this address and base port "
        "(seaweedfs: a `weed s3` gateway on that `weed mini`'s filer; ceph: one more radosgw "
        "over that cluster), serving the same data",
    )
    p.add_argument("--kind", choices=[SEAWEEDFS, CEPH], default=SEAWEEDFS)
    p.add_argument(
        "--cluster-dir",
        type=Path,
        help="ceph, with --node-of: the first node's --dir (the cluster's ceph.conf)",
    )
    p.add_argument(
        "--memstore-mib",
        type=int,
        default=CEPH_MEMSTORE_MIB,
        help="ceph, first node: the OSD's memstore capacity (default %(default)s MiB)",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="lab daemons (used by playbooks/lab.yml)")
    sub = parser.add_subparsers(dest="command", required=True)
    nodes = {name: sub.add_parser(name) for name in ("s3-start", "s3-run", "s3-ready")}
    nodes["s3-ready"].add_argument("--timeout", type=float, default=90.0)
    for p in nodes.values():
        _node_arguments(p)
    for name in ("s3-stop", "s3-kill", "s3-start-again"):
        p = sub.add_parser(name)
        p.add_argument("--dir", type=Path, required=True)
    p = sub.add_parser("seed")
    p.add_argument("--settings", type=Path, required=True)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("-n", type=int, default=20000)
    p = sub.add_parser("app-start")
    p.add_argument("--settings", type=Path, required=True)
    p.add_argument("--state-dir", type=Path, required=True)
    p.add_argument("--rate", type=float, default=20.0)
    p = sub.add_parser("app-stop")
    p.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    handler = {
        "s3-start": s3_start,
        "s3-stop": s3_stop,
        "s3-kill": s3_kill,
        "s3-start-again": s3_start_again,
        "s3-run": s3_run,
        "s3-ready": s3_ready,
        "seed": seed,
        "app-start": app_start,
        "app-stop": app_stop,
    }[args.command]
    print(json.dumps(handler(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
