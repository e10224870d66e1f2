"""`verify`: prove every old blob is in the new store, intact. The gate of the flip.

One ordered pass over both listings: missing in new, size mismatches, ETag mismatches
where both ETags are plain MD5s. Where an ETag is a multipart one (not an MD5 of the
content), `--checksum` downloads both sides and compares their MD5s; `--metadata` compares
the headers that describe each object (content type, encoding, disposition, cache
control, user metadata). Keys missing from the new listing are looked up again at the
end and compared by the same rules: a blob the app deleted from both stores during the
pass is not missing, and one the new store answers for with other bytes is not matched.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blobshift.merge import merge_listings
from blobshift.metrics import UNSHARDED, WRITE_INTERVAL, RunMetrics, Snapshot, published
from blobshift.progress import Output, Progress
from blobshift.runfiles import utc_iso, write_json_atomic
from blobshift.s3.client import ObjectInfo, RetryPolicy, S3Client, is_plain_md5
from blobshift.settings import BlobSettings
from blobshift.stores import open_stores, preflight

# Offending keys kept in the report, per category; counts are always complete.
MAX_KEYS_IN_REPORT = 100_000
PROBLEMS = ("missing", "size_mismatch", "etag_mismatch", "content_mismatch", "metadata_mismatch")


@dataclass
class VerifyReport:
    old_objects: int = 0
    new_objects: int = 0
    matched: int = 0
    matched_by_content: int = 0
    size_only: int = 0
    extra_in_new: int = 0
    deleted_during_pass: int = 0
    missing: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    etag_mismatch: list[str] = field(default_factory=list)
    content_mismatch: list[str] = field(default_factory=list)
    metadata_mismatch: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    checksum: bool = False
    metadata: bool = False
    elapsed: float = 0.0

    @property
    def problems(self) -> int:
        return sum(len(getattr(self, name)) for name in PROBLEMS)

    @property
    def clean(self) -> bool:
        return self.problems == 0

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["clean"] = self.clean
        d["problems"] = self.problems
        return d


async def verify(
    settings: BlobSettings,
    *,
    checksum: bool = False,
    metadata: bool = False,
    prefix: str = "",
    num_workers: int = 8,
    accept: set[str] | None = None,
    out: Output | None = None,
    metrics_file: Path | None = None,
    metrics_interval: float = WRITE_INTERVAL,
) -> VerifyReport:
    out = out or Output()
    report = VerifyReport(checksum=checksum, metadata=metadata)
    started = time.monotonic()
    retry = RetryPolicy(attempts=5)
    clients: list[S3Client] = []
    metrics = (
        None
        if metrics_file is None
        else RunMetrics(
            metrics_file,
            "verify",
            UNSHARDED,
            lambda: _snapshot(report, clients),
            interval=metrics_interval,
            out=out,
        )
    )
    async with published(metrics), open_stores(settings, num_workers, "verify") as (old, new):
        clients += (old, new)
        if metrics is not None:
            metrics.observe(old, new)
        await preflight(old, new, settings_path=settings.path)
        sem = asyncio.Semaphore(num_workers)
        pending: set[asyncio.Task[None]] = set()
        progress = Progress(out)

        async def compare_content(key: str) -> None:
            async with sem:
                a, b = await asyncio.gather(
                    retry.run(lambda: old.content_md5(key)),
                    retry.run(lambda: new.content_md5(key)),
                )
            if a == b:
                report.matched_by_content += 1
            else:
                report.content_mismatch.append(key)

        async def compare_metadata(key: str) -> None:
            async with sem:
                a, b = await asyncio.gather(old.head(key), new.head(key))
            if a is None or b is None:
                return  # deleted meanwhile: the pass's own counts tell
            if not same_metadata(a.headers, b.headers):
                report.metadata_mismatch.append(key)

        async def spawn(job: Awaitable[None]) -> None:
            task = asyncio.ensure_future(job)
            pending.add(task)
            task.add_done_callback(pending.discard)
            if len(pending) >= num_workers * 2:
                await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)

        async def compare(o: ObjectInfo, n: ObjectInfo) -> None:
            """The one rule for a key on both sides, in the pass and in the late look-up."""
            if n.size != o.size:
                report.size_mismatch.append(o.key)
                return
            if metadata:
                await spawn(compare_metadata(o.key))
            if is_plain_md5(o.etag) and is_plain_md5(n.etag):
                if o.etag == n.etag:
                    report.matched += 1
                else:
                    report.etag_mismatch.append(o.key)
            elif checksum:
                await spawn(compare_content(o.key))
            else:
                report.size_only += 1

        candidates: list[ObjectInfo] = []
        pairs = merge_listings(old.iter_objects(prefix), new.iter_objects(prefix))
        async for pair in pairs:
            if pair.new is not None:
                report.new_objects += 1
            if pair.old is None:
                report.extra_in_new += 1
                continue
            report.old_objects += 1
            if pair.new is None:
                candidates.append(pair.old)
            else:
                await compare(pair.old, pair.new)
            if report.old_objects % 5000 == 0:
                progress.show(f"verify: {report.old_objects:,} old objects compared")
        # Not in the new listing: the app or a late copy may have put it there during the
        # pass, or the app deleted it from both. A key the new store answers for but does
        # not list (a store that folds "//" or turns "x/" into a directory) is compared
        # like any other: answering is not matching.
        for o in candidates:
            n = await new.head(o.key)  # retried inside
            if n is not None:
                await compare(o, ObjectInfo(o.key, n.size, n.etag))
            elif await old.head(o.key) is None:
                report.deleted_during_pass += 1
            else:
                report.missing.append(o.key)
        if pending:
            await asyncio.gather(*pending)
        # Inside the block: the metrics' final write comes after these.
        if accept:
            report.accepted = sorted(k for k in report.missing if k in accept)
            report.missing = [k for k in report.missing if k not in accept]
        for name in PROBLEMS:
            keys = getattr(report, name)
            keys.sort()  # concurrent comparisons end in any order
            del keys[MAX_KEYS_IN_REPORT:]
        report.elapsed = round(time.monotonic() - started, 2)
    return report


def _snapshot(report: VerifyReport, clients: list[S3Client]) -> Snapshot:
    """The report's counts so far, for the metrics file."""
    checked = {
        "matched": report.matched,
        "matched_by_content": report.matched_by_content,
        "size_only": report.size_only,
        "extra_in_new": report.extra_in_new,
        "deleted_during_pass": report.deleted_during_pass,
        "accepted": len(report.accepted),
    }
    checked.update((name, len(getattr(report, name))) for name in PROBLEMS)
    retries: Counter[str] = Counter()
    for client in clients:
        retries.update(client.retry_causes)
    return Snapshot(listed=report.old_objects, checked=checked, retries=retries)


