"""run_blob_migration.yml: the range plan made once per migration and kept on the
controller, checkpoints kept on the controller while shards run, and the take-over of a
lost host's shard from them.

Two django_manage hosts on this machine (dm1 = shard 0/2, dm2 = shard 1/2), real SeaweedFS,
real ansible-playbook runs (see modtest.py).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import threading
from pathlib import Path

import pytest
import yaml
from helpers import contents, md5s, random_blobs, seed
from modtest import REPO, _load, load_module, show
from test_modules import run_module
from test_playbooks import no_secret, wait_for
from test_playbooks import play_ok as backfill_ok

from blobshift.ranges import RangePlan
from blobshift.runfiles import Checkpoint
from blobshift.sources import Shard

RECAP = re.compile(r"^(\S+)\s*: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)
LOST = json.dumps({"blob_migration_lost_hosts": ["dm2"]})
SHARD1 = "migrate_backend-shard1of2"
# The engine fixture installed the engine: the role's fact is all the runs need of it.
BACKFILL = ("--tags", "backfill")


def play_ok(inventory, *args: str):
    return backfill_ok(inventory, "run_blob_migration.yml", *args)


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def shards_of(summary: Path) -> dict[str, dict]:
    return {s["shard"]: s for s in json.loads(summary.read_text())["shards"]}


def set_host_vars(inventory, host: str, **values) -> None:
    path = inventory.path / "host_vars" / f"{host}.yml"
    path.write_text(yaml.safe_dump({**yaml.safe_load(path.read_text()), **values}))


def unreachable(inventory, host: str) -> None:
    """Any connection to the host fails at once (a loopback port nothing listens on), so
    a contact would show as unreachable."""
    set_host_vars(
        inventory, host, ansible_connection="ssh", ansible_host="127.0.0.1", ansible_port=1
    )


def owned_keys(plan: RangePlan, shard: Shard, keys) -> list[str]:
    ranges = plan.owned(shard)
    return [k for k in keys if any(r.holds(k) for r in ranges)]


def made_plan(result) -> str:
    """What the run did at the task that makes the range plan: changed or skipping."""
    found = re.search(r"TASK \[Make the range plan[^\n]*\n(\w+): \[dm1\]", result.stdout)
    assert found, result.stdout[-3000:]
    return found[1]


def test_lost_hosts_shard_is_taken_over_from_the_controllers_checkpoint(
    inventory, servers, buckets, tmp_path
):
    """The first run makes the range plan once and keeps it on the controller, and keeps
    dm2's checkpoint there while dm2 runs (a new plan is refused meanwhile). dm2 is killed
    mid-pass and lost with its log dir; dm1 then finishes dm2's shard from the controller's
    checkpoint beside its own, by the same plan: no key at or before the checkpoint is
    listed again, and every blob is in the new store."""
    old, new = servers
    blobs = random_blobs(160, 256)
    seed(old, buckets[0], blobs)
    inventory.extra = {"blob_migration_chunk_size": 10, "blob_migration_fetch_interval": 1}
    inventory.write()
    set_host_vars(inventory, "dm2", blob_migration_max_rps=1)  # ~80 s for its ~80 keys
    summary = tmp_path / "summary.json"
    plan_file = inventory.fetch_dir / "range-plan.json"
    held = inventory.fetch_dir / "dm2" / f"{SHARD1}-checkpoint.json"
    on_dm2 = inventory.log_dir("dm2") / f"{SHARD1}-status.json"

    first: dict = {}
    runner = threading.Thread(
        target=lambda: first.update(
            result=inventory.play(
                "run_blob_migration.yml", *BACKFILL, "-e", f"blob_migration_summary_file={summary}"
            )
        )
    )
    runner.start()
    try:
        # The controller has dm2's checkpoint while dm2 still runs: fetched by the poll.
        wait_for(lambda: read_json(held).get("position"), 180, "dm2's checkpoint on the controller")
        status = read_json(on_dm2)
        assert status["state"] == "running", status
        # A new plan would change dm2's ranges under its pass: refused, naming it.
        made = plan_file.read_bytes()
        refused = inventory.play(
            "run_blob_migration.yml", *BACKFILL, "-e", "blob_migration_replan_ranges=true"
        )
        assert refused.returncode != 0, show(refused)
        text = " ".join(refused.stdout.split())
        assert f"dm2 shard 1/2 (pid {status['pid']});" in text, text[-3000:]
        assert "a new plan would change the ranges under their pass" in text
        assert "TASK [Make the range plan" not in refused.stdout
        assert read_json(on_dm2)["state"] == "running"  # still: killed mid-pass below
    finally:
        pid = read_json(on_dm2).get("pid")
        if pid:
            os.kill(pid, signal.SIGKILL)  # dm2 dies mid-pass, saving nothing more
        runner.join(120)
    result = first["result"]
    assert result.returncode != 0, show(result)  # dm2's shard failed
    no_secret(result)
    # The plan: made once on dm1, kept on the controller, the same on every host.
    assert made_plan(result) == "changed"
    plan = RangePlan.load(plan_file)
    assert plan.count == 4 * 2 and plan_file.read_bytes() == made  # 4 ranges per host
    for host in ("dm1", "dm2"):
        assert (inventory.log_dir(host) / "range-plan.json").read_bytes() == made
    shards = shards_of(summary)
    assert shards["0/2"]["outcome"] == "finished" and shards["1/2"]["outcome"] == "failed"
    assert shards["0/2"]["counts"]["listed"] == len(owned_keys(plan, Shard(0, 2), blobs))
    checkpoint = Checkpoint.load(held)  # sealed: what the engine will accept
    assert checkpoint is not None and not checkpoint.complete and checkpoint.position
    position = checkpoint.position

    shutil.rmtree(inventory.log_dir("dm2"))  # the host is gone
    unreachable(inventory, "dm2")
    takeover = play_ok(
        inventory, *BACKFILL, "-e", LOST, "-e", f"blob_migration_summary_file={summary}"
    )
    recap = {m[1]: m for m in RECAP.finditer(takeover.stdout)}
    assert recap["dm2"][4] == "0" and recap["dm2"][5] == "0", takeover.stdout[-2000:]
    # Not contacted: no task result for dm2 once the host plays begin.
    host_plays = takeover.stdout.split("PLAY [Preflight - the backfill can run", 1)[1]
    assert not re.search(r"^\w+: \[dm2\]", host_plays, re.M)
    # The controller's plan again, not a new one.
    assert made_plan(takeover) == "skipping" and plan_file.read_bytes() == made
    shards = shards_of(summary)
    own, taken = shards["0/2"], shards["1/2"]
    assert own["host"] == taken["host"] == "dm1"
    assert own["taken_over_from"] is None and taken["taken_over_from"] == "dm2"
    assert own["job"] != taken["job"]  # two jobs, each with its own job file
    assert taken["outcome"] == "finished" and taken["from_position"] == position, taken
    assert "shard 1/2: finished, taken over from dm2 at key " + position in takeover.stdout
    # Resumed from the checkpoint: only the shard's keys after it were listed, each copied
    # now or found present (copied by the killed run after its last checkpoint), and the
    # pass goes on from the held checkpoint's totals.
    shard_keys = owned_keys(plan, Shard(1, 2), blobs)
    after = [k for k in shard_keys if k > position]
    assert taken["counts"]["listed"] == len(after) < len(shard_keys)
    assert taken["counts"]["copied"] + taken["counts"]["skipped"] == len(after)
    assert taken["pass_totals"]["listed"] == checkpoint.totals["listed"] + len(after)
    assert taken["pass_totals"]["copied"] == checkpoint.totals["copied"] + taken["counts"]["copied"]
    assert contents(new, buckets[1]) == md5s(blobs)
    # dm1 holds the shard's run files under its own names; the controller keeps them
    # under dm2, where a later take-over looks.
    assert Checkpoint.load(inventory.log_dir("dm1") / f"{SHARD1}-checkpoint.json").complete
    assert (inventory.log_dir("dm1") / f"{SHARD1}-ansible-job.json").exists()
    assert Checkpoint.load(held).complete
    assert read_json(inventory.fetch_dir / "dm2" / f"{SHARD1}-status.json")["state"] == "finished"
    assert not inventory.log_dir("dm2").exists()

    # The status playbook does not contact dm2 either, and reports both shards on dm1.
    status_json = tmp_path / "status.json"
    watched = inventory.play(
        "blob_migration_status.yml", "-e", LOST, "-e", f"blob_migration_status_file={status_json}"
    )
    assert watched.returncode == 0, show(watched)
    status = json.loads(status_json.read_text())
    assert [(s["host"], s["shard"], s["state"]) for s in status["shards"]] == [
        ("dm1", "0/2", "finished"),
        ("dm1", "1/2", "finished"),
    ]
    assert "shard 1/2: finished, taken over from dm2" in watched.stdout

    # A dry run lists by the plan the hosts hold, and changes nothing.
    dry = play_ok(
        inventory, *BACKFILL, "--check", "-e", LOST, "-e", f"blob_migration_summary_file={summary}"
    )
    assert made_plan(dry) == "skipping"
    shards = shards_of(summary)
    for index in (0, 1):
        assert shards[f"{index}/2"]["outcome"] == "dry run"
        listed = shards[f"{index}/2"]["counts"]["listed"]
        assert listed == len(owned_keys(plan, Shard(index, 2), blobs)), shards
    assert plan_file.read_bytes() == made


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"range_plan": "/nonexistent/plan.json"}, "range_plan /nonexistent/plan.json: no such"),
        (
            {"range_plan": __file__, "keys_from": __file__},
            "range_plan and keys_from: a manifest is sharded by hash",
        ),
        ({"max_chunks_ahead": 0}, "max_chunks_ahead=0: must be at least 1"),
    ],
)
def test_blob_migration_refuses_bad_range_arguments(capsys, tmp_path, args, message):
    base = {"settings": str(tmp_path / "s.py"), "log_dir": str(tmp_path)}
    result = run_module("blob_migration", {**base, **args}, capsys)
    assert result["failed"] and message in result["msg"], result


def test_blob_migration_poll_documents_its_job_suboptions():
    """(Its top-level options are checked with every module's in test_modules.py.)"""
    stub = load_module("blob_migration_poll")
    options = yaml.safe_load(stub.DOCUMENTATION)["options"]
    assert set(options["jobs"]["suboptions"]) == set(stub.ARGUMENT_SPEC["jobs"]["options"])


def test_a_lost_hosts_shard_goes_to_the_next_survivor_in_group_order():
    runs = _load(
        "blob_migration_shards", REPO / "playbooks/filter_plugins/blob_migration_shards.py"
    ).blob_migration_runs
    got = runs(["a", "b", "c", "d"], ["b", "c", "d"])
    # Own shard first; wrapping around: d's next survivor is a.
    assert [(r["shard"], r["runner"], r["taken_over_from"]) for r in got] == [
        ("0/4", "a", None),
        ("1/4", "a", "b"),
        ("2/4", "a", "c"),
        ("3/4", "a", "d"),
    ]
    assert [r["runner"] for r in runs(["a", "b", "c"], ["a"])] == ["b", "c", "b"]
    assert [r["runner"] for r in runs(["a", "b", "c"], [])] == ["a", "b", "c"]


@pytest.mark.parametrize(
    ("lost", "message"),
    [
        (["dm9"], "not in [django_manage]: dm9"),
        (["dm1", "dm2"], "every django_manage host is lost"),
        ("dm2", "must be a list of host names"),
        (
            ["dm2"],
            "dm2 is lost, but the controller holds no checkpoint of its shard 1/2",
        ),
    ],
)
def test_take_over_refusals(inventory, lost, message):
    result = inventory.play(
        "run_blob_migration.yml", "-e", json.dumps({"blob_migration_lost_hosts": lost})
    )
    assert result.returncode != 0, show(result)
    text = " ".join(result.stdout.split())
    assert message in text, text[-3000:]
    assert "Nothing was changed" in text
    for host in ("dm1", "dm2"):
        assert not inventory.log_dir(host).exists()


def test_take_over_from_the_first_key_and_the_host_back_too_soon(
    inventory, servers, buckets, tmp_path
):
    """With blob_migration_takeover_from_start, dm1 runs dm2's shard from its first key
    (hash shards too); dm2 back while dm1 still runs it is refused, naming dm1."""
    old, _ = servers
    seed(old, buckets[0], random_blobs(80, 256))
    inventory.extra = {"blob_migration_ranges": 0, "blob_migration_max_rps": 1}  # ~40 s a shard
    inventory.write()
    host_vars = inventory.path / "host_vars" / "dm2.yml"
    reachable = host_vars.read_text()
    unreachable(inventory, "dm2")
    summary = tmp_path / "summary.json"
    play_ok(
        inventory,
        *BACKFILL,
        "-e",
        LOST,
        "-e",
        "blob_migration_takeover_from_start=true",
        "-e",
        "blob_migration_wait=false",
        "-e",
        f"blob_migration_summary_file={summary}",
    )
    shards = shards_of(summary)
    assert [(s["host"], s["outcome"]) for s in shards.values()] == [
        ("dm1", "running (detached)")
    ] * 2
    assert shards["1/2"]["taken_over_from"] == "dm2" and shards["1/2"]["from_position"] is None
    on_dm1 = inventory.log_dir("dm1") / f"{SHARD1}-status.json"
    pids = [
        read_json(inventory.log_dir("dm1") / f"migrate_backend-shard{i}of2-status.json")["pid"]
        for i in (0, 1)
    ]
    try:
        host_vars.write_text(reachable)  # dm2 is back, while dm1 runs its shard
        refused = inventory.play("run_blob_migration.yml", *BACKFILL)
        assert refused.returncode != 0, show(refused)
        text = " ".join(refused.stdout.split())
        assert f"dm1 runs shard 1/2 (pid {pids[1]}), taken over while dm2 was lost" in text, text[
            -3000:
        ]
        assert "Nothing was changed" in text
        assert not inventory.log_dir("dm2").exists()
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
    wait_for(lambda: read_json(on_dm1).get("state") == "stopped", 20, "dm1's shard 1/2 to stop")
    # (its shard 0/2 stops too; the next test's buckets are its own)
