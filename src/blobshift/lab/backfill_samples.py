"""The backfill's progress over time, for the demo's report: samples of its status files.

While phase 2 runs, a thread reads the status file of every forward shard in the log dir
(`RunPaths.status`: the engine rewrites it every couple of seconds) and keeps one sample
each time one of them changes: seconds since sampling began (from the file's mtime, so
the time is when the engine wrote the counts, not when they were read) and the counts
summed over the shards. Bounded: one look per `interval`, at most `max_samples` kept
(beyond that every other one is dropped and the interval doubles). At the end it also
reads the missing-blob logs the status files name: the lab's log dir goes with the lab,
the report keeps what was logged.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from blobshift.runfiles import is_sealed, read_log_records

COUNTS = ("copied", "skipped", "logged", "bytes", "retries")
LOGGED_FIELDS = ("blob_key", "error", "size")


def forward_status_files(log_dir: Path) -> list[Path]:
    """The forward backfill's status files (one per shard; not the rollback's reverse copy):
    in `log_dir` itself (a host's log dir) or one level down (the controller's copies, one
    directory per host)."""
    found = [*log_dir.glob("migrate_backend*-status.json")]
    found += log_dir.glob("*/migrate_backend*-status.json")
    return sorted(p for p in found if "-reverse" not in p.name)


def read_status(path: Path) -> tuple[float, dict[str, Any]] | None:
    """(mtime, status) of a status file, or None if it is absent or not a sealed status."""
    try:
        mtime = path.stat().st_mtime
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not is_sealed(raw) or not isinstance(raw.get("counts"), dict):
        return None
    return mtime, raw


class BackfillSampler:
    """`with BackfillSampler(log_dir) as s: <run the backfill>`; then `s.samples`."""

    def __init__(self, log_dir: Path, interval: float = 0.25, max_samples: int = 1000) -> None:
        self.log_dir = log_dir
        self.interval = interval
        self.max_samples = max_samples
        self.samples: list[dict[str, float | int]] = []
        self._seen: dict[Path, float] = {}
        self._statuses: dict[Path, dict[str, Any]] = {}
        self._t0 = 0.0
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._run, name="backfill-sampler", daemon=True)

    def __enter__(self) -> BackfillSampler:
        self._t0 = time.time()
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._halt.set()
        self._thread.join(30)
        self.sample()  # the final status, written as the backfill ended

    def _run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def sample(self) -> None:
        """One look at the status files: a sample if one of them changed since the last."""
        current: dict[Path, tuple[float, dict[str, Any]]] = {}
        for path in forward_status_files(self.log_dir):
            found = read_status(path)
            # Older than this phase: a previous run's file, not this backfill's progress.
            if found is not None and found[0] >= self._t0 - 1.0:
                current[path] = found
        if not current or all(self._seen.get(p) == m for p, (m, _) in current.items()):
            return
        self._seen = {p: m for p, (m, _) in current.items()}
        self._statuses = {p: s for p, (_, s) in current.items()}
        newest = max(m for m, _ in current.values())
        sample: dict[str, float | int] = {"t": round(max(0.0, newest - self._t0), 1)}
        for name in COUNTS:
            sample[name] = sum(int(s["counts"].get(name, 0) or 0) for _, s in current.values())
        self.samples.append(sample)
        if len(self.samples) > self.max_samples:
            # Keep the first and the last; halve the rest, and look half as often.
            self.samples = [*self.samples[:-1:2], self.samples[-1]]
            self.interval *= 2

    def logged(self, limit: int = 200) -> list[dict[str, Any]]:
        """The first `limit` records of the missing-blob logs the last statuses name
        (key, error, size), oldest log first."""
        logs = set()
        for status_file, st in self._statuses.items():
            for log in map(Path, st.get("logs") or []):
                # A log on another host: the controller keeps it beside its status file.
                logs.add(log if log.exists() else status_file.parent / log.name)
        records: list[dict[str, Any]] = []
        for log in sorted(logs):
            try:
                found, _ = read_log_records(log)
            except OSError:
                continue
            records += [{k: r.get(k) for k in LOGGED_FIELDS} for r in found]
            if len(records) >= limit:
                break
        return records[:limit]
