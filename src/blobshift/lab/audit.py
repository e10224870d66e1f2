"""The final audit: every blob the seed or the app wrote, and did not delete, is in the
given store with the same content."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from blobshift.s3.client import S3Client
from blobshift.settings import StoreSettings


def expected_blobs(state_dir: Path) -> dict[str, str]:
    """key -> MD5 from the seed digests and the app's ledger (writes minus deletes)."""
    seeded = state_dir / "seed-digests.json"
    expected: dict[str, str] = json.loads(seeded.read_text()) if seeded.exists() else {}
    ledger = state_dir / "ledger.jsonl"
    if ledger.exists():
        for line in ledger.read_text(encoding="utf-8").splitlines():
            entry = json.loads(line)
            if not entry["ok"]:
                continue
            if entry["op"] == "write":
                expected[entry["key"]] = entry["md5"]
            elif entry["op"] == "delete":
                expected.pop(entry["key"], None)
    return expected


async def missing_or_different(
    store: StoreSettings, expected: dict[str, str], concurrency: int = 16
) -> list[str]:
    """Keys of `expected` absent from `store` or whose content differs, sorted."""
    client = S3Client(store, max_connections=concurrency)
    sem = asyncio.Semaphore(concurrency)
    bad: list[str] = []

    async def check(key: str, md5: str) -> None:
        async with sem:
            if await client.head(key) is None:
                bad.append(key)
                return
            if await client.content_md5(key) != md5:
                bad.append(key)

    try:
        await asyncio.gather(*(check(k, v) for k, v in expected.items()))
    finally:
        client.close()
    return sorted(bad)
