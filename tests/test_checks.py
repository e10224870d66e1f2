"""check-blob-logs, verify, and a checkpoint that cannot be trusted.

The refusals of bad input (settings, flags, stores, manifests, logs) are the
parametrized battery case in test_reliability_engine.py."""

from __future__ import annotations

import json

import pytest
from helpers import contents, md5s, random_blobs, run_cli, seed, write_manifest


def _write_log(path, keys_types):
    path.write_text(
        "".join(
            json.dumps({"blob_key": k, "type_code": t, "error": "x"}) + "\n" for k, t in keys_types
        )
        + '{"blob_key": "torn by a cra'  # a crash's torn last line: skipped, counted
    )
    return path


def test_check_blob_logs_all_four_categories_and_migrate(
    settings_file, old_server, new_server, buckets, tmp_path
):
    old_b, new_b = buckets
    seed(new_server, new_b, {"in-new": b"n"})
    seed(old_server, old_b, {"in-old-1": b"o1", "in-old-2": b"o2"})
    log = _write_log(
        tmp_path / "migrate_backend-blob-migration-20260101T000000Z.txt",
        [
            ("in-new", "form"),
            ("in-old-1", "form"),
            ("in-old-2", "attachment"),
            ("deleted", "attachment"),
            ("lost", "attachment"),
        ],
    )
    manifest = write_manifest(
        tmp_path / "manifest.jsonl",
        [{"blob_key": k} for k in ("in-new", "in-old-1", "in-old-2", "lost")],
    )

    proc = run_cli(
        "check-blob-logs",
        "--settings",
        settings_file,
        log,
        "--keys-from",
        manifest,
        "--json-file",
        tmp_path / "c.json",
        check=1,
    )
    assert "attachment: checked 3 records" in proc.stdout
    assert "form: checked 2 records" in proc.stdout
    totals = json.loads((tmp_path / "c.json").read_text())["totals"]
    assert totals == {
        "Found in new db": 1,
        "Found in old db": 2,
        "Not referenced": 1,
        "Not found": 1,
    }
    assert "malformed lines: 1" in proc.stdout

    proc = run_cli(
        "check-blob-logs",
        "--settings",
        settings_file,
        log,
        "--keys-from",
        manifest,
        "--migrate",
        "--json-file",
        tmp_path / "m.json",
        check=1,
    )
    assert "Migrated from old db: in-old-1" in proc.stdout
    assert {"in-old-1", "in-old-2"} <= set(contents(new_server, new_b))
    run_cli(
        "check-blob-logs",
        "--settings",
        settings_file,
        log,
        "--keys-from",
        manifest,
        "--json-file",
        tmp_path / "a.json",
    )
    assert json.loads((tmp_path / "a.json").read_text())["totals"]["Found in old db"] == 0


def test_verify_catches_missing_and_same_size_corruption(
    settings_file, old_server, new_server, buckets, tmp_path
):
    old_b, new_b = buckets
    blobs = random_blobs(50, 300)
    seed(old_server, old_b, blobs)
    run_cli("migrate-backend", "--settings", settings_file, "--log-dir", tmp_path, check=0)
    report = tmp_path / "verify.json"
    run_cli("verify", "--settings", settings_file, "--report", report, check=0)
    assert json.loads(report.read_text())["matched"] == 50

    client = new_server.client()
    client.delete_object(Bucket=new_b, Key="blob/000007")
    corrupted = bytearray(blobs["blob/000011"])
    corrupted[100] ^= 0xFF
    client.put_object(Bucket=new_b, Key="blob/000011", Body=bytes(corrupted))
    proc = run_cli("verify", "--settings", settings_file, "--report", report, check=1)
    data = json.loads(report.read_text())
    assert data["missing"] == ["blob/000007"]
    assert data["etag_mismatch"] == ["blob/000011"]
    assert data["clean"] is False
    assert "2 PROBLEM(S)" in proc.stdout

    accept = tmp_path / "accepted.txt"
    accept.write_text("blob/000007\n")
    run_cli(
        "verify",
        "--settings",
        settings_file,
        "--accept-missing",
        accept,
        "--report",
        report,
        check=1,
    )
    data = json.loads(report.read_text())
    assert data["accepted"] == ["blob/000007"] and data["missing"] == []


@pytest.mark.reliability(
    "A hand-edited or truncated checkpoint is detected and refused, never trusted or "
    "silently restarted from zero",
    group="Faults",
)
def test_edited_checkpoint_is_detected_not_trusted(
    settings_file, old_server, new_server, buckets, tmp_path, evidence
):
    old_b, new_b = buckets
    blobs = random_blobs(20, 10)
    seed(old_server, old_b, blobs)
    run_cli("migrate-backend", "--settings", settings_file, "--log-dir", tmp_path, check=0)
    cp = tmp_path / "migrate_backend-checkpoint.json"
    data = json.loads(cp.read_text())
    data["position"] = "zzz"  # would skip every key
    cp.write_text(json.dumps(data))
    edited = run_cli("migrate-backend", "--settings", settings_file, "--log-dir", tmp_path, check=2)
    assert "checksum mismatch" in edited.stderr and "--reset" in edited.stderr
    cp.write_text(cp.read_text()[:40])
    cut = run_cli("migrate-backend", "--settings", settings_file, "--log-dir", tmp_path, check=2)
    assert "unreadable" in cut.stderr
    assert cp.read_text() == json.dumps(data)[:40]  # refused runs leave it for inspection
    run_cli(
        "migrate-backend", "--settings", settings_file, "--log-dir", tmp_path, "--reset", check=0
    )
    assert contents(new_server, new_b) == md5s(blobs)
    evidence["exit code"] = edited.returncode
    evidence["message (edited)"] = edited.stderr.strip().replace(str(tmp_path), "…")
    evidence["message (truncated)"] = cut.stderr.strip().replace(str(tmp_path), "…")
    evidence["blobs lost"] = 0


def test_verify_metadata_compares_the_headers_that_describe_each_blob(
    settings_file, old_server, new_server, buckets, tmp_path
):
    old_b, new_b = buckets
    blobs = random_blobs(4, 100)
    seed(old_server, old_b, blobs, ContentType="text/x-a", Metadata={"owner": "app"})
    run_cli("migrate-backend", "--settings", settings_file, "--log-dir", tmp_path, check=0)
    report = tmp_path / "verify.json"
    run_cli("verify", "--settings", settings_file, "--metadata", "--report", report, check=0)
    assert json.loads(report.read_text())["metadata_mismatch"] == []

    client = new_server.client()
    client.put_object(
        Bucket=new_b,
        Key="blob/000001",
        Body=blobs["blob/000001"],
        ContentType="text/x-a",
        Metadata={"owner": "someone else"},
    )
    client.put_object(Bucket=new_b, Key="blob/000002", Body=blobs["blob/000002"])
    # Without --metadata the content matches, and that is all verify can say.
    run_cli("verify", "--settings", settings_file, "--report", report, check=0)
    proc = run_cli("verify", "--settings", settings_file, "--metadata", "--report", report, check=1)
    data = json.loads(report.read_text())
    assert data["metadata_mismatch"] == ["blob/000001", "blob/000002"]
    assert "metadata mismatch: 2" in proc.stdout
