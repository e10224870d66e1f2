"""`make soak`: the whole runbook on the lab, a large seed, the app serving at a steady
rate throughout, and faults injected at random moments (a seeded RNG; the seed is kept).

Faults:
- the backfill killed (kill -9) at random points of its progress, then the phase-2
  playbook run again: it resumes from its checkpoint;
- one node of a cluster (the second node of the old or the new cluster) killed and
  started again a few seconds later, at random moments of every phase;
- nginx reloaded (bursts of reloads), at random moments of every phase;
- during the backfill, fault-injecting proxies (blobshift.lab.faultproxy) in front of
  the stores as the backfill sees them: the new store answers 503 SlowDown to a share of
  requests, and a share of GETs from the old store are cut mid-body, for a period.

Reports the app's requests served and failed per phase, the faults injected and
survived, the blobs lost (the final audit: every blob the seed or the app wrote and did
not delete, byte for byte in the new store), the backfill's rate; appends one JSON line
to docs/reliability/soak.jsonl and writes docs/RELIABILITY.md again.

    python -m blobshift.lab.soak [--blobs 100000] [--rate 20] [--seed N] [--no-record]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blobshift.lab import runbook
from blobshift.lab.evidence import git_describe
from blobshift.lab.faultproxy import FaultProxy
from blobshift.lab.reliability_doc import SOAK_HISTORY
from blobshift.lab.reliability_doc import main as write_doc
from blobshift.lab.runbook import APP_DIR, LAB_DIR, LOG_DIR, REPO, Runbook, wait_until
from blobshift.runfiles import utc_iso

# The second node of each cluster (playbooks/lab.yml): the one a fault may take down.
NODES = ("old-2", "new-2")
# Fault proxies the backfill goes through (see backfill_settings()).
FAULTY_NEW = (("127.0.0.1", 9130), runbook.TEMP_PROXY)
FAULTY_OLD = (("127.0.0.1", 9131), runbook.PROXY)


@dataclass
class Fault:
    kind: str
    phase: str
    detail: str
    started: float = field(default_factory=time.monotonic)
    seconds: float = 0.0
    app_failed_before: int = 0
    app_failed_after: int = 0
    recovered: bool = False

    @property
    def survived(self) -> bool:
        return self.recovered and self.app_failed_after == self.app_failed_before

    def record(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "phase": self.phase,
            "detail": self.detail,
            "seconds": round(self.seconds, 1),
            "recovered": self.recovered,
            "app_failed_during": self.app_failed_after - self.app_failed_before,
            "survived": self.survived,
        }


def app_failed() -> int:
    return int(runbook.app_stats().get("failed_total") or 0)


def current_phase() -> str:
    try:
        return (APP_DIR / "phase").read_text().strip()
    except OSError:
        return "?"


def servers(*args: str) -> dict[str, Any]:
    proc = subprocess.run(
        [sys.executable, "-m", "blobshift.lab.servers", *args],
        capture_output=True,
        text=True,
        timeout=180,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"servers {' '.join(args)}: {proc.stderr.strip()[-500:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class Injector(threading.Thread):
    """Node-down and nginx-reload faults at random moments until stopped."""

    def __init__(self, rng: random.Random, mean_gap: float) -> None:
        super().__init__(daemon=True)
        self.rng, self.mean_gap = rng, mean_gap
        self.halt = threading.Event()
        self.paused = threading.Event()  # set: no new fault starts
        self.faults: list[Fault] = []
        self.error: BaseException | None = None

    def settle(self, fault: Fault) -> None:
        """The app's failures over the fault and a few seconds after it."""
        target = runbook.app_stats().get("requests_total", 0) + 20
        # Long enough for the app to have written its figures after the fault.
        with contextlib.suppress(TimeoutError):
            wait_until(
                lambda: runbook.app_stats().get("requests_total", 0) >= target, 60, "app requests"
            )
        fault.app_failed_after = app_failed()

    def node_down(self) -> None:
        name = self.rng.choice(NODES)
        down = self.rng.uniform(3, 15)
        fault = Fault("node down", current_phase(), f"{name} killed for {down:.0f}s")
        fault.app_failed_before = app_failed()
        self.faults.append(fault)
        node_dir = LAB_DIR / f"s3-{name}"
        servers("s3-kill", "--dir", str(node_dir))
        self.halt.wait(down)
        servers("s3-start-again", "--dir", str(node_dir))
        fault.recovered = runbook.listening(node_address(name))
        fault.seconds = time.monotonic() - fault.started
        self.settle(fault)

    def reloads(self) -> None:
        n = self.rng.randint(1, 5)
        fault = Fault("nginx reloads", current_phase(), f"{n} reloads")
        fault.app_failed_before = app_failed()
        self.faults.append(fault)
        for _ in range(n):
            runbook.reload_nginx()
        fault.recovered = True
        fault.seconds = time.monotonic() - fault.started
        self.settle(fault)

    def run(self) -> None:
        try:
            while not self.halt.wait(self.rng.expovariate(1 / self.mean_gap)):
                if self.paused.is_set():
                    continue
                self.node_down() if self.rng.random() < 0.5 else self.reloads()
        except BaseException as exc:  # reported by the soak
            self.error = exc

    def stop(self) -> None:
        self.halt.set()
        self.join(120)


