"""Copy one object from the old store to the new one, with integrity checks.

Small objects: one GET, one PUT with Content-MD5 (the server checks the body). Large
objects: streamed part by part into a multipart upload, so memory per copy is one part.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from blobshift.ratelimit import Limits
from blobshift.s3.client import KEPT_HEADERS, NotFound, S3Client, S3Error, is_plain_md5
from blobshift.s3.http import Response

MIB = 1024 * 1024
# boto3's own defaults, and what the original proxy admits per request (9M body limit).
DEFAULT_MULTIPART_THRESHOLD = 8 * MIB
DEFAULT_PART_SIZE = 8 * MIB


class IntegrityError(S3Error):
    """What we read or what the server stored does not match the source's checksum."""

    def __init__(self, what: str, message: str) -> None:
        super().__init__(0, "IntegrityError", message, what)

    @property
    def retryable(self) -> bool:
        return True  # a corrupted read is worth reading again


@dataclass(frozen=True)
class CopyOptions:
    multipart_threshold: int = DEFAULT_MULTIPART_THRESHOLD
    part_size: int = DEFAULT_PART_SIZE


def kept_headers(resp: Response) -> dict[str, str]:
    """The headers that describe the object: content type/encoding/disposition, metadata."""
    out: dict[str, str] = {}
    for name, value in resp.headers.items():
        if name in KEPT_HEADERS or name.startswith("x-amz-meta-"):
            out[name] = value
    return out


def _md5_b64(data: bytes) -> tuple[str, str]:
    digest = hashlib.md5(data).digest()
    return base64.b64encode(digest).decode(), digest.hex()


async def copy_object(
    old: S3Client,
    new: S3Client,
    key: str,
    limits: Limits,
    options: CopyOptions,
    size_hint: int | None = None,
) -> int:
    """Copy `key`; returns the bytes copied. Raises NotFound if old lacks it.

    A large object (by `size_hint`, from the listing) waits for a multipart slot before
    its GET, so that memory stays bounded whatever the number of workers.
    """
    if size_hint is not None and size_hint > options.multipart_threshold:
        async with limits.large_copies:
            return await _copy(old, new, key, limits, options, slot_held=True)
    return await _copy(old, new, key, limits, options, slot_held=False)


async def _copy(
    old: S3Client,
    new: S3Client,
    key: str,
    limits: Limits,
    options: CopyOptions,
    slot_held: bool,
) -> int:
    await limits.request()
    resp = await old.get(key)
    try:
        size = int(resp.headers.get("content-length", "0"))
        source_etag = resp.headers.get("etag", "").strip('"')
        headers = kept_headers(resp)
        if size <= options.multipart_threshold:
            await limits.bytes(size)
            body = await resp.read()
            if len(body) != size:
                raise IntegrityError(f"GET {key}", f"read {len(body)} of {size} bytes")
            md5_b64, md5_hex = _md5_b64(body)
            if is_plain_md5(source_etag) and source_etag != md5_hex:
                raise IntegrityError(f"GET {key}", "content does not match the source ETag")
            headers["Content-MD5"] = md5_b64
            etag = await new.put(key, body, headers)
            if etag and is_plain_md5(etag) and etag != md5_hex:
                raise IntegrityError(f"PUT {key}", "stored ETag differs from the content MD5")
            return size
        if slot_held:
            return await _copy_multipart(resp, new, key, size, headers, limits, options)
        async with limits.large_copies:  # size unknown before the GET (manifest)
            return await _copy_multipart(resp, new, key, size, headers, limits, options)
    finally:
        resp.release()


async def _copy_multipart(
    resp: Response,
    new: S3Client,
    key: str,
    size: int,
    headers: dict[str, str],
    limits: Limits,
    options: CopyOptions,
) -> int:
    upload_id = await new.create_multipart(key, headers)
    etags: list[str] = []
    copied = 0
    try:
        while copied < size:
            want = min(options.part_size, size - copied)
            await limits.bytes(want)
            part = await resp.read_up_to(want)
            if len(part) != want:
                raise IntegrityError(f"GET {key}", f"read {copied + len(part)} of {size} bytes")
            md5_b64, _ = _md5_b64(part)
            etags.append(await new.upload_part(key, upload_id, len(etags) + 1, part, md5_b64))
            copied += want
        await new.complete_multipart(key, upload_id, etags)
    except BaseException:
        await new.abort_multipart(key, upload_id)
        raise
    return copied


__all__ = ["CopyOptions", "IntegrityError", "NotFound", "copy_object", "kept_headers"]
