"""The backfill completes through a proxy that throttles, errors and cuts connections."""

from __future__ import annotations

import pytest
from conftest import store_dict, write_settings
from helpers import contents, log_records, md5s, random_blobs, run_cli, seed

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