def node_address(name: str) -> tuple[str, int]:
    node = json.loads((LAB_DIR / f"s3-{name}" / "node.json").read_text())
    return node["ip"], int(node["base_port"])


class BackfillKiller(threading.Thread):
    """kill -9 the running backfill once this run of it has listed `at` blobs."""

    def __init__(self, at: int, dead: set[int]) -> None:
        super().__init__(daemon=True)
        self.at = at
        self.dead = dead  # pids killed before: their status file may still say running
        self.halt = threading.Event()
        self.killed: dict[str, Any] | None = None

    def run(self) -> None:
        status = LOG_DIR / "migrate_backend-status.json"
        while not self.halt.wait(0.1):
            try:
                data = json.loads(status.read_text())
                pid = int(data["pid"])
            except (OSError, ValueError, KeyError, TypeError):
                continue
            if data.get("state") != "running" or pid in self.dead:
                continue
            listed = (data.get("counts") or {}).get("listed", 0)
            if listed < self.at:
                continue
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            self.dead.add(pid)
            self.killed = {"pid": pid, "listed": listed}
            return

    def stop(self) -> None:
        self.halt.set()
        self.join(10)


def backfill_settings(out: Path) -> Path:
    """The app's settings with both stores reached through a fault proxy (in front of
    nginx, which passes the Host header on: SigV4/SigV2 signatures still verify)."""
    text = (APP_DIR / "blobshift_settings.py").read_text()
    for (host, port), (up_host, up_port) in (FAULTY_NEW, FAULTY_OLD):
        old = f"http://{up_host}:{up_port}"
        if old not in text:
            raise RuntimeError(f"the app's settings do not name {old}: not migrating?")
        text = text.replace(old, f"http://{host}:{port}")
    path = out / "backfill-localsettings.py"
    path.touch(mode=0o600)
    path.write_text(text)
    return path


def backfill(
    rb: Runbook, report: dict[str, Any], rng: random.Random, args: argparse.Namespace
) -> dict[str, Any]:
    """Phase 2 through fault proxies, killed `args.backfill_kills` times and resumed."""
    settings = backfill_settings(rb.out)
    new_fp = FaultProxy(listen=FAULTY_NEW[0], upstream=FAULTY_NEW[1], seed=rng.getrandbits(32))
    old_fp = FaultProxy(listen=FAULTY_OLD[0], upstream=FAULTY_OLD[1], seed=rng.getrandbits(32))
    # Blobs each killed run lists before its kill (a resumed run counts from its
    # checkpoint): together at most 80% of the seed, so that every kill happens.
    share = report["blobs_in_old_at_start"] / (args.backfill_kills + 1)
    kills_at = [int(rng.uniform(0.05, 0.8) * share) for _ in range(args.backfill_kills)]
    dead: set[int] = set()
    faults: list[dict[str, Any]] = []
    started = time.monotonic()
    attempts = 0
    with new_fp, old_fp:
        new_fp.configure(slowdown=args.slowdown)
        old_fp.configure(reset=args.reset)
        faults.append(
            {
                "kind": "fault proxies",
                "phase": "phase2",
                "detail": f"new store 503 SlowDown to {args.slowdown:.0%} of requests, old "
                f"store GETs cut mid-body {args.reset:.0%}, through every run of the backfill",
            }
        )
        while True:
            attempts += 1
            killer = None
            if kills_at:
                killer = BackfillKiller(kills_at.pop(0), dead)
                killer.start()
            try:
                runbook.phase2(
                    rb,
                    report,
                    "-e",
                    f"blob_migration_settings={settings}",
                    title=f"phase 2: backfill (attempt {attempts})",
                )
            except RuntimeError:
                if killer is None or killer.killed is None:
                    raise
                killer.stop()
                faults.append(
                    {
                        "kind": "backfill kill -9",
                        "phase": "phase2",
                        "detail": f"pid {killer.killed['pid']} at {killer.killed['listed']} listed",
                        "survived": None,  # judged once a later run finishes
                    }
                )
                continue
            if killer is not None:
                killer.stop()
                if killer.killed is not None:  # killed after the playbook saw it finish?
                    raise RuntimeError("the backfill was killed but its playbook succeeded")
            break
        proxies = {"new": new_fp.counters(), "old": old_fp.counters()}
    seconds = time.monotonic() - started
    for f in faults:
        f["survived"] = True  # the backfill finished despite them (the audit judges the rest)
    totals = (report.get("backfill") or {}).get("totals") or {}
    shard = ((report.get("backfill") or {}).get("shards") or [{}])[0]
    pass_totals = shard.get("pass_totals") or totals
    return {
        "attempts": attempts,
        "seconds": round(seconds, 1),
        "listed": pass_totals.get("listed"),
        "copied": pass_totals.get("copied"),
        "skipped": pass_totals.get("skipped"),
        "logged": pass_totals.get("logged"),
        "retries": pass_totals.get("retries"),
        "blobs_per_second": round((pass_totals.get("listed") or 0) / seconds, 1),
        "fault_proxies": proxies,
        "faults": faults,
    }


