"""The backfill playbooks, driven through real `ansible-playbook` runs.

Two django_manage hosts on this machine (dm1 = shard 0/2, dm2 = shard 1/2, each with its
own log dir), two real SeaweedFS servers, the engine installed by roles/blobshift_engine.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

from helpers import contents, md5s, random_blobs, seed
from modtest import HERE, NEW_KEYS, OLD_KEYS, REPO, show

RECAP = re.compile(r"^(\S+)\s*: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def recap(result) -> dict[str, dict[str, int]]:
    return {
        m[1]: {"ok": int(m[2]), "changed": int(m[3]), "failed": int(m[5])}
        for m in RECAP.finditer(result.stdout)
    }


def no_secret(result) -> None:
    for secret in (OLD_KEYS[1], NEW_KEYS[1]):
        assert secret not in result.stdout and secret not in result.stderr


def play_ok(inventory, playbook: str, *args: str):
    result = inventory.play(playbook, *args)
    assert result.returncode == 0, show(result)
    no_secret(result)
    return result


def status_file(inventory, host: str, shard: str) -> Path:
    i, n = shard.split("/")
    return inventory.log_dir(host) / f"migrate_backend-shard{i}of{n}-status.json"


def read_status(inventory, host: str, shard: str) -> dict:
    try:
        return json.loads(status_file(inventory, host, shard).read_text())
    except (OSError, ValueError):
        return {}


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_engine_role_installs_once_then_changes_nothing(engine):
    first, second = recap(engine["first"]), recap(engine["second"])
    assert first["dm1"]["changed"] > 0  # built, copied and installed the wheel
    assert first["dm2"]["changed"] == 0  # same virtualenv (same machine): already there
    assert all(host["changed"] == 0 for host in second.values()), engine["second"].stdout
    assert "skipping: [dm1]" in engine["second"].stdout  # no build, no copy, no pip
    assert (engine["venv"] / "bin" / "blobshift").exists()


def test_engine_role_reinstalls_a_changed_checkout_of_the_same_version(engine, inventory, tmp_path):
    """The version stays 0.1.0 while the code changes: the role goes by a fingerprint of
    the sources, or hosts would keep running an old engine."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "src", checkout / "src", ignore=shutil.ignore_patterns("*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, checkout / name)
    init = checkout / "src" / "blobshift" / "__init__.py"
    init.write_text(init.read_text() + "CHANGED_CHECKOUT = True\n")
    playbook = str(HERE / "install_engine.yml")
    python = engine["venv"] / "bin" / "python"
    probe = ["-c", "import blobshift; print(getattr(blobshift, 'CHANGED_CHECKOUT', False))"]
    try:
        changed = inventory.play(playbook, "-e", f"blobshift_engine_source={checkout}")
        assert changed.returncode == 0, show(changed)
        assert recap(changed)["dm1"]["changed"] > 0
        out = subprocess.run([str(python), *probe], capture_output=True, text=True, check=True)
        assert out.stdout.strip() == "True"
    finally:  # the other tests use this virtualenv: put the checkout's engine back
        back = inventory.play(playbook)
        assert back.returncode == 0, show(back)
    out = subprocess.run([str(python), *probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_sharded_backfill_copies_every_blob_once(inventory, servers, buckets, tmp_path):
    old, new = servers
    blobs = random_blobs(240, 512)
    seed(old, buckets[0], blobs)
    summary_file = tmp_path / "summary.json"

    result = play_ok(
        inventory, "run_blob_migration.yml", "-e", f"blob_migration_summary_file={summary_file}"
    )
    summary = json.loads(summary_file.read_text())
    shards = {s["host"]: s for s in summary["shards"]}
    assert {h: s["shard"] for h, s in shards.items()} == {"dm1": "0/2", "dm2": "1/2"}
    assert all(s["outcome"] == "finished" for s in shards.values()), summary
    # Every blob copied, each by exactly one shard: the shards' counts add up to the total.
    assert summary["totals"]["copied"] == 240 and summary["totals"]["listed"] == 240
    assert summary["totals"]["skipped"] == 0 and summary["totals"]["logged"] == 0
    assert all(0 < s["counts"]["copied"] < 240 for s in shards.values())
    assert contents(new, buckets[1]) == md5s(blobs)
    # Every log path is reported, each in its host's log dir, and kept.
    for host, shard in shards.items():
        assert len(shard["logs"]) == 1
        assert shard["logs"][0].startswith(str(inventory.log_dir(host)))
        assert Path(shard["logs"][0]).exists()
        assert shard["logs"][0] in result.stdout
    assert recap(result)["dm1"]["failed"] == 0

    # A second run starts a new pass that finds everything present and copies nothing.
    play_ok(
        inventory, "run_blob_migration.yml", "-e", f"blob_migration_summary_file={summary_file}"
    )
    again = json.loads(summary_file.read_text())
    assert again["totals"]["copied"] == 0 and again["totals"]["skipped"] == 240
    assert all(not s["attached"] for s in again["shards"])


def test_check_mode_copies_nothing(inventory, servers, buckets, tmp_path):
    old, new = servers
    seed(old, buckets[0], random_blobs(60, 256))
    summary_file = tmp_path / "summary.json"

    play_ok(
        inventory,
        "run_blob_migration.yml",
        "--check",
        "-e",
        f"blob_migration_summary_file={summary_file}",
    )
    summary = json.loads(summary_file.read_text())
    assert all(s["outcome"] == "dry run" for s in summary["shards"]), summary
    assert summary["totals"]["would_copy"] == 60
    assert contents(new, buckets[1]) == {}
    for host in ("dm1", "dm2"):
        assert not list(inventory.log_dir(host).glob("*checkpoint.json"))
        assert not list(inventory.log_dir(host).glob("*-blob-migration-*.txt"))
        assert not list(inventory.log_dir(host).glob("*-ansible-job.json"))


def summary_file_of(summary: Path) -> dict[str, dict]:
    return {s["host"]: s for s in json.loads(summary.read_text())["shards"]}


def resumed_from_checkpoint(log: str) -> bool:
    """The engine's summary (tee) of a run says where it started."""
    text = Path(log).with_name(Path(log).stem + "-summary.txt").read_text()
    return "from key after" in text


def test_killed_shard_resumes_and_running_job_is_reattached(inventory, servers, buckets, tmp_path):
    old, new = servers
    blobs = random_blobs(300, 256)
    seed(old, buckets[0], blobs)
    # Slow enough to be caught running on a loaded machine, where each playbook run takes
    # tens of seconds: dm1 ~38 s, dm2 ~150 s (of ~150 blobs each).
    inventory.extra = {"blob_migration_max_rps": 4, "blob_migration_chunk_size": 10}
    inventory.write()
    (inventory.path / "host_vars" / "dm2.yml").write_text(
        f"blob_migration_log_dir: {inventory.log_dir('dm2')}\nblob_migration_max_rps: 1\n"
    )
    summary = tmp_path / "summary.json"
    status_json = tmp_path / "status.json"
    detach = ("-e", "blob_migration_wait=false", "-e", f"blob_migration_summary_file={summary}")

    started = play_ok(inventory, "run_blob_migration.yml", *detach)
    first = summary_file_of(summary)
    assert all(s["outcome"] == "running (detached)" for s in first.values()), started.stdout

    def dm1_progress():
        status = read_status(inventory, "dm1", "0/2")
        return status.get("state") == "running" and status["counts"]["copied"] >= 20

    wait_for(dm1_progress, 60, "dm1 to copy 20 blobs")
    # Kill shard 0's backfill outright (no chance to save anything more).
    pid = read_status(inventory, "dm1", "0/2")["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not Path(f"/proc/{pid}").exists(), 10, "the killed backfill to go")
    checkpoint = json.loads(
        (inventory.log_dir("dm1") / "migrate_backend-shard0of2-checkpoint.json").read_text()
    )
    assert checkpoint["position"] and not checkpoint["complete"]

    # The status playbook: shard 1 running; shard 0's status file still says running, but
    # no process holds its lock: "dead".
    play_ok(
        inventory, "blob_migration_status.yml", "-e", f"blob_migration_status_file={status_json}"
    )
    status = json.loads(status_json.read_text())
    assert status["states"] == ["dead", "running"], status
    assert status["shards"][1]["counts"]["copied"] > 0

    # A second run: shard 0 starts again and resumes from its checkpoint; shard 1's job is
    # still running, so the playbook re-attaches to it instead of starting another.
    rerun = play_ok(inventory, "run_blob_migration.yml", *detach)
    second = summary_file_of(summary)
    assert not second["dm1"]["attached"] and second["dm1"]["job"] != first["dm1"]["job"]
    assert second["dm2"]["attached"] and second["dm2"]["job"] == first["dm2"]["job"]
    assert "re-attaching to backfill job " + first["dm2"]["job"] in rerun.stdout
    assert len(second["dm2"]["logs"]) == 1  # no second backfill of shard 1
    assert len(second["dm1"]["logs"]) == 2
    assert resumed_from_checkpoint(second["dm1"]["logs"][1])

    # Stop shard 1 gracefully (SIGTERM): it saves its progress and says "stopped".
    dm2_pid = read_status(inventory, "dm2", "1/2")["pid"]
    os.kill(dm2_pid, signal.SIGTERM)
    wait_for(
        lambda: read_status(inventory, "dm2", "1/2").get("state") == "stopped", 20, "dm2 to stop"
    )

    # A third run, without the rate limit, waits for both shards to finish.
    play_ok(
        inventory,
        "run_blob_migration.yml",
        "-e",
        f"blob_migration_summary_file={summary}",
        "-e",
        "blob_migration_max_rps=10000",
    )
    third = summary_file_of(summary)
    assert third["dm1"]["outcome"] == third["dm2"]["outcome"] == "finished", third
    assert len(third["dm2"]["logs"]) == 2 and resumed_from_checkpoint(third["dm2"]["logs"][1])
    assert contents(new, buckets[1]) == md5s(blobs)

    play_ok(
        inventory, "blob_migration_status.yml", "-e", f"blob_migration_status_file={status_json}"
    )
    assert json.loads(status_json.read_text())["states"] == ["finished", "finished"]


def test_detached_start_refused_by_its_preflight_is_reported_failed(inventory, tmp_path):
    # SeaweedFS fails the key probe ("a//b", "x/"): without log_unfaithful_keys, each shard
    # ends before it takes its lock. Detached, the playbook must say so, not "not started".
    summary = tmp_path / "summary.json"
    result = inventory.play(
        "run_blob_migration.yml",
        "-e",
        "blob_migration_wait=false",
        "-e",
        "blob_migration_log_unfaithful_keys=false",
        "-e",
        f"blob_migration_summary_file={summary}",
    )
    assert result.returncode != 0, show(result)
    no_secret(result)
    shards = summary_file_of(summary)
    assert {s["outcome"] for s in shards.values()} == {"failed"}, shards
    assert all("--log-unfaithful-keys" in s["msg"] for s in shards.values()), shards


def test_the_flip_refuses_while_a_backfill_shard_runs(inventory, servers, buckets, tmp_path):
    old, _ = servers
    seed(old, buckets[0], random_blobs(200, 256))
    inventory.extra = {"blob_migration_max_rps": 2, "blob_migration_chunk_size": 10}
    inventory.write()
    play_ok(inventory, "run_blob_migration.yml", "-e", "blob_migration_wait=false")
    pids = [read_status(inventory, h, s)["pid"] for h, s in (("dm1", "0/2"), ("dm2", "1/2"))]
    try:
        result = inventory.play("phase4_flip.yml", "-e", "confirm=modtest")
        assert result.returncode != 0, show(result)
        text = " ".join(result.stdout.split())
        for host, shard, pid in (("dm1", "0/2", pids[0]), ("dm2", "1/2", pids[1])):
            assert (
                f"{host}: still running in {inventory.log_dir(host)}: backfill shard "
                f"{shard} (pid {pid})" in text
            ), text[-3000:]
        assert "TASK [Compare every blob" not in result.stdout  # refused before verify
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
    for host, shard in (("dm1", "0/2"), ("dm2", "1/2")):
        wait_for(
            lambda h=host, s=shard: read_status(inventory, h, s).get("state") == "stopped", 20, host
        )


def test_check_logs_migrate_and_verify_gate(inventory, servers, buckets, tmp_path):
    old, new = servers
    blobs = random_blobs(80, 256)
    seed(old, buckets[0], blobs)
    play_ok(inventory, "run_blob_migration.yml")

    verified = play_ok(inventory, "verify_blob_migration.yml")
    reports = list(inventory.log_dir("dm1").glob("verify-report-*.json"))
    assert len(reports) == 1 and json.loads(reports[0].read_text())["clean"] is True
    assert f"report: {reports[0]}" in verified.stdout
    # The controller keeps a copy, and so it does of each shard's run files and logs.
    fetched = inventory.fetch_dir / "dm1" / reports[0].name
    assert fetched.read_bytes() == reports[0].read_bytes()
    assert f"report on the controller: {fetched}" in verified.stdout
    for host, shard in (("dm1", "0of2"), ("dm2", "1of2")):
        status = inventory.fetch_dir / host / f"migrate_backend-shard{shard}-status.json"
        assert json.loads(status.read_text())["state"] == "finished"

    # Three blobs the backfill "could not copy": gone from new, logged in shard 0's last log.
    lost = sorted(blobs)[:3]
    client = new.client()
    for key in lost:
        client.delete_object(Bucket=buckets[1], Key=key)
    log = json.loads(
        (inventory.log_dir("dm1") / "migrate_backend-shard0of2-checkpoint.json").read_text()
    )["logs"][-1]
    with open(log, "a") as fh:
        for key in lost:
            fh.write(json.dumps({"blob_key": key, "error": "too many retries"}) + "\n")
        fh.write(
            json.dumps({"blob_key": "ghost/never-existed", "error": "not found in old db"}) + "\n"
        )

    failed = inventory.play("verify_blob_migration.yml")
    assert failed.returncode != 0, show(failed)
    assert "the new store is NOT complete, do not flip" in failed.stdout
    assert "3 missing" in failed.stdout
    report = sorted(inventory.log_dir("dm1").glob("verify-report-*.json"))[-1]
    assert f"report: {report}" in failed.stdout
    assert sorted(json.loads(report.read_text())["missing"]) == lost

    accepted = play_ok(
        inventory,
        "verify_blob_migration.yml",
        "-e",
        json.dumps({"blob_migration_accept_missing": lost}),
    )
    assert "except 3 accepted as lost" in accepted.stdout

    result_file = tmp_path / "check.json"
    play_ok(inventory, "check_blob_logs.yml", "-e", f"blob_log_check_summary_file={result_file}")
    checked = json.loads(result_file.read_text())
    assert checked["totals"]["Found in old db"] == 3
    assert checked["totals"]["Not found"] == 1
    assert checked["not_found_keys"] == ["ghost/never-existed"]
    assert checked["migrated"] == 0 and checked["left_in_old"] == 3
    assert set(contents(new, buckets[1])) == set(blobs) - set(lost)

    # The app's current manifest, made by its own command on the first django_manage host:
    # the ghost is not referenced by the app (deleted, say), so it is no longer "Not found".
    manifest = tmp_path / "app-references.jsonl"
    manifest.write_text("".join(json.dumps({"blob_key": k}) + "\n" for k in blobs))
    command = json.dumps({"blob_log_check_manifest_command": ["cat", str(manifest)]})
    play_ok(
        inventory,
        "check_blob_logs.yml",
        "-e",
        command,
        "-e",
        f"blob_log_check_summary_file={result_file}",
    )
    referenced = json.loads(result_file.read_text())
    assert referenced["totals"]["Not found"] == 0 and referenced["not_found_keys"] == []
    assert referenced["totals"]["Not referenced"] == 1
    assert referenced["totals"]["Found in old db"] == 3
    # The operator's copy on the controller, and each host's copy, are the command's output.
    assert (inventory.fetch_dir / "manifest-current.jsonl").read_bytes() == manifest.read_bytes()
    for host in ("dm1", "dm2"):
        copy = inventory.log_dir(host) / "manifest-current.jsonl"
        assert copy.read_bytes() == manifest.read_bytes()
    both = inventory.play(
        "check_blob_logs.yml", "-e", command, "-e", f"blob_log_check_keys_from={manifest}"
    )
    assert both.returncode != 0 and "not both. Nothing was changed." in both.stdout, show(both)

    play_ok(
        inventory,
        "check_blob_logs.yml",
        "-e",
        "migrate=true",
        "-e",
        f"blob_log_check_summary_file={result_file}",
    )
    assert json.loads(result_file.read_text())["migrated"] == 3

    play_ok(inventory, "check_blob_logs.yml", "-e", f"blob_log_check_summary_file={result_file}")
    after = json.loads(result_file.read_text())
    assert after["totals"]["Found in old db"] == 0
    assert after["totals"]["Found in new db"] == 3
    assert contents(new, buckets[1]) == md5s(blobs)
    play_ok(inventory, "verify_blob_migration.yml")


def test_backfill_refuses_outside_the_migrating_state(inventory, servers, buckets):
    inventory.extra = {
        "localsettings": {"BLOB_DB_MIGRATING_FROM_S3_TO_S3": False, "TEMP_RIAKCS_PROXY": False}
    }
    inventory.write()
    result = inventory.play("run_blob_migration.yml")
    assert result.returncode != 0
    assert "exist only while" in result.stdout and "migrating" in result.stdout
    assert "Nothing was changed" in result.stdout
    assert "Start the backfill" not in result.stdout
    for host in ("dm1", "dm2"):
        assert not inventory.log_dir(host).exists()


def test_tags_reach_every_task_they_name(inventory):
    """--tags backfill keeps the preflight and the engine's interpreter fact, and every
    task of the backfill plays; --tags blobshift_engine keeps every task of the role."""
    listed = inventory.play("run_blob_migration.yml", "--list-tasks", "--tags", "backfill")
    assert listed.returncode == 0, show(listed)
    out = listed.stdout
    for name in (
        "Refuse to backfill outside the migrating state",
        "Refuse a log dir that cannot hold the logs",
        "blobshift_engine : Point the engine modules at the virtualenv's Python",
        "Start the backfill, detached from this session",
        "Wait for the backfill to end",
        "Report every shard",
        "Fail the shards that did not finish",
    ):
        assert name in out, out
    assert "Build the wheel on the controller" not in out
    every = inventory.play("run_blob_migration.yml", "--list-tasks")
    engine_only = inventory.play(
        "run_blob_migration.yml", "--list-tasks", "--tags", "blobshift_engine"
    )
    role_tasks = [
        line.split("\t")[0].strip()
        for line in every.stdout.splitlines()
        if line.strip().startswith("blobshift_engine : ")
    ]
    assert len(role_tasks) > 5
    for task in role_tasks:
        assert task in engine_only.stdout, task


def test_playbooks_fail_closed_without_django_manage_hosts(inventory):
    """An empty [django_manage] would make every play match no host and 'succeed'."""
    hosts = inventory.path / "hosts.ini"
    hosts.write_text(hosts.read_text().replace("[django_manage]\ndm1\ndm2\n", "[django_manage]\n"))
    for playbook in ("verify_blob_migration.yml", "run_blob_migration.yml"):
        result = inventory.play(playbook)
        assert result.returncode != 0, show(result)
        assert "the inventory has no [django_manage] host" in result.stdout
