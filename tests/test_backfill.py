"""migrate-backend against two real SeaweedFS servers (old: SigV2 + ListObjects V1)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess

import pytest
from conftest import NEW_KEYS, OLD_KEYS
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

ODD_KEYS = {
    "with space/a b.txt": b"space",
    "unicodé/ключ/鍵.bin": b"unicode",
    "plus+sign": b"plus",
    "percent%41encoded": b"percent",
    "eq=uals/a=b": b"equals",
    "seg/" + "s" * 250 + "/" + "t" * 250 + "/" + "u" * 250 + "/end": b"long key",
    "empty": b"",
}
# SeaweedFS folds "//" into "/" in its namespace (the listing shows "double/slash"); what
# matters is that the app, asking for the key it wrote, reads the same bytes after the move.
DOUBLE_SLASH = {"double//slash": b"double slash"}


def test_copies_odd_keys_zero_bytes_and_metadata(
    settings_file, old_server, new_server, buckets, tmp_path
):
    old_b, new_b = buckets
    seed(old_server, old_b, DOUBLE_SLASH)
    seed(
        old_server,
        old_b,
        ODD_KEYS,
        ContentType="text/x-odd",
        Metadata={"owner": "app"},
        ContentDisposition="attachment",
        ContentEncoding="identity",
    )
    assert len(next(iter(k for k in ODD_KEYS if k.startswith("seg/"))).encode()) > 750

    proc = run_cli(
        "migrate-backend", "--settings", settings_file, "--log-dir", tmp_path / "logs", check=0
    )
    assert f"copied {len(ODD_KEYS) + 1}" in proc.stdout
    client = new_server.client()
    assert client.get_object(Bucket=new_b, Key="double//slash")["Body"].read() == b"double slash"
    copied = contents(new_server, new_b)
    del copied["double/slash"]
    assert copied == md5s(ODD_KEYS)
    head = client.head_object(Bucket=new_b, Key="unicodé/ключ/鍵.bin")
    assert head["ContentType"] == "text/x-odd"
    assert head["Metadata"] == {"owner": "app"}
    assert head["ContentDisposition"] == "attachment"
    assert head["ContentEncoding"] == "identity"
    assert log_records(tmp_path / "logs") == []
    # No secret in the output or in any file of the log dir (status, checkpoint, summary).
    texts = [proc.stdout, proc.stderr] + [p.read_text() for p in (tmp_path / "logs").iterdir()]
    for secret in (OLD_KEYS[1], NEW_KEYS[1]):
        assert not any(secret in text for text in texts)


def test_newer_blob_in_new_is_not_overwritten(
    settings_file, old_server, new_server, buckets, tmp_path
):
    old_b, new_b = buckets
    seed(old_server, old_b, {"shared": b"old content", "only-old": b"x"})
    seed(new_server, new_b, {"shared": b"newer content written by the app"})
    run_cli("migrate-backend", "--settings", settings_file, "--log-dir", tmp_path, check=0)
    body = new_server.client().get_object(Bucket=new_b, Key="shared")["Body"].read()
    assert body == b"newer content written by the app"
    status = json.loads((tmp_path / "migrate_backend-status.json").read_text())
    assert status["state"] == "finished"
    assert status["counts"]["skipped"] == 1 and status["counts"]["copied"] == 1


def test_dry_run_copies_nothing(settings_file, old_server, new_server, buckets, tmp_path):
    old_b, new_b = buckets
    seed(old_server, old_b, random_blobs(30))
    proc = run_cli(
        "migrate-backend",
        "--settings",
        settings_file,
        "--log-dir",
        tmp_path,
        "--dry-run",
        check=0,
        log_unfaithful=False,  # the key probe, which writes, is not run: nothing refuses
    )
    assert "would copy 30" in proc.stdout
    assert "key probe of the target is skipped" in proc.stdout
    assert contents(new_server, new_b) == {}
    assert not (tmp_path / "migrate_backend-checkpoint.json").exists()


def test_manifest_logs_missing_blob_with_its_fields(
    settings_file, old_server, new_server, buckets, tmp_path
):
    """A key in the manifest but gone from old (deleted during the run) is logged."""
    old_b, new_b = buckets
    seed(old_server, old_b, {"a": b"1", "b": b"2"})
    manifest = write_manifest(
        tmp_path / "manifest.jsonl",
        [
            {"blob_key": "a", "parent_id": "p1", "type_code": "form"},
            {"blob_key": "b", "parent_id": "p2", "type_code": "form"},
            {"blob_key": "gone", "parent_id": "p3", "type_code": "attachment", "domain": "d"},
        ],
    )
    proc = run_cli(
        "migrate-backend",
        "--settings",
        settings_file,
        "--log-dir",
        tmp_path / "l",
        "--keys-from",
        manifest,
        check=1,
    )
    assert "1 blobs could not be copied" in proc.stdout
    records = log_records(tmp_path / "l")
    assert records == [
        {
            "blob_key": "gone",
            "error": "not found in old db",
            "size": None,
            "parent_id": "p3",
            "type_code": "attachment",
            "domain": "d",
        }
    ]
    assert set(contents(new_server, new_b)) == {"a", "b"}
    summary = next((tmp_path / "l").glob("*-summary.txt")).read_text()
    assert "logged 1" in summary


def test_shards_partition_the_keys(settings_file, old_server, new_server, buckets, tmp_path):
    old_b, new_b = buckets
    blobs = random_blobs(200, 100)
    seed(old_server, old_b, blobs)
    copied = 0
    for i in range(3):
        proc = run_cli(
            "migrate-backend",
            "--settings",
            settings_file,
            "--log-dir",
            tmp_path,
            "--shard",
            f"{i}/3",
            check=0,
        )
        copied += int(proc.stdout.split("copied ")[1].split()[0])
    assert copied == 200
    assert contents(new_server, new_b) == md5s(blobs)


@pytest.mark.slow
def test_large_object_is_copied_in_parts(settings_file, old_server, new_server, buckets, tmp_path):
    old_b, new_b = buckets
    big = os.urandom(100 * 1024 * 1024)
    seed(old_server, old_b, {"big.bin": big}, ContentType="application/x-big")
    run_cli(
        "migrate-backend",
        "--settings",
        settings_file,
        "--log-dir",
        tmp_path,
        "--multipart-threshold",
        "8M",
        check=0,
    )
    head = new_server.client().head_object(Bucket=new_b, Key="big.bin")
    assert head["ContentLength"] == len(big)
    assert head["ContentType"] == "application/x-big"
    assert head["ETag"].strip('"').endswith("-13")  # 8 MiB parts: a multipart ETag
    assert contents(new_server, new_b) == md5s({"big.bin": big})
    # verify cannot compare a multipart ETag with an MD5: it needs --checksum to be sure
    report = tmp_path / "verify.json"
    run_cli("verify", "--settings", settings_file, "--checksum", "--report", report, check=0)
    assert json.loads(report.read_text())["matched_by_content"] == 1


def test_kill_9_then_resume_copies_every_blob_once(
    settings_file, old_server, new_server, buckets, tmp_path
):
    old_b, new_b = buckets
    blobs = random_blobs(3000, 2048)
    seed(old_server, old_b, blobs)
    log_dir = tmp_path / "logs"
    cmd = backfill_cmd(
        settings_file, log_dir, "--chunk-size", "100", "--num-workers", "4", "--max-rps", "400"
    )
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = log_dir / "migrate_backend-checkpoint.json"
    wait_until(
        lambda: (read_json(checkpoint) or {"totals": {}})["totals"].get("copied", 0) >= 500,
        "500 blobs checkpointed",
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = json.loads(checkpoint.read_text())
    assert not partial["complete"] and partial["position"] < "blob/002999"

    resumed = run_cli(*cmd[3:], check=0)
    assert f"from key after {partial['position']!r}" in resumed.stdout
    assert contents(new_server, new_b) == md5s(blobs)
    # Nothing copied twice: keys redone from chunks in flight are found present and skipped.
    # From the summary line: on a slow machine progress lines come first ("copied 2,385").
    n_copied = int(re.search(r"backfill finished: listed \d+, copied (\d+)", resumed.stdout)[1])
    n_before = sum(1 for k in blobs if k <= partial["position"])
    assert n_copied <= len(blobs) - n_before
    assert json.loads(checkpoint.read_text())["complete"] is True


def test_sigterm_saves_progress_and_exits_130(
    settings_file, old_server, new_server, buckets, tmp_path
):
    old_b, _ = buckets
    seed(old_server, old_b, random_blobs(1500, 512))
    cmd = backfill_cmd(settings_file, tmp_path, "--chunk-size", "50", "--max-rps", "200")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status = tmp_path / "migrate_backend-status.json"
    wait_until(
        lambda: (read_json(status) or {"counts": {"copied": 0}})["counts"]["copied"] > 100,
        "100 blobs copied",
    )
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "stopped by operator" in out
    assert json.loads(status.read_text())["state"] == "stopped"
    run_cli(*cmd[3:], check=0)


@pytest.mark.reliability(
    "A second backfill of the same shard refuses, naming the running one", group="Faults"
)
def test_second_backfill_on_same_shard_refuses(
    settings_file, old_server, buckets, tmp_path, evidence
):
    old_b, _ = buckets
    seed(old_server, old_b, random_blobs(400, 256))
    cmd = backfill_cmd(settings_file, tmp_path, "--max-rps", "50")
    first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status = tmp_path / "migrate_backend-status.json"
    try:
        wait_until(lambda: (read_json(status) or {}).get("state") == "running", "the first run")
        second = run_cli(*cmd[3:], check=4)
        assert f"pid {first.pid}" in second.stderr
        evidence["second run exit code"] = second.returncode
        evidence["message"] = second.stderr.strip().splitlines()[-1]
    finally:
        first.kill()
        first.wait()


def test_reverse_copies_new_only_blobs_back_for_a_rollback(
    settings_file, old_server, new_server, buckets, tmp_path
):
    old_b, new_b = buckets
    seed(old_server, old_b, {"old-1": b"o"})
    written_during_migration = random_blobs(20, 64, prefix="app/")
    seed(new_server, new_b, written_during_migration)
    proc = run_cli(
        "migrate-backend", "--settings", settings_file, "--log-dir", tmp_path, "--reverse", check=0
    )
    assert "copied 20" in proc.stdout and "S3_BLOB_DB_SETTINGS (http" in proc.stdout
    assert contents(old_server, old_b) == md5s({"old-1": b"o", **written_during_migration})
    assert (tmp_path / "migrate_backend-reverse-checkpoint.json").exists()


def test_a_target_that_mangles_keys_is_refused_before_any_copy(
    settings_file, old_server, new_server, buckets, tmp_path
):
    # SeaweedFS folds "a//b", makes "x/" a directory and caps a segment at 255 bytes.
    old_b, new_b = buckets
    seed(old_server, old_b, {"plain": b"x"})
    proc = run_cli(
        "migrate-backend",
        "--settings",
        settings_file,
        "--log-dir",
        tmp_path / "logs",
        check=3,
        log_unfaithful=False,
    )
    assert "double slash, trailing slash, dot segment, segment over 255 bytes" in proc.stderr
    assert "--log-unfaithful-keys" in proc.stderr
    assert "nothing was copied" in proc.stderr
    assert contents(new_server, new_b) == {}  # probes deleted again, nothing copied
    assert not (tmp_path / "logs").exists()


def test_keys_the_target_cannot_hold_are_logged_when_the_operator_says_so(
    settings_file, old_server, new_server, buckets, tmp_path
):
    old_b, new_b = buckets
    seed(old_server, old_b, {"plain": b"x"})
    manifest = write_manifest(
        tmp_path / "m.jsonl",
        [{"blob_key": "plain"}, {"blob_key": "trail/", "type_code": "dir"}],
    )
    run_cli(
        "migrate-backend",
        "--settings",
        settings_file,
        "--log-dir",
        tmp_path / "logs",
        "--keys-from",
        manifest,
        check=1,
    )
    records = log_records(tmp_path / "logs")
    assert [(r["blob_key"], r["type_code"]) for r in records] == [("trail/", "dir")]
    assert records[0]["error"] == (
        "cannot be stored faithfully in the target store (trailing slash)"
    )
    assert contents(new_server, new_b) == md5s({"plain": b"x"})


def test_a_listing_out_of_s3_key_order_stops_the_run_and_a_manifest_still_works(
    settings_file, old_server, new_server, buckets, tmp_path
):
    # SeaweedFS lists in directory-tree order: "x/y" (inside "x") before "x y", where S3's
    # byte order has " " (0x20) before "/" (0x2f). Merged as if in order, a present key
    # would pass for missing and be copied over what the app wrote; so the run stops.
    old_b, new_b = buckets
    blobs = {"x y": b"space", "x/y": b"slash"}
    seed(old_server, old_b, blobs)
    argv = ("migrate-backend", "--settings", settings_file, "--log-dir", tmp_path / "l")
    proc = run_cli(*argv, check=3)
    assert "key 'x y' does not come after 'x/y'" in proc.stderr
    assert "progress is saved: re-run to resume" in proc.stderr
    manifest = write_manifest(tmp_path / "m.jsonl", [{"blob_key": k} for k in blobs])
    run_cli(*argv, "--keys-from", manifest, "--reset", check=0)
    assert contents(new_server, new_b) == md5s(blobs)
