"""Lab daemons for the `lab.yml` playbook: SeaweedFS "clusters", seed data, the app.

    python -m blobshift.lab.servers s3-start --name old --ip 127.0.0.2 --base-port 9000 \
        --dir /var/lib/blobshift-lab/s3-old --bucket blobdb
    python -m blobshift.lab.servers s3-start --name old-2 --ip 127.0.0.4 --base-port 9020 \
        --dir /var/lib/blobshift-lab/s3-old-2 --bucket blobdb --node-of 127.0.0.2:9000
    python -m blobshift.lab.servers s3-stop --dir /var/lib/blobshift-lab/s3-old
    python -m blobshift.lab.servers s3-kill --dir ...        # kill -9 (fault tests)
    python -m blobshift.lab.servers s3-start-again --dir ... # as it was last started
    python -m blobshift.lab.servers seed --settings .../localsettings.py --state-dir ... -n 20000
    python -m blobshift.lab.servers app-start --settings ... --state-dir ... --rate 20
    python -m blobshift.lab.servers app-stop --state-dir ...

Credentials come from DIR/credentials.json (a JSON list of [access key, secret key]
pairs, the first one used to create the bucket), never from the command line or the
environment, which show in `ps` and in `ansible-playbook -vvv`. Each command prints one
JSON line with `changed`, for Ansible's `changed_when`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

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


def s3_start(args: argparse.Namespace) -> dict:
    pid_file = args.dir / "weed.pid"
    if _alive(pid_file):
        return {"changed": False, "msg": f"{args.name} already running"}
    tls = None
    if args.tls:
        _, cert, key = make_lab_ca(args.dir / "tls", args.ip)
        tls = (cert, key)
    keys = [tuple(pair) for pair in json.loads((args.dir / "credentials.json").read_text())]
    (access, secret), extra = keys[0], keys[1:]
    server: SeaweedServer
    if args.node_of:
        # Another node of a running cluster: an S3 gateway on that `weed mini`'s filer.
        ip, _, base = args.node_of.rpartition(":")
        filer = SeaweedServer(ip, int(base), args.dir, access, secret).filer_address
        server = SeaweedGateway(
            args.ip, args.base_port, args.dir, access, secret, [], extra, tls=tls, filer=filer
        )
    else:
        server = SeaweedServer(
            args.ip, args.base_port, args.dir, access, secret, [args.bucket], extra, tls=tls
        )
    server.start()
    assert server.process is not None
    pid_file.write_text(f"{server.process.pid}\n")
    node = {k: getattr(args, k) for k in ("name", "ip", "base_port", "bucket", "tls", "node_of")}
    (args.dir / "node.json").write_text(json.dumps(node) + "\n")
    return {"changed": True, "msg": f"{args.name} started at {server.url}"}


def s3_start_again(args: argparse.Namespace) -> dict:
    """Start a node that was stopped or killed, as s3-start last started it (DIR/node.json)."""
    node = json.loads((args.dir / "node.json").read_text())
    return s3_start(argparse.Namespace(dir=args.dir, **node))


def s3_stop(args: argparse.Namespace) -> dict:
    return {"changed": _stop(args.dir / "weed.pid")}


def s3_kill(args: argparse.Namespace) -> dict:
    """kill -9 a node (a fault for the reliability tests); s3-start-again brings it back."""
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="lab daemons (used by playbooks/lab.yml)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("s3-start")
    p.add_argument("--name", required=True)
    p.add_argument("--ip", required=True)
    p.add_argument("--base-port", type=int, required=True)
    p.add_argument("--dir", type=Path, required=True)
    p.add_argument("--bucket", required=True)
    p.add_argument("--tls", action="store_true", help="also serve HTTPS (lab CA in DIR/tls)")
    p.add_argument(
        "--node-of",
        metavar="IP:BASE_PORT",
        help="a second node of the cluster whose `weed mini` has this address and base port "
        "(a `weed s3` gateway on its filer, serving the same data)",
    )
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
        "seed": seed,
        "app-start": app_start,
        "app-stop": app_stop,
    }[args.command]
    print(json.dumps(handler(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
