"""Test lab for the Ansible side: two real SeaweedFS S3 servers and an nginx of its own.

Used by the molecule scenarios (prepare/cleanup run it as a script) and by the pytest
tests in this directory. Everything lives under one root directory, so a run never
touches the system nginx or another engineer's servers:

    python tests/ansible/ansible_lab.py start ROOT   # S3 servers (if not running) + nginx.conf
    python tests/ansible/ansible_lab.py stop ROOT    # nginx and the S3 servers

The "old" server (127.0.0.2) accepts the old store's keys and the new store's keys (in the
steady state the app reaches the old cluster with the new store's keys); the "new"
server (127.0.0.3) accepts the new store's keys. Keys are those of environments/local.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from blobshift.lab.seaweed import SeaweedServer

OLD_IP, NEW_IP = "127.0.0.2", "127.0.0.3"
OLD_BASE = int(os.environ.get("BLOBSHIFT_ANSIBLE_TEST_PORT", "19600"))
NEW_BASE = OLD_BASE + 20
BUCKET = "blobdb"
# environments/local/vault.yml (lab-only values).
NEW_KEYS = ("LABNEWACCESSKEY", "lab-new-secret-key-not-secret")
OLD_KEYS = ("LABOLDACCESSKEY", "lab-old-secret-key-not-secret")


class LabServer(SeaweedServer):
    """A SeaweedServer whose identity holds several key pairs."""

    extra_keys: tuple[tuple[str, str], ...] = ()

    def write_identities(self) -> None:
        super().write_identities()
        path = self.data_dir / "identities.json"
        ident = json.loads(path.read_text())
        for access, secret in self.extra_keys:
            ident["identities"][0]["credentials"].append({"accessKey": access, "secretKey": secret})
        path.write_text(json.dumps(ident))


def servers(root: Path) -> tuple[LabServer, LabServer]:
    old = LabServer(OLD_IP, OLD_BASE, root / "s3-old", *OLD_KEYS, buckets=[BUCKET])
    old.extra_keys = (NEW_KEYS,)
    new = LabServer(NEW_IP, NEW_BASE, root / "s3-new", *NEW_KEYS, buckets=[BUCKET])
    return old, new


def nginx_conf(root: Path) -> Path:
    """A main nginx.conf that includes only this lab's sites-enabled."""
    ngx = root / "nginx"
    for sub in ("sites-available", "sites-enabled", "logs", "tmp"):
        (ngx / sub).mkdir(parents=True, exist_ok=True)
    conf = ngx / "nginx.conf"
    conf.write_text(
        f"""# blobshift Ansible test lab: an nginx of its own
pid {ngx}/nginx.pid;
error_log {ngx}/logs/error.log;
worker_processes 1;
events {{ worker_connections 256; }}
http {{
    access_log off;
    client_body_temp_path {ngx}/tmp/body;
    proxy_temp_path {ngx}/tmp/proxy;
    fastcgi_temp_path {ngx}/tmp/fastcgi;
    uwsgi_temp_path {ngx}/tmp/uwsgi;
    scgi_temp_path {ngx}/tmp/scgi;
    include {ngx}/sites-enabled/*;
}}
"""
    )
    return conf


def _running(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _alive(pid_file: Path) -> int | None:
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _running(pid) else None


def start(root: Path) -> None:
    root.mkdir(parents=True, exist_ok=True)
    nginx_conf(root)
    for server in servers(root):
        pid_file = server.data_dir / "weed.pid"
        if _alive(pid_file):
            continue
        server.start()
        pid_file.write_text(str(server.process.pid))


def _kill_group(pid: int, timeout: float = 20.0) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _running(pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def stop(root: Path) -> None:
    ngx = root / "nginx"
    if _alive(ngx / "nginx.pid"):
        subprocess.run(["nginx", "-c", str(ngx / "nginx.conf"), "-s", "quit"], check=False)
        deadline = time.monotonic() + 10
        while _alive(ngx / "nginx.pid") and time.monotonic() < deadline:
            time.sleep(0.1)
    for server in servers(root):
        pid = _alive(server.data_dir / "weed.pid")
        if pid:
            _kill_group(pid)
        (server.data_dir / "weed.pid").unlink(missing_ok=True)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("start", "stop"):
        sys.exit("usage: lab.py start|stop ROOT")
    (start if sys.argv[1] == "start" else stop)(Path(sys.argv[2]))
