"""The application's blob db, as a small reference implementation on boto3.

`S3BlobDB` talks to one store; `MigratingBlobDB` is what the app builds while the
migrating flag is on: write new, read new then old, delete on both. The load generator
uses these classes to prove the app keeps working while the runbook runs.

Credentials live only inside the boto3 client: no message or `repr` here contains them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
from collections.abc import Callable, Iterable, Iterator, Mapping
from itertools import islice
from typing import IO, Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import boto3
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from blobshift.settings import BlobSettings, StoreSettings

MiB = 1024 * 1024
# One request body never exceeds this: the proxy in front of the stores caps bodies at
# 9 MiB (client_max_body_size), sized for boto3's 8 MiB multipart parts.
DEFAULT_PART_SIZE = 8 * MiB
# Only these mean "this key is absent": NoSuchBucket on a GET is a configuration error and
# must not make a migrating db fall through to the old store. (A HEAD answer has no body,
# so there a missing bucket looks like a missing key.)
MISSING_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
# A body cut mid-stream is not retried by botocore (its retries end at the response
# headers); a GET is idempotent, so read() starts over.
BODY_ERRORS = (ResponseStreamingError, IncompleteReadError, ReadTimeoutError)

Content = bytes | bytearray | memoryview | IO[bytes]
T = TypeVar("T")


class BlobDBError(Exception):
    """A blob store failure, phrased without credentials."""


class NotFound(BlobDBError):
    """The blob `key` is not in the store."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key

    def __str__(self) -> str:
        return f"blob not found: {self.key!r}"


