"""`check-blob-logs`: classify every blob a backfill logged as missing.

In order: present in new ("Found in new db"); present in old ("Found in old db", copied
now with --migrate); its key is absent from the current manifest ("Not referenced":
deleted while the backfill ran); otherwise "Not found".
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blobshift.copy import CopyOptions, copy_object
from blobshift.metrics import UNSHARDED, WRITE_INTERVAL, RunMetrics, Snapshot, published
from blobshift.progress import Output
from blobshift.ratelimit import Limits
from blobshift.runfiles import read_log_records
from blobshift.s3.client import RetryPolicy, S3Client
from blobshift.settings import BlobSettings
from blobshift.sources import parse_manifest_line
from blobshift.stores import open_stores, preflight

FOUND_NEW = "Found in new db"
FOUND_OLD = "Found in old db"
MIGRATED = "Migrated from old db"
NOT_REFERENCED = "Not referenced"
NOT_FOUND = "Not found"
CATEGORIES = (FOUND_NEW, FOUND_OLD, NOT_REFERENCED, NOT_FOUND)
UNTYPED = "(no type)"


class LogFormatError(ValueError):
    """A missing-blob log holds a line that is not a record: refused before any work."""


def validate_log(path: Path) -> None:
    """Refuse a log with a line that is not a record. A last line without its newline is
    a write torn by a crash or a full disk (its key was redone on resume): tolerated."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise LogFormatError(f"{path}: cannot read log ({exc.strerror})") from None
    lines = data.split(b"\n")
    for lineno, raw in enumerate(lines, 1):
        if not raw.strip() or (lineno == len(lines) and raw):
            continue  # blank, or the torn tail (data not ending in a newline)
        try:
            rec = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            rec = None
        if not isinstance(rec, dict) or not isinstance(rec.get("blob_key"), str):
            raise LogFormatError(
                f"{path}:{lineno}: not a missing-blob record (one JSON object with "
                '"blob_key" per line): pass only backfill logs, fix or delete that line, '
                "or add --skip-malformed"
            )


@dataclass
class CheckResult:
    by_type: dict[str, dict[str, int]] = field(default_factory=dict)
    records: int = 0
    malformed: int = 0
    duplicates: int = 0
    migrated: int = 0
    migrate_failed: int = 0
    not_found_keys: list[str] = field(default_factory=list)

    def total(self, category: str) -> int:
        return sum(counts.get(category, 0) for counts in self.by_type.values())

    @property
    def exit_code(self) -> int:
        left_in_old = self.total(FOUND_OLD) - self.migrated
        return 0 if self.total(NOT_FOUND) == 0 and left_in_old == 0 else 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "malformed": self.malformed,
            "duplicates": self.duplicates,
            "migrated": self.migrated,
            "migrate_failed": self.migrate_failed,
            "by_type": self.by_type,
            "totals": {c: self.total(c) for c in CATEGORIES},
            "not_found_keys": self.not_found_keys,
        }


def manifest_keys(path: Path) -> set[str]:
    keys: set[str] = set()
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            rec = parse_manifest_line(line) if line.strip() else None
            if rec is not None:
                keys.add(rec["blob_key"])
    return keys


async def check_blob_logs(
    settings: BlobSettings,
    logs: list[Path],
    *,
    migrate: bool = False,
    num_workers: int = 15,
    keys_from: Path | None = None,
    out: Output | None = None,
    metrics_file: Path | None = None,
    metrics_interval: float = WRITE_INTERVAL,
) -> CheckResult:
    out = out or Output()
    result = CheckResult()
    by_key: dict[str, dict[str, Any]] = {}
    for log in logs:
        recs, bad = read_log_records(log)
        for rec in recs:
            # One blob logged by several runs (or passes) is one blob: classify it once.
            result.duplicates += rec["blob_key"] in by_key
            by_key.setdefault(rec["blob_key"], rec)
        result.malformed += bad
        if bad:
            out.line(f"{log}: {bad} malformed line(s) skipped")
    records = list(by_key.values())
    result.records = len(records)
    if result.duplicates:
        out.line(f"{result.duplicates} key(s) logged more than once were checked once")
    referenced = manifest_keys(keys_from) if keys_from is not None else None
    counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CATEGORIES, 0))
    limits, retry, copy_opts = Limits(), RetryPolicy(attempts=5), CopyOptions()
    clients: list[S3Client] = []
    metrics = (
        None
        if metrics_file is None
        else RunMetrics(
            metrics_file,
            "check-blob-logs",
            UNSHARDED,
            lambda: _snapshot(result, counts, clients),
            interval=metrics_interval,
            out=out,
        )
    )

    async with (
        published(metrics),
        open_stores(settings, num_workers, "check-blob-logs") as (old, new),
    ):
        clients += (old, new)
        if metrics is not None:
            metrics.observe(old, new)
        await preflight(old, new, settings_path=settings.path)
        sem = asyncio.Semaphore(num_workers)

        async def classify(rec: dict[str, Any]) -> None:
            key = rec["blob_key"]
            async with sem:
                category = await _category(key, old, new, referenced)
                if category == FOUND_OLD and migrate:
                    try:
                        await retry.run(lambda: copy_object(old, new, key, limits, copy_opts))
                        result.migrated += 1
                        out.line(f"{MIGRATED}: {key}")
                    except Exception as exc:
                        result.migrate_failed += 1
                        out.line(f"could not migrate {key}: {exc}")
            counts[str(rec.get("type_code") or UNTYPED)][category] += 1
            if category == NOT_FOUND:
                result.not_found_keys.append(key)

        await asyncio.gather(*(classify(r) for r in records))
    result.by_type = {t: dict(c) for t, c in sorted(counts.items())}
    for type_name, c in result.by_type.items():
        out.line(f"{type_name}: checked {sum(c.values())} records")
        for category in CATEGORIES:
            out.line(f"  {category}: {c[category]}")
    if result.malformed:
        out.line(f"malformed lines: {result.malformed}")
    return result


def _snapshot(
    result: CheckResult, counts: dict[str, dict[str, int]], clients: list[S3Client]
) -> Snapshot:
    """The classification so far, for the metrics file (categories as metric labels)."""
    checked = dict.fromkeys((_label(c) for c in CATEGORIES), 0)
    for by_category in list(counts.values()):
        for category, n in by_category.items():
            checked[_label(category)] += n
    retries: Counter[str] = Counter()
    for client in clients:
        retries.update(client.retry_causes)
    return Snapshot(
        listed=result.records,
        copied=result.migrated,
        logged=result.migrate_failed,
        checked=checked,
        retries=retries,
    )


def _label(category: str) -> str:
    return category.lower().replace(" ", "_")  # "Found in old db" -> found_in_old_db


async def _category(key: str, old: S3Client, new: S3Client, referenced: set[str] | None) -> str:
    if await new.head(key) is not None:
        return FOUND_NEW
    if await old.head(key) is not None:
        return FOUND_OLD
    if referenced is not None and key not in referenced:
        return NOT_REFERENCED
    return NOT_FOUND
