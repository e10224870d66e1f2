"""Seed data for the lab: blobs of mixed sizes with odd key names, and their manifest.

Deterministic for a given seed, so a run can be repeated and audited: every blob's MD5
is returned and the manifest holds one JSON line per blob (blob_key, parent_id,
type_code), as the app's blob metadata would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from blobshift.s3.client import S3Client
from blobshift.settings import StoreSettings

KIB, MIB = 1024, 1024 * 1024
TYPE_CODES = ("form_xml", "form_attachment", "case_attachment", "export", "tempfile")
# Names a real blob db holds besides plain uuids: spaces, unicode, URL-special characters.
ODD_NAMES = (
    "photo 1.jpg",
    "naïve café.pdf",
    "a+b=c.txt",
    "100%.csv",
    "x%2Fy",
    "файл.bin",
    "表.xml",
)


CONTENT_TYPE = "application/octet-stream"
# As the app's boto3 does: above 8 MiB, parts of 8 MiB, which the proxy's body limit admits.
PART = 8 * MIB


def _md5_b64(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


async def put_multipart(client: S3Client, key: str, body: bytes) -> None:
    upload_id = await client.create_multipart(key, {"Content-Type": CONTENT_TYPE})
    parts = [body[i : i + PART] for i in range(0, len(body), PART)]
    etags = [
        await client.upload_part(key, upload_id, n, part, _md5_b64(part))
        for n, part in enumerate(parts, 1)
    ]
    await client.complete_multipart(key, upload_id, etags)


@dataclass(frozen=True)
class SeedSpec:
    count: int = 3000
    seed: int = 42
    large_every: int = 200  # one blob in N is 1-8 MiB
    huge_every: int = 1000  # one blob in N is above the 8 MiB multipart threshold


def blob_size(rng: random.Random, i: int, spec: SeedSpec) -> int:
    if i % spec.huge_every == spec.huge_every - 1:
        return rng.randint(9 * MIB, 20 * MIB)
    if i % spec.large_every == spec.large_every - 1:
        return rng.randint(1 * MIB, 8 * MIB)
    if i % 97 == 0:
        return 0
    return rng.randint(1 * KIB, 64 * KIB)


def blob_key(rng: random.Random, i: int) -> tuple[str, str]:
    parent = f"{rng.getrandbits(64):016x}"
    if i % 50 == 7:
        return f"{parent}/{ODD_NAMES[i % len(ODD_NAMES)]}", parent
    return f"{parent}/{rng.getrandbits(128):032x}", parent


async def seed_store(
    store: StoreSettings, manifest: Path, spec: SeedSpec, concurrency: int = 16
) -> dict[str, str]:
    """Write `spec.count` blobs to `store`; returns key -> MD5 hex and writes the manifest."""
    rng = random.Random(spec.seed)
    client = S3Client(store, max_connections=concurrency)
    sem = asyncio.Semaphore(concurrency)
    digests: dict[str, str] = {}
    rows: list[str] = []

    async def put(key: str, body: bytes) -> None:
        async with sem:
            if len(body) > PART:
                await put_multipart(client, key, body)
            else:
                headers = {"Content-MD5": _md5_b64(body), "Content-Type": CONTENT_TYPE}
                await client.put(key, body, headers)
        digests[key] = hashlib.md5(body).hexdigest()

    tasks = []
    try:
        for i in range(spec.count):
            key, parent = blob_key(rng, i)
            body = rng.randbytes(blob_size(rng, i, spec))
            type_code = TYPE_CODES[i % len(TYPE_CODES)]
            rows.append(json.dumps({"blob_key": key, "parent_id": parent, "type_code": type_code}))
            tasks.append(asyncio.create_task(put(key, body)))
            if len(tasks) >= concurrency * 4:
                await asyncio.gather(*tasks)
                tasks.clear()
        await asyncio.gather(*tasks)
    finally:
        client.close()
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return digests
