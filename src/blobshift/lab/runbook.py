"""`make demo`: the whole runbook on the local lab, with the app serving throughout.

Brings the lab up (playbooks/lab.yml) on a copy of the `local` environment, runs the five
phase playbooks as an operator would, and ends with the evidence: blobs at the start,
copied, skipped, logged and classified, the verify gate, the app's requests per phase
(failures must be 0), and an audit of every blob the seed or the app wrote and did not
delete, byte for byte, in the new store alone. Human summary on the terminal, JSON
report on disk, its path printed last.

    python -m blobshift.lab.runbook [--blobs 20000] [--target riakcs|external] [--drill] [--keep]
        [--new-cluster seaweedfs|ceph] [--idempotence] [--no-clean-start]
        [--ansible-flag=-vvv --ansible-flag=--diff]

The lab has two nodes per S3 cluster (playbooks/lab.yml); the new one is SeaweedFS, or with
--new-cluster ceph a one-node Ceph cluster with a radosgw per node. blobshift.lab.soak and
the reliability tests reuse the phase steps below and inject faults between them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import yaml

from blobshift.envedit import Inventory, set_nested, write_atomic
from blobshift.lab.audit import expected_blobs, missing_or_different
from blobshift.lab.backfill_samples import BackfillSampler
from blobshift.lab.report_html import write_beside
from blobshift.readiness import VERDICT_FALLBACKS, VERDICT_READY, judge, parse_window
from blobshift.runfiles import utc_iso
from blobshift.settings import StoreSettings, load_settings

REPO = Path(__file__).resolve().parents[3]
LAB_DIR = Path("/var/lib/blobshift-lab")
APP_DIR = LAB_DIR / "app"
LOG_DIR = LAB_DIR / "migration-logs"
NEW_TLS_URL = "https://127.0.0.3:9110"
NEW_CA = LAB_DIR / "s3-new" / "tls" / "ca.pem"
PROXY = ("127.0.0.1", 8080)
RUN_MARKER = "BLOBSHIFT_LAB_RUN"
TEMP_PROXY = ("127.0.0.1", 8081)


class Site(Protocol):
    """Where the lab runs, and how the runbook reaches what it watches there: the app's
    phase marker and figures, the proxy's store log, the backfill's status files."""

    env_name: str
    proxy: tuple[str, int]
    temp_proxy: tuple[str, int]
    new_direct_url: str
    # Seconds between looks at the app's figures (the fleet's come over SSH).
    poll_interval: float

    def play_args(self, out: Path) -> list[str]: ...
    def set_phase(self, name: str) -> None: ...
    def app_stats(self) -> dict[str, Any]: ...
    def store_logs(self, out: Path, public: dict[str, Any]) -> list[Path]: ...
    def status_dir(self, out: Path) -> Path: ...
    def verify_report(self, out: Path, public: dict[str, Any]) -> tuple[str, Path]: ...
    def phase3_args(self, out: Path, public: dict[str, Any]) -> list[str]: ...
    def gather_app(self, out: Path) -> Path: ...
    def stop_app(self) -> None: ...
    def describe(self) -> dict[str, Any]: ...


class LocalSite:
    """The single-host lab: everything on this machine, under LAB_DIR."""

    env_name = "local"
    proxy = PROXY
    temp_proxy = TEMP_PROXY
    new_direct_url = "http://127.0.0.3:9100"
    poll_interval = 0.05

    def play_args(self, out: Path) -> list[str]:
        return []

    def set_phase(self, name: str) -> None:
        APP_DIR.mkdir(parents=True, exist_ok=True)
        (APP_DIR / "phase").write_text(name + "\n")

    def app_stats(self) -> dict[str, Any]:
        return read_json(APP_DIR / "stats.json") or {}

    def store_logs(self, out: Path, public: dict[str, Any]) -> list[Path]:
        return [Path(public["nginx_proxy_store_log"])]

    def status_dir(self, out: Path) -> Path:
        return LOG_DIR

    def verify_report(self, out: Path, public: dict[str, Any]) -> tuple[str, Path]:
        path = LOG_DIR / "verify-report-demo.json"
        return str(path), path

    def phase3_args(self, out: Path, public: dict[str, Any]) -> list[str]:
        # The local environment names the app's manifest command itself.
        return []

    def gather_app(self, out: Path) -> Path:
        return APP_DIR

    def stop_app(self) -> None:
        stop = ["app-stop", "--state-dir", str(APP_DIR)]
        subprocess.run(
            [sys.executable, "-m", "blobshift.lab.servers", *stop], check=True, capture_output=True
        )

    def describe(self) -> dict[str, Any]:
        return {}


@dataclass
class Runbook:
    out: Path
    target: str
    blobs: int
    rate: float
    env: dict[str, str] = field(default_factory=dict)
    steps: list[dict[str, Any]] = field(default_factory=list)
    last_recap: list[str] = field(default_factory=list)
    # Added to every ansible-playbook command (e.g. -vvv --diff, for the secrets audit).
    ansible_flags: list[str] = field(default_factory=list)
    # What the lab's new cluster runs: seaweedfs or ceph (playbooks/lab.yml's lab_new_kind).
    new_cluster: str = "seaweedfs"
    # Where the lab runs: this machine (LocalSite) or the fleet's hosts (FleetSite).
    site: Site = field(default_factory=lambda: LocalSite())

    @property
    def inventory(self) -> Path:
        return self.out / "inventories" / self.site.env_name

    @property
    def public_yml(self) -> Path:
        return self.out / "environments" / self.site.env_name / "public.yml"

    def prepare_env(self) -> None:
        """A private copy of the environment: the phases edit it, not the repo."""
        env_name = self.site.env_name
        for part in (f"inventories/{env_name}", f"environments/{env_name}"):
            dest = self.out / part
            if dest.exists():
                shutil.rmtree(dest)
            shutil.copytree(REPO / part, dest, symlinks=True)
        if self.target == "external":
            hosts = self.inventory / "hosts.ini"
            inv = Inventory.parse(hosts.read_text())
            inv.set_hosts("riakcs_new", [])
            write_atomic(hosts, inv.render())
            text = set_nested(
                self.public_yml.read_text(), "blobshift_new_store", "verify", f'"{NEW_CA}"'
            )
            write_atomic(self.public_yml, text)
        self.env = {
            **os.environ,
            "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
            "BLOBSHIFT_VAULT_PASSWORD_FILE": str(
                REPO / "environments" / "local" / "LAB-ONLY-vault-password.txt"
            ),
            "ANSIBLE_FORCE_COLOR": "0",
            # Inherited by every process the run starts (ansible, its modules, the lab's
            # servers, the app, the backfill): lets an audit of `ps` tell them apart.
            RUN_MARKER: str(self.out),
        }

    def phase(self, name: str) -> None:
        self.site.set_phase(name)

    def play(self, title: str, playbook: str, *extra: str) -> None:
        cmd = [
            "ansible-playbook",
            "-i",
            str(self.inventory),
            f"playbooks/{playbook}",
            *self.site.play_args(self.out),
            *self.ansible_flags,
            *extra,
        ]
        print(f"\n== {title}\n$ {' '.join(cmd)}", flush=True)
        started = time.monotonic()
        log = self.out / "ansible" / f"{len(self.steps):02d}-{playbook.removesuffix('.yml')}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        bin_dir = Path(sys.executable).parent
        with open(log, "w") as fh:
            proc = subprocess.run(
                [str(bin_dir / cmd[0]), *cmd[1:]],
                cwd=REPO,
                env=self.env,
                stdout=fh,
                stderr=subprocess.STDOUT,
            )
        secs = round(time.monotonic() - started, 1)
        recap = [line for line in log.read_text().splitlines() if " ok=" in line]
        for line in recap:
            print("   " + line.strip())
        self.last_recap = recap
        self.steps.append(
            {
                "step": title,
                "playbook": playbook,
                "rc": proc.returncode,
                "seconds": secs,
                "log": str(log),
            }
        )
        if proc.returncode != 0:
            tail = "\n".join(log.read_text().splitlines()[-30:])
            raise RuntimeError(f"{playbook} failed (rc {proc.returncode}), see {log}:\n{tail}")
        print(f"   done in {secs}s (log: {log})", flush=True)


def verify_summary(path: Path) -> dict[str, Any]:
    verify = read_json(path) or {}
    keys = ("clean", "old_objects", "matched", "matched_by_content", "size_only", "problems")
    return {**{k: verify.get(k) for k in keys}, "accepted": len(verify.get("accepted") or [])}


def deleted_by_app(state_dir: Path) -> list[str]:
    """Keys the app deleted (its ledger), for the verify gate's accepted remainder."""
    ledger = state_dir / "ledger.jsonl"
    entries = (json.loads(line) for line in ledger.read_text().splitlines())
    return sorted({e["key"] for e in entries if e["op"] == "delete" and e["ok"]})


