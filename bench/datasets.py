"""The benchmark's data sets and a fast concurrent seeder (blobshift's own S3 client).

Keys look like the app's blob keys: 32 random hex characters, one flat namespace.
Everything is deterministic from a seed, so both tools always copy the same bytes.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

from blobshift.s3.client import S3Client
from blobshift.settings import StoreSettings

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True)
class Dataset:
    """A named set of (key, size) pairs living in one source bucket."""

    name: str
    bucket: str
    objects: tuple[tuple[str, int], ...]

    @property
    def count(self) -> int:
        return len(self.objects)

    @property
    def total_bytes(self) -> int:
        return sum(size for _, size in self.objects)


def _keys(rng: random.Random, n: int) -> Iterator[str]:
    for _ in range(n):
        yield f"{rng.getrandbits(128):032x}"


def uniform(name: str, n: int, size: int, seed: int) -> Dataset:
    rng = random.Random(seed)
    return Dataset(name, f"src-{name}", tuple((k, size) for k in _keys(rng, n)))


def mixed_size(rng: random.Random) -> int:
    """Mostly 1-64 KiB, some 1-8 MiB, a few 8-20 MiB (above the multipart threshold)."""
    roll = rng.random()
    if roll < 0.95:
        return rng.randint(1 * KIB, 64 * KIB)
    if roll < 0.99:
        return rng.randint(1 * MIB, 8 * MIB)
    return rng.randint(8 * MIB + 1, 20 * MIB)


def mixed(name: str, n: int, seed: int, max_size: int = 20 * MIB) -> Dataset:
    """The mixed set; `max_size` caps sizes (the smoke run keeps a few MiB only)."""
    rng = random.Random(seed)
    objects = tuple((k, min(mixed_size(rng), max_size)) for k in _keys(rng, n))
    return Dataset(name, f"src-{name}", objects)


def _body(size: int) -> bytes:
    return os.urandom(size)


async def _seed_worker(client: S3Client, items: Iterator[tuple[str, int]]) -> None:
    for key, size in items:  # workers share one iterator: each item is taken once
        await client.put(key, _body(size), {"Content-Type": "application/octet-stream"})


async def seed_async(store: StoreSettings, data: Dataset, concurrency: int) -> None:
    client = S3Client(store, max_connections=concurrency)
    try:
        items = iter(data.objects)
        await asyncio.gather(*(_seed_worker(client, items) for _ in range(concurrency)))
    finally:
        client.close()


async def bucket_stats_async(store: StoreSettings) -> tuple[int, int]:
    """(objects, bytes) in the bucket of `store`, from its listing."""
    client = S3Client(store, max_connections=2)
    count = total = 0
    try:
        async for obj in client.iter_objects():
            count += 1
            total += obj.size
    finally:
        client.close()
    return count, total


def bucket_stats(store: StoreSettings) -> tuple[int, int]:
    return asyncio.run(bucket_stats_async(store))


def seed(store: StoreSettings, data: Dataset, log: bool = True) -> float:
    """Seed `data` into `store`'s bucket unless it is already there; seconds spent."""
    started = time.monotonic()
    if bucket_stats(store) == (data.count, data.total_bytes):
        return 0.0
    biggest = max(size for _, size in data.objects)
    concurrency = 32 if biggest <= MIB else 4
    asyncio.run(seed_async(store, data, concurrency))
    got = bucket_stats(store)
    if got != (data.count, data.total_bytes):
        raise RuntimeError(f"seeding {data.name}: bucket holds {got}, expected {data.count}")
    elapsed = time.monotonic() - started
    if log:
        mb = data.total_bytes / 1e6
        print(f"  seeded {data.name}: {data.count:,} objects, {mb:,.0f} MB in {elapsed:.0f}s")
    return elapsed
