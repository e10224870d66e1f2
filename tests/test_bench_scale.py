"""`make bench-scale` in its small form (100k keys): the real CLI against the synthetic S3
endpoint, and the properties the full bench reports figures of."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from blobshift.lab.synthetic_s3 import KeySpace, SyntheticS3

ROOT = Path(__file__).resolve().parent.parent
CHUNK = 1000  # migrate-backend's default --chunk-size


def _list(s3: SyntheticS3, bucket: str, query: str) -> str:
    status, _, body, _ = s3.handle("GET", f"/{bucket}/?{query}", b"")
    assert status == 200
    return body.decode()


def test_key_space_is_ordered_and_found_by_bisection() -> None:
    space = KeySpace(1_000_000)
    keys = [space.key(i) for i in range(0, 1_000_000, 997)]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    for i in (0, 299_999, 300_000, 899_999, 900_000, 999_999):
        assert space.index(space.key(i)) == i
        assert space.first_after(space.key(i)) == i + 1
    assert space.index(space.key(5) + "x") is None


def test_listing_pages_continue_where_asked() -> None:
    s3 = SyntheticS3(10_000, miss_every=20)
    v2 = _list(s3, "new", "list-type=2&max-keys=3&start-after=a/0000000017&encoding-type=url")
    # a/0000000019 is one the new bucket lacks (1 in 20)
    assert "<Key>a/0000000018</Key><" in v2 and "a/0000000019" not in v2
    assert "<EncodingType>url</EncodingType>" in v2 and "<IsTruncated>true</IsTruncated>" in v2
    v1 = _list(s3, "old", "prefix=blobs/&delimiter=/&marker=")
    assert "<CommonPrefixes><Prefix>blobs/2015/</Prefix></CommonPrefixes>" in v1
    assert "<Contents>" not in v1
    # A PUT of a missing key makes it listed and readable in new.
    assert s3.handle("PUT", "/new/a/0000000019", b"x")[0] == 200
    assert "a/0000000019" in _list(s3, "new", "list-type=2&max-keys=2&start-after=a/0000000018")
    assert s3.counts["PUT missing"] == 1


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("scale") / "figures.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "scale.py"), "--small", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


def _copies(run: dict, missing: int) -> None:
    c = run["counts"]
    assert c.get("PUT missing", 0) == missing
    assert c.get("PUT again", 0) == 0 and c.get("PUT needless", 0) == 0


def test_one_host_lists_each_store_once_and_copies_each_missing_key_once(figures: dict) -> None:
    (run,) = figures["runs"]
    keys, missing = run["keys"], run["keys"] // figures["miss_every"]
    _copies(run, missing)
    c = run["counts"]
    # One page of 1,000 per 1,000 keys on each side, plus the preflight and the key probe.
    assert 1.0 <= 1000 * c["LIST old"] / keys <= 1.05
    assert 0.95 * (keys - missing) / keys <= 1000 * c["LIST new"] / keys <= 1.05
    assert run["merged"] >= keys
    assert run["rss_mb"] < 150


def test_resume_redoes_at_most_a_few_chunks(figures: dict) -> None:
    (res,) = figures["resumes"]
    run = res["run"]
    assert res["first_listed"] < run["keys"]  # stopped mid-way
    assert 0 <= res["redone"] <= 4 * CHUNK
    assert res["first_copy"] is not None and res["first_copy"] < run["wall"]
    assert run["counts"].get("PUT again", 0) == 0 and run["counts"].get("PUT needless", 0) == 0


def test_range_shards_list_each_range_once(figures: dict) -> None:
    """N hosts by range plan send each store the pages of one listing, plus at most one
    partial page per range, one preflight per host and the planner's own requests."""
    (one,) = figures["runs"]
    by_mode = {m["mode"]: m for m in figures["multis"]}
    if "range plan" not in by_mode:
        pytest.skip("migrate-backend --range-plan is not in this engine yet")
    ranged = by_mode["range plan"]
    assert ranged["copied"] == one["keys"] // figures["miss_every"]
    for run in ranged["runs"]:
        assert run["counts"].get("PUT again", 0) == 0
    slack = figures["ranges"] + ranged["hosts"]
    for side in ("old", "new"):
        planner = ranged["planner"].get(f"LIST {side}", 0)
        assert ranged[f"lists_{side}"] - planner <= one["counts"][f"LIST {side}"] + slack
    # Each host listed only its own ranges: together they saw each key about once (how
    # evenly the planner split them is its own test's business).
    assert one["keys"] <= sum(r["merged"] for r in ranged["runs"]) <= one["merged"] + slack * 1000


def test_the_bench_runs_the_engine_from_bytecode_as_an_installed_wheel_does(tmp_path) -> None:
    """The bench's children never write bytecode; its engine copy must hold it already, or
    each blobshift run pays for compiling its modules (rclone pays nothing like it)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        from backfill_vs_rclone import snapshot_engine
    finally:
        sys.path.pop(0)
    env = snapshot_engine(tmp_path, None)
    probe = (
        "import cProfile, pstats; p = cProfile.Profile(); p.enable(); import blobshift.cli; "
        "p.disable(); s = pstats.Stats(p); "
        "print(sum(v[0] for k, v in s.stats.items() if k[2] == 'source_to_code'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert int(out.stdout.strip()) == 0, "modules compiled from source at start"
