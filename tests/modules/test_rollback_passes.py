"""The rollback's reverse passes (playbooks/rollback_reverse_pass.yml, imported twice by
rollback_to_steady.yml), through real `ansible-playbook` runs: detached as the backfill's
shards are, re-attached by a re-run, resumed from their checkpoint, and run again when
the app deleted a blob between a pass's listing and its copy.

dm1 (django_manage[0]) runs the pass; it copies the new store's blobs back to the old one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
from helpers import contents, md5s, random_blobs, seed
from modtest import LAB_PASSWORD, REPO, VENV_BIN, _load, show
from test_modules import run_module
from test_playbooks import no_secret, resumed_from_checkpoint, wait_for

from blobshift.backfill import GONE_FROM_SOURCE

PASS = "rollback_reverse_pass.yml"


def keep_settings(inventory) -> None:
    """What rollback_to_steady.yml does before its first pass: the migrating settings kept."""
    log_dir = inventory.log_dir("dm1")
    log_dir.mkdir(exist_ok=True)
    shutil.copy(inventory.settings, log_dir / "rollback-localsettings.py")


def reverse_file(inventory, name: str) -> dict:
    try:
        return json.loads(
            (inventory.log_dir("dm1") / f"migrate_backend-reverse-{name}").read_text()
        )
    except (OSError, ValueError):
        return {}


def copied_at_least(inventory, n: int):
    """The pass running with n blobs copied, and its job id saved for a re-run (a session
    lost before that save leaves a pass that a re-run refuses rather than re-attaches)."""

    def check():
        status = reverse_file(inventory, "status.json")
        return (
            status.get("state") == "running"
            and status["counts"]["copied"] >= n
            and bool(reverse_file(inventory, "ansible-job.json"))
        )

    return check


def start_play(inventory, out: Path, *args: str) -> subprocess.Popen:
    """The pass playbook in the background, in a session of its own (the operator's SSH
    session), as Inventory.play runs it; its output in `out`."""
    env = {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '')}",
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_ASYNC_DIR": str(inventory.async_dir),
        "BLOBSHIFT_VAULT_PASSWORD_FILE": str(LAB_PASSWORD),
    }
    env.pop("ANSIBLE_CONFIG", None)
    with out.open("w") as fh:
        return subprocess.Popen(
            [
                str(VENV_BIN / "ansible-playbook"),
                "-i",
                str(inventory.path),
                f"playbooks/{PASS}",
                *args,
            ],
            cwd=REPO,
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


def drop_session(proc: subprocess.Popen) -> None:
    """What a lost SSH session does to the playbook: gone at once, nothing saved."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def play(inventory, *args: str) -> subprocess.CompletedProcess:
    result = inventory.play(PASS, *args)
    no_secret(result)
    return result


def test_reverse_pass_reattached_after_a_lost_session_and_resumed_after_a_kill(
    inventory, servers, buckets, tmp_path
):
    old, new = servers
    blobs = random_blobs(60, 256)
    seed(new, buckets[1], blobs)
    keep_settings(inventory)
    # Slow enough to be caught running (~60 s), through the gate and a re-run's start, which
    # take tens of seconds on a loaded machine.
    inventory.extra = {"blob_migration_max_rps": 1, "blob_migration_chunk_size": 5}
    inventory.write()

    # The operator's session drops while the pass runs: the pass goes on.
    first = start_play(inventory, tmp_path / "first.out")
    try:
        wait_for(copied_at_least(inventory, 3), 180, "the reverse pass to copy 3 blobs")
    finally:
        drop_session(first)
    job = reverse_file(inventory, "ansible-job.json")
    assert job["reverse"] is True and job["jid"]
    pid = reverse_file(inventory, "status.json")["pid"]
    assert Path(f"/proc/{pid}").exists()

    # The flip's gate sees the running reverse pass.
    idle = inventory.play("backfill_idle.yml")
    assert idle.returncode != 0, show(idle)
    assert f"reverse pass shard 0/1 (pid {pid})" in idle.stdout, show(idle)

    # A re-run re-attaches to it, and starts no second pass.
    rerun = play(inventory)
    assert rerun.returncode == 0, show(rerun)
    assert f"re-attaching to backfill job {job['jid']}" in rerun.stdout, show(rerun)
    assert "1 pass(es); finished (re-attached)" in rerun.stdout, show(rerun)
    checkpoint = reverse_file(inventory, "checkpoint.json")
    assert checkpoint["complete"] and len(checkpoint["logs"]) == 1
    assert contents(old, buckets[0]) == md5s(blobs)
    # The controller holds the pass's run files, under the reverse pass's own names.
    held = inventory.fetch_dir / "dm1" / "migrate_backend-reverse-checkpoint.json"
    assert json.loads(held.read_text())["complete"]

    # More blobs written to the new store; this pass is killed outright mid-way while the
    # playbook waits for it: the playbook fails, saying to re-run.
    more = random_blobs(30, 256, prefix="more/")
    seed(new, buckets[1], more)
    waiting = start_play(inventory, tmp_path / "waiting.out")
    try:
        wait_for(copied_at_least(inventory, 3), 180, "the second pass to copy 3 blobs")
        os.kill(reverse_file(inventory, "status.json")["pid"], signal.SIGKILL)
        assert waiting.wait(timeout=60) != 0
        told = " ".join((tmp_path / "waiting.out").read_text().split())
        assert "run rollback_to_steady.yml again to re-attach to it or resume it" in told, told
    finally:
        if waiting.poll() is None:
            drop_session(waiting)
    checkpoint = reverse_file(inventory, "checkpoint.json")
    assert checkpoint["position"] and not checkpoint["complete"]

    # The next run starts the pass again, from its checkpoint.
    resumed = play(inventory, "-e", "blob_migration_max_rps=10000")
    assert resumed.returncode == 0, show(resumed)
    assert "re-attaching" not in resumed.stdout
    checkpoint = reverse_file(inventory, "checkpoint.json")
    assert checkpoint["complete"], checkpoint
    assert resumed_from_checkpoint(checkpoint["logs"][-1])
    assert "1 pass(es); finished:" in resumed.stdout, show(resumed)
    assert contents(old, buckets[0]) == md5s({**blobs, **more})


