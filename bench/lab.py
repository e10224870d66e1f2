"""Two SeaweedFS servers on loopback, settings for blobshift and rclone, measured runs."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets  # bench/datasets.py, beside this file

from blobshift.lab.seaweed import SeaweedServer
from blobshift.settings import StoreSettings

OLD_IP, NEW_IP = "127.0.0.2", "127.0.0.3"
OLD_PORT, NEW_PORT = 19900, 19920  # apart from the tests' (19200) and the lab's ports
OLD_KEYS = ("BENCHOLDKEY", "bench-old-secret-3d9a")
NEW_KEYS = ("BENCHNEWKEY", "bench-new-secret-5e27")
BIN = Path(sys.executable).parent
SPAWN = Path(__file__).resolve().parent / "spawn.py"
SIGS = {"v4": "SigV4 + ListObjectsV2", "v2": "SigV2 + ListObjectsV1"}


class Lab:
    """The old and the new "cluster"; the old side is signed per run as v4 or v2."""

    def __init__(self, root: Path, old_port: int = OLD_PORT, new_port: int = NEW_PORT) -> None:
        # Other ports let a second bench run beside `make bench(-smoke)`: each server
        # takes ten ports from its base, and no two servers may share one.
        self.root = root
        self.old = SeaweedServer(OLD_IP, old_port, root / "old", *OLD_KEYS)
        self.new = SeaweedServer(NEW_IP, new_port, root / "new", *NEW_KEYS)

    def start(self) -> None:
        threads = [threading.Thread(target=s.start) for s in (self.old, self.new)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for s in (self.old, self.new):
            if s.process is None or s.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"SeaweedFS on {s.url} did not start: see {s.data_dir}")
            s.client().list_buckets()

    def stop(self) -> None:
        for s in (self.old, self.new):
            s.stop()

    def ports_in_use(self) -> list[int]:
        """The ports the two servers would take that something listens on, on any address
        (`weed mini` refuses a port held on another address too)."""
        wanted = {p for s in (self.old, self.new) for p in s.ports().values()}
        return sorted(wanted & listening_ports())

    def old_store(self, bucket: str, sig: str) -> StoreSettings:
        return _store("OLD_S3_BLOB_DB_SETTINGS", self.old, bucket, sig)

    def new_store(self, bucket: str) -> StoreSettings:
        return _store("S3_BLOB_DB_SETTINGS", self.new, bucket, "v4")

    def fresh_bucket(self, bucket: str) -> str:
        self.drop_bucket(bucket)
        self.new.create_bucket(bucket)
        return bucket

    def drop_bucket(self, bucket: str) -> None:
        """SeaweedFS deletes a non-empty bucket with its collection (frees the disk)."""
        client = self.new.client()
        with contextlib.suppress(client.exceptions.NoSuchBucket):
            client.delete_bucket(Bucket=bucket)


def listening_ports() -> set[int]:
    """TCP ports in LISTEN state on this host (Linux /proc/net/tcp{,6})."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":  # TCP_LISTEN
                    ports.add(int(fields[1].rpartition(":")[2], 16))
    return ports


def _store(name: str, server: SeaweedServer, bucket: str, sig: str) -> StoreSettings:
    return StoreSettings(
        name=name,
        url=server.url,
        access_key=server.access_key,
        secret_key=server.secret_key,
        bucket=bucket,
        config={"signature_version": "s3" if sig == "v2" else "s3v4", "read_timeout": 120},
        list_version=1 if sig == "v2" else 2,
    )


def settings_dict(store: StoreSettings) -> dict[str, Any]:
    """The app's settings dict for one store, as localsettings.py holds it."""
    return {
        "url": store.url,
        "access_key": store.access_key,
        "secret_key": store.secret_key,
        "s3_bucket": store.bucket,
        "list_version": store.list_version,
        "config": {
            "signature_version": store.signature_version,
            "s3": {"addressing_style": "path"},
            "connect_timeout": 5,
            "read_timeout": 120,
            "max_pool_connections": 32,
        },
    }


def write_localsettings(path: Path, old: StoreSettings, new: StoreSettings) -> Path:
    path.write_text(
        "# written by bench/backfill_vs_rclone.py\n"
        f"S3_BLOB_DB_SETTINGS = {settings_dict(new)!r}\n"
        "BLOB_DB_MIGRATING_FROM_S3_TO_S3 = True\n"
        f"OLD_S3_BLOB_DB_SETTINGS = {settings_dict(old)!r}\n"
    )
    path.chmod(0o600)
    return path


def _rclone_remote(name: str, store: StoreSettings) -> str:
    lines = [
        f"[{name}]",
        "type = s3",
        "provider = Other",
        f"access_key_id = {store.access_key}",
        f"secret_access_key = {store.secret_key}",
        f"endpoint = {store.url}",
        "region = us-east-1",
        "force_path_style = true",
    ]
    if store.signature_version == "s3":
        # Per remote, so only the old side is SigV2 (= --s3-v2-auth --s3-list-version 1).
        lines += ["v2_auth = true", "list_version = 1"]
    return "\n".join(lines) + "\n"


def write_rclone_config(path: Path, old: StoreSettings, new: StoreSettings) -> Path:
    path.write_text(_rclone_remote("old", old) + "\n" + _rclone_remote("new", new))
    path.chmod(0o600)
    return path


@dataclass(frozen=True)
class Measured:
    """One child process: wall seconds, CPU seconds (user+system), peak RSS in MB."""

    wall: float
    cpu: float
    rss_mb: float
    returncode: int
    system: float = 0.0  # the kernel's share of `cpu` (loopback TCP is charged to senders)


def measure(argv: list[str], log: Path, env: dict[str, str], timeout: float) -> Measured:
    """Run `argv` to completion through spawn.py, which reports the child's wait4 usage."""
    usage_file = log.with_suffix(".usage.json")
    launcher = [sys.executable, "-I", "-S", str(SPAWN), str(usage_file), *argv]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            launcher, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        timer = threading.Timer(timeout, _kill_group, (proc.pid,))
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
    if proc.returncode != 0 or not usage_file.exists():
        return Measured(0.0, 0.0, 0.0, proc.returncode or -1)
    u = json.loads(usage_file.read_text())
    return Measured(u["wall"], u["cpu"], u["maxrss_kib"] / 1024, u["returncode"], u["system"])


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def blobshift_argv(command: str, settings: Path, workers: int, *extra: str) -> list[str]:
    head = [str(BIN / "blobshift"), command, "--settings", str(settings)]
    return [*head, *extra, "--num-workers", str(workers)]


def rclone_argv(command: str, config: Path, src: str, dst: str, workers: int) -> list[str]:
    argv = [str(BIN / "rclone"), "--config", str(config), command, f"old:{src}", f"new:{dst}"]
    argv += ["--checkers", str(workers), "-q"]
    if command == "copy":
        argv += ["--transfers", str(workers)]
    else:
        argv += ["--one-way"]
    return argv


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RCLONE_CONFIG", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def loadavg() -> str:
    return Path("/proc/loadavg").read_text().strip()


def check_exit(m: Measured, where: Path) -> None:
    """A tool's run that failed stops the bench, with the end of what it printed."""
    if m.returncode != 0:
        tail = (where / "output.txt").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"run in {where} exited with {m.returncode}:\n{tail}")


def check_destination(label: str, store: StoreSettings, count: int, total_bytes: int) -> None:
    """What a copy left in the destination bucket is the whole data set."""
    got = datasets.bucket_stats(store)
    if got != (count, total_bytes):
        raise RuntimeError(f"{label}: destination holds {got}, source {(count, total_bytes)}")
