"""Reliability battery, the proxy: the real lab (system nginx on 127.0.0.1:8080/8081, two
SeaweedFS nodes per cluster, the app serving), brought up once for the module.

- nginx reloaded again and again while the app writes and reads through it;
- one node of a cluster killed (kill -9) while the app runs, then brought back, in the
  steady state and while migrating (both clusters at once): nginx's proxy_next_upstream
  sends the requests to the other node.

Each case counts the app's requests in a phase of its own (the app's `phase` file) and
requires zero failed ones.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from blobshift.lab import runbook
from blobshift.lab.runbook import LAB_DIR, end_phase, reload_nginx, wait_app_requests, wait_until

pytestmark = pytest.mark.skipif(shutil.which("nginx") is None, reason="needs the system nginx")

SEED, RATE = 300, 40
RELOADS = 20
NGINX_LOG = Path("/var/log/nginx")
# Second node of each cluster (playbooks/lab.yml, inventories/local/hosts.ini).
NODES = {"old-2": ("127.0.0.4", 9020, "riakcs"), "new-2": ("127.0.0.5", 9120, "riakcs_new")}


def servers(*args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "blobshift.lab.servers", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return proc.stdout


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):
    rb = runbook.Runbook(tmp_path_factory.mktemp("proxy-lab"), "riakcs", SEED, RATE)
    rb.prepare_env()
    rb.play("lab down (a clean start)", "lab.yml", "-e", "lab_state=absent")
    rb.phase("lab-up")
    rb.play("lab up", "lab.yml", "-e", f"lab_seed_blobs={SEED}", "-e", f"lab_rate={RATE}")
    try:
        yield rb
    finally:
        for name in NODES:  # a failed case may have left a node down
            if (LAB_DIR / f"s3-{name}" / "node.json").exists():
                servers("s3-start-again", "--dir", str(LAB_DIR / f"s3-{name}"))
        rb.play("lab down", "lab.yml", "-e", "lab_state=absent")


def failures(phase: str) -> list[dict]:
    return [f for f in runbook.app_stats().get("failures", []) if f["phase"] == phase]


@pytest.mark.reliability(
    f"nginx reloaded {RELOADS} times while the app writes and reads through it: "
    "no app request fails",
    group="Faults",
)
def test_nginx_reloads_under_app_load(lab, evidence):
    lab.phase("reloads")
    wait_app_requests("reloads", 5)
    seconds = [reload_nginx() for _ in range(RELOADS)]
    # A few more requests on the last configuration.
    wait_app_requests("reloads", runbook.phase_counts("reloads")["requests"] + 2 * RATE)
    counts = end_phase(lab, "reloads", "reloads-done")
    evidence["reloads"] = RELOADS
    evidence["slowest reload taken (s)"] = round(max(seconds), 2)
    evidence["app requests"] = counts["requests"]
    evidence["writes"] = counts.get("write", 0)
    evidence["reads"] = counts.get("read", 0)
    evidence["failed"] = counts.get("failed", 0)
    assert counts.get("failed", 0) == 0, failures("reloads")
    assert counts.get("write", 0) > 0 and counts.get("read", 0) > 0


def upstream_errors(site: str, node: tuple[str, int], since: int) -> int:
    """Lines of the site's nginx error log, after byte `since`, about `node` failing."""
    text = (NGINX_LOG / f"blobshift_{site}-error.log").read_bytes()[since:].decode(errors="replace")
    return len(re.findall(rf'upstream: "http://{re.escape(node[0])}:{node[1]}/', text))


def log_size(site: str) -> int:
    path = NGINX_LOG / f"blobshift_{site}-error.log"
    return path.stat().st_size if path.exists() else 0


def connections_to(node: tuple[str, int]) -> int:
    """nginx's established connections to a node (it keeps them alive between requests)."""
    out = subprocess.run(
        ["ss", "-Htn", "state", "established", "dst", f"{node[0]}:{node[1]}"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return len(out.splitlines())


def node_down_and_back(lab, evidence, names: list[str], label: str) -> None:
    down, back = f"{label}-down", f"{label}-back"
    sites = {NODES[n][2]: NODES[n][:2] for n in names}
    since = {site: log_size(site) for site in sites}
    lab.phase(down)
    wait_app_requests(down, 5)
    for name in names:
        servers("s3-kill", "--dir", str(LAB_DIR / f"s3-{name}"))
    killed_at = time.monotonic()
    # Long enough for nginx to retry the dead node after fail_timeout (10 s) at least once.
    wait_app_requests(down, runbook.phase_counts(down)["requests"] + 15 * RATE, timeout=180)
    failed_over = {site: upstream_errors(site, node, since[site]) for site, node in sites.items()}
    for name in names:
        servers("s3-start-again", "--dir", str(LAB_DIR / f"s3-{name}"))
    down_seconds = time.monotonic() - killed_at
    counts = end_phase(lab, down, back)
    # Back in rotation: nginx opens connections to the node again (least_conn).
    for node in sites.values():
        wait_until(lambda node=node: connections_to(node) > 0, 60, f"nginx back on {node}")
    wait_app_requests(back, 5 * RATE)
    counts_back = end_phase(lab, back, f"{label}-done")

    evidence["nodes killed"] = ", ".join(f"{n} ({NODES[n][2]})" for n in names)
    evidence["seconds down"] = round(down_seconds, 1)
    evidence["app requests while down"] = counts["requests"]
    evidence["failed while down"] = counts.get("failed", 0)
    evidence["requests nginx moved to the other node"] = sum(failed_over.values())
    evidence["app requests after it came back"] = counts_back["requests"]
    evidence["failed after"] = counts_back.get("failed", 0)
    assert counts.get("failed", 0) == 0, failures(down)
    assert counts_back.get("failed", 0) == 0, failures(back)
    # nginx did try the dead node(s), and moved on: the failover was exercised.
    assert all(n > 0 for n in failed_over.values()), failed_over


@pytest.mark.reliability(
    "one node of the cluster behind the proxy killed (kill -9) while the app runs, steady "
    "state: requests fail over to the other node, no app request fails; the node comes back",
    group="Faults",
)
def test_node_down_steady(lab, evidence):
    node_down_and_back(lab, evidence, ["old-2"], "steady-old-2")


@pytest.mark.reliability(
    "while migrating (app writes via :8081, reads new then old via :8080), one node of each "
    "cluster killed at once: no app request fails; both come back",
    group="Faults",
)
def test_node_down_migrating(lab, evidence):
    lab.phase("phase1")
    lab.play("phase 1: send new writes to the new store", "phase1_send_writes_to_new.yml")
    wait_until(lambda: runbook.app_stats().get("settings_migrating"), 60, "app migrating")
    node_down_and_back(lab, evidence, ["old-2", "new-2"], "migrating-both")
