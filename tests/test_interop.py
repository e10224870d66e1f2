"""The engine between two independent S3 implementations, in both directions.

SeaweedFS -> Ceph RGW and Ceph RGW -> SeaweedFS, the old side used as Riak CS is (SigV2,
ListObjects V1), the new one with SigV4. What one server does is not S3: each case here
passes on both pairs or names the difference it found (SeaweedFS folds "a//b" and turns
"x/" into a directory; Ceph keeps both as written).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import BASE_PORT, NEW_KEYS, OLD_KEYS, store_dict, write_settings
from helpers import (
    backfill_cmd,
    contents,
    log_records,
    md5s,
    random_blobs,
    read_json,
    run_cli,
    seed,
    wait_until,
    write_manifest,
)
from rawhttp import METADATA, assert_same_metadata, head_new, put_old

from blobshift.lab.ceph import CephRGW
from blobshift.lab.seaweed import running

CEPH_IP = "127.0.0.6"
MIB = 1024 * 1024

# Keys every S3 implementation must carry as written (both servers here do).
ODD_KEYS = {
    "with space/a b.txt": b"space",
    "unicodé/ключ/鍵.bin": b"unicode",
    "plus+sign": b"plus",
    "percent%41encoded": b"percent",
    "%7Afoo": b"looks encoded",
    "100%": b"bare percent",
    "eq=uals/a=b&c": b"equals",
    "tilde~/x~y": b"tilde",
    "seg/" + "s" * 250 + "/" + "t" * 250 + "/end": b"long key",
    "empty": b"",
}
# Keys Ceph holds as written and SeaweedFS does not.
PATH_LIKE = {"a//b": b"double slash" * 100, "trail/": b"trailing slash" * 300}


@pytest.fixture(scope="module")
def ceph() -> Iterator[CephRGW]:
    root = Path(tempfile.mkdtemp(prefix="blobshift-test-ceph-"))
    # Ports apart from those of tests/test_ceph_server.py (BASE_PORT + 60 to + 89).
    server = CephRGW(CEPH_IP, BASE_PORT + 90, root, *NEW_KEYS, extra_keys=[OLD_KEYS])
    with running(server):
        yield server


@pytest.fixture(params=["seaweed-to-ceph", "ceph-to-seaweed"])
def pair(request, ceph, old_server, new_server) -> tuple[Any, Any]:
    """(old server, new server): one of the two directions."""
    if request.param == "seaweed-to-ceph":
        return old_server, ceph
    return ceph, new_server


_n = iter(range(10**6))


@pytest.fixture
def stores(pair, tmp_path) -> dict[str, Any]:
    return make_stores(*pair, tmp_path)


@pytest.fixture
def ceph_to_seaweed(ceph, new_server, tmp_path) -> dict[str, Any]:
    return make_stores(ceph, new_server, tmp_path)


@pytest.fixture
def seaweed_to_ceph(ceph, old_server, tmp_path) -> dict[str, Any]:
    return make_stores(old_server, ceph, tmp_path)


def make_stores(old: Any, new: Any, tmp_path: Path) -> dict[str, Any]:
    n = next(_n)
    old_b, new_b = f"iop-old-{os.getpid()}-{n}", f"iop-new-{os.getpid()}-{n}"
    old.create_bucket(old_b)
    new.create_bucket(new_b)
    settings = write_settings(
        tmp_path / "localsettings.py",
        new=store_dict(new, new_b, sigv2=False),
        old=store_dict(old, old_b, sigv2=True),
    )
    return {"old": old, "new": new, "old_b": old_b, "new_b": new_b, "settings": settings}


def put_multipart(server: Any, bucket: str, key: str, body: bytes, part: int) -> str:
    client = server.client()
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, ContentType="video/x-test")
    parts = []
    for i, start in enumerate(range(0, len(body), part), 1):
        r = client.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=i,
            Body=body[start : start + part],
        )
        parts.append({"PartNumber": i, "ETag": r["ETag"]})
    client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    return client.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')


def verify(s: dict[str, Any], tmp_path: Path, *flags: str, check: int) -> dict[str, Any]:
    report = tmp_path / "verify.json"
    run_cli("verify", "--settings", s["settings"], *flags, "--report", report, check=check)
    return json.loads(report.read_text())


def test_odd_keys_metadata_and_empty_blobs_arrive_byte_for_byte(stores, tmp_path):
    s = stores
    seed(
        s["old"],
        s["old_b"],
        ODD_KEYS,
        ContentType="text/x-odd",
        Metadata={"owner": "app", "x-note": "kept"},
        ContentDisposition='attachment; filename="a b.txt"',
        CacheControl="max-age=60",
    )
    run_cli("migrate-backend", "--settings", s["settings"], "--log-dir", tmp_path / "l", check=0)
    assert contents(s["new"], s["new_b"]) == md5s(ODD_KEYS)
    head = s["new"].client().head_object(Bucket=s["new_b"], Key="unicodé/ключ/鍵.bin")
    assert head["ContentType"] == "text/x-odd"
    assert head["Metadata"] == {"owner": "app", "x-note": "kept"}
    assert head["ContentDisposition"] == 'attachment; filename="a b.txt"'
    assert head["CacheControl"] == "max-age=60"
    data = verify(s, tmp_path, "--checksum", "--metadata", check=0)
    assert data["matched"] == len(ODD_KEYS) and data["metadata_mismatch"] == []


@pytest.mark.parametrize("size", [11, MIB + 1, 8 * MIB + 1], ids=["whole", "streamed", "parts"])
def test_utf8_and_rfc2047_metadata_arrive_byte_for_byte(stores, tmp_path, size):
    s = stores
    key = "docs/é 鍵.pdf"
    # Values that are UTF-8: both stores keep those bytes (the one that is not, below).
    metadata = {k: v for k, v in METADATA.items() if k != b"x-amz-meta-latin1"}
    # The premise: the old store keeps the bytes it was sent.
    assert_same_metadata(put_old(s["old"], s["old_b"], key, metadata, os.urandom(size)), metadata)
    run_cli("migrate-backend", "--settings", s["settings"], "--log-dir", tmp_path / "l", check=0)
    assert_same_metadata(head_new(s["new"], s["new_b"], key), metadata)
    assert verify(s, tmp_path, "--metadata", "--checksum", check=0)["metadata_mismatch"] == []


def test_verify_metadata_reports_a_value_the_target_stores_otherwise(seaweed_to_ceph, tmp_path):
    # Ceph RGW answers a value that is not UTF-8 in its RFC 2047 form, as S3 does; the
    # bytes decode the same, but what the app reads differs: verify --metadata says so.
    s = seaweed_to_ceph
    put_old(s["old"], s["old_b"], "k", {b"x-amz-meta-latin1": b"caf\xe9"}, b"x")
    run_cli("migrate-backend", "--settings", s["settings"], "--log-dir", tmp_path / "l", check=0)
    assert head_new(s["new"], s["new_b"], "k")[b"x-amz-meta-latin1"] == b"=?UTF-8?Q?caf=E9?="
    assert verify(s, tmp_path, check=0)["matched"] == 1
    assert verify(s, tmp_path, "--metadata", check=1)["metadata_mismatch"] == ["k"]


def test_multipart_md5_n_sources_are_copied_and_verified_by_content(stores, tmp_path):
    s = stores
    big, medium = os.urandom(13 * MIB), os.urandom(6 * MIB)
    assert put_multipart(s["old"], s["old_b"], "big", big, 5 * MIB).endswith("-3")
    assert put_multipart(s["old"], s["old_b"], "medium", medium, 5 * MIB).endswith("-2")
    run_cli("migrate-backend", "--settings", s["settings"], "--log-dir", tmp_path / "l", check=0)
    assert contents(s["new"], s["new_b"]) == md5s({"big": big, "medium": medium})
    data = verify(s, tmp_path, "--checksum", check=0)
    assert data["matched_by_content"] == 2 and data["problems"] == 0
    head = s["new"].client().head_object(Bucket=s["new_b"], Key="big")
    assert head["ContentType"] == "video/x-test"


def test_keys_only_one_store_holds_as_written(ceph_to_seaweed, tmp_path):
    # SeaweedFS cannot hold these keys as the old store either: Ceph to SeaweedFS only.
    s = ceph_to_seaweed
    seed(s["old"], s["old_b"], {**PATH_LIKE, "plain": b"p"})
    argv = ("migrate-backend", "--settings", s["settings"], "--log-dir", tmp_path / "l")
    # The key probe finds SeaweedFS's folding before any copy.
    proc = run_cli(*argv, check=3, log_unfaithful=False)
    assert "double slash, trailing slash" in proc.stderr
    assert contents(s["new"], s["new_b"]) == {}
    # Told to, the backfill logs them instead of mangling them.
    run_cli(*argv, check=1)
    logged = {r["blob_key"]: r["error"] for r in log_records(tmp_path / "l")}
    assert logged == {
        "a//b": "cannot be stored faithfully in the target store (double slash)",
        "trail/": "cannot be stored faithfully in the target store (trailing slash)",
    }
    # And the gate says so: neither blob is in the new store as written.
    data = verify(s, tmp_path, "--checksum", check=1)
    assert sorted(data["missing"]) == ["a//b", "trail/"]
    # A blob written by other means under such a key: SeaweedFS answers a HEAD of "trail/"
    # with a directory's 0 bytes and does not list it. Answering is not matching.
    s["new"].client().put_object(Bucket=s["new_b"], Key="trail/", Body=PATH_LIKE["trail/"])
    data = verify(s, tmp_path, "--checksum", check=1)
    assert data["size_mismatch"] == ["trail/"] and data["missing"] == ["a//b"]


def test_the_key_probe_passes_on_a_target_that_holds_every_kind(seaweed_to_ceph, tmp_path):
    s = seaweed_to_ceph
    seed(s["old"], s["old_b"], ODD_KEYS)
    proc = run_cli(
        "migrate-backend",
        "--settings",
        s["settings"],
        "--log-dir",
        tmp_path / "l",
        check=0,
        log_unfaithful=False,
    )
    assert "cannot hold" not in proc.stdout
    assert contents(s["new"], s["new_b"]) == md5s(ODD_KEYS)  # no probe left behind


def test_manifest_run_and_check_blob_logs(stores, tmp_path):
    s = stores
    blobs = random_blobs(30, 500)
    seed(s["old"], s["old_b"], blobs)
    rows = [{"blob_key": k, "type_code": "form"} for k in sorted(blobs)]
    rows += [{"blob_key": "gone/deleted", "type_code": "form"}]
    rows += [{"blob_key": "gone/lost", "type_code": "case"}]
    manifest = write_manifest(tmp_path / "m.jsonl", rows)
    logs = tmp_path / "l"
    run_cli(
        "migrate-backend",
        "--settings",
        s["settings"],
        "--log-dir",
        logs,
        "--keys-from",
        manifest,
        check=1,
    )
    assert contents(s["new"], s["new_b"]) == md5s(blobs)
    records = log_records(logs)
    assert sorted(r["blob_key"] for r in records) == ["gone/deleted", "gone/lost"]
    # The app still references only gone/lost; gone/deleted turns up in the old store.
    current = write_manifest(tmp_path / "current.jsonl", [{"blob_key": "gone/lost"}])
    s["old"].client().put_object(Bucket=s["old_b"], Key="gone/deleted", Body=b"late")
    log_files = sorted(
        str(p) for p in logs.glob("*-blob-migration-*.txt") if "summary" not in p.name
    )
    result = tmp_path / "check.json"
    run_cli(
        "check-blob-logs",
        "--settings",
        s["settings"],
        *log_files,
        "--keys-from",
        current,
        "--migrate",
        "--json-file",
        result,
        check=1,
    )
    totals = json.loads(result.read_text())["totals"]
    assert totals["Found in old db"] == 1 and totals["Not found"] == 1
    assert contents(s["new"], s["new_b"])["gone/deleted"] == md5s({"k": b"late"})["k"]


def test_kill_9_then_resume_copies_every_blob(stores, tmp_path):
    s = stores
    blobs = random_blobs(1500, 200)
    seed(s["old"], s["old_b"], blobs)
    logs = tmp_path / "l"
    cmd = backfill_cmd(
        s["settings"], logs, "--chunk-size", "50", "--num-workers", "4", "--max-rps", "300"
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until(
            lambda: (read_json(logs / "migrate_backend-checkpoint.json") or {}).get("position"),
            "a first checkpoint",
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    run_cli("migrate-backend", "--settings", s["settings"], "--log-dir", logs, check=0)
    assert contents(s["new"], s["new_b"]) == md5s(blobs)
    data = verify(s, tmp_path, check=0)
    assert data["matched"] == len(blobs)


def test_range_shards_from_plan_ranges_copy_every_blob_once(stores, tmp_path):
    """plan-ranges samples this implementation's listing (both directions); three range
    shards by its plan copy every blob once, each listing only its own ranges."""
    s = stores
    blobs = {f"{family}/{i:04d}": b"%d" % i for family in ("a", "docs/2026") for i in range(150)}
    blobs.update(ODD_KEYS)
    seed(s["old"], s["old_b"], blobs)
    plan = tmp_path / "range-plan.json"
    run_cli("plan-ranges", "--settings", s["settings"], "--ranges", "6", "--out", plan, check=0)
    listed = 0
    for i in range(3):
        proc = run_cli(
            "migrate-backend",
            "--settings",
            s["settings"],
            "--log-dir",
            tmp_path / f"shard{i}",
            "--range-plan",
            plan,
            "--shard",
            f"{i}/3",
            "--json",
            check=0,
        )
        listed += json.loads(proc.stdout)["counts"]["listed"]
    assert listed == len(blobs)  # the shards' ranges are disjoint and cover every key
    assert contents(s["new"], s["new_b"]) == md5s(blobs)
