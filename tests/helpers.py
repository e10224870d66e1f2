"""Helpers for engine tests: seed a bucket, read one back, run the CLI."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from blobshift.lab.seaweed import SeaweedServer

BLOBSHIFT = [sys.executable, "-m", "blobshift.cli"]


def seed(server: SeaweedServer, bucket: str, blobs: dict[str, bytes], **extra: object) -> None:
    client = server.client()

    def put(item: tuple[str, bytes]) -> None:
        client.put_object(Bucket=bucket, Key=item[0], Body=item[1], **extra)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(put, blobs.items()))


def random_blobs(n: int, size: int = 1024, prefix: str = "blob/") -> dict[str, bytes]:
    return {f"{prefix}{i:06d}": os.urandom(size) for i in range(n)}


def contents(server: SeaweedServer, bucket: str) -> dict[str, str]:
    """key -> md5 of every object in the bucket."""
    client = server.client()
    keys = [
        obj["Key"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for obj in page.get("Contents", [])
    ]

    def md5(key: str) -> tuple[str, str]:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        return key, hashlib.md5(body).hexdigest()

    with ThreadPoolExecutor(16) as pool:
        return dict(pool.map(md5, keys))


def md5s(blobs: dict[str, bytes]) -> dict[str, str]:
    return {k: hashlib.md5(v).hexdigest() for k, v in blobs.items()}


def cli_argv(*args: object, log_unfaithful: bool = True) -> list[str]:
    """A blobshift command line. SeaweedFS, the test stores' server, fails the backfill's
    key probe for "a//b", "x/", dot segments and segments over 255 bytes (see
    blobshift.fidelity), so backfills here log such keys unless a test asks for the
    default (refuse to start) with `log_unfaithful=False`."""
    argv = [str(a) for a in args]
    if log_unfaithful and argv and argv[0] == "migrate-backend":
        argv.append("--log-unfaithful-keys")
    return [*BLOBSHIFT, *argv]


def backfill_cmd(settings: Path, log_dir: Path, *extra: object) -> list[str]:
    """The argv of a migrate-backend run, for tests that start it in the background."""
    return cli_argv("migrate-backend", "--settings", settings, "--log-dir", log_dir, *extra)


def run_cli(
    *args: object, check: int | None = None, log_unfaithful: bool = True, **kw: object
) -> subprocess.CompletedProcess:
    argv = cli_argv(*args, log_unfaithful=log_unfaithful)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kw)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def log_records(log_dir: Path) -> list[dict]:
    records = []
    for path in sorted(log_dir.glob("*-blob-migration-*.txt")):
        if path.name.endswith("-summary.txt"):
            continue
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    return records


def write_manifest(path: Path, rows: Iterable[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_json(path: Path) -> dict | None:
    """A JSON run file, or None while it does not exist (yet)."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None


def wait_until(predicate: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    """Poll `predicate` until it holds; fail naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
