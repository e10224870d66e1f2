"""Experimental stand-ins for `blobshift.s3.http.Pool` on aiohttp and on httpcore (h11).

Bench code, not product code: bench/wire_layers.py swaps one of these in for the engine's
own Pool (`blobshift.s3.client.Pool`) to compare client CPU per object. Each implements
what S3Client uses: `Pool(host, port, *, tls, size, connect_timeout, read_timeout)`,
`await pool.request(method, target, headers, body) -> response`, `pool.close()`, and a
response with `status`, `headers` (a dict by lower-case name), `read(limit=)`,
`read_up_to(size)`, `iter_chunks(size)` and `release()`.

Both set Content-Length exactly as the engine's Pool does (a streamed PUT must not go
chunked: S3 wants the length), send the target as given (the signer signed it, nothing
may re-quote it), and add no header of their own that a signature would cover. Library
errors become the engine's HTTPError, so the engine's retries see what they expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpcore
import yarl

from blobshift.s3.http import BodyStream, HTTPError

Body = bytes | memoryview | BodyStream


def _length_header(method: str, body: Body, headers: dict[str, str]) -> dict[str, str]:
    length = body.length if isinstance(body, BodyStream) else len(body)
    if length or method in ("PUT", "POST"):
        headers = {**headers, "Content-Length": str(length)}
    return headers


def _too_large(limit: int) -> HTTPError:
    return HTTPError(f"a body larger than the {limit} bytes accepted here")


# -- aiohttp ---------------------------------------------------------------------------


class AiohttpResponse:
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.reason = resp.reason or ""
        # S3Client wants a plain dict by lower-case name (object_headers iterates it).
        self.headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in resp.raw_headers
        }

    async def read(self, limit: int | None = None) -> bytes:
        try:
            if limit is not None and (self._resp.content_length or 0) > limit:
                self._resp.close()
                raise _too_large(limit)
            data = await self._resp.read()
        except aiohttp.ClientError as exc:
            raise HTTPError(f"aiohttp: {exc!r}") from None
        finally:
            self._resp.release()
        if limit is not None and len(data) > limit:
            raise _too_large(limit)
        return data

    async def read_up_to(self, size: int) -> bytes:
        content = self._resp.content
        try:
            try:
                return await content.readexactly(size)
            except asyncio.IncompleteReadError as exc:
                return exc.partial
        except aiohttp.ClientError as exc:
            raise HTTPError(f"aiohttp: {exc!r}") from None

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_chunked(size):
                yield chunk
        except aiohttp.ClientError as exc:
            raise HTTPError(f"aiohttp: {exc!r}") from None

    def release(self) -> None:
        self._resp.release()  # closes the connection if the body was not read to the end


class AiohttpPool:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        size: int,
        connect_timeout: float,
        read_timeout: float,
        **_: Any,
    ) -> None:
        self.host, self.port, self.tls, self.size = host, port, tls, size
        self.base = f"{'https' if tls else 'http'}://{host}:{port}"
        self.timeout = aiohttp.ClientTimeout(sock_connect=connect_timeout, sock_read=read_timeout)
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily: it needs the running loop
            connector = aiohttp.TCPConnector(
                limit=self.size, limit_per_host=self.size, ssl=self.tls or False
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=self.timeout,
                auto_decompress=False,
                # Nothing a signature covers may be added (SigV2 signs Content-Type).
                skip_auto_headers=("User-Agent", "Content-Type", "Accept", "Accept-Encoding"),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def request(self, method: str, target: str, headers: dict[str, str], body: Body = b""):
        session = self._get_session()
        url = yarl.URL(self.base + target, encoded=True)  # as signed: no re-quoting
        data: Any = body
        if isinstance(body, BodyStream):
            data = body.chunks
        elif not body:
            data = None
        try:
            resp = await session.request(
                method, url, headers=_length_header(method, body, headers), data=data
            )
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HTTPError(f"aiohttp: {exc!r}") from None
        return AiohttpResponse(resp)

    def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            # ClientSession.close() is a coroutine; Pool.close() is not. The connector's
            # close() does its work at once (the session is then closed too).
            if session.connector is not None:
                session.connector.close()


# -- httpcore (h11) ----------------------------------------------------------------------


class HttpcoreResponse:
    def __init__(self, resp: httpcore.Response) -> None:
        self._resp = resp
        self.status = resp.status
        self.reason = resp.extensions.get("reason_phrase", b"").decode("latin-1")
        self.headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in resp.headers}
        self._stream: AsyncIterator[bytes] = resp.aiter_stream()
        self._pending = b""
        self._done = False

    async def _next(self) -> bytes:
        try:
            return await self._stream.__anext__()
        except StopAsyncIteration:
            self._done = True
            await self._close()
            return b""
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException) as exc:
            await self._close()
            raise HTTPError(f"httpcore: {exc!r}") from None

    async def _close(self) -> None:
        await self._resp.aclose()

    async def read(self, limit: int | None = None) -> bytes:
        out = bytearray(self._pending)
        self._pending = b""
        while not self._done:
            chunk = await self._next()
            out += chunk
            if limit is not None and len(out) > limit:
                await self._close()
                raise _too_large(limit)
        return bytes(out)

    async def read_up_to(self, size: int) -> bytes:
        out = bytearray(self._pending)
        self._pending = b""
        while len(out) < size and not self._done:
            out += await self._next()
        if len(out) > size:
            self._pending = bytes(out[size:])
            del out[size:]
        return bytes(out)

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        if self._pending:
            chunk, self._pending = self._pending, b""
            yield chunk
        while not self._done:
            chunk = await self._next()
            if chunk:
                yield chunk

    def release(self) -> None:
        if not self._done:
            # aclose() of an unfinished response drops the connection; it needs the loop.
            self._done = True
            asyncio.get_running_loop().create_task(self._close())


class HttpcorePool:
    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        size: int,
        connect_timeout: float,
        read_timeout: float,
        **_: Any,
    ) -> None:
        self.host, self.port = host, port
        self.scheme = b"https" if tls else b"http"
        self.host_b = host.encode()
        self.timeouts = {
            "connect": connect_timeout,
            "read": read_timeout,
            "write": read_timeout,
            "pool": None,
        }
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=tls, max_connections=size, keepalive_expiry=30.0
        )

    async def request(self, method: str, target: str, headers: dict[str, str], body: Body = b""):
        hdrs = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
        if isinstance(body, BodyStream):
            length = body.length
            content: Any = body.chunks
        else:
            length = len(body)
            content = bytes(body) if body else None
        if length or method in ("PUT", "POST"):
            hdrs.append((b"Content-Length", str(length).encode()))
        url = httpcore.URL(
            scheme=self.scheme, host=self.host_b, port=self.port, target=target.encode("latin-1")
        )
        request = httpcore.Request(
            method.encode(),
            url,
            headers=hdrs,
            content=content,
            extensions={"timeout": self.timeouts},
        )
        try:
            resp = await self._pool.handle_async_request(request)
        except (httpcore.NetworkError, httpcore.ProtocolError, httpcore.TimeoutException) as exc:
            raise HTTPError(f"httpcore: {exc!r}") from None
        return HttpcoreResponse(resp)

    def close(self) -> None:
        # AsyncConnectionPool.aclose() is a coroutine: run it if the loop still runs.
        with contextlib.suppress(RuntimeError):
            asyncio.get_running_loop().create_task(self._pool.aclose())


LAYERS: dict[str, type] = {"aiohttp": AiohttpPool, "httpcore": HttpcorePool}
