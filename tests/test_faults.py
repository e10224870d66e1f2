"""The backfill completes through a proxy that throttles, errors and cuts connections."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest
from conftest import store_dict, write_settings
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
)

from blobshift.lab.faultproxy import FaultProxy
from blobshift.runfiles import Checkpoint


@pytest.fixture
def faulty_new(new_server):
    proxy = FaultProxy(("127.0.0.4", 0), (new_server.ip, new_server.s3_port), seed=7).start()
    yield proxy
    proxy.stop()


@pytest.fixture
def faulty_old(old_server):
    proxy = FaultProxy(("127.0.0.5", 0), (old_server.ip, old_server.s3_port), seed=11).start()
    yield proxy
    proxy.stop()


@pytest.mark.reliability(
    "The new store answers 503 SlowDown to a third of requests for a period, GET bodies "
    "from old are cut mid-body: the backfill completes, nothing lost",
    group="Faults",
)
def test_backfill_completes_through_faults(
    old_server, new_server, buckets, faulty_old, faulty_new, tmp_path, evidence
):
    old_b, new_b = buckets
    blobs = random_blobs(400, 3000)
    seed(old_server, old_b, blobs)
    # The fault period: a third of the new store's requests get SlowDown (a few get 500s),
    # the old store cuts some GET bodies mid-body and throttles a little.
    faulty_new.configure(slowdown=1 / 3, error=0.05)
    faulty_old.configure(slowdown=0.1, reset=0.15)
    settings = write_settings(
        tmp_path / "localsettings.py",
        new=store_dict(new_server, new_b, sigv2=False) | {"url": faulty_new.url},
        old=store_dict(old_server, old_b, sigv2=True) | {"url": faulty_old.url},
    )
    log_dir = tmp_path / "logs"
    cmd = backfill_cmd(settings, log_dir, "--num-workers", "8")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status = log_dir / "migrate_backend-status.json"
    wait_until(
        lambda: (
            proc.poll() is not None
            or (read_json(status) or {"counts": {"copied": 0}})["counts"]["copied"] >= 200
        ),
        "half the blobs copied under faults",
    )
    # End of the period: the new store recovers, the old one keeps cutting bodies.
    period_new = faulty_new.counters()
    faulty_new.configure(slowdown=0, error=0)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (out, err)
    injected_new, injected_old = faulty_new.counters(), faulty_old.counters()
    share = period_new["slowdown"] / max(period_new["requests"], 1)
    assert 0.25 < share < 0.42 and period_new["slowdown"] > 50, period_new
    assert injected_new["error"] > 5, injected_new
    assert injected_old["reset"] > 20, injected_old
    assert log_records(log_dir) == []
    retries = read_json(status)["counts"]["retries"]
    assert retries > 0 and f"retries {retries}" in out
    got = contents(new_server, new_b)
    assert got == md5s(blobs)
    run_cli("verify", "--settings", settings, check=0)  # under the same faults
    evidence.update(
        {
            "blobs": len(blobs),
            "SlowDown answers (new, in the period)": period_new["slowdown"],
            "share of new's requests answered SlowDown in the period": round(share, 2),
            "500 answers (new)": injected_new["error"],
            "GET bodies cut mid-body (old)": injected_old["reset"],
            "SlowDown answers (old)": injected_old["slowdown"],
            "retries": retries,
            "blobs lost": sum(1 for k, m in md5s(blobs).items() if got.get(k) != m),
        }
    )


@pytest.mark.reliability(
    "The old or the new S3 server is killed mid-backfill and restarted seconds later: the "
    "run completes, nothing lost",
    group="Faults",
)
@pytest.mark.parametrize("which", ["old", "new"])
def test_backfill_survives_a_server_restart(
    which, old_server, new_server, buckets, settings_file, tmp_path, evidence
):
    """The server is killed mid-run and comes back a few seconds later: nothing is lost."""
    old_b, new_b = buckets
    blobs = random_blobs(1500, 1024)
    seed(old_server, old_b, blobs)
    victim = old_server if which == "old" else new_server
    cmd = backfill_cmd(settings_file, tmp_path, "--max-rps", "300", "--num-workers", "8")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    status = tmp_path / "migrate_backend-status.json"
    wait_until(
        lambda: (
            proc.poll() is not None
            or (read_json(status) or {"counts": {"copied": 0}})["counts"]["copied"] >= 200
        ),
        "200 blobs copied",
    )
    assert proc.poll() is None
    victim.stop(signal.SIGKILL)
    down = time.monotonic()
    # Stay down until the backfill has seen the outage (its status shows retries).
    wait_until(lambda: read_json(status)["counts"]["retries"] >= 3, "retries during the outage")
    victim.start()
    downtime = time.monotonic() - down
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (out, err)
    assert "retries 0" not in out
    assert log_records(tmp_path) == []
    cp = Checkpoint.load(tmp_path / "migrate_backend-checkpoint.json")
    assert cp is not None and cp.complete
    got = contents(new_server, new_b)
    assert got == md5s(blobs)
    evidence.update(
        {
            "server killed": which,
            "kills": 1,
            "seconds down": round(downtime, 1),
            "retries": read_json(status)["counts"]["retries"],
            "blobs": len(blobs),
            "blobs lost": 0,
        }
    )
