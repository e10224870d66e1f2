"""What the fleet tests share: ansible and ansible-playbook runs on the fleet lab's hosts
(inventories/fleet: SSH as deploy, become through sudo), each host's result by name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blobshift.lab.fleet import HOSTS
from blobshift.lab.runbook import wait_until

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
INVENTORY = REPO / "inventories" / "fleet"
ADDRESSES = {h.name: h.address for h in HOSTS}


def env(**extra: str) -> dict[str, str]:
    """The environment of an ansible or ansible-playbook run from the repository root."""
    return {
        **os.environ,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "BLOBSHIFT_VAULT_PASSWORD_FILE": str(
            REPO / "environments" / "local" / "LAB-ONLY-vault-password.txt"
        ),
        "ANSIBLE_FORCE_COLOR": "0",
        **extra,
    }


def run(tool: str, *args: str) -> dict[str, dict]:
    """Run `ansible` or `ansible-playbook` on the fleet; each host's (last) result by name.

    Results come from the tree callback (one JSON file per host): ansible-core 2.19 ships
    no JSON stdout callback without ansible.posix.
    """
    with tempfile.TemporaryDirectory(prefix="fleet-tree-") as tree:
        run_env = env(
            ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.tree",
            ANSIBLE_CALLBACK_TREE_DIR=tree,
            ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
        )
        cmd = [str(BIN / tool), "-i", str(INVENTORY), *args]
        proc = subprocess.run(
            cmd, cwd=REPO, env=run_env, capture_output=True, text=True, timeout=180, check=False
        )
        assert proc.returncode == 0, f"{cmd}: rc {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        return {p.name: json.loads(p.read_text()) for p in Path(tree).iterdir()}


def ansible(*args: str, become: bool = False, hosts: str = "all") -> dict[str, dict]:
    """One ad-hoc module on the fleet's hosts; every host must answer."""
    results = run("ansible", hosts, *args, *(["--become"] if become else []))
    if hosts == "all":
        assert set(results) == set(ADDRESSES), results
    return results


def on(hosts: str, command: str, become: bool = True) -> dict[str, str]:
    """A shell command's stdout on the hosts of `hosts` (as root unless become=False)."""
    results = ansible("-m", "ansible.builtin.shell", "-a", command, become=become, hosts=hosts)
    return {name: r["stdout"].strip() for name, r in results.items()}


def shell(command: str, become: bool = False, check: bool = True) -> dict[str, str]:
    """A command's output on every host (stderr too with check=False, the command may fail)."""
    if not check:
        command = f"{command} 2>&1 || true"
    module = "ansible.builtin.command" if check else "ansible.builtin.shell"
    results = ansible("-m", module, "-a", command, become=become)
    return {name: r["stdout"].strip() for name, r in results.items()}


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60.0) -> Any:
    """Poll `check` until it answers truthy; TimeoutError names `what`. Each look is an
    ansible or SSH run of a second or so of CPU, which the other lanes need: every 3 s, as
    what the tests wait for (a checkpoint, a restart, a unit copying) lasts far longer."""
    return wait_until(check, timeout, what, interval=3.0)
