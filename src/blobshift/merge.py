"""One ordered merge of the old and the new listing, for the backfill and for `verify`.

Both listings come in S3 key order (UTF-8 byte order, which is also the code point order
Python compares `str` in), and `S3Client.iter_objects` refuses a listing whose keys do not
increase. So one forward pass over both pairs every key with its object on each side,
holding one page of each at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

from blobshift.s3.client import ObjectInfo


@dataclass(frozen=True, slots=True)
class Pair:
    """One key and what each listing holds for it (None: absent from that listing)."""

    key: str
    old: ObjectInfo | None
    new: ObjectInfo | None


async def merge_listings(
    old: AsyncIterator[ObjectInfo],
    new: AsyncIterator[ObjectInfo],
    *,
    stop_with_old: bool = False,
) -> AsyncIterator[Pair]:
    """Every key of either listing, once, in key order. `stop_with_old`: end with the old
    listing (the backfill has nothing to do for new keys past the last old one, so it
    need not list the rest of the new bucket)."""
    o = await anext(old, None)
    n = await anext(new, None)
    while o is not None or (n is not None and not stop_with_old):
        if n is None or (o is not None and o.key < n.key):
            assert o is not None
            yield Pair(o.key, o, None)
            o = await anext(old, None)
        elif o is None or n.key < o.key:
            yield Pair(n.key, None, n)
            n = await anext(new, None)
        else:
            yield Pair(o.key, o, n)
            o, n = await anext(old, None), await anext(new, None)


__all__ = ["Pair", "merge_listings"]
