"""`blobshift status` on real backfills (two SeaweedFS servers), and the `--json` summaries
of migrate-backend, check-blob-logs and verify."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from helpers import backfill_cmd, random_blobs, read_json, run_cli, seed, wait_until, write_manifest


def status(log_dir: Path, *extra: object, check: int | None = None) -> dict:
    proc = run_cli("status", "--log-dir", log_dir, "--json", *extra, check=check)
    assert proc.stderr == "", proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["exit_code"] == proc.returncode
    return doc


def status_text(log_dir: Path, *extra: object, check: int) -> str:
    proc = run_cli("status", "--log-dir", log_dir, *extra, check=check)
    print(proc.stdout)  # the README's sample comes from here (pytest -s)
    return proc.stdout


def backfill_json(settings: Path, log_dir: Path, *extra: object, check: int) -> dict:
    """A backfill to its end with --json: its summary, from stdout alone."""
    proc = run_cli(
        "migrate-backend",
        "--settings",
        settings,
        "--log-dir",
        log_dir,
        "--json",
        *extra,
        check=check,
    )
    assert "backfill finished" in proc.stderr  # the human lines went to stderr
    return json.loads(proc.stdout)


def running_with(status_path: Path, copied: int):
    def check() -> bool:
        st = read_json(status_path)
        return bool(st) and st["state"] == "running" and st["counts"]["copied"] >= copied

    return check


def test_status_while_running_after_kill_9_and_after_finishing(
    settings_file, old_server, buckets, tmp_path
):
    blobs = random_blobs(40, 512)
    seed(old_server, buckets[0], blobs)
    # A key no store holds, last: logged by the run that finishes (after the kill).
    rows = [{"blob_key": k, "type_code": "form"} for k in sorted(blobs)]
    manifest = write_manifest(tmp_path / "m.jsonl", [*rows, {"blob_key": "zz/gone"}])
    log_dir = tmp_path / "logs"
    slow = ("--keys-from", manifest, "--max-rps", "5", "--chunk-size", "2", "--num-workers", "2")
    proc = subprocess.Popen(
        backfill_cmd(settings_file, log_dir, *slow),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        copying = running_with(log_dir / "migrate_backend-status.json", 5)
        saved = log_dir / "migrate_backend-checkpoint.json"
        wait_until(lambda: copying() and saved.exists(), "5 blobs copied, a checkpoint saved")
        doc = status(log_dir, check=3)
        (shard,) = doc["shards"]
        assert shard["shard"] == "0/1" and shard["state"] == "running"
        assert shard["verdict"] == "in progress" and shard["attention"] == []
        assert shard["pid"] == proc.pid and shard["pid_alive"] and shard["lock_held"]
        assert shard["total"] == 41  # a manifest run knows its total
        assert shard["remaining"] > 0 and shard["eta_seconds"] > 0
        assert 0 < shard["objects_per_second"] < 20  # --max-rps 5
        assert shard["bytes_per_second"] > 0
        assert shard["checkpoint"]["position"] and not shard["checkpoint"]["complete"]
        assert not shard["stale"] and shard["updated_age_seconds"] < 60
        assert [log["lines"] for log in shard["logs"]] == [0]
        text = status_text(log_dir, check=3)
        assert "shard 0/1: running, pid" in text and "ETA " in text
        # With a tiny --stale-after, the same running shard's status file is stale.
        stale = status(log_dir, "--stale-after", "0.01", check=1)["shards"][0]
        assert stale["stale"] and "stale" in stale["attention"][0]

        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        proc.kill()
        proc.wait()
    doc = status(log_dir, check=1)
    (shard,) = doc["shards"]
    assert shard["state"] == "dead" and not shard["pid_alive"] and not shard["lock_held"]
    assert shard["attention"][0].startswith("dead: ")
    assert shard["eta_seconds"] is None
    assert "dead" in status_text(log_dir, check=1)

    summary = backfill_json(settings_file, log_dir, "--keys-from", manifest, check=1)
    doc = status(log_dir, check=1)  # finished, but a blob was logged
    (shard,) = doc["shards"]
    assert shard["state"] == "finished" and not shard["pid_alive"]
    assert shard["counts"] == summary["counts"]
    assert shard["pass_totals"] == summary["pass_totals"]
    assert shard["pass_complete"] and shard["checkpoint"]["complete"]
    assert [log["path"] for log in shard["logs"]] == summary["logs"]
    assert [log["lines"] for log in shard["logs"]] == [0, 1]
    assert shard["logged_lines"] == summary["counts"]["logged"] == 1
    assert "check-blob-logs " + summary["log"] in shard["attention"][0]
    assert shard["remaining"] == 0 and shard["eta"] == "done"
    cp = read_json(log_dir / "migrate_backend-checkpoint.json")
    assert cp is not None and shard["checkpoint"]["position"] == cp["position"]
    assert "1 line(s)" in status_text(log_dir, check=1)


def test_status_of_shards_listing_stopped_then_finished_clean(
    settings_file, old_server, buckets, tmp_path
):
    blobs = random_blobs(40, 256)
    seed(old_server, buckets[0], blobs)
    log_dir = tmp_path / "logs"
    proc = subprocess.Popen(
        # ~10 s for its ~20 keys: still copying after the two status looks on a loaded machine.
        backfill_cmd(settings_file, log_dir, "--shard", "0/2", "--max-rps", "2"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(running_with(log_dir / "migrate_backend-shard0of2-status.json", 2), "copies")
        shard = status(log_dir, check=3)["shards"][0]
        assert shard["state"] == "running" and shard["total"] is None
        assert shard["eta_seconds"] is None and shard["eta"].startswith("unknown (listing")
        # The other shard of the pair has no run file yet: asked for, it is "not started".
        other = status(log_dir, "--shard", "1/2", check=3)["shards"]
        assert [(s["shard"], s["state"]) for s in other] == [("1/2", "not started")]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 130
    finally:
        proc.kill()
        proc.wait()
    shard = status(log_dir, check=3)["shards"][0]
    assert shard["state"] == "stopped" and shard["attention"] == []

    summaries = [
        backfill_json(settings_file, log_dir, "--shard", s, check=0) for s in ("0/2", "1/2")
    ]
    doc = status(log_dir, check=0)
    assert [s["shard"] for s in doc["shards"]] == ["0/2", "1/2"]
    for shard, summary in zip(doc["shards"], summaries, strict=True):
        assert shard["state"] == "finished" and shard["verdict"] == "finished clean"
        assert shard["counts"] == summary["counts"]
        assert shard["pass_totals"] == summary["pass_totals"]
        assert shard["logged_lines"] == 0
    # The keys the stopped run copied after its last checkpoint are listed again by the
    # resume and found there: skipped, not copied twice.
    totals = [s["pass_totals"] for s in doc["shards"]]
    assert sum(t["copied"] + t["skipped"] for t in totals) == len(blobs), totals
    assert sum(t["listed"] for t in totals) == len(blobs), totals
    only = status(log_dir, "--shard", "1/2", check=0)["shards"]
    assert [s["shard"] for s in only] == ["1/2"]
    text = status_text(log_dir, check=0)
    assert text.count(": finished") == 2 and "attention" not in text


def test_status_refuses_a_missing_or_empty_log_dir(tmp_path):
    missing = tmp_path / "no-such-dir"
    proc = run_cli("status", "--log-dir", missing, "--json", check=2)
    assert proc.stdout == "" and f"--log-dir {missing}: no such directory" in proc.stderr
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a run file\n")
    proc = run_cli("status", "--log-dir", tmp_path / "empty", check=2)
    assert f"--log-dir {tmp_path / 'empty'} holds no backfill run files" in proc.stderr
    proc = run_cli("status", "--log-dir", tmp_path, "--shard", "2/2", check=2)
    assert "--shard" in proc.stderr


def test_json_of_backfill_check_and_verify_is_the_summary(
    settings_file, old_server, buckets, tmp_path
):
    blobs = random_blobs(20, 300)
    seed(old_server, buckets[0], blobs)
    manifest = write_manifest(
        tmp_path / "m.jsonl", [{"blob_key": k} for k in [*sorted(blobs), "lost/one"]]
    )
    log_dir = tmp_path / "logs"
    file_copy = tmp_path / "backfill.json"
    summary = backfill_json(
        settings_file, log_dir, "--keys-from", manifest, "--json-file", file_copy, check=1
    )
    assert summary == json.loads(file_copy.read_text())
    assert summary["command"] == "migrate-backend" and summary["exit_code"] == 1
    assert summary["counts"]["copied"] == len(blobs) and summary["counts"]["logged"] == 1
    st = read_json(log_dir / "migrate_backend-status.json")
    assert st is not None and st["counts"] == summary["counts"] and st["log"] == summary["log"]

    check_file = tmp_path / "check.json"
    proc = run_cli(
        "check-blob-logs",
        "--settings",
        settings_file,
        summary["log"],
        "--json",
        "--json-file",
        check_file,
        check=1,
    )
    check = json.loads(proc.stdout)
    assert check == json.loads(check_file.read_text())
    assert check["command"] == "check-blob-logs" and check["exit_code"] == 1
    assert check["records"] == 1 and check["totals"]["Not found"] == 1
    assert "Not found" in proc.stderr  # the human report went to stderr

    report = tmp_path / "verify.json"
    proc = run_cli("verify", "--settings", settings_file, "--json", "--report", report, check=0)
    verified = json.loads(proc.stdout)
    assert verified == json.loads(report.read_text())
    assert verified["command"] == "verify" and verified["exit_code"] == 0
    assert verified["clean"] and verified["old_objects"] == len(blobs) == verified["matched"]
    assert "verify: " in proc.stderr

    # The former `check-blob-logs --json FILE` is refused before anything is read, FILE
    # after the logs or before them (then it is taken for a log: named with the fix).
    proc = run_cli(
        "check-blob-logs", "--settings", settings_file, summary["log"], "--json", check_file
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"unrecognized arguments: {check_file}" in proc.stderr
    proc = run_cli(
        "check-blob-logs", "--settings", settings_file, "--json", check_file, summary["log"]
    )
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"--json-file {check_file}" in proc.stderr
