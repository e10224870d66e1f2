"""The key probe's order of requests (blobshift.fidelity), on an in-process store: the
first probe alone, then the rest together. In a bucket never written to, SeaweedFS sets
the bucket up on its first PUT, and PUTs racing that one each waited ~1 s: the probe took
1.0 s of the run's start instead of 0.23 s (bench/RESULTS.md, 2026-12-01 21:00 UTC)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from blobshift.fidelity import KEY_CLASSES, unfaithful_classes


@dataclass
class _Head:
    size: int


@dataclass
class _Listed:
    key: str


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    async def read(self) -> bytes:
        return self.data

    def release(self) -> None:
        pass


class Store:
    """Holds every key as written; records when each PUT starts and ends."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.events: list[tuple[str, str]] = []

    async def put(self, key: str, body: bytes, headers: dict[str, str]) -> str:
        self.events.append(("start", key))
        await asyncio.sleep(0.01)
        self.objects[key] = body
        self.events.append(("end", key))
        return ""

    async def head(self, key: str) -> _Head | None:
        return _Head(len(self.objects[key])) if key in self.objects else None

    async def get(self, key: str) -> _Body:
        return _Body(self.objects[key])

    async def iter_objects(self, prefix: str):
        for key in sorted(self.objects):
            if key.startswith(prefix):
                yield _Listed(key)

    async def delete(self, key: str) -> None:
        self.objects.pop(key, None)


def test_the_first_probe_goes_alone_and_the_rest_together() -> None:
    store = Store()
    assert asyncio.run(unfaithful_classes(store)) == []  # type: ignore[arg-type]
    first = store.events[0][1]
    assert store.events[1] == ("end", first)  # nothing else started before it ended
    # The others overlap: all of them started before the first of them ended.
    rest = store.events[2:]
    starts = [i for i, (what, _) in enumerate(rest) if what == "start"]
    assert len(starts) == len(KEY_CLASSES) - 1
    assert max(starts) < min(i for i, (what, _) in enumerate(rest) if what == "end")
    assert store.objects == {}  # every probe deleted
