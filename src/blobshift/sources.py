"""Where the keys to copy come from: the old bucket's listing or a manifest file.

Both stream: a listing page or a manifest line at a time, never the whole key set.
Each yields `(position, work)`: the checkpoint position after this key, and the work to
do for it: a `Work`, `PRESENT` (already in new: nothing to do) or None (another shard's).

A listing is split between hosts either by hashing each key (`Shard.owns`: every host
lists everything) or by a range plan (blobshift.ranges: each host lists only its ranges).
"""

from __future__ import annotations

import contextlib
import enum
import json
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal

from blobshift.merge import merge_listings
from blobshift.s3.client import S3Client

if TYPE_CHECKING:
    from blobshift.ranges import KeyRange

MANIFEST_FIELDS = ("parent_id", "type_code", "domain")


class Presence(enum.Enum):
    """A typed sentinel: the key is already in the new store, there is nothing to do."""

    PRESENT = "present"


PRESENT: Final = Presence.PRESENT


class ManifestError(ValueError):
    pass


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str) -> Shard:
        """'I/N' with 0 <= I < N: this host takes the keys whose hash falls in shard I."""
        try:
            i, n = (int(part) for part in text.split("/"))
        except ValueError:
            raise ValueError(f"--shard {text!r}: expected I/N, e.g. 0/2 and 1/2") from None
        if n < 1 or not 0 <= i < n:
            raise ValueError(
                f"--shard {text!r}: need N >= 1 and 0 <= I < N, e.g. 0/2 and 1/2 for two hosts"
            )
        return cls(i, n)

    def owns(self, key: str) -> bool:
        # crc32 is stable across processes and hosts, unlike hash().
        return self.count == 1 or zlib.crc32(key.encode("utf-8")) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True, slots=True)
class Work:
    key: str
    size: int | None = None
    meta: dict[str, Any] | None = None
    # From a manifest nothing is known about the new side: look before copying.
    check_new: bool = False
    etag: str | None = None  # the old store's, from its listing


Job = Work | Literal[Presence.PRESENT] | None


async def listing_source(
    old: S3Client,
    new: S3Client,
    prefix: str,
    start_after: str,
    shard: Shard,
    ranges: Sequence[KeyRange] | None = None,
) -> AsyncIterator[tuple[str, Job]]:
    """Merge both listings in key order: a key already in new needs no request at all.

    With `ranges` (the shard's own, in key order) both stores are listed over those
    ranges only, each from the checkpoint on; without, over everything after it, and
    `shard` picks keys by hash.
    """
    if ranges is None:
        spans: list[tuple[str, str | None]] = [(start_after, None)]
    else:
        # Ranges that end at or before the checkpoint are done: not listed again.
        spans = [
            (max(r.after, start_after), r.upto)
            for r in ranges
            if r.upto is None or r.upto > start_after
        ]
    for after, upto in spans:
        async with (
            contextlib.aclosing(old.iter_objects(prefix, after, upto)) as old_objects,
            contextlib.aclosing(new.iter_objects(prefix, after, upto)) as new_objects,
        ):
            async for pair in merge_listings(old_objects, new_objects, stop_with_old=True):
                obj = pair.old
                if obj is None:
                    continue  # only in new: nothing to copy
                if ranges is None and not shard.owns(obj.key):
                    yield obj.key, None
                elif pair.new is not None:
                    yield obj.key, PRESENT
                else:
                    yield obj.key, Work(obj.key, obj.size, etag=obj.etag)


def parse_manifest_line(line: str) -> dict[str, Any] | None:
    """A manifest record, or None when the line is not one."""
    try:
        rec = json.loads(line)
    except json.JSONDecodeError:
        return None
    if not isinstance(rec, dict) or not isinstance(rec.get("blob_key"), str) or not rec["blob_key"]:
        return None
    return rec


def scan_manifest(path: Path) -> int:
    """Validate the whole manifest before any copy; returns its number of records."""
    count = 0
    try:
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                if parse_manifest_line(line) is None:
                    raise ManifestError(
                        f'{path}:{lineno}: not a JSON object with a non-empty "blob_key": '
                        "fix or delete that line (one JSON object per line)"
                    )
                count += 1
    except OSError as exc:
        raise ManifestError(
            f"{path}: cannot read manifest ({exc.strerror}): check the --keys-from path"
        ) from None
    except UnicodeDecodeError:
        raise ManifestError(
            f"{path}: manifest is not UTF-8 text: pass the JSON lines manifest file"
        ) from None
    return count


def manifest_meta(rec: dict[str, Any]) -> dict[str, Any]:
    return {k: rec[k] for k in MANIFEST_FIELDS if k in rec}


async def manifest_source(
    path: Path, start_offset: int, prefix: str, shard: Shard
) -> AsyncIterator[tuple[str, Work | None]]:
    """Manifest records after byte `start_offset`; position = byte offset after the line."""
    with open(path, "rb") as fh:
        fh.seek(start_offset)
        offset = start_offset
        for raw in fh:
            offset += len(raw)
            rec = parse_manifest_line(raw.decode("utf-8")) if raw.strip() else None
            if rec is None:
                continue
            key = rec["blob_key"]
            if not key.startswith(prefix) or not shard.owns(key):
                yield str(offset), None
                continue
            yield str(offset), Work(key, None, manifest_meta(rec), check_new=True)
