"""Copy one object from the old store to the new one, with integrity checks.

Every PUT carries a Content-MD5 the new store checks the body against, in one of three ways:

- small objects (up to STREAM_MIN): one GET read whole, its MD5 computed here and compared
  with the source's ETag, one PUT;
- larger objects up to the multipart threshold whose source ETag is an MD5: the GET body is
  streamed straight into one PUT whose Content-MD5 is that ETag, so the new store checks
  the bytes end to end against the source's own checksum, and nothing is hashed or held
  here (rclone's way for single-part uploads);
- the rest (above the threshold, or a source ETag that is no MD5 and more than one part):
  a multipart upload, part by part, each part's MD5 computed here; memory per copy is one
  part, and at most `Limits.large_copies` such copies run at once.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from blobshift.ratelimit import Limits
from blobshift.s3.client import NotFound, S3Client, S3Error, is_plain_md5, object_headers
from blobshift.s3.http import BodyStream, Response

MIB = 1024 * 1024
# boto3's own defaults, and what the original proxy admits per request (9M body limit).
DEFAULT_MULTIPART_THRESHOLD = 8 * MIB
DEFAULT_PART_SIZE = 8 * MIB
# Up to this size a body is read whole and hashed here; above it, streamed.
STREAM_MIN = 1 * MIB
STREAM_CHUNK = 256 * 1024


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


def _md5_b64(data: bytes) -> tuple[str, str]:
    digest = hashlib.md5(data).digest()
    return base64.b64encode(digest).decode(), digest.hex()


def _multipart(size: int, etag: str | None, options: CopyOptions) -> bool:
    """Whether an object of this size and source ETag (None: not known yet) is uploaded
    in parts."""
    if size > options.multipart_threshold:
        return True
    return size > STREAM_MIN and etag is not None and not is_plain_md5(etag)


async def copy_object(
    old: S3Client,
    new: S3Client,
    key: str,
    limits: Limits,
    options: CopyOptions,
    size_hint: int | None = None,
    etag_hint: str | None = None,
) -> int:
    """Copy `key`; returns the bytes copied. Raises NotFound if old lacks it.

    An object known (from the listing's size and ETag) to need a multipart upload waits
    for a multipart slot before its GET, so that memory stays bounded whatever the number
    of workers. Without hints, the GET's headers decide.
    """
    copied: int | None
    if size_hint is not None and _multipart(size_hint, etag_hint, options):
        async with limits.large_copies:
            copied = await _copy(old, new, key, limits, options, slot_held=True)
    else:
        copied = await _copy(old, new, key, limits, options, slot_held=False)
    if copied is None:  # a multipart upload after all: wait for a slot, GET again
        async with limits.large_copies:
            copied = await _copy(old, new, key, limits, options, slot_held=True)
    assert copied is not None
    return copied


async def _copy(
    old: S3Client,
    new: S3Client,
    key: str,
    limits: Limits,
    options: CopyOptions,
    slot_held: bool,
) -> int | None:
    """The copy, or None when it needs a multipart slot that is not held."""
    await limits.request()
    resp = await old.get(key)
    try:
        size = int(resp.headers.get("content-length", "0"))
        source_etag = resp.headers.get("etag", "").strip('"')
        headers = object_headers(resp.headers)
        if _multipart(size, source_etag, options):
            # Not waiting for a slot with the GET open: an idle response times out.
            if not slot_held:
                return None
            return await _copy_multipart(resp, new, key, size, headers, limits, options)
        if size > STREAM_MIN:
            return await _copy_streamed(resp, new, key, size, source_etag, headers, limits)
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
    finally:
        resp.release()


async def _copy_streamed(
    resp: Response,
    new: S3Client,
    key: str,
    size: int,
    source_etag: str,
    headers: dict[str, str],
    limits: Limits,
) -> int:
    headers["Content-MD5"] = base64.b64encode(bytes.fromhex(source_etag)).decode()

    async def chunks() -> AsyncIterator[bytes]:
        async for chunk in resp.iter_chunks(STREAM_CHUNK):
            await limits.bytes(len(chunk))
            yield chunk

    try:
        etag = await new.put_stream(key, BodyStream(size, chunks()), headers)
    except S3Error as exc:
        # What arrived is not what the source's ETag says. Riak CS says InvalidDigest
        # for a mismatch too (riak_cs_put_fsm:is_digest_valid/2), S3 BadDigest.
        if exc.code in ("BadDigest", "InvalidDigest"):
            raise IntegrityError(f"PUT {key}", "content does not match the source ETag") from None
        raise
    if etag and is_plain_md5(etag) and etag != source_etag:
        raise IntegrityError(f"PUT {key}", "stored ETag differs from the source ETag")
    return size


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


__all__ = [
    "CopyOptions",
    "IntegrityError",
    "NotFound",
    "copy_object",
]
