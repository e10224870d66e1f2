"""The lab's services on the fleet (playbooks/lab.yml with inventories/fleet): each S3 node
a systemd unit on its own host, the app a unit on each web host, the proxy in front.

The lab comes up once for the module (a small seed) and goes down in the last test. Every
check goes through the real hosts: S3 requests from the controller to their 10.89.7.x
addresses, systemd and /proc read over Ansible.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import yaml
from botocore.config import Config
from fleetlib import ADDRESSES, BIN, INVENTORY, REPO, ansible, env, wait_for

from blobshift.lab.fleet import Fleet

SEED = 300
S3_PORT = 9000
OLD, NEW = ("old1", "old2"), ("new1", "new2")
LAB_DIR = "/var/lib/blobshift-lab"
APP_UNIT = "blobshift-lab-app.service"
RECAP = re.compile(r"^(\S+)\s+:\s+ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def unit(host: str) -> str:
    return f"blobshift-lab-s3-{host}.service"


def lab(*extra: str) -> dict[str, int]:
    """Run playbooks/lab.yml on the fleet; changed count per host (from the recap). A long
    timeout: a fleet that never had the engine or weed installs them (minutes)."""
    cmd = [str(BIN / "ansible-playbook"), "-i", str(INVENTORY), "playbooks/lab.yml", *extra]
    proc = subprocess.run(
        cmd, cwd=REPO, env=env(), capture_output=True, text=True, timeout=900, check=False
    )
    assert proc.returncode == 0, f"{cmd}: rc {proc.returncode}\n{proc.stdout[-6000:]}"
    recap = {h: (int(c), int(u), int(f)) for h, c, u, f in RECAP.findall(proc.stdout)}
    assert recap and all(u == f == 0 for _, u, f in recap.values()), proc.stdout[-3000:]
    return {h: c for h, (c, _, _) in recap.items()}


def on(hosts: str, command: str) -> dict[str, str]:
    """A shell command's output on the hosts of `hosts` (as root)."""
    results = ansible("-m", "ansible.builtin.shell", "-a", command, become=True, hosts=hosts)
    return {name: r["stdout"].strip() for name, r in results.items()}


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


@pytest.fixture(scope="module")
def lab_up(fleet: Fleet) -> Iterator[float]:
    started = time.monotonic()
    lab("-e", f"lab_seed_blobs={SEED}", "-e", "lab_rate=20")
    took = time.monotonic() - started
    print(f"\nlab up on the fleet in {took:.0f}s", flush=True)
    yield took


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


def test_s3_nodes_answer_on_their_addresses(lab_up: float, secrets: dict[str, str]) -> None:
    for host in OLD + NEW:
        s3(host, secrets).head_bucket(Bucket="blobdb")
    # Each cluster's second node serves its first node's data, and the proxy the old one's.
    for first, second in (OLD, NEW):
        key = f"test-fleet-services/{second}"
        s3(second, secrets).put_object(Bucket="blobdb", Key=key, Body=second.encode())
        assert (
            s3(first, secrets).get_object(Bucket="blobdb", Key=key)["Body"].read()
            == second.encode()
        )
    proxy = s3("proxy1", secrets, port=8080)
    assert (
        proxy.get_object(Bucket="blobdb", Key="test-fleet-services/old2")["Body"].read() == b"old2"
    )
    # The clusters are apart: the new one does not have what went to the old one.
    new1 = s3("new1", secrets)
    with pytest.raises(new1.exceptions.NoSuchKey):
        new1.get_object(Bucket="blobdb", Key="test-fleet-services/old2")


def test_nodes_are_root_owned_units_running_unprivileged(lab_up: float) -> None:
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


def app_stats() -> dict[str, dict]:
    out = on("webworkers", f"cat {LAB_DIR}/app/stats.json")
    return {host: json.loads(text) for host, text in out.items()}


def test_apps_serve_without_failures_and_reload_their_settings(lab_up: float) -> None:
    users = on("webworkers", f"ps -o user= -p $(systemctl show -P MainPID {APP_UNIT})")
    assert users == {"web1": "blobapp", "web2": "blobapp"}
    first = app_stats()
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
    assert all(s["phases"]["unknown"]["read"] > 0 for s in now.values()), now
    logs = on("webworkers", f"grep -c reloaded {LAB_DIR}/app/restarts.log")
    assert all(int(n) >= 1 for n in logs.values()), logs
    # The seed: written once, from web1, its digests there.
    digests = on("web1", f"cat {LAB_DIR}/app/seed-digests.json")["web1"]
    assert len(json.loads(digests)) == SEED


def test_killed_node_is_restarted(lab_up: float, secrets: dict[str, str]) -> None:
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


# A second lab.yml run changing nothing: tests/fleet/test_fleet_runbook.py (its drill runs
# the lab up twice and reports lab_idempotent).


def test_absent_leaves_no_unit_and_no_data(lab_up: float) -> None:
    lab("-e", "lab_state=absent")
    script = (
        f"ls /etc/systemd/system | grep -c '^blobshift-lab' || true;"
        f" systemctl list-units --all --no-legend 'blobshift-lab*' | wc -l;"
        f" test -e {LAB_DIR} && echo data || echo none;"
        " ls /etc/nginx/sites-enabled /etc/nginx/sites-available | grep -c '^blobshift_' || true"
    )
    left = {h: out.split() for h, out in on("all", script).items()}
    assert left == {host: ["0", "0", "none", "0"] for host in ADDRESSES}
