"""`make demo-fleet` as a test: the whole runbook on the fleet lab, both rollbacks included.

Phases 1-5 run with `-i inventories/fleet` over SSH as deploy (become where needed): the
old and new clusters on their own hosts, the proxy on proxy1, the app serving on web1 and
web2 throughout, the backfill sharded over manage1 and manage2. The report must show what
only separate hosts can: each web host served and none failed, each shard ran on its own
host, every host reached over SSH, and every blob in the new store byte for byte.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleetlib import ansible, run

from blobshift.lab import runbook
from blobshift.lab.fleet import HOSTS, Fleet


@pytest.fixture
def kept_lab(fleet: Fleet) -> Iterator[None]:
    """The run keeps its lab up (--keep) for the checks below; it goes down after them."""
    yield
    run("ansible-playbook", "playbooks/lab.yml", "-e", "lab_state=absent")


def reloads(host: str) -> list[tuple[float, str]]:
    """(time, blob settings digest) of each settings reload of the app on `host`, in order
    (environments/fleet's restart command logs them)."""
    log = "/var/lib/blobshift-lab/app/restarts.log"
    text = ansible("-m", "ansible.builtin.command", "-a", f"cat {log}", become=True, hosts=host)[
        host
    ]["stdout"]
    return [(float(t), digest) for t, _, _, digest in (line.split() for line in text.splitlines())]


def test_runbook_on_the_fleet_with_both_rollbacks(kept_lab: None, tmp_path: Path) -> None:
    out = tmp_path / "demo-fleet"
    code = runbook.main(
        ["--env", "fleet", "--drill", "--blobs", "300", "--rate", "10", "--keep", "--out", str(out)]
    )
    report = json.loads((out / "report.json").read_text())
    assert code == 0, json.dumps({k: report.get(k) for k in ("app", "audit", "verify")})

    assert report["env"] == "fleet"
    # The lab up run again (--drill) changed nothing on any host.
    assert report["lab_idempotent"] is True
    # Every host of the fleet, reached over SSH.
    hosts = {h["name"]: h for h in report["fleet"]["hosts"]}
    assert set(hosts) == {h.name for h in HOSTS}
    assert {h["connection"] for h in hosts.values()} == {"ssh"}
    assert {h["address"] for h in hosts.values()} == {h.address for h in HOSTS}

    # Both rollbacks ran, and the phases after them.
    playbooks = [s["playbook"] for s in report["steps"]]
    for name in ("rollback_to_steady.yml", "rollback_to_migrating.yml"):
        assert name in playbooks, playbooks
    assert playbooks.count("phase1_send_writes_to_new.yml") == 2
    assert playbooks.count("phase4_flip.yml") == 2
    assert "phase5_cleanup.yml" in playbooks

    # The backfill was sharded over both django_manage hosts, each shard naming its host.
    shards = report["backfill"]["shards"]
    assert {s["host"] for s in shards} == {"manage1", "manage2"}, shards

    # Both web hosts served the whole time, and no request failed on either.
    app = report["app"]
    assert app["failed"] == 0, app["failures"]
    for host in ("web1", "web2"):
        assert app["hosts"][host]["requests_total"] > 0, app["hosts"]
        assert app["hosts"][host]["failed_total"] == 0, app["hosts"]

    # Every settings change rolled over the web hosts one at a time (serial: 1): web2 took
    # each new settings file only after web1 had reloaded with it, so while web1 reloaded,
    # web2 still served on the previous settings, and neither failed a request.
    web1, web2 = reloads("web1"), reloads("web2")
    assert len(web1) >= 6 and len(web1) == len(web2), (web1, web2)
    for (t1, d1), (t2, d2) in zip(web1, web2, strict=True):
        assert d1 == d2 and t1 < t2, (web1, web2)

    audit = report["audit"]
    assert audit["expected"] >= 300
    assert audit["missing_in_new_store"] == 0, audit["keys"]
    assert audit["missing_through_app_settings"] == 0, audit["keys"]
    assert report["verify"]["clean"] is True
    assert report["proxy"] == {"8080_listening": True, "8081_listening": False}
