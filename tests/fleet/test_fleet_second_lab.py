"""A second lab beside the fleet (blobshift.lab.fleet's network/subnet/hosts/state options,
which the fleet_* molecule scenarios use): its names, addresses and files are its own, the
defaults are the shared fleet's, and a lab that would clobber the fleet is refused before
podman is asked anything. No containers: podman is replaced by a recorder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from blobshift.lab.fleet import GATEWAY, HOSTS, NETWORK, STATE, SUBNET, Fleet, FleetError, Host


class Recorded(Fleet):
    """A Fleet whose podman calls are recorded: no container exists, `exec` answers a host key."""

    calls: list[tuple[str, ...]]

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        self.calls = [*getattr(self, "calls", []), args]
        if args[:2] == ("container", "inspect"):
            return subprocess.CompletedProcess(args, 1, "", "no such container")
        return subprocess.CompletedProcess(args, 0, "ssh-ed25519 AAAAkey lab\n", "")


def test_defaults_are_the_shared_fleet() -> None:
    fleet = Fleet()
    assert (fleet.network, fleet.subnet, fleet.hosts, fleet.state) == (
        NETWORK,
        SUBNET,
        HOSTS,
        STATE,
    )
    assert fleet.gateway == GATEWAY == "10.89.7.1"
    assert [fleet.container(h) for h in HOSTS[:2]] == [
        "blobshift-fleet-proxy1",
        "blobshift-fleet-web1",
    ]


def test_second_lab_has_its_own_names_addresses_and_files(tmp_path: Path) -> None:
    hosts = (Host("proxy-a", "10.89.9.10"), Host("proxy-b", "10.89.9.11"))
    lab = Recorded(network="lab2", subnet="10.89.9.0/24", hosts=hosts, state=tmp_path)
    assert lab.gateway == "10.89.9.1"
    lab._collect_host_keys()
    lab._start(hosts[0], "img")
    config = lab.ssh_config.read_text()
    assert "Host proxy-a proxy-b 10.89.9.*\n" in config
    assert f"IdentityFile {tmp_path}/id_ed25519" in config
    assert "StrictHostKeyChecking yes" in config
    assert lab.known_hosts.read_text().splitlines()[0] == "proxy-a,10.89.9.10 ssh-ed25519 AAAAkey"
    run = next(c for c in lab.calls if c[0] == "run")
    assert run[run.index("--name") + 1] == "lab2-proxy-a"
    assert run[run.index("--network") + 1] == "lab2"
    assert "--add-host=proxy-b:10.89.9.11" in run
    assert not any("10.89.7." in arg for call in lab.calls for arg in call)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"network": "lab2"}, "state dir of its own"),
        ({"network": "lab2", "state": Path("x"), "subnet": "10.89.9.0/24"}, "10.89.7.10 is not"),
        ({"subnet": "10.89.9.0/24", "hosts": (Host("a", "10.89.9.1"),)}, "controller's"),
        ({"hosts": (Host("a", "10.89.7.10"), Host("a", "10.89.7.11"))}, "unique"),
        ({"subnet": "nope"}, "does not appear to be"),
    ],
)
def test_a_lab_that_would_clobber_the_fleet_is_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(FleetError, match=message):
        Recorded(**kwargs)


def test_a_second_lab_never_removes_the_shared_images(tmp_path: Path) -> None:
    lab = Recorded(network="lab2", subnet="10.89.9.0/24", hosts=(Host("a", "10.89.9.10"),),
                   state=tmp_path)  # fmt: skip
    with pytest.raises(FleetError, match="images are the fleet's too"):
        lab.down(images=True)
    assert not getattr(lab, "calls", [])