class BulkDeleteError(BlobDBError):
    """The store refused to delete some keys (`errors` maps key -> S3 error code)."""

    def __init__(self, store: str, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        sample = ", ".join(f"{k!r} ({c})" for k, c in list(self.errors.items())[:3])
        super().__init__(f"{store}: {len(self.errors)} key(s) not deleted, e.g. {sample}")


class BlobDB(Protocol):
    def put(
        self,
        key: str,
        content: Content,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None: ...
    def get(self, key: str) -> bytes: ...
    def open(self, key: str) -> IO[bytes]: ...
    def exists(self, key: str) -> bool: ...
    def size(self, key: str) -> int: ...
    def delete(self, key: str) -> bool: ...
    def bulk_delete(self, keys: Iterable[str]) -> bool: ...


def content_md5(data: bytes | bytearray | memoryview) -> str:
    return base64.b64encode(hashlib.md5(data, usedforsecurity=False).digest()).decode()


def is_missing(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") in MISSING_CODES


def client_config(store: StoreSettings) -> Config:
    """botocore Config from the store's settings, with the defaults non-AWS stores need."""
    kwargs: dict[str, Any] = dict(store.config)
    kwargs["s3"] = {"addressing_style": "path", **(kwargs.get("s3") or {})}
    kwargs.setdefault("signature_version", store.signature_version)
    # Recent botocore adds CRC32 checksum headers by default; Riak CS and other non-AWS
    # stores may refuse them.
    kwargs.setdefault("request_checksum_calculation", "when_required")
    kwargs.setdefault("response_checksum_validation", "when_required")
    try:
        return Config(**kwargs)
    except TypeError as exc:  # an unknown Config key: name it, never the secrets
        raise BlobDBError(f"{store.describe()}: invalid 'config': {exc}") from None


def make_client(store: StoreSettings) -> Any:
    """A boto3 S3 client for `store`, on its own session (no process-wide state)."""
    session = boto3.session.Session(
        aws_access_key_id=store.access_key,
        aws_secret_access_key=store.secret_key,
        region_name=store.region,
    )
    client = session.client(
        "s3", endpoint_url=store.url, verify=store.verify, config=client_config(store)
    )
    events = client.meta.events
    events.register("before-call.s3.DeleteObjects", _delete_objects_md5)
    if store.signature_version == "s3" and client.meta.config.s3["addressing_style"] == "path":
        events.register("before-sign.s3", _SigV2BucketSlash(store.url, store.bucket))
    return client


def _delete_objects_md5(params: dict[str, Any], **_: Any) -> None:
    """Send Content-MD5 on DeleteObjects instead of botocore's CRC32 header.

    S3 requires a body checksum on multi-object delete; older S3-compatible stores
    (Riak CS among them) only know Content-MD5.
    """
    params["headers"]["Content-MD5"] = content_md5(params["body"])
    params["context"].get("checksum", {}).pop("request_algorithm", None)


class _SigV2BucketSlash:
    """SigV2 + path style: send bucket-level requests to `/bucket/`, not `/bucket`.

    For ListObjects, DeleteObjects, ... botocore requests and signs the resource
    `/bucket` (as the SigV2 spec says for path style), but SeaweedFS canonicalises it as
    `/bucket/`, so every bucket-level request fails with SignatureDoesNotMatch. With the
    URL rewritten before signing, the path sent and the path signed are the same
    `/bucket/`, which the server verifies and routes like `/bucket`. Object requests are
    untouched.
    """

    def __init__(self, endpoint: str, bucket: str) -> None:
        self.bucket_path = urlsplit(endpoint).path.rstrip("/") + "/" + bucket

    def __call__(self, request: Any, **_: Any) -> None:
        parts = urlsplit(request.url)
        if parts.path == self.bucket_path:
            request.url = urlunsplit(parts._replace(path=self.bucket_path + "/"))


def read_full(stream: IO[bytes], size: int) -> bytes:
    """Up to `size` bytes; fewer only at end of stream (raw streams return short reads)."""
    buf = bytearray()
    while len(buf) < size:
        chunk = stream.read(size - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


def drain(head: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    """`head` then `rest`, popping `head` so a part is freed once it is uploaded."""
    while head:
        yield head.pop(0)
    yield from rest


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    it = iter(items)
    while batch := list(islice(it, size)):
        yield batch


class S3BlobDB:
    """Blobs in one bucket of one S3 store."""

    def __init__(
        self, store: StoreSettings, *, part_size: int = DEFAULT_PART_SIZE, read_attempts: int = 3
    ) -> None:
        if part_size < 5 * MiB:
            raise ValueError("part_size must be at least 5 MiB (the S3 minimum part size)")
        self.store = store
        self.bucket = store.bucket
        self.part_size = part_size
        self.read_attempts = max(1, read_attempts)
        self.client = make_client(store)

    def __repr__(self) -> str:
        return f"S3BlobDB({self.store.describe()})"

    def put(
        self,
        key: str,
        content: Content,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Store `content` (bytes or a binary file-like, read once, never seeked).

        Up to one part size it is one PUT; above, a multipart upload of part-size parts,
        so no request body exceeds what the proxy accepts. Every body carries Content-MD5.
        """
        extra: dict[str, Any] = {"Metadata": dict(metadata or {})}
        if content_type:
            extra["ContentType"] = content_type
        if isinstance(content, bytes | bytearray | memoryview):
            content = io.BytesIO(content)
        first = read_full(content, self.part_size)
        second = read_full(content, self.part_size) if len(first) == self.part_size else b""
        if not second:
            self.client.put_object(
                Bucket=self.bucket, Key=key, Body=first, ContentMD5=content_md5(first), **extra
            )
            return
        rest = iter(lambda: read_full(content, self.part_size), b"")
        self._put_multipart(key, drain([first, second], rest), extra)

    def _put_multipart(self, key: str, bodies: Iterator[bytes], extra: dict[str, Any]) -> None:
        target = {"Bucket": self.bucket, "Key": key}
        upload_id = self.client.create_multipart_upload(**target, **extra)["UploadId"]
        try:
            parts = []
            for number, body in enumerate(bodies, start=1):
                reply = self.client.upload_part(
                    **target,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    ContentMD5=content_md5(body),
                )
                parts.append({"ETag": reply["ETag"], "PartNumber": number})
            self.client.complete_multipart_upload(
                **target, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            # Best effort: an unfinished upload only costs space; the original error matters.
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(**target, UploadId=upload_id)
            raise

    def open(self, key: str) -> IO[bytes]:
        """The blob as a stream (a botocore StreamingBody); close it when done."""
        try:
            reply = self.client.get_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if is_missing(exc):
                raise NotFound(key) from None
            raise
        body: IO[bytes] = reply["Body"]
        return body

    def get(self, key: str) -> bytes:
        for attempt in range(1, self.read_attempts + 1):
            body = self.open(key)
            try:
                return body.read()
            except BODY_ERRORS:
                if attempt == self.read_attempts:
                    raise
            finally:
                body.close()
        raise AssertionError("unreachable")  # the loop returns or raises

    def _head(self, key: str) -> dict[str, Any]:
        try:
            head: dict[str, Any] = self.client.head_object(Bucket=self.bucket, Key=key)
            return head
        except ClientError as exc:
            if is_missing(exc):
                raise NotFound(key) from None
            raise

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def exists(self, key: str) -> bool:
        try:
            self._head(key)
        except NotFound:
            return False
        return True

    def delete(self, key: str) -> bool:
        """Delete `key`; True if it existed (S3's DELETE itself cannot tell)."""
        existed = self.exists(key)
        self.client.delete_object(Bucket=self.bucket, Key=key)
        return existed

    def bulk_delete(self, keys: Iterable[str]) -> bool:
        """Delete `keys` in chunks of `bulk_delete_chunksize` (one DeleteObjects each).

        True if the store acknowledged at least one delete. S3 acknowledges keys that
        were already absent, so this does not say which blobs existed. Keys the store
        refused raise `BulkDeleteError` once every chunk has been tried.
        """
        acknowledged = 0
        errors: dict[str, str] = {}
        for batch in chunks(keys, self.store.bulk_delete_chunksize):
            reply = self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True},
            )
            failed = {e["Key"]: e.get("Code", "?") for e in reply.get("Errors", [])}
            errors.update(failed)
            acknowledged += len(batch) - len(failed)
        if errors:
            raise BulkDeleteError(self.store.describe(), errors)
        return acknowledged > 0


class MigratingBlobDB:
    """Write new; read new, then old (no copy on read); delete on both."""

    def __init__(self, new: S3BlobDB, old: S3BlobDB) -> None:
        self.new = new
        self.old = old

    def __repr__(self) -> str:
        return f"MigratingBlobDB(new={self.new!r}, old={self.old!r})"

    def put(
        self,
        key: str,
        content: Content,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        self.new.put(key, content, content_type, metadata)

    def get(self, key: str) -> bytes:
        try:
            return self.new.get(key)
        except NotFound:
            return self.old.get(key)

    def open(self, key: str) -> IO[bytes]:
        try:
            return self.new.open(key)
        except NotFound:
            return self.old.open(key)

    def size(self, key: str) -> int:
        try:
            return self.new.size(key)
        except NotFound:
            return self.old.size(key)

    def exists(self, key: str) -> bool:
        return self.new.exists(key) or self.old.exists(key)

    def delete(self, key: str) -> bool:
        return self._on_both(lambda db: db.delete(key))

    def bulk_delete(self, keys: Iterable[str]) -> bool:
        keys = list(keys)  # iterated twice
        return self._on_both(lambda db: db.bulk_delete(keys))

    def _on_both(self, op: Callable[[S3BlobDB], bool]) -> bool:
        """Run `op` on new and old, old even if new failed: a blob left in old would be
        copied back by the backfill. The first error is raised after both ran."""
        results: list[bool] = []
        error: BaseException | None = None
        for db in (self.new, self.old):
            try:
                results.append(op(db))
            except Exception as exc:  # re-raised below, after the other store
                error = error or exc
        if error is not None:
            raise error
        return any(results)

    def __getattr__(self, name: str) -> Any:
        # Anything beyond the contract (client, bucket, store, ...) is the new store's.
        if name in ("new", "old"):  # not yet set (e.g. during unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.new, name)


def get_blob_db(settings: BlobSettings) -> S3BlobDB | MigratingBlobDB:
    """The blob db the app builds from its settings."""
    new = S3BlobDB(settings.new)
    if not settings.migrating:
        return new
    if settings.old is None:
        raise BlobDBError(f"{settings.path}: migrating, but the old store's settings are missing")
    return MigratingBlobDB(new, S3BlobDB(settings.old))
