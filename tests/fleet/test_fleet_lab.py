"""The fleet lab (blobshift.lab.fleet): separate hosts, reached by Ansible over SSH.

The session brings the fleet up (building the image only if its inputs changed) and
takes it down at the end. Every check goes through a real `ansible`/`ansible-playbook`
run with `-i inventories/fleet`: SSH as deploy with the lab's key and the host keys the
driver collected (StrictHostKeyChecking on), become through sudo.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from fleetlib import ADDRESSES, ansible, run, shell

from blobshift.lab.fleet import GATEWAY, HOSTS, Fleet, FleetError

# The controller's address outside the lab network (eth0), and one on the internet.
OUTSIDE = ("1.1.1.1", "192.0.2.2")
# A listener on the controller's lab address, which the hosts must reach.
PORT = int(os.environ.get("BLOBSHIFT_TEST_PORT", "27000"))


def test_ping_as_deploy(fleet: Fleet) -> None:
    results = ansible("-m", "ansible.builtin.ping")
    assert {n: r.get("ping") for n, r in results.items()} == dict.fromkeys(ADDRESSES, "pong")
    # As deploy, not root, without become.
    users = {n: out.split() for n, out in shell("sh -c 'id -un; id -u'").items()}
    assert {n: u[0] for n, u in users.items()} == dict.fromkeys(ADDRESSES, "deploy")
    assert "0" not in {u[1] for u in users.values()}, users


def test_become_gives_root(fleet: Fleet) -> None:
    assert shell("id -u", become=True) == dict.fromkeys(ADDRESSES, "0")


def test_systemd_is_init(fleet: Fleet) -> None:
    script = "systemctl is-system-running; cat /proc/1/comm; systemctl is-active ssh nginx"
    answers = {n: out.split() for n, out in shell(script, check=False).items()}
    assert {n: a[0] in ("running", "degraded") for n, a in answers.items()} == dict.fromkeys(
        ADDRESSES, True
    ), answers
    assert {n: tuple(a[1:]) for n, a in answers.items()} == dict.fromkeys(
        ADDRESSES, ("systemd", "active", "active")
    )


def test_own_hostname_address_and_root_filesystem(fleet: Fleet) -> None:
    # No default route on the internal network: `hostname -I` lists the interfaces' addresses.
    names = {n: out.split() for n, out in shell("sh -c 'hostname; hostname -I'").items()}
    assert names == {n: [n, a] for n, a in ADDRESSES.items()}
    # Each host its own root filesystem: a file written on one is on no other.
    marker = f"/tmp/fleet-marker-{os.getpid()}"
    ansible("-m", "ansible.builtin.copy", "-a", f"dest={marker} content=web1", hosts="web1")
    results = ansible("-m", "ansible.builtin.stat", "-a", f"path={marker}")
    assert {n for n, r in results.items() if r["stat"]["exists"]} == {"web1"}


PROBE = """\
import json, socket, sys, time
out = {}
for target in sys.argv[1:]:
    host, port = target.rsplit(":", 1)
    started = time.monotonic()
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        out[target] = ["open", 0.0]
    except OSError as exc:
        out[target] = [type(exc).__name__, round(time.monotonic() - started, 2)]
print(json.dumps(out))
"""


def test_network_reaches_peers_not_outside(fleet: Fleet, tmp_path: Path) -> None:
    # Each host connects to sshd on every peer (by name, from /etc/hosts) and to a listener
    # of this test on the controller's lab address; connections outside the lab must fail
    # at once (no route), not after a timeout.
    controller = socket.create_server((GATEWAY, PORT))
    inside = [f"{h.name}:22" for h in HOSTS] + [f"{GATEWAY}:{PORT}"]
    outside = [f"{a}:443" for a in OUTSIDE] + ["192.0.2.2:22"]
    script = tmp_path / "probe.py"
    script.write_text("#!/usr/bin/python3\n" + PROBE)
    playbook = tmp_path / "reach.yml"
    playbook.write_text(
        "- name: Reach\n  hosts: all\n  gather_facts: false\n  tasks:\n"
        "    - name: Probe peers and outside\n"
        f"      ansible.builtin.script: {script} {' '.join(inside + outside)}\n"
    )
    with controller:
        results = run("ansible-playbook", str(playbook))
    assert set(results) == set(ADDRESSES)
    for name, result in results.items():
        seen = json.loads(result["stdout"])
        assert {t: seen[t][0] for t in inside} == dict.fromkeys(inside, "open"), (name, seen)
        for target in outside:
            error, seconds = seen[target]
            assert error != "open" and seconds < 1.0, (name, target, seen[target])
    # Not even root on a host can add a route out (no CAP_NET_ADMIN in the containers).
    routed = shell(f"ip route add default via {GATEWAY}", become=True, check=False)
    assert set(routed.values()) == {"RTNETLINK answers: Operation not permitted"}, routed


def test_transient_unit_logs_to_journal(fleet: Fleet, tmp_path: Path) -> None:
    # As the backfill will run: a transient unit started with become, its output in the journal.
    unit = f"fleet-probe-{os.getpid()}"
    playbook = tmp_path / "unit.yml"
    playbook.write_text(
        "- name: Transient unit\n  hosts: django_manage\n  gather_facts: false\n"
        "  become: true\n  tasks:\n"
        "    - name: Start it\n"
        "      ansible.builtin.command: >-\n"
        f"        systemd-run --unit={unit} --wait --property=Restart=no\n"
        "        /bin/sh -c 'echo backfill-probe $(hostname) uid $(id -u)'\n"
        "      changed_when: true\n"
        "    - name: Its journal\n"
        f"      ansible.builtin.command: journalctl -u {unit} -o cat --no-pager\n"
        "      register: fleet_journal\n"
        "      until: \"'backfill-probe' in fleet_journal.stdout\"\n"
        "      retries: 20\n"
        "      delay: 1\n"
        "      changed_when: false\n"
    )
    results = run("ansible-playbook", str(playbook))
    # The unit's own output (the journal has systemd's lines about the unit too).
    lines = {n: r["stdout"].splitlines() for n, r in results.items()}
    assert {n: [x for x in out if x.startswith("backfill-probe ")] for n, out in lines.items()} == {
        n: [f"backfill-probe {n} uid 0"] for n in ("manage1", "manage2")
    }


def test_status_and_strict_host_keys(fleet: Fleet, tmp_path: Path) -> None:
    assert fleet.status()
    config = fleet.ssh_config.read_text()
    assert "StrictHostKeyChecking yes" in config
    assert "StrictHostKeyChecking no" not in config
    # A host key that is not the collected one is refused.
    wrong = tmp_path / "known_hosts.wrong"
    keys = {
        line.split(",", 1)[0]: line.split(" ", 1)[1]
        for line in fleet.known_hosts.read_text().splitlines()
    }
    assert len(set(keys.values())) == len(HOSTS), "each host has its own host key"
    wrong.write_text(f"proxy1,{ADDRESSES['proxy1']} {keys['web1']}\n")
    proc = subprocess.run(
        ["ssh", "-F", str(fleet.ssh_config), "-o", f"UserKnownHostsFile={wrong}", "proxy1",
         "true"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "host key" in proc.stderr.lower(), proc.stderr


def test_wait_names_the_host_not_ready() -> None:
    # The bounded readiness wait: a host that never answers is named, with its last answer.
    lab = Fleet(timeout=0.2)
    probe = {HOSTS[0]: lambda: (True, "running"), HOSTS[1]: lambda: (False, "starting")}
    with pytest.raises(FleetError, match=r"systemd: not after 0s on web1 \(starting\)"):
        lab._wait("systemd", probe)
