"""The lab's application: a load generator that uses the blob db exactly as the app does.

It reads `localsettings.py` through the same loader, builds its blob db with
`get_blob_db` (the migrating one while the flag is on), and at a steady rate writes new
blobs, reads random known ones (checking their MD5) and deletes some of its own. SIGHUP
makes it load the settings file again, as a restarted app process would; SIGTERM stops
it. Every operation goes to a ledger (JSON lines) so a final audit can tell which blobs
must exist; counts per phase (read from the `phase` file in its state dir) go to
`stats.json`.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import signal
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, TextIO

from blobshift.blobdb import get_blob_db
from blobshift.runfiles import utc_iso, write_json_atomic
from blobshift.settings import load_settings

OPS = ("write", "read", "delete")


class App:
    def __init__(self, settings: Path, state_dir: Path, rate: float, seed: int) -> None:
        self.settings_path = settings
        self.state_dir = state_dir
        self.rate = rate
        self.rng = random.Random(seed)
        self.db = get_blob_db(load_settings(settings))
        self.known: dict[str, str] = self._load_known()
        self.keys: list[str] = list(self.known)  # for uniform random picks
        self.own: list[str] = []
        self.stats: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.failures: list[dict[str, Any]] = []
        self.reloads = 0
        self.stop = threading.Event()
        self.reload = threading.Event()
        self.ledger = open(state_dir / "ledger.jsonl", "a", encoding="utf-8")  # noqa: SIM115

    def _load_known(self) -> dict[str, str]:
        seeded = self.state_dir / "seed-digests.json"
        return json.loads(seeded.read_text()) if seeded.exists() else {}

    def phase(self) -> str:
        try:
            return (self.state_dir / "phase").read_text().strip() or "unknown"
        except OSError:
            return "unknown"

    def _record(self, phase: str, op: str, key: str, ok: bool, **extra: Any) -> None:
        counts = self.stats[phase]
        counts["requests"] += 1
        counts[op] += 1
        if not ok:
            counts["failed"] += 1
            self.failures.append({"t": utc_iso(), "phase": phase, "op": op, "key": key, **extra})
        entry = {"t": utc_iso(), "phase": phase, "op": op, "key": key, "ok": ok, **extra}
        self.ledger.write(json.dumps(entry) + "\n")
        self.ledger.flush()

    def one(self) -> None:
        phase = self.phase()
        roll = self.rng.random()
        if roll < 0.35 or not self.known:
            key = f"app/{self.rng.getrandbits(64):016x}/{self.rng.getrandbits(96):024x}"
            body = self.rng.randbytes(self.rng.randint(100, 32 * 1024))
            md5 = hashlib.md5(body).hexdigest()
            try:
                self.db.put(key, body, content_type="application/octet-stream")
            except Exception as exc:
                self._record(phase, "write", key, False, error=type(exc).__name__)
                return
            self.known[key] = md5
            self.keys.append(key)
            self.own.append(key)
            self._record(phase, "write", key, True, md5=md5)
        elif roll < 0.95 or not self.own:
            key = self.rng.choice(self.keys)
            try:
                ok = hashlib.md5(self.db.get(key)).hexdigest() == self.known[key]
                self._record(phase, "read", key, ok, **({} if ok else {"error": "md5 differs"}))
            except Exception as exc:
                self._record(phase, "read", key, False, error=type(exc).__name__)
        else:
            key = self.own.pop(self.rng.randrange(len(self.own)))
            try:
                self.db.delete(key)
            except Exception as exc:
                self.own.append(key)
                self._record(phase, "delete", key, False, error=type(exc).__name__)
                return
            del self.known[key]
            self.keys.remove(key)
            self._record(phase, "delete", key, True)

    def write_stats(self) -> None:
        data = {
            "updated": utc_iso(),
            "pid": os.getpid(),
            "reloads": self.reloads,
            "settings_migrating": getattr(self.db, "old", None) is not None,
            "phases": {p: dict(c) for p, c in self.stats.items()},
            "failures": self.failures[-200:],
            "failed_total": sum(c.get("failed", 0) for c in self.stats.values()),
            "requests_total": sum(c.get("requests", 0) for c in self.stats.values()),
        }
        write_json_atomic(self.state_dir / "stats.json", data, durable=False)

    def run(self) -> None:
        interval = 1.0 / self.rate
        next_at = time.monotonic()
        last_stats = 0.0
        while not self.stop.is_set():
            if self.reload.is_set():
                self.reload.clear()
                self.db = get_blob_db(load_settings(self.settings_path))
                self.reloads += 1
            self.one()
            now = time.monotonic()
            if now - last_stats > 1.0:
                self.write_stats()
                last_stats = now
            next_at = max(next_at + interval, now)
            self.stop.wait(max(0.0, next_at - time.monotonic()))
        self.write_stats()
        self.ledger.close()


def export_manifest(state_dir: Path, out: TextIO) -> int:
    """Write the blobs the app references now as a manifest (one JSON line each): what a
    real app's "export blob references" command gives phase 3. The seeded ones with their
    manifest rows, then the app's own writes not deleted since; returns the line count."""
    live: dict[str, dict[str, Any]] = {}
    seeded = state_dir / "manifest.jsonl"
    if seeded.exists():
        for line in seeded.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                live[row["blob_key"]] = row
    ledger = state_dir / "ledger.jsonl"
    if ledger.exists():
        with open(ledger, encoding="utf-8") as fh:
            for line in fh:
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # the running app's half-written last line
                    continue
                if not entry.get("ok"):
                    continue
                if entry["op"] == "write":
                    live[entry["key"]] = {"blob_key": entry["key"]}
                elif entry["op"] == "delete":
                    live.pop(entry["key"], None)
    for row in live.values():
        out.write(json.dumps(row) + "\n")
    return len(live)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the lab's application (load generator)")
    parser.add_argument("--settings", type=Path)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--rate", type=float, default=20.0, help="operations per second")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--export-manifest",
        action="store_true",
        help="print the blobs the app references now (JSON lines, for phase 3) and exit",
    )
    args = parser.parse_args(argv)
    if args.export_manifest:
        export_manifest(args.state_dir, sys.stdout)
        return 0
    if args.settings is None:
        parser.error("--settings is required to run the app")
    args.state_dir.mkdir(parents=True, exist_ok=True)
    app = App(args.settings, args.state_dir, args.rate, args.seed)
    signal.signal(signal.SIGHUP, lambda *_: app.reload.set())
    signal.signal(signal.SIGTERM, lambda *_: app.stop.set())
    signal.signal(signal.SIGINT, lambda *_: app.stop.set())
    (args.state_dir / "app.pid").write_text(f"{os.getpid()}\n")
    app.write_stats()
    app.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
