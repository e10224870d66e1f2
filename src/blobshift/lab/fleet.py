"""The fleet lab: one Debian container per host, systemd as init, reached over SSH.

    python -m blobshift.lab.fleet up        # build the image if its inputs changed, start
    python -m blobshift.lab.fleet status    # each host: container state, address, systemd
    python -m blobshift.lab.fleet down [--images]

    # A second lab beside it (e.g. a molecule scenario's), same image, nothing shared:
    python -m blobshift.lab.fleet --network NAME --subnet 10.89.9.0/24 \
        --host proxy-a=10.89.9.10 --host proxy-b=10.89.9.11 --state build/NAME up

Every host (proxy1, web1, web2, manage1, manage2, old1, old2, new1, new2) is a podman
container with its own root filesystem, hostname and address on an internal network
(10.89.7.0/24): the hosts reach each other and the controller (the bridge's address,
10.89.7.1), nothing else. Ansible reaches them as `deploy` (passwordless sudo) with the
lab's own key: `ansible -i inventories/fleet all -m ping`.

The image is built from containers/fleet/ (Containerfile, sshd and unit files) over a debootstrap
minbase image; both are tagged with a hash of their inputs, so `up` reuses them until an
input changes. Podman runs with containers/fleet/containers.conf (CONTAINERS_CONF): the machine's
own configuration is not touched. The state dir (build/fleet/, not committed) holds the
deploy key, the hosts' SSH keys as collected from the containers (known_hosts) and an
ssh_config with StrictHostKeyChecking on: `ssh -F build/fleet/ssh_config web1`.

Another lab (`Fleet(network=..., subnet=..., hosts=..., state=...)`, or the CLI options) has
its own network, addresses, containers (named NETWORK-HOST), state dir and key; only the
images are shared, and its `down` removes its own containers and network only.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

# Not imported from blobshift.lab.runbook: the fleet driver needs none of the runbook's
# dependencies (which pull in the engine and the reports).
REPO = Path(__file__).resolve().parents[3]
FILES = REPO / "containers" / "fleet"
STATE = REPO / "build" / "fleet"
NETWORK = "blobshift-fleet"
SUBNET = "10.89.7.0/24"
GATEWAY = "10.89.7.1"
LABEL = "blobshift.fleet"
IMAGE = "localhost/blobshift-fleet"
BASE_IMAGE = "localhost/blobshift-fleet-base"
# The base image's recipe: part of its tag, so changing it makes a new base.
DEBOOTSTRAP = (
    "--variant=minbase",
    "--include=python3,openssh-server,sudo,iproute2",
    "bookworm",
)
MIRROR = "http://deb.debian.org/debian"
# systemd's answers for a booted host: "degraded" means some unit failed, the host works.
READY_STATES = ("running", "degraded")


@dataclass(frozen=True)
class Host:
    name: str
    address: str


# Groups (inventories/fleet/hosts.ini): proxy, webworkers, django_manage, riakcs, riakcs_new.
HOSTS = (
    Host("proxy1", "10.89.7.10"),
    Host("web1", "10.89.7.21"),
    Host("web2", "10.89.7.22"),
    Host("manage1", "10.89.7.31"),
    Host("manage2", "10.89.7.32"),
    Host("old1", "10.89.7.41"),
    Host("old2", "10.89.7.42"),
    Host("new1", "10.89.7.51"),
    Host("new2", "10.89.7.52"),
)


class FleetError(RuntimeError):
    """A lab step failed; the message names the host or the step and what to do."""


def _say(message: str) -> None:
    print(f"fleet: {message}", flush=True)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(len(part).to_bytes(8, "big"))
        h.update(part)
    return h.hexdigest()[:16]


def parse_host(spec: str) -> Host:
    """NAME=ADDRESS (a CLI --host) as a Host."""
    name, sep, address = spec.partition("=")
    if not sep or not name or not address:
        raise FleetError(f"--host {spec!r}: expected NAME=ADDRESS, e.g. proxy-a=10.89.9.10")
    return Host(name, address)


@dataclass
class Fleet:
    state: Path = STATE
    files: Path = FILES
    # Bound on each wait (image steps excepted): a host that is not ready by then is named.
    timeout: float = 120.0
    # Today's shared fleet by default; another lab names its own (see the module's doc).
    network: str = NETWORK
    subnet: str = SUBNET
    hosts: tuple[Host, ...] = field(default=HOSTS)

    def __post_init__(self) -> None:
        # The ssh_config names the key by this path: absolute, so ssh finds it from any cwd.
        self.state = Path(self.state).absolute()
        try:
            net = ipaddress.ip_network(self.subnet)
            addresses = [ipaddress.ip_address(h.address) for h in self.hosts]
        except ValueError as exc:
            raise FleetError(f"lab {self.network}: {exc}") from None
        if self.network != NETWORK and self.state.resolve() == STATE.resolve():
            # Its ssh_config and known_hosts would replace the shared fleet's.
            raise FleetError(
                f"lab {self.network}: give it a state dir of its own (--state), not {STATE}"
            )
        names = [h.name for h in self.hosts]
        if not self.hosts or len(set(names)) != len(names):
            raise FleetError(f"lab {self.network}: host names must be given and unique: {names}")
        for host, address in zip(self.hosts, addresses, strict=True):
            if address not in net or address in (net[0], net[1], net.broadcast_address):
                raise FleetError(
                    f"lab {self.network}: host {host.name} address {host.address} is not a "
                    f"host address of {self.subnet} (its first address is the controller's)"
                )

    @property
    def gateway(self) -> str:
        """The controller's address on the lab network (the bridge): the subnet's first."""
        return str(ipaddress.ip_network(self.subnet)[1])

    def container(self, host: Host) -> str:
        return f"{self.network}-{host.name}"

    @property
    def _cli(self) -> str:
        """The CLI invocation for this lab, for messages."""
        if self.network == NETWORK:
            return "python -m blobshift.lab.fleet"
        hosts = " ".join(f"--host {h.name}={h.address}" for h in self.hosts)
        return (
            f"python -m blobshift.lab.fleet --network {self.network} --subnet {self.subnet} "
            f"{hosts} --state {self.state}"
        )

    # -- podman --------------------------------------------------------------------------

    def podman(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "CONTAINERS_CONF": str(self.files / "containers.conf")}
        proc = subprocess.run(
            ["podman", *args], env=env, capture_output=True, text=True, check=False
        )
        if check and proc.returncode != 0:
            raise FleetError(
                f"podman {' '.join(args[:2])} failed (rc {proc.returncode}): "
                f"{proc.stderr.strip()[-800:]}"
            )
        return proc

    def _exists(self, kind: str, name: str) -> bool:
        return self.podman(kind, "exists", name, check=False).returncode == 0

    # -- the image -----------------------------------------------------------------------

    @property
    def base_ref(self) -> str:
        return f"{BASE_IMAGE}:{_digest(json.dumps([DEBOOTSTRAP, MIRROR]).encode())}"

    @property
    def image_ref(self) -> str:
        parts = [self.base_ref.encode()]
        for path in sorted(self.files.iterdir()):
            if path.is_file() and path.name != "containers.conf":
                parts += [path.name.encode(), path.read_bytes()]
        return f"{IMAGE}:{_digest(*parts)}"

    def ensure_image(self) -> str:
        ref = self.image_ref
        if self._exists("image", ref):
            _say(f"image {ref}: inputs unchanged, reused")
            return ref
        if not self._exists("image", self.base_ref):
            self._build_base()
        started = time.monotonic()
        _say(f"image {ref}: building from {self.files / 'Containerfile'}")
        self.podman(
            "build",
            "--quiet",
            "--build-arg",
            f"BASE={self.base_ref}",
            "--label",
            f"{LABEL}=image",
            "-t",
            ref,
            "-f",
            str(self.files / "Containerfile"),
            str(self.files),
        )
        _say(f"image {ref}: built in {time.monotonic() - started:.0f}s")
        return ref

    def _build_base(self) -> None:
        if shutil.which("debootstrap") is None:
            raise FleetError("debootstrap is not installed: run `make deps` (as root)")
        rootfs = self.state / "rootfs"
        shutil.rmtree(rootfs, ignore_errors=True)
        rootfs.parent.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        _say(f"base image {self.base_ref}: debootstrap {' '.join(DEBOOTSTRAP)}")
        proc = subprocess.run(
            ["debootstrap", *DEBOOTSTRAP, str(rootfs), MIRROR],
            capture_output=True,
            text=True,
            check=False,
        )
        if proc.returncode != 0:
            raise FleetError(
                f"debootstrap into {rootfs} failed (rc {proc.returncode}; it needs {MIRROR}):"
                f" {proc.stdout.strip()[-800:]}"
            )
        env = {**os.environ, "CONTAINERS_CONF": str(self.files / "containers.conf")}
        with subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE) as tar:
            imported = subprocess.run(
                ["podman", "import", "-", self.base_ref],
                stdin=tar.stdout,
                env=env,
                capture_output=True,
                text=True,
                check=False,
            )
        shutil.rmtree(rootfs, ignore_errors=True)
        if tar.returncode != 0 or imported.returncode != 0:
            raise FleetError(f"podman import of {rootfs} failed: {imported.stderr.strip()}")
        _say(f"base image {self.base_ref}: made in {time.monotonic() - started:.0f}s")

    # -- the lab -------------------------------------------------------------------------

    @property
    def key(self) -> Path:
        return self.state / "id_ed25519"

    @property
    def ssh_config(self) -> Path:
        return self.state / "ssh_config"

    @property
    def known_hosts(self) -> Path:
        return self.state / "known_hosts"

    def _ensure_key(self) -> None:
        if self.key.exists():
            return
        self.state.mkdir(parents=True, exist_ok=True)
        comment = "blobshift-fleet-lab"
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(self.key)],
            check=True,
        )

    def _ensure_network(self) -> None:
        if self._exists("network", self.network):
            info = json.loads(self.podman("network", "inspect", self.network).stdout)[0]
            subnets = [s.get("subnet") for s in info.get("subnets") or []]
            if self.subnet not in subnets or not info.get("internal"):
                raise FleetError(
                    f"podman network {self.network} exists with subnets {subnets} "
                    f"(internal={info.get('internal')}), not internal {self.subnet}: "
                    f"run `{self._cli} down` first"
                )
            return
        self.podman(
            "network",
            "create",
            "--internal",
            "--subnet",
            self.subnet,
            "--gateway",
            self.gateway,
            "--label",
            f"{LABEL}=network",
            self.network,
        )

    def _container(self, host: Host) -> dict[str, object] | None:
        proc = self.podman("container", "inspect", self.container(host), check=False)
        if proc.returncode != 0:
            return None
        info: dict[str, object] = json.loads(proc.stdout)[0]
        return info

    def _start(self, host: Host, image: str) -> None:
        info = self._container(host)
        if info is not None:
            state = info.get("State") or {}
            if info.get("ImageName") == image and isinstance(state, dict) and state.get("Running"):
                return
            self.podman("rm", "--force", "--time", "5", self.container(host))
        peers = [f"--add-host={p.name}:{p.address}" for p in self.hosts if p != host]
        self.podman(
            "run",
            "--detach",
            "--name",
            self.container(host),
            "--hostname",
            host.name,
            "--network",
            self.network,
            "--ip",
            host.address,
            "--systemd=always",
            "--label",
            f"{LABEL}=host",
            "--volume",
            f"{self.key}.pub:/etc/ssh/lab_authorized_keys:ro",
            *peers,
            image,
        )

    def _system_state(self, host: Host) -> str:
        proc = self.podman(
            "exec", self.container(host), "systemctl", "is-system-running", check=False
        )
        return proc.stdout.strip() or proc.stderr.strip()[-200:] or f"rc {proc.returncode}"

    def _booted(self, host: Host) -> tuple[bool, str]:
        state = self._system_state(host)
        return state in READY_STATES, state

    def _wait(self, what: str, probe: dict[Host, Callable[[], tuple[bool, str]]]) -> None:
        """Poll probe's callables per host until each answers true; name the ones that never do."""
        pending = dict(probe)
        last: dict[str, str] = {}
        deadline = time.monotonic() + self.timeout
        while True:
            for host, fn in list(pending.items()):
                ok, last[host.name] = fn()
                if ok:
                    del pending[host]
            if not pending:
                return
            if time.monotonic() > deadline:
                first = self.container(next(iter(pending)))
                names = ", ".join(f"{h.name} ({last[h.name]})" for h in pending)
                raise FleetError(
                    f"{what}: not after {self.timeout:.0f}s on {names}; look with "
                    f"`podman logs {first}` or `podman exec {first} journalctl -b`"
                )
            time.sleep(0.5)

    def _collect_host_keys(self) -> None:
        lines = []
        for host in self.hosts:
            key = self.podman(
                "exec", self.container(host), "cat", "/etc/ssh/ssh_host_ed25519_key.pub"
            ).stdout.split()
            lines.append(f"{host.name},{host.address} {key[0]} {key[1]}")
        self.known_hosts.write_text("\n".join(lines) + "\n")
        blocks = [f"Host {h.name}\n    HostName {h.address}\n" for h in self.hosts]
        net = ipaddress.ip_network(self.subnet)
        # The whole subnet by one pattern where ssh can say it (10.89.7.*), else each address.
        if net.prefixlen in (8, 16, 24):
            octets = str(net.network_address).split(".")[: net.prefixlen // 8]
            addresses = [".".join([*octets, "*"])]
        else:
            addresses = [h.address for h in self.hosts]
        patterns = " ".join([h.name for h in self.hosts] + addresses)
        first = self.hosts[0].name
        self.ssh_config.write_text(
            f"# Written by `python -m blobshift.lab.fleet up` (lab {self.network}): its hosts,\n"
            f"# their host keys as collected from the containers. ssh -F this-file {first}\n"
            + "\n".join(blocks)
            + f"\nHost {patterns}\n"
            "    User deploy\n"
            f"    IdentityFile {self.key}\n"
            "    IdentitiesOnly yes\n"
            f"    UserKnownHostsFile {self.known_hosts}\n"
            "    GlobalKnownHostsFile /dev/null\n"
            "    StrictHostKeyChecking yes\n"
            "    BatchMode yes\n"
            "    ConnectTimeout 5\n"
        )

    def _ssh_ok(self, host: Host) -> tuple[bool, str]:
        proc = subprocess.run(
            ["ssh", "-F", str(self.ssh_config), host.name, "id", "-un"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        answer = proc.stdout.strip() or proc.stderr.strip()[-200:]
        return proc.returncode == 0 and answer == "deploy", answer

    def up(self) -> None:
        started = time.monotonic()
        image = self.ensure_image()
        self._ensure_key()
        self._ensure_network()
        for host in self.hosts:
            self._start(host, image)

        self._wait("systemd is-system-running", {h: partial(self._booted, h) for h in self.hosts})
        self._collect_host_keys()
        self._wait("sshd as deploy", {h: partial(self._ssh_ok, h) for h in self.hosts})
        for host in self.hosts:
            if self._system_state(host) == "degraded":
                failed = self.podman(
                    "exec", self.container(host), "systemctl", "--failed", "--plain", "--no-legend"
                ).stdout.strip()
                _say(f"{host.name}: degraded, failed units: {failed}")
        _say(
            f"{len(self.hosts)} hosts up in {time.monotonic() - started:.0f}s; "
            f"ssh -F {self.ssh_config} {self.hosts[-1].name}"
            + (", or ansible -i inventories/fleet all -m ping" if self.network == NETWORK else "")
        )

    def down(self, images: bool = False) -> None:
        if images and self.network != NETWORK:
            # podman rmi --force would take the shared fleet's containers with the images.
            raise FleetError(
                f"lab {self.network}: its images are the fleet's too; remove them with "
                "`python -m blobshift.lab.fleet down --images` once no lab uses them"
            )
        names = [
            self.container(h) for h in self.hosts if self._exists("container", self.container(h))
        ]
        if names:
            self.podman("rm", "--force", "--time", "5", *names)
        if self._exists("network", self.network):
            self.podman("network", "rm", self.network)
        for stale in (self.known_hosts, self.ssh_config):
            stale.unlink(missing_ok=True)
        if images:
            refs = self.podman(
                "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter",
                f"reference={IMAGE}", "--filter", f"reference={BASE_IMAGE}",
            ).stdout.split()  # fmt: skip
            if refs:
                self.podman("rmi", "--force", *refs)
        _say(
            f"down: {len(names)} containers, network {self.network}"
            + (", images" if images else "")
        )

    def status(self) -> bool:
        """Print each host's state; true when every host is booted."""
        ok = True
        for host in self.hosts:
            info = self._container(host)
            state_info = (info or {}).get("State") or {}
            running = isinstance(state_info, dict) and bool(state_info.get("Running"))
            system = self._system_state(host) if running else "-"
            ready = system in READY_STATES
            ok = ok and ready
            container = "running" if running else ("absent" if info is None else "stopped")
            print(f"{host.name:8} {host.address:12} container={container:8} systemd={system}")
        return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m blobshift.lab.fleet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="build the image if needed, start the hosts, wait for sshd")
    down = sub.add_parser("down", help="remove the hosts and the network")
    down.add_argument("--images", action="store_true", help="remove the lab's images too")
    sub.add_parser("status", help="each host's container and systemd state")
    parser.add_argument("--timeout", type=float, default=120.0, help="bound on each wait (s)")
    lab = parser.add_argument_group("another lab beside the fleet (same image, nothing shared)")
    lab.add_argument("--network", default=NETWORK, help=f"podman network (default {NETWORK})")
    lab.add_argument("--subnet", default=SUBNET, help=f"its subnet (default {SUBNET})")
    lab.add_argument(
        "--host",
        action="append",
        dest="hosts",
        metavar="NAME=ADDRESS",
        help="one host of the lab (repeat; default the fleet's nine)",
    )
    lab.add_argument("--state", type=Path, default=STATE, help=f"state dir (default {STATE})")
    args = parser.parse_args(argv)
    if shutil.which("podman") is None:
        print("fleet: podman is not installed: run `make deps` (as root)", file=sys.stderr)
        return 2
    try:
        hosts = tuple(parse_host(h) for h in args.hosts) if args.hosts else HOSTS
        fleet = Fleet(
            timeout=args.timeout,
            network=args.network,
            subnet=args.subnet,
            hosts=hosts,
            state=args.state,
        )
        if args.command == "up":
            fleet.up()
        elif args.command == "down":
            fleet.down(images=args.images)
        else:
            return 0 if fleet.status() else 1
    except FleetError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
