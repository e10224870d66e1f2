"""`make demo-fleet` as a test: the whole runbook on the fleet lab, both rollbacks included,
and then the lab's services on the lab the run kept.

Phases 1-5 run with `-i inventories/fleet` over SSH as deploy (become where needed): the
old and new clusters on their own hosts, the proxy on proxy1, the app serving on web1 and
web2 throughout, the backfill sharded over manage1 and manage2. The report must show what
only separate hosts can: each web host served and none failed, each shard ran on its own
host, every host reached over SSH, and every blob in the new store byte for byte.

The run keeps its lab (--keep), after phase 5: each S3 node a systemd unit on its own host,
the app a unit on each web host, the proxy in front of the new cluster. The tests after the
first check those services through the real hosts (S3 requests from the controller to their
10.89.7.x addresses, systemd and /proc read over Ansible), on that lab rather than one of
their own: a lab up and down costs minutes on the fleet. The last one takes the lab down.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config
from fleetlib import ADDRESSES, BIN, REPO, ansible, env, on, run, wait_for

from blobshift.lab import runbook
from blobshift.lab.fleet import HOSTS, Fleet

BLOBS = 300
S3_PORT = 9000
OLD, NEW = ("old1", "old2"), ("new1", "new2")
LAB_DIR = "/var/lib/blobshift-lab"
APP_UNIT = "blobshift-lab-app.service"


@dataclass
class Demo:
    code: int
    report: dict[str, Any]
    down: bool = False  # the lab taken down by the last test


@pytest.fixture(scope="module")
def demo(fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The runbook run once for the module; its lab kept for the checks after it, and taken
    down at the end if the last test did not."""
    out = tmp_path_factory.mktemp("fleet-runbook") / "demo-fleet"
    # A fleet just brought up holds no lab: no lab down first (minutes on nine hosts). The
    # lab's idempotence is the local drill's to check (tests/test_runbook.py).
    args = ["--env", "fleet", "--drill", "--no-clean-start", "--blobs", str(BLOBS)]
    args += ["--rate", "10", "--keep"]
    code = runbook.main([*args, "--out", str(out)])
    written = out / "report.json"  # not when the run stopped: its reason is in the output
    report = json.loads(written.read_text()) if written.is_file() else {}
    state = Demo(code, report)
    yield state
    if not state.down:
        run("ansible-playbook", "playbooks/lab.yml", "-e", "lab_state=absent")


def unit(host: str) -> str:
    return f"blobshift-lab-s3-{host}.service"


def reloads(host: str) -> list[tuple[float, str]]:
    """(time, blob settings digest) of each settings reload of the app on `host`, in order
    (environments/fleet's restart command logs them)."""
    text = on(host, f"cat {LAB_DIR}/app/restarts.log")[host]
    return [(float(t), digest) for t, _, _, digest in (line.split() for line in text.splitlines())]


def test_runbook_on_the_fleet_with_both_rollbacks(demo: Demo) -> None:
    report = demo.report
    assert demo.code == 0, json.dumps({k: report.get(k) for k in ("app", "audit", "verify")})

    assert report["env"] == "fleet"
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
    assert audit["expected"] >= BLOBS
    assert audit["missing_in_new_store"] == 0, audit["keys"]
    assert audit["missing_through_app_settings"] == 0, audit["keys"]
    assert report["verify"]["clean"] is True
    assert report["proxy"] == {"8080_listening": True, "8081_listening": False}


@pytest.fixture(scope="module")
def secrets() -> dict[str, str]:
    view = subprocess.run(
        [str(BIN / "ansible-vault"), "view", "environments/fleet/vault.yml"],
        cwd=REPO,
        env=env(),
        capture_output=True,
        text=True,
        check=True,
    )
    return yaml.safe_load(view.stdout)["secrets"]


def s3(host: str, secrets: dict[str, str], port: int = S3_PORT) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=f"http://{ADDRESSES[host]}:{port}",
        aws_access_key_id=secrets["RIAKCS_S3_ACCESS_KEY"],
        aws_secret_access_key=secrets["RIAKCS_S3_SECRET_KEY"],
        region_name="us-east-1",
        config=Config(
            retries={"max_attempts": 1},
            connect_timeout=3,
            read_timeout=10,
            s3={"addressing_style": "path"},
        ),
    )


def test_s3_nodes_answer_on_their_addresses(demo: Demo, secrets: dict[str, str]) -> None:
    for host in OLD + NEW:
        s3(host, secrets).head_bucket(Bucket="blobdb")
    # Each cluster's second node serves its first node's data, and the proxy (after phase 5)
    # the new one's.
    for first, second in (OLD, NEW):
        key = f"test-fleet-services/{second}"
        s3(second, secrets).put_object(Bucket="blobdb", Key=key, Body=second.encode())
        assert (
            s3(first, secrets).get_object(Bucket="blobdb", Key=key)["Body"].read()
            == second.encode()
        )
    proxy = s3("proxy1", secrets, port=8080)
    assert (
        proxy.get_object(Bucket="blobdb", Key="test-fleet-services/new2")["Body"].read() == b"new2"
    )
    # The clusters are apart: the new one does not have what went to the old one.
    new1 = s3("new1", secrets)
    with pytest.raises(new1.exceptions.NoSuchKey):
        new1.get_object(Bucket="blobdb", Key="test-fleet-services/old2")


