"""Shared fixtures: two real SeaweedFS S3 servers on their own loopback addresses.

The old one stands in for Riak CS (SigV2 object requests, ListObjects V1), the new one
is used with SigV4. Each test gets fresh, empty buckets on both.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from blobshift.lab.seaweed import SeaweedServer, running, settings_text

OLD_IP, NEW_IP = "127.0.0.2", "127.0.0.3"
# Ports distinct from the lab's, so a running `make demo` does not collide with tests.
BASE_PORT = int(os.environ.get("BLOBSHIFT_TEST_PORT", "19200"))
OLD_KEYS = ("OLDACCESSKEY", "old-secret-do-not-leak-7f3a")
NEW_KEYS = ("NEWACCESSKEY", "new-secret-do-not-leak-9c1e")
_bucket_ids = itertools.count()


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[SeaweedServer, SeaweedServer]]:
    root = Path(tempfile.mkdtemp(prefix="blobshift-test-s3-"))
    old = SeaweedServer(OLD_IP, BASE_PORT, root / "old", *OLD_KEYS)
    new = SeaweedServer(NEW_IP, BASE_PORT + 20, root / "new", *NEW_KEYS)
    with running(old, new):
        yield old, new


@pytest.fixture
def old_server(servers: tuple[SeaweedServer, SeaweedServer]) -> SeaweedServer:
    return servers[0]


@pytest.fixture
def new_server(servers: tuple[SeaweedServer, SeaweedServer]) -> SeaweedServer:
    return servers[1]


def store_dict(server: SeaweedServer, bucket: str, *, sigv2: bool) -> dict:
    """A settings dict as the app's localsettings.py holds it."""
    return server.settings_dict(bucket, riak=sigv2, chunk=200)


def write_settings(path: Path, new: dict, old: dict | None, migrating: bool = True) -> Path:
    path.write_text(settings_text(new, old, migrating))
    path.chmod(0o640)
    return path


@pytest.fixture
def buckets(old_server: SeaweedServer, new_server: SeaweedServer) -> tuple[str, str]:
    """A fresh, empty bucket on each server for this test."""
    n = next(_bucket_ids)
    pid = os.getpid()
    old_bucket, new_bucket = f"old-{pid}-{n}", f"new-{pid}-{n}"
    old_server.create_bucket(old_bucket)
    new_server.create_bucket(new_bucket)
    return old_bucket, new_bucket


@pytest.fixture
def settings_file(tmp_path: Path, old_server, new_server, buckets) -> Path:
    old_bucket, new_bucket = buckets
    return write_settings(
        tmp_path / "localsettings.py",
        new=store_dict(new_server, new_bucket, sigv2=False),
        old=store_dict(old_server, old_bucket, sigv2=True),
    )
