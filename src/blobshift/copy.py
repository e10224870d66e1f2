"""Copy one object from the old store to the new one, with integrity checks.

Every PUT carries a Content-MD5 the new store checks the body against, in one of three ways:

- small objects (up to STREAM_MIN): one GET read whole, its MD5 computed here and compared
  with the source's ETag, one PUT;
- larger objects up to the multipart threshold (200M, rclone's upload cutoff) whose source
  ETag is an MD5: the GET body is
  streamed straight into one PUT whose Content-MD5 is that ETag, so the new store checks
  the bytes end to end against the source's own checksum, and nothing is hashed or held
  here (rclone's way for single-part uploads). A store behind a body limit (the proxy's
  9M) answers such a PUT 413: that object goes again in parts, and so does every object
  of that size or more for the rest of the run (`Limits.refused_put_size`), so the
  default costs one refused request per run there, and nothing elsewhere;
- the rest (above the threshold, or a source ETag that is no MD5 and more than one part):
  a multipart upload, part by part, each part's MD5 computed here (in a thread); memory
  per copy is one part, and at most `Limits.large_copies` such copies run at once.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from blobshift.ratelimit import Limits
from blobshift.s3.client import NotFound, S3Client, S3Error, is_plain_md5, object_headers
from blobshift.s3.http import BodyStream, Response

MIB = 1024 * 1024
# rclone's upload cutoff: one streamed, end-to-end checked PUT is the cheapest copy up to
# there. Parts are boto3's size, and what the original proxy admits per request (9M).
DEFAULT_MULTIPART_THRESHOLD = 200 * MIB
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


def _multipart(size: int, etag: str | None, options: CopyOptions, limits: Limits) -> bool:
    """Whether an object of this size and source ETag (None: not known yet) is uploaded
    in parts."""
    if size > options.multipart_threshold:
        return True
    if limits.refused_put_size is not None and size >= limits.refused_put_size:
        return size > options.part_size
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

    A single PUT the new store refuses as too large (413, EntityTooLarge: a proxy's body
    limit below the multipart threshold, e.g. the default 200M behind nginx's 9M) is
    copied again in parts, when parts are smaller than what was refused; the run
    remembers that size (see the module's docstring).
    """
    try:
        return await _copy_object(old, new, key, limits, options, size_hint, etag_hint)
    except _TooLargeForOnePut as exc:
        if exc.size <= options.part_size:
            raise exc.error from None
        limits.refuse_single_put(exc.size)
        return await _copy_object(old, new, key, limits, options, exc.size, None)


class _TooLargeForOnePut(Exception):
    def __init__(self, size: int, error: S3Error) -> None:
        super().__init__(str(error))
        self.size = size
        self.error = error


async def _copy_object(
    old: S3Client,
    new: S3Client,
    key: str,
    limits: Limits,
    options: CopyOptions,
    size_hint: int | None,
    etag_hint: str | None,
) -> int:
    copied: int | None
    if size_hint is not None and _multipart(size_hint, etag_hint, options, limits):
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
        if _multipart(size, source_etag, options, limits):
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
        if exc.status == 413 or exc.code == "EntityTooLarge":
            raise _TooLargeForOnePut(size, exc) from None
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
    """Each part is read into one buffer, reused part after part and copy after copy,
    then hashed in a thread (off the event loop: hashlib lets go of the GIL) and
    uploaded. Memory per copy is one part. Reading part N+1 while part N is hashed and
    uploaded (two buffers) was measured too: no faster on the bench, more CPU and memory
    (bench/RESULTS.md)."""
    upload_id = await new.create_multipart(key, headers)
    etags: list[str] = []
    held = limits.part_buffers.take(options.part_size)
    buffer = memoryview(held)
    copied = 0
    try:
        while copied < size:
            want = min(options.part_size, size - copied)
            await limits.bytes(want)
            part = buffer[:want]
            got = await resp.readinto(part)
            if got != want:
                raise IntegrityError(f"GET {key}", f"read {copied + got} of {size} bytes")
            etags.append(await _upload_part(new, key, upload_id, len(etags) + 1, part))
            copied += want
        await new.complete_multipart(key, upload_id, etags)
    except BaseException:
        await new.abort_multipart(key, upload_id)
        raise
    finally:
        limits.part_buffers.give(held)
    return copied


async def _upload_part(
    new: S3Client, key: str, upload_id: str, number: int, part: memoryview
) -> str:
    digest = await asyncio.to_thread(_md5_digest, part)
    return await new.upload_part(key, upload_id, number, part, base64.b64encode(digest).decode())


def _md5_digest(data: bytes | memoryview) -> bytes:
    return hashlib.md5(data).digest()


__all__ = [
    "CopyOptions",
    "IntegrityError",
    "NotFound",
    "copy_object",
]
