"""Rate limits for reads from the old store, so the backfill cannot starve production."""

from __future__ import annotations

import asyncio
import re
import time

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(text: str) -> int:
    """'512K', '10M', '1.5G', '1048576' -> bytes (binary units, as rclone's --bwlimit)."""
    m = _SIZE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a size: use e.g. 512K, 10M, 1G")
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


class TokenBucket:
    """`rate` tokens per second, bursts up to one second's worth."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = asyncio.Lock()

    async def take(self, n: float) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
                self._stamp = now
                # A request larger than the bucket waits for a full bucket, then overdraws.
                need = min(n, self.capacity)
                if self._tokens >= need:
                    self._tokens -= n
                    return
                await asyncio.sleep((need - self._tokens) / self.rate)


class PartBuffers:
    """Part buffers kept from one multipart copy for the next: a fresh part-sized buffer
    costs a page fault (and the kernel zeroing a page) per 4 KiB, on 8 MiB parts more
    than copying the part into it. At most `keep` are kept (one per copy, at most
    `Limits.large_copies` copies at once), the rest are freed."""

    def __init__(self, keep: int) -> None:
        self._keep = keep
        self._free: list[bytearray] = []

    def take(self, size: int) -> bytearray:
        for i, buf in enumerate(self._free):
            if len(buf) == size:
                return self._free.pop(i)
        return bytearray(size)

    def give(self, buf: bytearray) -> None:
        if len(self._free) < self._keep:
            self._free.append(buf)


class Limits:
    """--max-rps (objects read per second), --bwlimit (bytes read per second), and how
    many multipart copies run at once (each holds a part in memory, from `part_buffers`)."""

    def __init__(
        self, max_rps: float | None = None, bwlimit: int | None = None, large_copies: int = 4
    ) -> None:
        self._rps = TokenBucket(max_rps) if max_rps else None
        self._bw = TokenBucket(bwlimit) if bwlimit else None
        self.large_copies = asyncio.Semaphore(large_copies)
        self.part_buffers = PartBuffers(keep=large_copies)
        # The smallest single PUT the new store refused as too large (a proxy's body
        # limit, 413): from then on, objects that big go in parts without trying.
        self.refused_put_size: int | None = None

    def refuse_single_put(self, size: int) -> None:
        if self.refused_put_size is None or size < self.refused_put_size:
            self.refused_put_size = size

    async def request(self) -> None:
        if self._rps is not None:
            await self._rps.take(1)

    async def bytes(self, n: int) -> None:
        if self._bw is not None and n:
            await self._bw.take(n)
