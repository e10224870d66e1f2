"""The runbook's view of the fleet lab: what `make demo-fleet` watches on the hosts.

The phases run as on the single-host lab (`ansible-playbook -i inventories/fleet ...`,
over SSH as deploy); what the runbook itself reads or sets on the hosts goes over the
same SSH (the fleet's ssh_config, one shared connection per host): the app's phase marker
and figures on each web host, the proxy's store log on proxy1, the app's ledgers and
settings for the audit. The backfill's status files, checkpoints and logs and the verify
report come from the playbooks' own copies on the controller (blobshift_fetch_dir, here
the run's `runs/` directory).
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml

from blobshift.envedit import Inventory
from blobshift.lab.app import export_manifest
from blobshift.lab.fleet import HOSTS, STATE
from blobshift.runfiles import write_json_atomic

REPO = Path(__file__).resolve().parents[3]
ENV_NAME = "fleet"
APP_USER = "blobapp"
# On each web host (playbooks/lab.yml's lab_dir): the app's state, as on the local lab.
APP_DIR = "/var/lib/blobshift-lab/app"
APP_UNIT = "blobshift-lab-app.service"
ADDRESSES = {h.name: h.address for h in HOSTS}
SSH_TIMEOUT = 60


class FleetSite:
    env_name = ENV_NAME
    poll_interval = 0.5  # each look is an SSH round trip per web host

    def __init__(self, out: Path) -> None:
        self.out = out
        self.inventory = Inventory.parse(
            (REPO / "inventories" / ENV_NAME / "hosts.ini").read_text()
        )
        public = yaml.safe_load((REPO / "environments" / ENV_NAME / "public.yml").read_text())
        proxy = ADDRESSES[self.group("proxy")[0]]
        self.proxy = (proxy, int(public["blobshift_proxy_port"]))
        self.temp_proxy = (proxy, int(public["blobshift_proxy_temp_port"]))
        self.new_direct_url = (
            f"http://{ADDRESSES[self.group('riakcs_new')[0]]}:{public['blobshift_riakcs_s3_port']}"
        )
        # Where the web hosts keep the blob settings (beside the app's localsettings.py).
        self.settings_dir = Path(public["localsettings_path"]).parent
        self.local = out / "fleet"
        self.local.mkdir(parents=True, exist_ok=True)
        # One SSH connection per host for the whole run (ControlMaster): the phase marker
        # and the app's figures are read many times.
        self._control = Path(tempfile.mkdtemp(prefix="bsf-ssh-"))

    def group(self, name: str) -> list[str]:
        return [line.split()[0] for line in self.inventory.hosts(name)]

    # -- SSH -------------------------------------------------------------------------------

    def ssh(self, host: str, command: str, stdin: bytes | None = None) -> bytes:
        """`command` (a shell line) on `host` as deploy; its stdout. RuntimeError names the
        host and the command when it fails."""
        argv = [
            "ssh",
            "-F",
            str(STATE / "ssh_config"),
            "-o",
            "ControlMaster=auto",
            "-o",
            f"ControlPath={self._control}/%C",
            "-o",
            "ControlPersist=120",
            host,
            command,
        ]
        proc = subprocess.run(
            argv, input=stdin, capture_output=True, timeout=SSH_TIMEOUT, check=False
        )
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip()
            raise RuntimeError(f"{host}: `{command}` failed (rc {proc.returncode}): {err}")
        return proc.stdout

    def read(self, host: str, path: str, missing_ok: bool = False) -> bytes | None:
        """A file of `host` (read with sudo: the app's and nginx's files are not deploy's)."""
        quoted = shlex.quote(path)
        if missing_ok:
            out = self.ssh(host, f"sudo sh -c 'test -e {quoted} && cat {quoted} || echo -n'")
            return out or None
        return self.ssh(host, f"sudo cat {quoted}")

    # -- the Site protocol (blobshift.lab.runbook) ----------------------------------------

    def play_args(self, out: Path) -> list[str]:
        # The controller's copies in the run's own directory; checkpoints and status files
        # fetched every 2 s, for the report's rate chart (the default is 300 s).
        fetch_dir = out / "runs"
        # The run's copy of inventories/fleet lies outside the checkout: its connection
        # settings, relative to the inventory, would miss the lab's key and ssh_config.
        return [
            "-e",
            f"blobshift_fetch_dir={fetch_dir}",
            "-e",
            "blob_migration_fetch_interval=2",
            "-e",
            f"ansible_ssh_private_key_file={STATE / 'id_ed25519'}",
            "-e",
            f"ansible_ssh_common_args='-F {STATE / 'ssh_config'}'",
        ]

    def set_phase(self, name: str) -> None:
        for host in self.group("webworkers"):
            # Before the lab is up (its first phase) the app's directory may not exist yet.
            self.ssh(
                host,
                f"{{ test -d {APP_DIR} || sudo install -d -o {APP_USER} -m 0755 {APP_DIR}; }}"
                f" && sudo -u {APP_USER} tee {APP_DIR}/phase.new >/dev/null"
                f" && sudo -u {APP_USER} mv {APP_DIR}/phase.new {APP_DIR}/phase",
                stdin=(name + "\n").encode(),
            )

    def app_stats(self) -> dict[str, Any]:
        """The web hosts' figures summed (per phase, totals), and each host's own."""
        merged: dict[str, Any] = {
            "phases": {},
            "failures": [],
            "failed_total": 0,
            "requests_total": 0,
            "reloads": 0,
            "hosts": {},
        }
        migrating = []
        for host in self.group("webworkers"):
            raw = self.read(host, f"{APP_DIR}/stats.json", missing_ok=True)
            stats: dict[str, Any] = json.loads(raw) if raw else {}
            merged["hosts"][host] = {k: stats.get(k) for k in ("requests_total", "failed_total")}
            for phase, counts in (stats.get("phases") or {}).items():
                into = merged["phases"].setdefault(phase, {})
                for key, value in counts.items():
                    into[key] = into.get(key, 0) + value
            merged["failures"] += [{**f, "host": host} for f in stats.get("failures") or []]
            for key in ("failed_total", "requests_total", "reloads"):
                merged[key] += int(stats.get(key) or 0)
            migrating.append(bool(stats.get("settings_migrating")))
        merged["settings_migrating"] = bool(migrating) and all(migrating)
        return merged

    def store_logs(self, out: Path, public: dict[str, Any]) -> list[Path]:
        logs = []
        for host in self.group("proxy"):
            local = self.local / f"{host}-store.log"
            local.write_bytes(self.read(host, public["nginx_proxy_store_log"], True) or b"")
            logs.append(local)
        return logs

    def status_dir(self, out: Path) -> Path:
        return out / "runs"

    def verify_report(self, out: Path, public: dict[str, Any]) -> tuple[str, Path]:
        name = "verify-report-demo.json"
        host = self.group("django_manage")[0]
        return f"{public['blob_migration_log_dir']}/{name}", out / "runs" / host / name

    def phase3_args(self, out: Path, public: dict[str, Any]) -> list[str]:
        """The app's current references (its ledgers over the seed) as the log check's
        manifest, placed in each django_manage host's log dir: the fleet's app keeps its
        state on the web hosts, which the django_manage hosts cannot read."""
        app = self.gather_app(out)
        manifest = self.local / "manifest-current.jsonl"
        with open(manifest, "w", encoding="utf-8") as fh:
            export_manifest(app, fh)
        on_host = f"{public['blob_migration_log_dir']}/manifest-lab.jsonl"
        for host in self.group("django_manage"):
            self.ssh(
                host,
                f"sudo -u {APP_USER} tee {shlex.quote(on_host)} >/dev/null",
                stdin=manifest.read_bytes(),
            )
        return ["-e", f"blob_log_check_keys_from={on_host}"]

    def gather_app(self, out: Path) -> Path:
        """The app's state as one directory on the controller, as the local lab keeps it: the
        seed's digests, every web host's ledger (their keys never overlap: each app deletes
        only what it wrote), and the first web host's blob settings (secrets: 0600)."""
        dest = self.local / "app"
        dest.mkdir(parents=True, exist_ok=True)
        seeds: dict[str, str] = {}
        manifests, ledgers = [], []
        for host in self.group("webworkers"):
            seeded = self.read(host, f"{APP_DIR}/seed-digests.json", missing_ok=True)
            seeds.update(json.loads(seeded) if seeded else {})
            manifests.append(self.read(host, f"{APP_DIR}/manifest.jsonl", missing_ok=True) or b"")
            ledgers.append(self.read(host, f"{APP_DIR}/ledger.jsonl", missing_ok=True) or b"")
        write_json_atomic(dest / "seed-digests.json", seeds, durable=False)
        # The seed's manifest rows (on the seeding host) and the app's ledgers, as one app's.
        (dest / "manifest.jsonl").write_bytes(b"".join(manifests))
        (dest / "ledger.jsonl").write_bytes(b"".join(ledgers))
        first = self.group("webworkers")[0]
        body = self.read(first, str(self.settings_dir / "blobshift_settings.py"), missing_ok=True)
        if body is not None:
            path = dest / "blobshift_settings.py"
            path.touch(mode=0o600)
            path.write_bytes(body)
        return dest

    def stop_app(self) -> None:
        for host in self.group("webworkers"):
            self.ssh(host, f"sudo systemctl stop {APP_UNIT}")

    def describe(self) -> dict[str, Any]:
        groups = {
            g: self.group(g)
            for g in ("proxy", "webworkers", "django_manage", "riakcs", "riakcs_new")
        }
        return {
            "hosts": [
                {
                    "name": h.name,
                    "address": h.address,
                    "connection": "ssh",
                    "user": "deploy",
                    "groups": [g for g, members in groups.items() if h.name in members],
                }
                for h in HOSTS
            ]
        }