def pass_deleting(inventory, new, bucket: str, key: str, out: Path, *args: str):
    """Run the pass; as soon as it copies, the app deletes `key` (listed by then: one
    listing request holds every key). (exit code, the playbook's words)."""
    running = start_play(inventory, out, *args)
    try:
        wait_for(copied_at_least(inventory, 1), 180, "the reverse pass to start copying")
        new.client().delete_object(Bucket=bucket, Key=key)
        rc = running.wait(timeout=60)
    finally:
        if running.poll() is None:
            drop_session(running)
    return rc, " ".join(out.read_text().split())


def test_blob_deleted_during_a_pass_is_passed_over_but_one_logged_by_every_pass_stops(
    inventory, servers, buckets, tmp_path
):
    old, new = servers
    blobs = random_blobs(20, 256)
    seed(new, buckets[1], blobs)
    keep_settings(inventory)
    inventory.extra = {"blob_migration_max_rps": 8}
    inventory.write()

    # The first pass logs the deleted blob ("not found"); a second one no longer lists it.
    rc, text = pass_deleting(inventory, new, buckets[1], max(blobs), tmp_path / "1.out")
    assert rc == 0, text[-4000:]
    assert "2 pass(es); finished, blobs logged: listed 20" in text, text[-4000:]
    assert "logged 1; finished: listed 19, copied 0" in text, text[-4000:]
    assert reverse_file(inventory, "checkpoint.json")["totals"]["logged"] == 0
    del blobs[max(blobs)]
    assert contents(old, buckets[0]) == md5s(blobs)

    # A blob logged by every pass (here: one pass allowed) stops the rollback, naming the log.
    more = random_blobs(20, 256, prefix="more/")
    seed(new, buckets[1], more)
    rc, text = pass_deleting(
        inventory,
        new,
        buckets[1],
        max(more),
        tmp_path / "2.out",
        "-e",
        "rollback_reverse_pass_attempts=1",
    )
    assert rc != 0, text[-4000:]
    assert "logged blobs in each of 1 passes" in text, text[-4000:]
    assert "the rollback stops before the app loses the new store" in text, text[-4000:]
    log = reverse_file(inventory, "status.json")["log"]
    assert f"missing-blob logs: {log}" in text, text[-4000:]


def test_reverse_pass_takes_hash_shards_only(capsys, tmp_path):
    plan = tmp_path / "range-plan.json"
    plan.write_text("{}")
    args = {
        "settings": str(tmp_path / "s.py"),
        "log_dir": str(tmp_path / "logs"),
        "reverse": True,
        "range_plan": str(plan),
    }
    result = run_module("blob_migration", args, capsys)
    assert result["failed"] and "a reverse pass takes hash shards" in result["msg"]
    assert not (tmp_path / "logs").exists()


def test_info_reads_the_reverse_pass_run_files(capsys, tmp_path):
    (tmp_path / "migrate_backend-reverse-status.json").write_text(
        json.dumps({"state": "running", "pid": 2**22 + 1, "counts": {"copied": 3}})
    )
    reverse = run_module("blob_migration_info", {"log_dir": str(tmp_path), "reverse": True}, capsys)
    assert reverse["reverse"] and reverse["state"] == "dead"  # no process holds its lock
    assert reverse["paths"]["job"] == str(tmp_path / "migrate_backend-reverse-ansible-job.json")
    backfill = run_module("blob_migration_info", {"log_dir": str(tmp_path)}, capsys)
    assert not backfill["reverse"] and backfill["state"] == "not started"


PASSES = _load(
    "rollback_reverse_passes", REPO / "playbooks/filter_plugins/rollback_reverse_passes.py"
)


def gone(key: str) -> dict:
    return {"blob_key": key, "error": GONE_FROM_SOURCE, "size": 3}


@pytest.mark.parametrize(
    ("records", "logged", "passes_before", "logged_before", "clean"),
    [
        ([], 0, 0, [], True),  # nothing logged
        # The first pass: a deletion is confirmed only by a pass after it.
        ([gone("a")], 1, 0, [], False),
        # A live app deleted another blob during each pass: the pass before's is resolved.
        ([gone("b")], 1, 1, ["a"], True),
        ([gone("b"), gone("c")], 2, 2, ["a"], True),
        # Logged again by the next pass: not a deletion, whatever it says.
        ([gone("a")], 1, 1, ["a"], False),
        # Any other cause: the blob is still there and was not copied.
        ([gone("b"), {"blob_key": "c", "error": "too many retries: 503"}], 2, 1, ["a"], False),
        # A log not read whole (over the playbook's limit, or cut short): never clean.
        ([gone("b")], 2, 1, ["a"], False),
    ],
)
def test_a_pass_that_logged_only_the_apps_deletions_meanwhile_is_clean(
    records, logged, passes_before, logged_before, clean
):
    assert PASSES.rollback_reverse_pass_clean(records, logged, passes_before, logged_before) is (
        clean
    )
    # The filter names the engine's error without importing the engine: the same words.
    assert PASSES.GONE_FROM_SOURCE == GONE_FROM_SOURCE
