"""The one-node Ceph RGW of the lab (blobshift.lab.ceph): S3 as the tests use it, a second
gateway over the same cluster, and a stop() that leaves no process behind."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import BASE_PORT, NEW_KEYS, OLD_KEYS

from blobshift.lab.ceph import CephGateway, CephRGW
from blobshift.lab.seaweed import running

CEPH_IP, GATEWAY_IP = "127.0.0.6", "127.0.0.7"
PORT = BASE_PORT + 60
BUCKET = "ceph-test"
KEYS = {"plain.txt": b"plain", "a//b": b"double slash", "trail/": b"trailing slash"}


def processes_of(data_dir: Path) -> list[str]:
    """Every process whose command line names this cluster's directory (its config)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(data_dir) in cmdline:
            found.append(f"{proc.name}: {cmdline}")
    return found


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[CephRGW, CephGateway]]:
    root = tmp_path_factory.mktemp("ceph")
    ceph = CephRGW(CEPH_IP, PORT, root, *NEW_KEYS, buckets=[BUCKET], extra_keys=[OLD_KEYS])
    with running(ceph):
        gateway = ceph.add_gateway(GATEWAY_IP, PORT)
        client = ceph.client()
        for key, body in KEYS.items():
            client.put_object(Bucket=BUCKET, Key=key, Body=body)
        yield ceph, gateway
    assert processes_of(root) == []


def test_sigv4_put_get_list(cluster: tuple[CephRGW, CephGateway]) -> None:
    ceph, _ = cluster
    client = ceph.client()
    assert client.get_object(Bucket=BUCKET, Key="plain.txt")["Body"].read() == b"plain"
    v2 = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET)["Contents"]]
    v1 = [o["Key"] for o in client.list_objects(Bucket=BUCKET)["Contents"]]
    # Kept as written: SeaweedFS folds "a//b" and makes "trail/" a directory, Ceph does not.
    assert v2 == v1 == sorted(KEYS)


def test_sigv2_object_get(cluster: tuple[CephRGW, CephGateway]) -> None:
    ceph, _ = cluster
    client = ceph.client(signature_version="s3")
    for key, body in KEYS.items():
        assert client.get_object(Bucket=BUCKET, Key=key)["Body"].read() == body


def test_extra_key_reaches_the_same_buckets(cluster: tuple[CephRGW, CephGateway]) -> None:
    ceph, _ = cluster
    # The same endpoint with the other key pair (never started: only its client is used).
    other = CephRGW(ceph.ip, ceph.base_port, ceph.data_dir, *OLD_KEYS)
    assert other.client().get_object(Bucket=BUCKET, Key="a//b")["Body"].read() == KEYS["a//b"]


def test_second_gateway_serves_the_same_data(cluster: tuple[CephRGW, CephGateway]) -> None:
    ceph, gateway = cluster
    assert (gateway.ip, gateway.s3_port) != (ceph.ip, ceph.s3_port)
    client = gateway.client()
    assert client.get_object(Bucket=BUCKET, Key="trail/")["Body"].read() == KEYS["trail/"]
    # A write through one node is read through the other.
    client.put_object(Bucket=BUCKET, Key="via-gateway", Body=b"second node")
    got = ceph.client().get_object(Bucket=BUCKET, Key="via-gateway")["Body"].read()
    assert got == b"second node"
    client.delete_object(Bucket=BUCKET, Key="via-gateway")


def test_refuses_a_port_in_use(cluster: tuple[CephRGW, CephGateway], tmp_path: Path) -> None:
    ceph, _ = cluster
    clash = CephRGW(ceph.ip, ceph.base_port, tmp_path / "clash", *NEW_KEYS)
    with pytest.raises(RuntimeError, match="already in use"):
        clash.start()
    assert processes_of(tmp_path) == []


def test_stop_leaves_no_process(tmp_path: Path) -> None:
    # A cluster of its own (ports next to the module's), stopped here and checked after.
    ceph = CephRGW(CEPH_IP, PORT + 10, tmp_path / "ceph", *NEW_KEYS, buckets=[BUCKET])
    with running(ceph):
        ceph.add_gateway(GATEWAY_IP, PORT + 10)
        pids = ceph.pids()
        assert len(pids) == 4  # mon, OSD, two radosgw
    assert processes_of(tmp_path) == []
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