def soak(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(args.seed)
    args.target, args.drill = "riakcs", False
    rb, report = runbook.begin(args)
    started = time.monotonic()
    report.update(seed=args.seed, rate=args.rate)
    runbook.lab_up(rb, report)
    injector = Injector(random.Random(rng.getrandbits(64)), args.fault_gap)
    injector.start()
    try:
        runbook.phase1(rb)
        report["backfill_run"] = backfill(rb, report, rng, args)
        runbook.phase3(rb, report)
        runbook.phase4(rb, report)
        runbook.phase5(rb)
    finally:
        injector.stop()
    if injector.error is not None:
        raise RuntimeError(f"fault injector: {injector.error!r}")
    runbook.finish(rb, report, keep=args.keep)
    report["faults"] = [f.record() for f in injector.faults] + report["backfill_run"]["faults"]
    report["seconds"] = round(time.monotonic() - started, 1)
    return report


def history_line(report: dict[str, Any], args: argparse.Namespace, ok: bool) -> dict[str, Any]:
    phases = report["app"]["phases"]
    faults = report["faults"]
    b = report["backfill_run"]
    return {
        "finished": report["finished"],
        "blobs": report["blobs_in_old_at_start"],
        "commit": git_describe(REPO),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs",
        "seed": args.seed,
        "app_rate": args.rate,
        "result": "passed" if ok else "FAILED",
        "blobs_lost": report["audit"]["missing_in_new_store"],
        "blobs_audited": report["audit"]["expected"],
        "seconds": report["seconds"],
        "backfill": f"{b['listed']} blobs listed, {b['copied']} copied, {b['logged']} logged "
        f"in {b['seconds']:.0f} s over {b['attempts']} run(s): {b['blobs_per_second']} "
        f"blobs/s (with the faults); engine retries {b['retries']}",
        "app_requests": report["app"]["requests"],
        "app_failed": report["app"]["failed"],
        "faults_injected": len(faults),
        "faults_survived": sum(1 for f in faults if f.get("survived")),
        "phases": [
            {
                "phase": name,
                "requests": counts.get("requests", 0),
                "failed": counts.get("failed", 0),
                "faults": [f"{f['kind']} ({f['detail']})" for f in faults if f["phase"] == name],
            }
            for name, counts in phases.items()
        ],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blobs", type=int, default=100_000, help="seed blobs (default 100000)")
    parser.add_argument("--rate", type=float, default=20.0, help="app operations per second")
    parser.add_argument("--seed", type=int, default=None, help="fault RNG seed (default: random)")
    parser.add_argument(
        "--backfill-kills", type=int, default=3, help="kill -9 of the backfill (default 3)"
    )
    parser.add_argument(
        "--fault-gap", type=float, default=25.0, help="mean seconds between node/nginx faults"
    )
    parser.add_argument("--slowdown", type=float, default=0.33, help="503 share (new store)")
    parser.add_argument("--reset", type=float, default=0.05, help="cut GET share (old store)")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "soak")
    parser.add_argument("--keep", action="store_true", help="leave the lab running at the end")
    parser.add_argument(
        "--no-record", action="store_true", help="do not append to docs/reliability/soak.jsonl"
    )
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().getrandbits(32)
    print(f"soak: {args.blobs} blobs, app at {args.rate}/s, fault seed {args.seed}", flush=True)
    try:
        report = soak(args)
    except (RuntimeError, TimeoutError) as exc:
        print(f"\nthe soak stopped: {exc}", file=sys.stderr)
        return 1
    lines, ok = runbook.summarize(report)
    faults = report["faults"]
    ok = ok and all(f.get("survived") for f in faults)
    report["ok"] = ok
    out = args.out.resolve()
    (out / "soak-report.json").write_text(json.dumps(report, indent=1) + "\n")
    line = history_line(report, args, ok)
    print("\n== soak summary")
    for text in lines:
        print(text)
    print(f"faults injected {line['faults_injected']}, survived {line['faults_survived']}")
    for f in faults:
        print(f"  {f['phase']}: {f['kind']} ({f['detail']}) survived={f.get('survived')}")
    print(f"backfill: {line['backfill']}")
    print(f"seed: {args.seed}; result: {line['result']}; report: {out / 'soak-report.json'}")
    if not args.no_record:
        history = REPO / SOAK_HISTORY
        history.parent.mkdir(parents=True, exist_ok=True)
        with open(history, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(line) + "\n")
        write_doc(["--root", str(REPO)])
    print(f"finished {utc_iso()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