def test_nodes_are_root_owned_units_running_unprivileged(demo: Demo) -> None:
    script = (
        "u=blobshift-lab-s3-$(hostname).service; f=/etc/systemd/system/$u;"
        " systemctl show -P ActiveState $u; pid=$(systemctl show -P MainPID $u);"
        " ps -o user= -p $pid; cat /proc/$pid/comm; stat -c %U:%a $f;"
        " grep -c 'Ansible managed' $f; grep -x Restart=on-failure $f"
    )
    answers = {h: out.split() for h, out in on("riakcs:riakcs_new", script).items()}
    expected = ["active", "blobshift-s3", "weed", "root:644", "1", "Restart=on-failure"]
    assert answers == {host: expected for host in OLD + NEW}
    # The data under the lab dir, the keys in a file only the node's user reads.
    files = on("riakcs:riakcs_new", f"stat -c '%U %a' {LAB_DIR}/s3-$(hostname)/credentials.json")
    assert files == dict.fromkeys(OLD + NEW, "blobshift-s3 600")


def reads(stats: dict) -> int:
    return sum(counts["read"] for counts in stats["phases"].values())


def app_stats() -> dict[str, dict]:
    out = on("webworkers", f"cat {LAB_DIR}/app/stats.json")
    return {host: json.loads(text) for host, text in out.items()}


def test_apps_serve_without_failures_and_reload_their_settings(demo: Demo) -> None:
    # The run stopped the app for its final figures: started again, on the last settings.
    on("webworkers", f"systemctl start {APP_UNIT}")
    pids = on("webworkers", f"systemctl show -P MainPID {APP_UNIT}")
    users = on("webworkers", f"ps -o user= -p $(systemctl show -P MainPID {APP_UNIT})")
    assert users == {"web1": "blobapp", "web2": "blobapp"}

    def started() -> dict[str, dict] | None:
        now = app_stats()
        return now if all(str(s["pid"]) == pids[h] for h, s in now.items()) else None

    first = wait_for("both apps serving again", started)
    # The environment's restart commands (update_config.yml's handler): the app reloads
    # its settings (SIGHUP) and serves on, its counts kept.
    commands = yaml.safe_load((REPO / "environments/fleet/public.yml").read_text())[
        "localsettings_app_restart_commands"
    ]
    for command in commands:
        ansible("-m", "ansible.builtin.shell", "-a", command, become=True, hosts="webworkers")

    def grown() -> dict[str, dict] | None:
        now = app_stats()
        done = all(
            s["reloads"] >= first[h]["reloads"] + 1
            and s["requests_total"] >= first[h]["requests_total"] + 20
            for h, s in now.items()
        )
        return now if done else None

    now = wait_for("both apps reloaded and serving", grown)
    assert {h: (s["pid"], s["failed_total"]) for h, s in now.items()} == {
        h: (s["pid"], 0) for h, s in first.items()
    }, now
    assert all(reads(s) > reads(first[h]) for h, s in now.items()), now
    logs = on("webworkers", f"grep -c reloaded {LAB_DIR}/app/restarts.log")
    assert all(int(n) >= 1 for n in logs.values()), logs
    # The seed: written once, from web1, its digests there.
    digests = on("web1", f"cat {LAB_DIR}/app/seed-digests.json")["web1"]
    assert len(json.loads(digests)) == BLOBS


def test_killed_node_is_restarted(demo: Demo, secrets: dict[str, str]) -> None:
    host = "old2"
    before = on(host, f"systemctl show -P MainPID {unit(host)}")[host]
    on(host, f"kill -9 {before}")

    def back() -> bool:
        out = on(host, f"systemctl show -p ActiveState -p MainPID {unit(host)}")[host]
        state = dict(line.split("=", 1) for line in out.splitlines())
        if state["ActiveState"] != "active" or state["MainPID"] in ("0", before):
            return False
        try:
            s3(host, secrets).head_bucket(Bucket="blobdb")
        except Exception:
            return False
        return True

    wait_for(f"{host} back after kill -9", back, timeout=60)
    restarts = on(host, f"systemctl show -P NRestarts {unit(host)}")[host]
    assert int(restarts) >= 1


def test_absent_leaves_no_unit_and_no_data(demo: Demo) -> None:
    run("ansible-playbook", "playbooks/lab.yml", "-e", "lab_state=absent")
    demo.down = True
    script = (
        f"ls /etc/systemd/system | grep -c '^blobshift-lab' || true;"
        f" systemctl list-units --all --no-legend 'blobshift-lab*' | wc -l;"
        f" test -e {LAB_DIR} && echo data || echo none;"
        " ls /etc/nginx/sites-enabled /etc/nginx/sites-available | grep -c '^blobshift_' || true"
    )
    left = {h: out.split() for h, out in on("all", script).items()}
    assert left == {host: ["0", "0", "none", "0"] for host in ADDRESSES}
