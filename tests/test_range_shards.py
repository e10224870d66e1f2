"""Range shards (`migrate-backend --range-plan FILE --shard I/N`) on real SeaweedFS: each
host lists only its ranges of the key space, so N hosts together send each store about
the LIST requests of one run, where hash shards cost N runs' worth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import contents, md5s, run_cli, seed, write_manifest
from inprocess_backfill import ListCounter, run_backfill

from blobshift.ranges import RangePlan
from blobshift.settings import load_settings
from blobshift.sources import Shard

PAGE_KEYS = 20  # listing pages this long: 1200 keys are 60 pages
RANGES = 8
HOSTS = 3


def awkward_blobs(n: int) -> dict[str, bytes]:
    """Keys with spaces, non-ASCII, "+", "%" and "=" among plain ones (all of which
    SeaweedFS holds as written), in no particular order."""
    shapes = ("k/{:04d}", "k/{:04d} with space", "k/ключ/{:04d}", "k/{:04d}+plus", "k/%41{:04d}=")
    return {shapes[i % len(shapes)].format(i): f"blob {i}".encode() for i in range(n)}


def make_plan(settings_file: Path, keys: list[str], path: Path, ranges: int = RANGES) -> RangePlan:
    """A plan cut from the true key list (as plan-ranges would from a sample)."""
    old = load_settings(settings_file, require_old=True).old
    assert old is not None
    ordered = sorted(keys)  # str order is S3's (UTF-8 byte) order
    bounds = tuple(ordered[i * len(ordered) // ranges] for i in range(1, ranges))
    plan = RangePlan(source=f"{old.url}/{old.bucket}", prefix="", bounds=bounds)
    plan.save(path)
    return plan


@pytest.fixture
def lists(monkeypatch: pytest.MonkeyPatch) -> ListCounter:
    counter = ListCounter(PAGE_KEYS)
    counter.install(monkeypatch)
    return counter


def test_range_shards_copy_every_blob_once_listing_each_store_about_once(
    settings_file, old_server, new_server, buckets, tmp_path, lists
):
    old_b, new_b = buckets
    blobs = awkward_blobs(1200)
    present = {k: v for i, (k, v) in enumerate(sorted(blobs.items())) if i % 3 == 0}
    seed(old_server, old_b, blobs)
    seed(new_server, new_b, present)
    plan_file = tmp_path / "plan.json"
    make_plan(settings_file, list(blobs), plan_file)

    def listed(**options: object) -> tuple[int, int, int]:
        """LIST requests to old and new, and blobs copied (or would be), over N shards."""
        lists.clear()
        copied = 0
        for i in range(HOSTS):
            run = run_backfill(settings_file, tmp_path / "logs", shard=Shard(i, HOSTS), **options)
            assert run.result is not None and run.result.exit_code == 0, run.output
            copied += run.result.would_copy + run.result.counts.copied
        return lists.lists["old"], lists.lists["new"], copied

    # One run, then hash shards, both dry (neither copies): what each costs.
    lists.clear()
    one = run_backfill(settings_file, tmp_path / "logs", dry_run=True)
    assert one.result is not None and one.result.would_copy == 800
    one_old, one_new = lists.lists["old"], lists.lists["new"]
    hash_old, hash_new, hash_would = listed(dry_run=True)
    assert hash_would == 800
    # A dry run by range shards counts the same blobs.
    *_, range_would = listed(dry_run=True, range_plan=plan_file)
    assert range_would == 800

    range_old, range_new, copied = listed(range_plan=plan_file)
    print(
        f"LIST requests (old, new): one run {one_old}, {one_new}; {HOSTS} hash shards "
        f"{hash_old}, {hash_new}; {HOSTS} range shards of {RANGES} ranges {range_old}, {range_new}"
    )
    assert copied == 800  # every missing blob once: present ones skipped, none twice
    assert contents(new_server, new_b) == md5s(blobs)
    # Each store is listed about once over all hosts: at most one extra LIST per range...
    assert range_old <= one_old + RANGES and range_new <= one_new + RANGES
    # ...where each hash shard lists everything: N times one run.
    assert hash_old >= HOSTS * (one_old - 1) and hash_new >= HOSTS * (one_new - 1)
    assert 2 * range_old < hash_old and 2 * range_new < hash_new


def test_a_stopped_range_shard_resumes_in_its_range_and_refuses_another_plan(
    settings_file, old_server, new_server, buckets, tmp_path, lists
):
    old_b, new_b = buckets
    blobs = awkward_blobs(600)
    seed(old_server, old_b, blobs)
    plan_file = tmp_path / "plan.json"
    plan = make_plan(settings_file, list(blobs), plan_file)
    shard = Shard(1, HOSTS)
    owned = plan.owned(shard)
    mine = {k: v for k, v in blobs.items() if any(r.holds(k) for r in owned)}
    first = sum(1 for k in blobs if owned[0].holds(k))
    log_dir = tmp_path / "logs"
    options = {"shard": shard, "range_plan": plan_file, "chunk_size": 10, "num_workers": 2}

    # Stopped (as by SIGTERM) well into its second range.
    stopped = run_backfill(
        settings_file,
        log_dir,
        stop_when=lambda b: b.counts.copied >= first + 30,
        max_rps=300,
        **options,
    )
    assert stopped.result is not None and stopped.result.stopped
    checkpoint = log_dir / "migrate_backend-shard1of3-checkpoint.json"
    position = json.loads(checkpoint.read_text())["position"]
    holding = [r for r in owned if r.holds(position)]
    assert holding and holding[0].index == owned[1].index, (position, owned)

    # Another plan (or none) on resume: refused, nothing changed.
    saved = checkpoint.read_bytes()
    other = tmp_path / "other-plan.json"
    make_plan(settings_file, list(blobs), other, ranges=RANGES + 1)
    for plan_args in (["--range-plan", other], []):
        proc = run_cli(
            "migrate-backend",
            "--settings",
            settings_file,
            "--log-dir",
            log_dir,
            "--shard",
            "1/3",
            *plan_args,
            check=2,
        )
        assert "the range plan changed under a running pass" in proc.stderr
        assert "finish that pass with the plan it started with, or re-run with --reset" in (
            proc.stderr
        )
    assert checkpoint.read_bytes() == saved

    # Resumed in the range it stopped in: no LIST starts before the checkpoint.
    lists.clear()
    resumed = run_backfill(settings_file, log_dir, **options)
    assert resumed.result is not None and resumed.result.complete
    assert f"from key after {position!r}" in resumed.output
    assert lists.starts["old"][0] == position
    assert min(lists.starts["old"]) == position and min(lists.starts["new"]) == position
    # The shard copied its own ranges' blobs, each once, and nothing of the others'.
    assert stopped.result.counts.copied + resumed.result.counts.copied == len(mine)
    assert contents(new_server, new_b) == md5s(mine)


@pytest.mark.parametrize("case", ["garbled", "other store", "manifest"])
def test_a_bad_range_plan_is_refused_before_the_log_dir_is_touched(
    settings_file, old_server, buckets, tmp_path, case
):
    old_b, _ = buckets
    seed(old_server, old_b, {"a": b"1", "b": b"2"})
    plan_file = tmp_path / "plan.json"
    extra: list[object] = []
    if case == "garbled":
        plan_file.write_text('{"version": 1, "bounds": ["b"]}')
        expect = f"range plan {plan_file} is truncated or was edited"
    elif case == "other store":
        RangePlan(source="http://127.0.0.9:1/elsewhere", prefix="", bounds=("b",)).save(plan_file)
        expect = "cuts the listing of http://127.0.0.9:1/elsewhere"
    else:
        make_plan(settings_file, ["a", "b"], plan_file, ranges=2)
        extra = ["--keys-from", write_manifest(tmp_path / "keys.jsonl", [{"blob_key": "a"}])]
        expect = "split a manifest with hash shards"
    log_dir = tmp_path / "logs"
    proc = run_cli(
        "migrate-backend",
        "--settings",
        settings_file,
        "--log-dir",
        log_dir,
        "--range-plan",
        plan_file,
        "--shard",
        "0/2",
        *extra,
        check=2,
    )
    assert expect in proc.stderr
    assert not log_dir.exists()
