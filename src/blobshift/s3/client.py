"""An asyncio S3 client for the backfill, the log check and verify.

Covers what those need and nothing more: HEAD/GET/PUT of objects, ListObjects V1/V2,
multipart uploads, with SigV2 or SigV4 and bounded retries. Secrets stay inside the
signer; no message built here contains one.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import ssl
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple, TypeVar
from urllib.parse import quote, unquote_plus, urlsplit

from blobshift import __version__
from blobshift.s3.http import MAX_ERROR_BODY, BodyStream, HTTPError, Pool, Response
from blobshift.s3.signing import SigV2Signer, SigV4Signer
from blobshift.settings import StoreSettings

T = TypeVar("T")

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
RETRY_CODES = frozenset(
    {"SlowDown", "RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling"}
)
# A 1000-key listing page of long, URL-encoded keys stays well under this.
MAX_LISTING_PAGE = 16 * 1024 * 1024


def user_agent(command: str) -> str:
    """The engine's User-Agent: names blobshift and the command, so that the proxy's store
    log tells the engine's reads from the app's (blobshift.readiness)."""
    return f"blobshift/{__version__} ({command})"


DEFAULT_USER_AGENT = user_agent("engine")
# Headers that describe the object and must survive the copy.
KEPT_HEADERS = ("content-type", "content-encoding", "content-disposition", "cache-control")


class S3Error(Exception):
    def __init__(self, status: int, code: str, message: str, what: str) -> None:
        super().__init__(f"{what}: HTTP {status} {code}: {message}".strip())
        self.status = status
        self.code = code

    @property
    def retryable(self) -> bool:
        return self.status in RETRY_STATUS or self.code in RETRY_CODES


class NotFound(S3Error):
    pass


class SigningRuleChanged(S3Error):
    """Refused under one SigV4 whitespace rule; the client now signs by the other: retry."""

    @property
    def retryable(self) -> bool:
        return True


class BadListing(S3Error):
    """A listing answer that cannot be trusted to continue the pass (retried)."""

    def __init__(self, what: str, message: str) -> None:
        super().__init__(200, "BadListing", message, what)

    @property
    def retryable(self) -> bool:
        return True  # a proxy or a busy node may answer nonsense once


class ObjectInfo(NamedTuple):
    key: str
    size: int
    etag: str


class ObjectHead(NamedTuple):
    """What a HEAD tells: a listing's fields plus the headers that describe the object."""

    key: str
    size: int
    etag: str
    headers: dict[str, str]


def object_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers that describe an object and must survive a copy (lower-case names)."""
    return {
        name: value
        for name, value in headers.items()
        if name in KEPT_HEADERS or name.startswith("x-amz-meta-")
    }


def is_plain_md5(etag: str) -> bool:
    """A single-part ETag is the hex MD5 of the content; a multipart one is not."""
    return len(etag) == 32 and "-" not in etag


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, S3Error):
        return exc.retryable
    return isinstance(exc, HTTPError | TimeoutError | ConnectionError)


def retry_cause(exc: BaseException) -> str:
    """Why a retryable error was retried, as one word of a small, fixed set (a metric
    label): the S3 error code when it is a known retryable one, else the HTTP status, else
    the kind of transport failure."""
    if isinstance(exc, SigningRuleChanged):
        return "SigningRuleChanged"
    if isinstance(exc, S3Error):
        if exc.code in RETRY_CODES or exc.code in ("BadListing", "IntegrityError"):
            return exc.code
        return f"HTTP{exc.status}" if exc.status in RETRY_STATUS else "other"
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionError):  # HTTPError too: refused, reset, timed out, garbled
        return "connection"
    return "other"


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter, a bounded number of attempts."""

    attempts: int = 8
    base: float = 0.1
    cap: float = 8.0

    def delay(self, attempt: int) -> float:
        return random.uniform(0, min(self.cap, self.base * (2**attempt)))

    async def run(
        self,
        op: Callable[[], Awaitable[T]],
        on_retry: Callable[[BaseException], None] | None = None,
    ) -> T:
        for attempt in range(self.attempts):
            try:
                return await op()
            except Exception as exc:
                if not is_retryable(exc) or attempt == self.attempts - 1:
                    raise
                if on_retry is not None:
                    on_retry(exc)
                await asyncio.sleep(self.delay(attempt))
        raise AssertionError("unreachable")


def _tls_context(verify: bool | str) -> ssl.SSLContext:
    if verify is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    if isinstance(verify, str):
        return ssl.create_default_context(cafile=verify)
    return ssl.create_default_context()