def same_metadata(old: Mapping[str, str], new: Mapping[str, str]) -> bool:
    """Every header that describes the old object is in the new one, byte for byte, and the
    new one has no user metadata of its own. A content type only the new store has is its
    default for an object stored without one, not a change."""
    if any(new.get(name) != value for name, value in old.items()):
        return False
    return all(name in old for name in new if name.startswith("x-amz-meta-"))


def summarize(report: VerifyReport) -> list[str]:
    lines = [
        f"verify: {report.old_objects} objects in old, {report.new_objects} in new "
        f"({report.extra_in_new} only in new)",
        f"  matched by ETag: {report.matched}, by content: {report.matched_by_content}, "
        f"size only (multipart ETag, use --checksum): {report.size_only}",
        f"  missing in new: {len(report.missing)}, size mismatch: {len(report.size_mismatch)}, "
        f"ETag mismatch: {len(report.etag_mismatch)}, content mismatch: "
        f"{len(report.content_mismatch)}, deleted during the pass: {report.deleted_during_pass}",
    ]
    if report.metadata:
        lines.append(f"  metadata mismatch: {len(report.metadata_mismatch)}")
    if report.accepted:
        lines.append(f"  accepted as lost by the operator: {len(report.accepted)}")
    for name in PROBLEMS:
        for key in getattr(report, name)[:10]:
            lines.append(f"  {name}: {key}")
    lines.append("verify: CLEAN" if report.clean else f"verify: {report.problems} PROBLEM(S)")
    return lines


def report_document(report: VerifyReport, settings: BlobSettings) -> dict[str, Any]:
    """The JSON report: the file of --report / --json-file, and what --json prints."""
    data = report.as_dict()
    data["generated"] = utc_iso()
    data["old"] = settings.old.describe() if settings.old else None
    data["new"] = settings.new.describe()
    return data


def write_report(report: VerifyReport, path: Path, settings: BlobSettings) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, report_document(report, settings))


def load_accept_list(path: Path) -> set[str]:
    """Keys the operator accepts as lost: one per line, or JSON lines with blob_key."""
    keys: set[str] = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("{"):
            keys.add(json.loads(line)["blob_key"])
        else:
            keys.add(line)
    return keys


__all__ = [
    "VerifyReport",
    "load_accept_list",
    "same_metadata",
    "summarize",
    "verify",
    "write_report",
]
