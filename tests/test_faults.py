"""The backfill completes through a proxy that throttles, errors and cuts connections."""

from __future__ import annotations

import signal
import subprocess

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


def test_backfill_completes_through_faults(
    old_server, new_server, buckets, faulty_old, faulty_new, tmp_path
):
    old_b, new_b = buckets
    blobs = random_blobs(400, 3000)
    seed(old_server, old_b, blobs)
    # Faults on both sides: SlowDown and 500s on a share of all requests, GET bodies cut.
    faulty_new.configure(slowdown=0.3, error=0.05)
    faulty_old.configure(slowdown=0.1, reset=0.15)
    settings = write_settings(
        tmp_path / "localsettings.py",
        new=store_dict(new_server, new_b, sigv2=False) | {"url": faulty_new.url},
        old=store_dict(old_server, old_b, sigv2=True) | {"url": faulty_old.url},
    )
    proc = run_cli(
        "migrate-backend",
        "--settings",
        settings,
        "--log-dir",
        tmp_path / "logs",
        "--num-workers",
        "8",
        check=0,
    )
    injected_new, injected_old = faulty_new.counters(), faulty_old.counters()
    assert injected_new["slowdown"] > 50 and injected_new["error"] > 5, injected_new
    assert injected_old["reset"] > 20, injected_old
    assert log_records(tmp_path / "logs") == []
    assert "retries 0" not in proc.stdout
    assert contents(new_server, new_b) == md5s(blobs)
    run_cli("verify", "--settings", settings, check=0)  # under the same faults


@pytest.mark.parametrize("which", ["old", "new"])
def test_backfill_survives_a_server_restart(
    which, old_server, new_server, buckets, settings_file, tmp_path
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
    # Stay down until the backfill has seen the outage (its status shows retries).
    wait_until(lambda: read_json(status)["counts"]["retries"] >= 3, "retries during the outage")
    victim.start()
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, (out, err)
    assert "retries 0" not in out
    assert log_records(tmp_path) == []
    assert contents(new_server, new_b) == md5s(blobs)