def _text(elem: ET.Element, name: str) -> str:
    for child in elem:
        if child.tag.endswith(name):
            return child.text or ""
    return ""


class S3Client:
    """One bucket on one endpoint, as described by a `StoreSettings`."""

    def __init__(
        self,
        store: StoreSettings,
        *,
        max_connections: int | None = None,
        retry: RetryPolicy | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        self.store = store
        self.user_agent = user_agent
        self.retry = retry or RetryPolicy()
        # Requests retried by this client, by cause, for the run's counts and metrics.
        self.retry_causes: Counter[str] = Counter()
        # Called with (operation, seconds) after each request's answer (or failure), for
        # the run's latency metrics; operation is the method, or LIST for a listing.
        self.on_request: Callable[[str, float], None] | None = None
        url = urlsplit(store.url)
        tls = _tls_context(store.verify) if url.scheme == "https" else None
        port = url.port or (443 if tls else 80)
        addressing = dict(store.config.get("s3") or {}).get("addressing_style", "path")
        self.virtual = addressing == "virtual"
        host = f"{store.bucket}.{url.hostname}" if self.virtual else str(url.hostname)
        default_port = (tls and port == 443) or (not tls and port == 80)
        self.host_header = host if default_port else f"{host}:{port}"
        self.base_path = url.path.rstrip("/")
        self.pool = Pool(
            host,
            port,
            tls=tls,
            size=max_connections or store.max_pool_connections,
            connect_timeout=store.connect_timeout,
            read_timeout=store.read_timeout,
        )
        self.sigv2 = store.signature_version == "s3"
        self._trimall_switched = False
        self.signer: SigV2Signer | SigV4Signer = (
            SigV2Signer(store.access_key, store.secret_key, riakcs=store.dialect == "riakcs")
            if self.sigv2
            else SigV4Signer(store.access_key, store.secret_key, store.region)
        )

    def __repr__(self) -> str:
        return f"S3Client({self.store.describe()})"

    @property
    def retries(self) -> int:
        return sum(self.retry_causes.values())

    def _retried(self, exc: BaseException) -> None:
        self.retry_causes[retry_cause(exc)] += 1

    def close(self) -> None:
        self.pool.close()

    # -- request plumbing ------------------------------------------------------------

    def _paths(self, key: str | None) -> tuple[str, str]:
        """(path on the wire, path the signer signs) for an object or the bucket.

        The bucket itself is addressed as `/bucket/` with a trailing slash: SigV2
        stores differ on whether `/bucket` or `/bucket/` is the canonical resource
        (SeaweedFS signs the latter), and the slash makes what we send and what we
        sign the same string everywhere.
        """
        tail = "/" + quote(key, safe="/~") if key is not None else "/"
        if self.virtual:
            wire = self.base_path + tail
            return wire, (f"/{self.store.bucket}{tail}" if self.sigv2 else wire)
        wire = f"{self.base_path}/{self.store.bucket}{tail}"
        return wire, wire

    async def request(
        self,
        method: str,
        key: str | None,
        *,
        query: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        body: bytes | memoryview | BodyStream = b"",
        what: str = "",
    ) -> Response:
        """One signed request; raises S3Error (NotFound on 404) for error statuses."""
        what = what or f"{method} {key or self.store.bucket}"
        target, hdrs = self.prepare(method, key, query=query, headers=headers)
        started = time.monotonic()
        try:
            resp = await self.pool.request(method, target, hdrs, body)
        finally:
            if self.on_request is not None:
                op = "LIST" if key is None and method == "GET" else method
                self.on_request(op, time.monotonic() - started)
        if resp.status >= 300:
            data = b"" if method == "HEAD" else await resp.read(limit=MAX_ERROR_BODY)
            resp.release()
            error = self._error(resp.status, data, what)
            if (
                error.code == "SignatureDoesNotMatch"
                and isinstance(self.signer, SigV4Signer)
                and not self._trimall_switched
                and self.signer.ambiguous(hdrs)
            ):
                # The server folds whitespace in header values by the other rule: sign by
                # that one from now on (once per client: a server keeps to one rule).
                self._trimall_switched = True
                self.signer.spaces_only = not self.signer.spaces_only
                raise SigningRuleChanged(error.status, error.code, str(error), what)
            raise error
        return resp

    def prepare(
        self,
        method: str,
        key: str | None,
        *,
        query: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[str, dict[str, str]]:
        """The request target and the signed headers, exactly as `request` sends them.

        `query` values are plain text (encoded here); header values are bytes carried in a
        latin-1 `str`, one character per byte, which is how they go on the wire. No I/O.
        """
        wire, signed = self._paths(key)
        q = [(k, quote(v, safe="-_.~")) for k, v in (query or [])]
        # Not signed (neither signer signs User-Agent): a proxy may rewrite it.
        hdrs = {"Host": self.host_header, "User-Agent": self.user_agent}
        if headers:
            hdrs.update(headers)
        self.signer.sign(method, signed, q, hdrs)
        target = wire
        if q:
            target += "?" + "&".join(f"{k}={v}" if v else k for k, v in q)
        return target, hdrs

    def _error(self, status: int, data: bytes, what: str) -> S3Error:
        code, message = "", ""
        if data:
            try:
                root = ET.fromstring(data)
                code, message = _text(root, "Code"), _text(root, "Message")
            except ET.ParseError:
                message = data[:200].decode("utf-8", "replace")
        if not code:
            code = {403: "AccessDenied", 404: "NotFound"}.get(status, "")
        cls = NotFound if status == 404 and code != "NoSuchBucket" else S3Error
        return cls(status, code, message, f"{self.store.name} {what}")

    # -- objects -----------------------------------------------------------------

    async def head(self, key: str) -> ObjectHead | None:
        async def op() -> ObjectHead | None:
            try:
                resp = await self.request("HEAD", key)
            except NotFound:
                return None
            resp.release()
            h = resp.headers
            size, etag = int(h.get("content-length", 0)), h.get("etag", "").strip('"')
            return ObjectHead(key, size, etag, object_headers(h))

        return await self.retry.run(op, self._retried)

    async def get(self, key: str) -> Response:
        """Start a GET; the caller streams the body (no retry here: the copy retries)."""
        return await self.request("GET", key)

    async def content_md5(self, key: str) -> str:
        """Hex MD5 of the object's content, streamed (ETags cannot tell for multipart)."""
        resp = await self.get(key)
        digest = hashlib.md5()
        try:
            async for chunk in resp.iter_chunks(1 << 20):
                digest.update(chunk)
        finally:
            resp.release()
        return digest.hexdigest()

    async def put(self, key: str, body: bytes | memoryview, headers: dict[str, str]) -> str:
        async def op() -> str:
            resp = await self.request("PUT", key, headers=headers, body=body)
            await resp.read(limit=MAX_ERROR_BODY)
            return resp.headers.get("etag", "").strip('"')

        return await self.retry.run(op, self._retried)

    async def put_stream(self, key: str, body: BodyStream, headers: dict[str, str]) -> str:
        """PUT a streamed body; not retried here (its chunks cannot be produced twice)."""
        resp = await self.request("PUT", key, headers=headers, body=body)
        await resp.read(limit=MAX_ERROR_BODY)
        return resp.headers.get("etag", "").strip('"')

    async def create_multipart(self, key: str, headers: dict[str, str]) -> str:
        async def op() -> str:
            resp = await self.request("POST", key, query=[("uploads", "")], headers=headers)
            return _text(ET.fromstring(await resp.read(limit=MAX_ERROR_BODY)), "UploadId")

        return await self.retry.run(op, self._retried)

    async def upload_part(
        self, key: str, upload_id: str, number: int, body: bytes | memoryview, md5_b64: str
    ) -> str:
        async def op() -> str:
            query = [("partNumber", str(number)), ("uploadId", upload_id)]
            headers = {"Content-MD5": md5_b64}
            resp = await self.request("PUT", key, query=query, headers=headers, body=body)
            await resp.read(limit=MAX_ERROR_BODY)
            return resp.headers.get("etag", "")

        return await self.retry.run(op, self._retried)

    async def complete_multipart(self, key: str, upload_id: str, etags: list[str]) -> None:
        parts = "".join(
            f"<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
            for n, etag in enumerate(etags, 1)
        )
        body = f"<CompleteMultipartUpload>{parts}</CompleteMultipartUpload>".encode()

        async def op() -> None:
            resp = await self.request(
                "POST",
                key,
                query=[("uploadId", upload_id)],
                body=body,
                headers={"Content-Type": "application/xml"},
            )
            data = await resp.read(limit=MAX_ERROR_BODY)
            # S3 may answer 200 with an error document after a long completion.
            if b"<Error>" in data:
                raise self._error(500, data, f"complete multipart {key}")

        await self.retry.run(op, self._retried)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            resp = await self.request("DELETE", key, query=[("uploadId", upload_id)])
            await resp.read(limit=MAX_ERROR_BODY)
        except (S3Error, HTTPError):
            pass  # best effort: an orphaned upload costs space, not correctness

    async def delete(self, key: str) -> None:
        async def op() -> None:
            resp = await self.request("DELETE", key)
            await resp.read(limit=MAX_ERROR_BODY)

        await self.retry.run(op, self._retried)

    # -- listing -------------------------------------------------------------------

    async def list_page(
        self, prefix: str, start_after: str, max_keys: int = 1000
    ) -> tuple[list[ObjectInfo], bool]:
        """One page of keys after `start_after`, in S3 (UTF-8 byte) order, and truncated?

        A page that is not a listing, a truncated page without keys, or keys that do not
        increase from `start_after` are refused (and retried): each would end or skip a
        pass silently.
        """
        query = [("encoding-type", "url"), ("max-keys", str(max_keys))]
        if prefix:
            query.append(("prefix", prefix))
        if self.store.list_version == 1:
            if start_after:
                query.append(("marker", start_after))
        else:
            query.append(("list-type", "2"))
            if start_after:
                query.append(("start-after", start_after))

        async def op() -> tuple[list[ObjectInfo], bool]:
            resp = await self.request("GET", None, query=query, what="list")
            return self._parse_listing(await resp.read(limit=MAX_LISTING_PAGE), start_after)

        return await self.retry.run(op, self._retried)

    def _parse_listing(self, data: bytes, start_after: str) -> tuple[list[ObjectInfo], bool]:
        what = f"{self.store.name} list after {start_after!r}"
        try:
            root = ET.fromstring(data)
        except ET.ParseError as exc:
            raise BadListing(what, f"the answer is not XML ({exc})") from None
        if root.tag.rpartition("}")[2] == "Error":
            code, message = _text(root, "Code"), _text(root, "Message")
            raise BadListing(what, f"HTTP 200 with an error document: {code} {message}".strip())
        if root.tag.rpartition("}")[2] != "ListBucketResult":
            raise BadListing(what, f"the answer is a <{root.tag}>, not a <ListBucketResult>")
        # Keys are URL-encoded only when the answer says so (botocore's rule): Riak CS
        # ignores encoding-type and sends raw keys, in which "+" and "%" are literal.
        encoded = _text(root, "EncodingType").lower() == "url"
        entries: list[ObjectInfo] = []
        truncated = False
        last = start_after
        for child in root:
            tag = child.tag.rpartition("}")[2]
            if tag == "Contents":
                key = size = etag = ""
                for field_ in child:
                    name = field_.tag.rpartition("}")[2]
                    if name == "Key":
                        key = field_.text or ""
                    elif name == "Size":
                        size = field_.text or "0"
                    elif name == "ETag":
                        etag = (field_.text or "").strip('"')
                if encoded:
                    key = unquote_plus(key)
                if key <= last:
                    raise BadListing(
                        what,
                        f"key {key!r} does not come after {last!r}: the store does not list "
                        "in key order or ignores marker/start-after (Riak CS: list_version 1; "
                        "a store that lists in another order: --keys-from a manifest)",
                    )
                try:
                    entries.append(ObjectInfo(key, int(size), etag))
                except ValueError:
                    raise BadListing(what, f"key {key!r} has no valid <Size>") from None
                last = key
            elif tag == "IsTruncated":
                truncated = (child.text or "").strip().lower() == "true"
        if truncated and not entries:
            raise BadListing(what, "a truncated page without keys: cannot tell where to go on")
        return entries, truncated

    async def iter_objects(
        self, prefix: str = "", start_after: str = "", upto: str | None = None
    ) -> AsyncGenerator[ObjectInfo, None]:
        """Every object after `start_after` (and at or before `upto`, if given), page by
        page; the next page is fetched while the caller consumes the current one, and only
        one page is held at a time. No page past `upto` is asked for (a range shard lists
        only its own ranges)."""
        if upto is not None and start_after >= upto:
            return
        page, truncated = await self.list_page(prefix, start_after)
        while True:
            nxt = None
            if upto is not None and page and page[-1].key >= upto:
                page, truncated = [e for e in page if e.key <= upto], False
            if truncated:
                nxt = asyncio.ensure_future(self.list_page(prefix, page[-1].key))
            try:
                for entry in page:
                    yield entry
            except BaseException:  # the consumer stopped early: drop the prefetch
                if nxt is not None:
                    nxt.cancel()
                raise
            if nxt is None:
                return
            page, truncated = await nxt

    async def preflight(self) -> None:
        """One cheap signed request: reachable, credentials accepted, bucket present.

        Retried briefly (well under a second): the operator is waiting for the answer."""
        query = [("max-keys", "1")] + ([] if self.store.list_version == 1 else [("list-type", "2")])

        async def op() -> None:
            resp = await self.request("GET", None, query=query, what="list")
            await resp.read(limit=MAX_ERROR_BODY)

        await RetryPolicy(attempts=4).run(op)
