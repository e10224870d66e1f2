"""`verify`: prove every old blob is in the new store, intact. The gate of the flip.

One ordered pass over both listings: missing in new, size mismatches, ETag mismatches
where both ETags are plain MD5s. Where an ETag is a multipart one (not an MD5 of the
content), `--checksum` downloads both sides and compares their MD5s. Candidates for
"missing" are looked up again at the end: a blob the app deleted from both stores
during the pass is not missing.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blobshift.progress import Output, Progress
from blobshift.runfiles import utc_iso, write_json_atomic
from blobshift.s3.client import ObjectInfo, RetryPolicy, is_plain_md5
from blobshift.settings import BlobSettings
from blobshift.stores import open_stores, preflight

# Offending keys kept in the report, per category; counts are always complete.
MAX_KEYS_IN_REPORT = 100_000


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
    accepted: list[str] = field(default_factory=list)
    checksum: bool = False
    elapsed: float = 0.0

    @property
    def problems(self) -> int:
        return (
            len(self.missing)
            + len(self.size_mismatch)
            + len(self.etag_mismatch)
            + len(self.content_mismatch)
        )

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
    prefix: str = "",
    num_workers: int = 8,
    accept: set[str] | None = None,
    out: Output | None = None,
) -> VerifyReport:
    out = out or Output()
    report = VerifyReport(checksum=checksum)
    started = time.monotonic()
    retry = RetryPolicy(attempts=5)
    async with open_stores(settings, num_workers) as (old, new):
        await preflight(old, new, settings_path=settings.path)
        sem = asyncio.Semaphore(num_workers)
        pending: set[asyncio.Task[None]] = set()
        progress = Progress(out)

        async def compare_content(o: ObjectInfo) -> None:
            async with sem:
                a, b = await asyncio.gather(
                    retry.run(lambda: old.content_md5(o.key)),
                    retry.run(lambda: new.content_md5(o.key)),
                )
            if a == b:
                report.matched_by_content += 1
            else:
                report.content_mismatch.append(o.key)

        new_iter = new.iter_objects(prefix).__aiter__()
        n: ObjectInfo | None = await anext(new_iter, None)
        candidates: list[str] = []
        async for o in old.iter_objects(prefix):
            report.old_objects += 1
            while n is not None and n.key < o.key:
                report.new_objects += 1
                report.extra_in_new += 1
                n = await anext(new_iter, None)
            if n is None or n.key != o.key:
                candidates.append(o.key)
                continue
            report.new_objects += 1
            if n.size != o.size:
                report.size_mismatch.append(o.key)
            elif is_plain_md5(o.etag) and is_plain_md5(n.etag):
                if o.etag == n.etag:
                    report.matched += 1
                else:
                    report.etag_mismatch.append(o.key)
            elif checksum:
                task = asyncio.create_task(compare_content(o))
                pending.add(task)
                task.add_done_callback(pending.discard)
                if len(pending) >= num_workers * 2:
                    await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            else:
                report.size_only += 1
            n = await anext(new_iter, None)
            if report.old_objects % 5000 == 0:
                progress.show(f"verify: {report.old_objects:,} old objects compared")
        while n is not None:
            report.new_objects += 1
            report.extra_in_new += 1
            n = await anext(new_iter, None)
        if pending:
            await asyncio.gather(*pending)
        for key in candidates:
            if await new.head(key) is not None:
                report.matched += 1  # the app or a late copy put it there during the pass
            elif await old.head(key) is None:
                report.deleted_during_pass += 1
            else:
                report.missing.append(key)
    if accept:
        report.accepted = sorted(k for k in report.missing if k in accept)
        report.missing = [k for k in report.missing if k not in accept]
    for name in ("missing", "size_mismatch", "etag_mismatch", "content_mismatch"):
        del getattr(report, name)[MAX_KEYS_IN_REPORT:]
    report.elapsed = round(time.monotonic() - started, 2)
    return report


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
    if report.accepted:
        lines.append(f"  accepted as lost by the operator: {len(report.accepted)}")
    for name in ("missing", "size_mismatch", "etag_mismatch", "content_mismatch"):
        for key in getattr(report, name)[:10]:
            lines.append(f"  {name}: {key}")
    lines.append("verify: CLEAN" if report.clean else f"verify: {report.problems} PROBLEM(S)")
    return lines


def write_report(report: VerifyReport, path: Path, settings: BlobSettings) -> None:
    data = report.as_dict()
    data["generated"] = utc_iso()
    data["old"] = settings.old.describe() if settings.old else None
    data["new"] = settings.new.describe()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, data)


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


__all__ = ["VerifyReport", "load_accept_list", "summarize", "verify", "write_report"]
