"""Key fidelity: which kinds of key the target store holds exactly as written.

S3 stores differ on keys that look like paths: SeaweedFS folds `a//b` into `a/b` and turns
`x/` into a directory (a HEAD of it answers 0 bytes), some stores cap a path segment at 255
bytes or refuse `.` segments. A key the target cannot hold as written is lost or mangled
silently, and a key it lists under another name is never seen as present, so each pass
copies it again over what the app wrote since. So before the first copy the backfill writes,
reads back, lists and deletes one probe key of each risky class under a reserved prefix, and
refuses to start while a class fails, unless the operator chose to log such keys instead.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from blobshift.s3.client import S3Client, S3Error
from blobshift.s3.http import HTTPError

# Probe keys live here, one directory per probe run; nothing else may use this prefix.
PROBE_PREFIX = ".blobshift-key-probe/"


def _segments(key: str) -> list[int]:
    return [len(part.encode("utf-8")) for part in key.split("/")]


@dataclass(frozen=True)
class KeyClass:
    name: str
    probe: str  # a key of this class, under the probe directory
    matches: Callable[[str], bool]


KEY_CLASSES = (
    KeyClass("double slash", "a//b", lambda k: "//" in k),
    KeyClass("trailing slash", "dir/", lambda k: k.endswith("/")),
    KeyClass("dot segment", "a/./b/../c", lambda k: bool({".", ".."} & set(k.split("/")))),
    KeyClass("plus", "a+b", lambda k: "+" in k),
    KeyClass("percent", "p%41%zz%", lambda k: "%" in k),
    KeyClass("space", "a b", lambda k: " " in k),
    KeyClass("tilde", "~a~", lambda k: "~" in k),
    KeyClass("unicode", "naïve-ключ-鍵", lambda k: not k.isascii()),
    KeyClass("255-byte segment", "s" * 255, lambda k: any(101 <= n <= 255 for n in _segments(k))),
    KeyClass("segment over 255 bytes", "t" * 300, lambda k: any(n > 255 for n in _segments(k))),
)


def classes_of(key: str, names: frozenset[str]) -> list[str]:
    """The names among `names` of the classes `key` belongs to."""
    return [c.name for c in KEY_CLASSES if c.name in names and c.matches(key)]


async def unfaithful_classes(client: S3Client) -> list[str]:
    """Probe `client`'s bucket; the names of the key classes it does not hold as written.

    Every probe key is deleted again, whatever the outcome (best effort: a probe left
    behind sits under PROBE_PREFIX, which no app key uses)."""
    run = PROBE_PREFIX + secrets.token_hex(6) + "/"
    # One directory per class, so that no two probes interact (a folded "a//b" is "a/b").
    probes = {cls.name: f"{run}{i:02d}/{cls.probe}" for i, cls in enumerate(KEY_CLASSES)}
    listed: set[str] = set()

    async def faithful(cls: KeyClass) -> bool:
        key = probes[cls.name]
        body = f"blobshift key probe: {cls.name}\n".encode()
        md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
        try:
            await client.put(key, body, {"Content-MD5": md5})
            head = await client.head(key)
            return head is not None and head.size == len(body) and await _read(client, key) == body
        except (S3Error, HTTPError):
            return False

    try:
        # Concurrently: the probe delays every run's start, the run is waiting for it. But
        # the first alone: in a bucket never written to, SeaweedFS sets the bucket up on
        # its first PUT (~0.2 s), and PUTs racing that one each waited ~1 s.
        first, *rest = KEY_CLASSES
        results = [await faithful(first), *await asyncio.gather(*map(faithful, rest))]
        failed = {cls.name for cls, ok in zip(KEY_CLASSES, results, strict=True) if not ok}
        listed = {o.key async for o in client.iter_objects(run)}
        failed.update(name for name, key in probes.items() if key not in listed)
    finally:
        await _clean(client, run, set(probes.values()) | listed, relist=not listed)
    return [c.name for c in KEY_CLASSES if c.name in failed]


async def _read(client: S3Client, key: str) -> bytes:
    resp = await client.get(key)
    try:
        return await resp.read()
    finally:
        resp.release()


async def _clean(client: S3Client, run: str, keys: set[str], *, relist: bool) -> None:
    """Delete the probes and whatever the store made of them (folded keys, directories),
    which the probe's listing found, or a listing here when that one did not happen."""
    if relist:
        with contextlib.suppress(S3Error, HTTPError):
            keys |= {o.key async for o in client.iter_objects(run)}

    async def delete(key: str) -> None:
        # Absent already, or the store refused the key in the first place.
        with contextlib.suppress(S3Error, HTTPError):
            await client.delete(key)

    await asyncio.gather(*(delete(key) for key in keys))


__all__ = ["KEY_CLASSES", "PROBE_PREFIX", "KeyClass", "classes_of", "unfaithful_classes"]
