"""The lab's app: serves through a settings change (SIGHUP) with no failed request."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time

from conftest import store_dict, write_settings
from helpers import md5s, seed

from blobshift.lab.audit import expected_blobs, missing_or_different
from blobshift.settings import load_settings


def _wait_requests(stats, n, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stats.exists() and json.loads(stats.read_text())["requests_total"] >= n:
            return json.loads(stats.read_text())
        time.sleep(0.05)
    raise AssertionError(f"app did not reach {n} requests")


def test_app_reads_old_blobs_writes_new_and_reloads(old_server, new_server, buckets, tmp_path):
    old_b, new_b = buckets
    seeded = {f"seed/{i}": f"blob {i}".encode() for i in range(20)}
    seed(old_server, old_b, seeded)
    state = tmp_path / "app"
    state.mkdir()
    (state / "seed-digests.json").write_text(json.dumps(md5s(seeded)))
    (state / "phase").write_text("migrating\n")
    new, old = store_dict(new_server, new_b, sigv2=False), store_dict(old_server, old_b, sigv2=True)
    settings = write_settings(tmp_path / "localsettings.py", new, old, migrating=True)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "blobshift.lab.app",
            "--settings",
            settings,
            "--state-dir",
            state,
            "--rate",
            "100",
        ]
    )
    try:
        stats = _wait_requests(state / "stats.json", 100)
        assert stats["settings_migrating"] is True
        # The flip: the app now sees only the new store (old blobs were "backfilled").
        seed(new_server, new_b, seeded)
        write_settings(settings, new, None, migrating=False)
        (state / "phase").write_text("flipped\n")
        proc.send_signal(signal.SIGHUP)
        stats = _wait_requests(state / "stats.json", stats["requests_total"] + 100)
        assert stats["reloads"] == 1 and stats["settings_migrating"] is False
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    stats = json.loads((state / "stats.json").read_text())
    assert stats["failed_total"] == 0, stats["failures"]
    assert stats["phases"]["migrating"]["read"] > 0 and stats["phases"]["flipped"]["write"] > 0
    expected = expected_blobs(state)
    assert len(expected) > len(seeded)
    store = load_settings(settings).new
    assert asyncio.run(missing_or_different(store, expected)) == []
