"""The engine installed on a fleet host that reaches no package index (roles/blobshift_engine).

The fleet's network has no route out (test_fleet_lab.py proves it): pip on the host cannot
fetch anything, so the install works only from the wheels the controller built and
shipped, the engine's dependencies included. A virtualenv of the test's own, so the
fleet's other users of /opt/blobshift/venv are not disturbed. (That the role changes
nothing the second time: the lab's second run in tests/fleet/test_fleet_runbook.py.)
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleetlib import BIN, INVENTORY, REPO, env

from blobshift.lab.fleet import STATE, Fleet

HOST = "manage1"
VENV = "/opt/blobshift-install-test/venv"


def _playbook(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    playbook = tmp_path / "install.yml"
    playbook.write_text(
        f"- hosts: {HOST}\n  gather_facts: false\n  roles:\n    - role: blobshift_engine\n"
    )
    return subprocess.run(
        [
            str(BIN / "ansible-playbook"),
            "-i",
            str(INVENTORY),
            str(playbook),
            "-e",
            f"blobshift_engine_venv={VENV}",
        ],
        cwd=REPO,
        env=env(ANSIBLE_ROLES_PATH=str(REPO / "roles")),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def _on_host(command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ssh", "-F", str(STATE / "ssh_config"), HOST, command],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def clean_venv(fleet: Fleet) -> Iterator[None]:
    _on_host(f"sudo rm -rf {Path(VENV).parent}")
    yield
    _on_host(f"sudo rm -rf {Path(VENV).parent}")


def test_engine_installs_from_shipped_wheels_on_a_host_with_no_index(
    clean_venv: None, tmp_path: Path
) -> None:
    first = _playbook(tmp_path)
    assert first.returncode == 0, first.stdout[-3000:]
    assert f"{HOST}" in first.stdout and "changed=0" not in first.stdout.split("PLAY RECAP")[1]

    # The engine and its dependencies are there, as the deploy user can run them.
    version = _on_host(f"{VENV}/bin/blobshift --version")
    assert version.returncode == 0 and version.stdout.startswith("blobshift "), version
    deps = _on_host(f"{VENV}/bin/python -c 'import boto3, prometheus_client; print(1)'")
    assert deps.stdout.strip() == "1", deps

    # And they cannot have come from an index: the host reaches none.
    fetched = _on_host(
        f"{VENV}/bin/python -m pip download --no-deps --dest /tmp/no-index-probe "
        "--timeout 3 --retries 0 boto3"
    )
    assert fetched.returncode != 0, fetched.stdout
