"""Bounded run-ahead (`--max-chunks-ahead K`), measured on real SeaweedFS: a slow copy at
the head holds the checkpoint; the listing goes at most K chunks past it, so a crash
redoes at most K chunks, where an unbounded listing runs on through every present key
behind the slow one and a crash redoes them all."""

from __future__ import annotations

import json
import os

import pytest
from helpers import seed
from inprocess_backfill import run_backfill

CHUNK = 20
AHEAD = 4
BEFORE, AFTER = 40, 600  # present keys before and after the slow one
BIG = 4 * 1024 * 1024  # copied at --bwlimit 1M: about three seconds


@pytest.mark.parametrize("ahead", [AHEAD, 10**6], ids=["bounded", "unbounded"])
def test_a_crash_behind_a_slow_copy_redoes_at_most_k_chunks(
    settings_file, old_server, new_server, buckets, tmp_path, ahead
):
    old_b, new_b = buckets
    present = {f"a/{i:04d}": b"a" for i in range(BEFORE)}
    present |= {f"c/{i:04d}": b"c" for i in range(AFTER)}
    seed(old_server, old_b, present | {"b/slow": os.urandom(BIG)})
    seed(new_server, new_b, present)
    total = len(present) + 1
    log_dir = tmp_path / "logs"
    options = {"chunk_size": CHUNK, "num_workers": 4}

    # Crash once the listing can go no further: held by the bound, or at the end.
    crashed = run_backfill(
        settings_file,
        log_dir,
        stop_when=lambda b: b.listing_held or b.counts.listed == total,
        crash=True,
        bwlimit=1024 * 1024,
        max_chunks_ahead=ahead,
        **options,
    )
    assert crashed.result is None
    assert crashed.backfill.counts.copied == 0, "the slow copy ended before the crash"
    checkpoint = json.loads((log_dir / "migrate_backend-checkpoint.json").read_text())
    assert checkpoint["position"] == f"a/{BEFORE - 1:04d}"  # held by b/slow's chunk

    resumed = run_backfill(settings_file, log_dir, **options)
    assert resumed.result is not None and resumed.result.complete
    assert resumed.result.counts.copied == 1
    redone = crashed.backfill.counts.listed + resumed.result.counts.listed - total
    print(f"max_chunks_ahead={ahead}, chunks of {CHUNK}: {redone} keys redone after a crash")
    if ahead == AHEAD:
        assert redone <= AHEAD * CHUNK
    else:  # without the bound the listing ran through all the present keys behind
        assert redone == AFTER + 1