def listening(addr: tuple[str, int]) -> bool:
    try:
        with socket.create_connection(addr, timeout=1):
            return True
    except OSError:
        return False


def wait_until(check: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll `check()` until it returns something true; that value. TimeoutError names `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not after {timeout:.0f}s")
        time.sleep(interval)


NGINX_PID = Path("/run/nginx.pid")


def nginx_workers() -> set[int]:
    """Pids of the system nginx's workers that serve (not those shutting down after a reload)."""
    try:
        master = int(NGINX_PID.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return set()
    workers = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").strip()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == master and title == b"nginx: worker process":
            workers.add(int(entry.name))
    return workers


def reload_nginx(timeout: float = 30.0) -> float:
    """`nginx -s reload`, then wait until it is taken: a new set of workers serves. Seconds."""
    before = nginx_workers()
    started = time.monotonic()
    subprocess.run(["nginx", "-s", "reload"], check=True, capture_output=True, timeout=timeout)
    wait_until(
        lambda: (now := nginx_workers()) and not (now & before), timeout, "nginx reload taken"
    )
    return time.monotonic() - started


def app_stats(site: Site | None = None) -> dict[str, Any]:
    return (site or LocalSite()).app_stats()


def phase_counts(phase: str, site: Site | None = None) -> dict[str, int]:
    return dict(app_stats(site).get("phases", {}).get(phase, {}))


def wait_app_requests(
    phase: str, n: int, timeout: float = 120.0, site: Site | None = None
) -> dict[str, int]:
    """Wait until the app counted `n` requests in `phase`; its counts there."""
    return wait_until(
        lambda: (c := phase_counts(phase, site)).get("requests", 0) >= n and c,
        timeout,
        f"{n} app requests in phase {phase}",
        interval=(site or LocalSite()).poll_interval,
    )


def end_phase(rb: Runbook, phase: str, following: str, timeout: float = 60.0) -> dict[str, int]:
    """Move the app to phase `following`; the final counts of `phase` (once the app wrote
    its figures after the switch: no request of `phase` is still in flight)."""
    rb.phase(following)
    wait_app_requests(following, 1, timeout, rb.site)
    return phase_counts(phase, rb.site)


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def new_store_direct(rb: Runbook, settings: StoreSettings) -> StoreSettings:
    """The new cluster itself, not through the proxy: where the blobs must be in the end."""
    if rb.target == "external":
        return settings
    return replace(settings, url=rb.site.new_direct_url)


# Seconds between the backfill playbook's looks at its job (its default, 30, is for days).
POLL = ["-e", "blob_migration_poll_delay=2"]


def begin(args: argparse.Namespace) -> tuple[Runbook, dict[str, Any]]:
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    site: Site = LocalSite()
    if getattr(args, "env", "local") == "fleet":
        from blobshift.lab.fleet_site import FleetSite

        site = FleetSite(out)
    rb = Runbook(out, args.target, args.blobs, args.rate, site=site)
    rb.ansible_flags = list(getattr(args, "ansible_flags", None) or [])
    rb.new_cluster = getattr(args, "new_cluster", None) or rb.new_cluster
    rb.prepare_env()
    return rb, {
        "started": utc_iso(),
        "env": site.env_name,
        "target": args.target,
        "new_cluster": rb.new_cluster,
    }


def external_args(target: str) -> list[str]:
    return ["-e", f"new_store_url={NEW_TLS_URL}"] if target == "external" else []


def lab_up(
    rb: Runbook, report: dict[str, Any], *, clean_start: bool = True, idempotence: bool = False
) -> None:
    """A clean lab: down (unless the hosts hold none), then up with the seed data and the
    app serving; with `idempotence`, up a second time, which must change nothing."""
    tls = ["-e", "lab_new_tls=true"] if rb.target == "external" else []
    kind = ["-e", f"lab_new_kind={rb.new_cluster}"] if rb.new_cluster != "seaweedfs" else []
    up = ["-e", f"lab_seed_blobs={rb.blobs}", "-e", f"lab_rate={rb.rate}", *tls, *kind]
    if clean_start:
        rb.play("lab down (a clean start)", "lab.yml", "-e", "lab_state=absent")
    rb.phase("lab-up")
    rb.play("lab up: S3 clusters, proxy, settings, seed data, the app", "lab.yml", *up)
    seeded = read_json(rb.site.gather_app(rb.out) / "seed-digests.json")
    report["blobs_in_old_at_start"] = len(seeded or {})
    if idempotence:
        rb.play("lab up again: nothing to change", "lab.yml", *up)
        report["lab_idempotent"] = all(" changed=0 " in line for line in rb.last_recap)
    rb.play("status", "status.yml")


def phase1(rb: Runbook, *, drill: bool = False) -> None:
    external = external_args(rb.target)
    rb.phase("phase1")
    rb.play("phase 1: send new writes to the new store", "phase1_send_writes_to_new.yml", *external)
    if drill:
        # Rollback drill: undo phase 1 (the app's new blobs are copied back), then redo it.
        rb.phase("rollback1")
        rb.play("rollback: back to steady", "rollback_to_steady.yml")
        rb.phase("phase1-again")
        rb.play("phase 1 again", "phase1_send_writes_to_new.yml", *external)


def public_vars(rb: Runbook) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(rb.public_yml.read_text())
    return data


def readiness_source(rb: Runbook) -> tuple[list[Path], float]:
    """The lab proxy's store log(s), as read now, and the flip's readiness window, from the
    environment (nginx_proxy_store_log, blob_migration_readiness_window)."""
    public = public_vars(rb)
    window = parse_window(str(public["blob_migration_readiness_window"]))
    return rb.site.store_logs(rb.out, public), window


def wait_ready(rb: Runbook, report: dict[str, Any], key: str) -> None:
    """Wait until the app's reads of the last window no longer need the old store, as the
    flip's gate requires (external target: the app reads that store directly, so the proxy
    only sees fallbacks, and "none" is the verdict to wait for)."""
    started = time.monotonic()

    def ready() -> dict[str, Any] | None:
        logs, window = readiness_source(rb)
        r = judge(logs, window).as_dict()
        ok = r["verdict"] == VERDICT_READY or (
            rb.target == "external" and r["verdict"] != VERDICT_FALLBACKS
        )
        return r if ok else None

    _, window = readiness_source(rb)
    result = wait_until(ready, 3 * window + 60, "the app's reads to stop needing the old store", 1)
    report[key] = {**result, "waited_s": round(time.monotonic() - started, 1)}


def phase2(
    rb: Runbook, report: dict[str, Any], *extra: str, title: str = "phase 2: backfill"
) -> None:
    rb.phase("phase2")
    started = time.monotonic()
    summary = rb.out / "backfill-summary.json"
    # The backfill's progress over time (its status files), for the report's rate chart.
    with BackfillSampler(rb.site.status_dir(rb.out)) as sampler:
        rb.play(
            title,
            "phase2_backfill.yml",
            "-e",
            f"blob_migration_summary_file={summary}",
            *POLL,
            *extra,
        )
    report["backfill"] = read_json(summary)
    report["backfill_samples"] = sampler.samples
    report["backfill_logged"] = sampler.logged()
    # Over the backfill: the app's reads of blobs not yet copied fell back to the old store.
    logs, _ = readiness_source(rb)
    report["readiness_during_backfill"] = judge(logs, time.monotonic() - started + 1).as_dict()


def phase3(rb: Runbook, report: dict[str, Any]) -> None:
    rb.phase("phase3")
    checked = rb.out / "check-blob-logs.json"
    rb.play(
        "phase 3: check the logs (migrate what is still in old)",
        "phase3_check_logs.yml",
        "-e",
        "migrate=true",
        "-e",
        f"blob_log_check_summary_file={checked}",
        *rb.site.phase3_args(rb.out, public_vars(rb)),
    )
    report["check_blob_logs"] = read_json(checked)


def phase4(rb: Runbook, report: dict[str, Any], *, drill: bool = False) -> None:
    rb.phase("phase4")
    on_host, verify_report = rb.site.verify_report(rb.out, public_vars(rb))
    wait_ready(rb, report, "readiness_before_flip")
    rb.play(
        "phase 4: verify, then flip",
        "phase4_flip.yml",
        "-e",
        f"blob_migration_verify_report={on_host}",
    )
    report["verify"] = verify_summary(verify_report)
    if drill and rb.target == "riakcs":
        rb.phase("rollback2")
        rb.play("rollback: flipping back to migrating", "rollback_to_migrating.yml")
        rb.phase("phase4-again")
        # Blobs the app deleted while flipped are still in the old cluster: the operator
        # (here, the app's own ledger) lists them as accepted, and the report keeps them.
        # Extra vars from a file on the controller: no file to place on the verifying host.
        accepted = rb.out / "accepted-as-deleted.json"
        deleted = deleted_by_app(rb.site.gather_app(rb.out))
        accepted.write_text(json.dumps({"blob_migration_accept_missing": deleted}) + "\n")
        # Reads of the flipped time went to the main site, which then was the new store's.
        wait_ready(rb, report, "readiness_before_flip_again")
        rb.play(
            "phase 4 again",
            "phase4_flip.yml",
            "-e",
            f"blob_migration_verify_report={on_host}",
            "-e",
            f"@{accepted}",
        )
        report["verify_before_rollback"] = report["verify"]
        report["verify"] = verify_summary(verify_report)


def phase5(rb: Runbook) -> None:
    if rb.target == "riakcs":
        rb.phase("phase5")
        rb.play("phase 5: clean up", "phase5_cleanup.yml")


def finish(rb: Runbook, report: dict[str, Any], *, keep: bool = False) -> None:
    """After the phases: the app's figures, the audit, the proxy's ports; the lab down."""
    rb.phase("after")
    rb.play("status", "status.yml")
    # The app keeps serving; let it record some requests after the last phase.
    with contextlib.suppress(TimeoutError):  # the report then shows no requests after
        wait_app_requests("after", 1, 10, rb.site)
    rb.site.stop_app()
    stats = rb.site.app_stats()
    report["app"] = {
        "phases": stats.get("phases", {}),
        "failed": stats.get("failed_total"),
        "requests": stats.get("requests_total"),
        "reloads": stats.get("reloads"),
        "failures": stats.get("failures", [])[:20],
        # The fleet: each web host's own totals.
        **({"hosts": stats["hosts"]} if "hosts" in stats else {}),
    }

    app_dir = rb.site.gather_app(rb.out)
    # The blob settings file alone, as the engine reads it: the app's localsettings.py
    # includes it by its path on the app host.
    final = load_settings(app_dir / "blobshift_settings.py")
    expected = expected_blobs(app_dir)
    through_app = asyncio.run(missing_or_different(final.new, expected))
    direct = asyncio.run(missing_or_different(new_store_direct(rb, final.new), expected))
    report["audit"] = {
        "expected": len(expected),
        "missing_through_app_settings": len(through_app),
        "missing_in_new_store": len(direct),
        "keys": sorted(set(through_app) | set(direct))[:100],
        "app_settings_migrating": final.migrating,
        "app_settings_old_store": final.old is not None,
    }
    report["proxy"] = {
        "8080_listening": listening(rb.site.proxy),
        "8081_listening": listening(rb.site.temp_proxy),
    }
    if fleet := rb.site.describe():
        report["fleet"] = fleet
    report["steps"] = rb.steps
    report["finished"] = utc_iso()
    if not keep:
        rb.play("lab down", "lab.yml", "-e", "lab_state=absent")


def run(args: argparse.Namespace) -> dict[str, Any]:
    rb, report = begin(args)
    lab_up(rb, report, clean_start=args.clean_start, idempotence=args.idempotence)
    phase1(rb, drill=args.drill)
    phase2(rb, report)
    phase3(rb, report)
    phase4(rb, report, drill=args.drill)
    phase5(rb)
    finish(rb, report, keep=args.keep)
    return report


def summarize(report: dict[str, Any]) -> tuple[list[str], bool]:
    b = report.get("backfill") or {}
    totals = b.get("totals", b)
    c = (report.get("check_blob_logs") or {}).get("totals", {})
    app, audit, v = report["app"], report["audit"], report["verify"]
    lines = [
        f"target: {report['target']}, new cluster: {report.get('new_cluster', 'seaweedfs')}",
        f"blobs in old at the start: {report['blobs_in_old_at_start']}",
        "backfill: "
        + ", ".join(
            f"{k} {totals.get(k)}" for k in ("listed", "copied", "skipped", "logged") if k in totals
        ),
        "logged blobs: " + (", ".join(f"{k}: {n}" for k, n in c.items()) or "none"),
        f"verify: {'clean' if v.get('clean') else 'NOT clean'} "
        f"({v.get('old_objects')} old objects)",
        "app requests per phase (failed): "
        + ", ".join(
            f"{p} {s.get('requests', 0)} ({s.get('failed', 0)})" for p, s in app["phases"].items()
        ),
        f"app requests: {app['requests']}, failed: {app['failed']}, "
        f"settings reloads: {app['reloads']}",
        f"audit: {audit['missing_in_new_store']} of {audit['expected']} blobs missing or different "
        f"in the new store ({audit['missing_through_app_settings']} through the app's settings)",
        f"proxy: 8080 {'up' if report['proxy']['8080_listening'] else 'down'}, "
        f"8081 {'up' if report['proxy']['8081_listening'] else 'gone'}",
    ]
    ok = (
        app["failed"] == 0
        and audit["missing_in_new_store"] == 0
        and audit["missing_through_app_settings"] == 0
        and bool(v.get("clean"))
        and not report["proxy"]["8081_listening"]
    )
    return lines, ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=20000, help="seed blobs (default 20000)")
    parser.add_argument(
        "--target",
        choices=["riakcs", "external"],
        default="riakcs",
        help="new store: a Riak CS cluster behind the proxy, or an external "
        "S3 endpoint over HTTPS (the Amazon S3 shape)",
    )
    parser.add_argument(
        "--new-cluster",
        choices=["seaweedfs", "ceph"],
        default="seaweedfs",
        help="what the lab's new cluster runs: SeaweedFS, or a one-node Ceph cluster with a "
        "radosgw per node (--target riakcs only)",
    )
    parser.add_argument(
        "--env",
        choices=["local", "fleet"],
        default="local",
        help="where the lab runs: this machine, or the fleet lab's hosts over SSH "
        "(`make fleet-up` first; --target riakcs only)",
    )
    parser.add_argument("--rate", type=float, default=20.0, help="app operations per second")
    parser.add_argument("--out", type=Path, default=REPO / "demo-output")
    parser.add_argument("--keep", action="store_true", help="leave the lab running at the end")
    parser.add_argument(
        "--drill", action="store_true", help="also roll back phase 1 and the flip, and redo them"
    )
    parser.add_argument(
        "--idempotence",
        action="store_true",
        help="bring the lab up a second time: the report says whether that changed anything",
    )
    parser.add_argument(
        "--no-clean-start",
        dest="clean_start",
        action="store_false",
        help="skip taking the lab down first (the hosts hold no lab: a fleet just brought up)",
    )
    parser.add_argument(
        "--ansible-flag",
        dest="ansible_flags",
        action="append",
        default=[],
        metavar="FLAG",
        help="add FLAG to every ansible-playbook command (repeatable; e.g. -vvv, --diff)",
    )
    args = parser.parse_args(argv)
    if args.env == "fleet" and args.target == "external":
        parser.error("--env fleet needs --target riakcs (the fleet has no HTTPS store)")
    if args.new_cluster == "ceph" and args.target == "external":
        # The external shape needs the new store on HTTPS, which the lab's Ceph does not serve.
        parser.error("--new-cluster ceph needs --target riakcs")
    try:
        report = run(args)
    except RuntimeError as exc:
        print(f"\nthe runbook stopped: {exc}", file=sys.stderr)
        return 1
    lines, ok = summarize(report)
    report["ok"] = ok
    path = args.out.resolve() / "report.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print("\n== summary")
    for line in lines:
        print(line)
    print("result: " + ("every blob arrived intact, no app request failed" if ok else "FAILED"))
    print(f"report page: {write_beside(report, path)}")
    print(f"report: {path}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
