"""The one-node Ceph RGW of the lab (blobshift.lab.ceph): S3 as the tests use it, a second
gateway over the same cluster, and a stop() that leaves no process behind."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
def commands() -> list[list[str]]:
    """The command line of every process started while the cluster started."""
    return []


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, commands: list[list[str]]
) -> Iterator[tuple[CephRGW, CephGateway]]:
    root = tmp_path_factory.mktemp("ceph")
    ceph = CephRGW(CEPH_IP, PORT, root, *NEW_KEYS, buckets=[BUCKET], extra_keys=[OLD_KEYS])
    popen = subprocess.Popen

    def recorded(args: list[str], *rest: Any, **kwargs: Any) -> subprocess.Popen:
        commands.append([str(a) for a in args])
        return popen(args, *rest, **kwargs)

    with contextlib.ExitStack() as stack:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(subprocess, "Popen", recorded)
            stack.enter_context(running(ceph))
            gateway = ceph.add_gateway(GATEWAY_IP, PORT)
        client = ceph.client()
        for key, body in KEYS.items():
            client.put_object(Bucket=BUCKET, Key=key, Body=body)
        yield ceph, gateway
    assert processes_of(root) == []


def test_no_secret_key_on_a_command_line(
    cluster: tuple[CephRGW, CephGateway], commands: list[list[str]]
) -> None:
    """ps shows every local user each process's arguments: the keys given to radosgw-admin
    must not be among them (both pairs work: the tests below sign with them)."""
    assert any("radosgw-admin" in c[0] for c in commands), commands
    secrets = (NEW_KEYS[1], OLD_KEYS[1])
    assert [c for c in commands if any(s in " ".join(c) for s in secrets)] == []


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


def lab_servers(*args: str | Path) -> dict:
    """One `python -m blobshift.lab.servers` command, as playbooks/lab.yml runs it."""
    proc = subprocess.run(
        [sys.executable, "-m", "blobshift.lab.servers", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_lab_nodes_outlive_the_command_that_starts_them(tmp_path: Path) -> None:
    """The lab's ceph cluster (servers.py s3-start --kind ceph): node 2 a radosgw attached
    later by another process; a node killed is its radosgw alone, brought back over the
    same data; s3-stop of node 1 stops the whole cluster."""
    port = PORT + 20
    first, second = tmp_path / "s3-c", tmp_path / "s3-c2"
    for node_dir in (first, second):
        node_dir.mkdir()
        (node_dir / "credentials.json").write_text(json.dumps([NEW_KEYS, OLD_KEYS]))
    common = ["--kind", "ceph", "--bucket", BUCKET, "--memstore-mib", "256"]
    start1 = ["s3-start", *common, "--name", "c", "--ip", CEPH_IP, "--base-port", port]
    start2 = ["s3-start", *common, "--name", "c2", "--ip", GATEWAY_IP, "--base-port", port]
    start1 += ["--dir", first]
    start2 += ["--dir", second, "--node-of", f"{CEPH_IP}:{port}", "--cluster-dir", first]
    try:
        assert lab_servers(*start1)["changed"] is True
        assert lab_servers(*start2)["changed"] is True
        assert lab_servers(*start1)["changed"] is lab_servers(*start2)["changed"] is False
        node1 = CephRGW(CEPH_IP, port, first, *NEW_KEYS)
        node2 = CephRGW(GATEWAY_IP, port, first, *OLD_KEYS)  # the second key pair, node 2
        node2.client().put_object(Bucket=BUCKET, Key="a//b", Body=b"via node 2")

        assert lab_servers("s3-kill", "--dir", second)["changed"] is True
        assert not node2.port_in_use()
        assert lab_servers("s3-start-again", "--dir", second)["changed"] is True
        assert lab_servers("s3-kill", "--dir", first)["changed"] is True
        # Node 1's radosgw is gone, not the cluster: node 2 serves the data meanwhile.
        assert not node1.port_in_use()
        assert node2.client().get_object(Bucket=BUCKET, Key="a//b")["Body"].read() == b"via node 2"
        assert lab_servers("s3-start-again", "--dir", first)["changed"] is True
        assert node1.client().get_object(Bucket=BUCKET, Key="a//b")["Body"].read() == b"via node 2"

        assert lab_servers("s3-stop", "--dir", first)["changed"] is True
        assert processes_of(tmp_path) == []
        assert lab_servers("s3-stop", "--dir", second)["changed"] is False
    finally:
        for node_dir in (second, first):
            if (node_dir / "node.json").exists():
                lab_servers("s3-stop", "--dir", node_dir)
    assert processes_of(tmp_path) == []
