"""A small keep-alive HTTP/1.1 client on asyncio streams.

Why not aiohttp or botocore: the backfill is bound by client CPU per object (the client
and both servers share two cores), and a plain request/response on a pooled stream costs
a fraction of what a general-purpose client spends per request.

Timeouts: rather than an `asyncio.timeout` around every read (a timer per request, a
measurable share of the CPU per small object), each pool has one watchdog task that
aborts a busy connection once nothing was sent or received on it for `read_timeout`
seconds. That also bounds a body that stops half way, which a head-only timeout misses.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

# The StreamReader's limit: the largest response head, and (doubled) how much unread body
# a connection buffers before it stops reading from the socket.
MAX_HEAD = 256 * 1024
SMALL_BODY = 64 * 1024
WRITE_SLICE = 256 * 1024
# A streamed body cannot be sent twice, so it avoids pooled connections idle this long
# (seconds): the server may have closed them, and that shows only once the body is gone.
STREAM_MAX_IDLE = 2.0


class HTTPError(ConnectionError):
    """The connection broke or the peer spoke something that is not HTTP/1.1."""


class _Protocol(asyncio.StreamReaderProtocol):
    """A StreamReaderProtocol that notes when data last arrived, for the watchdog."""

    def __init__(self, reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(reader, loop=loop)
        self._clock = loop.time
        self.last_rx = 0.0

    def data_received(self, data: bytes) -> None:
        self.last_rx = self._clock()
        super().data_received(data)


@dataclass(eq=False)
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: _Protocol
    # Loop time of the last sign of life on our side (request start, a body slice sent).
    active: float = 0.0
    timed_out: bool = False

    def last_used(self) -> float:
        """Loop time of the last byte sent or received."""
        return max(self.active, self.protocol.last_rx)

    def close(self) -> None:
        self.writer.close()


@dataclass
class BodyStream:
    """A request body of known length produced chunk by chunk (a GET streamed to a PUT)."""

    length: int
    chunks: AsyncIterator[bytes]


@dataclass
class Response:
    status: int
    reason: str
    headers: dict[str, str]
    _conn: Connection | None
    _pool: Pool
    _remaining: int | None = None  # bytes of body left; None = chunked
    _chunk_left: int = 0
    _done: bool = False
    _keep_alive: bool = True
    _buffer: bytearray = field(default_factory=bytearray)

    async def read(self) -> bytes:
        """The whole body (small objects, XML)."""
        if self._done:
            data = bytes(self._buffer)
            self._buffer.clear()
            return data
        if self._remaining is not None and not self._buffer:
            data = await self._read_exact(self._remaining)
            self._remaining = 0
            self._finish()
            return data
        parts = [chunk async for chunk in self.iter_chunks(1 << 20)]
        return b"".join(parts)

    async def read_up_to(self, size: int) -> bytes:
        """Up to `size` bytes of body; fewer only at the end of the body."""
        if not self._buffer and self._remaining:  # the common case: one read, no copies
            n = min(size, self._remaining)
            data = await self._read_exact(n)
            self._remaining -= n
            if self._remaining == 0:
                self._finish()
            return data
        out = bytearray()
        async for chunk in self._iter(size):
            out += chunk
            if len(out) >= size:
                break
        if len(out) > size:
            self._buffer[:0] = out[size:]
            del out[size:]
        return bytes(out)

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        async for chunk in self._iter(size):
            yield chunk

    async def _iter(self, size: int) -> AsyncIterator[bytes]:
        if self._buffer:
            data = bytes(self._buffer)
            self._buffer.clear()
            yield data
        while not self._done:
            if self._remaining is not None:
                if self._remaining == 0:
                    self._finish()
                    return
                n = min(size, self._remaining)
                data = await self._read_exact(n)
                self._remaining -= n
                yield data
            else:
                data = await self._read_chunked(size)
                if data:
                    yield data

    async def _read_exact(self, n: int) -> bytes:
        assert self._conn is not None
        try:
            return await self._conn.reader.readexactly(n)
        except (asyncio.IncompleteReadError, OSError) as exc:
            raise self._broken(exc) from None

    def _broken(self, exc: BaseException) -> HTTPError:
        conn = self._conn
        self._abort()
        if conn is not None and conn.timed_out:
            return HTTPError(
                f"{self._pool.host}:{self._pool.port} sent nothing for "
                f"{self._pool.read_timeout:g} s mid-body"
            )
        return HTTPError(f"connection closed mid-body ({type(exc).__name__})")

    async def _read_chunked(self, size: int) -> bytes:
        assert self._conn is not None
        reader = self._conn.reader
        try:
            if self._chunk_left == 0:
                line = await reader.readline()
                if not line.endswith(b"\n"):
                    raise asyncio.IncompleteReadError(line, None)
                self._chunk_left = int(line.split(b";", 1)[0].strip(), 16)
                if self._chunk_left == 0:
                    while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self._finish()
                    return b""
            n = min(size, self._chunk_left)
            data = await reader.readexactly(n)
            self._chunk_left -= n
            if self._chunk_left == 0:
                await reader.readexactly(2)
            return data
        except (asyncio.IncompleteReadError, OSError, ValueError) as exc:
            raise self._broken(exc) from None

    def _finish(self) -> None:
        if self._done:
            return
        self._done = True
        if self._conn is not None:
            self._pool.release(self._conn, reusable=self._keep_alive)
            self._conn = None

    def _abort(self) -> None:
        self._done = True
        if self._conn is not None:
            self._pool.release(self._conn, reusable=False)
            self._conn = None

    def release(self) -> None:
        """Give the connection back; a body not read to the end forces it closed."""
        if not self._done:
            self._abort()


class Pool:
    """Keep-alive connections to one endpoint, at most `size` open at once."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        size: int,
        connect_timeout: float,
        read_timeout: float,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self._idle: list[Connection] = []
        self._busy: set[Connection] = set()
        self._slots = asyncio.Semaphore(size)
        self._watchdog: asyncio.Task[None] | None = None

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=MAX_HEAD, loop=loop)
        protocol = _Protocol(reader, loop)
        try:
            async with asyncio.timeout(self.connect_timeout):
                transport, _ = await loop.create_connection(
                    lambda: protocol,
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls else None,
                )
        except TimeoutError:
            raise HTTPError(f"connect to {self.host}:{self.port} timed out") from None
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise HTTPError(f"cannot connect to {self.host}:{self.port}: {reason}") from None
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        return Connection(reader, writer, protocol)

    def _ensure_watchdog(self) -> None:
        if self._watchdog is None or self._watchdog.done():
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        interval = min(1.0, self.read_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for conn in list(self._busy):
                if now - conn.last_used() > self.read_timeout:
                    conn.timed_out = True
                    self._busy.discard(conn)
                    conn.writer.transport.abort()  # the pending read fails at once

    def release(self, conn: Connection, *, reusable: bool) -> None:
        self._busy.discard(conn)
        if reusable and not conn.timed_out and not conn.reader.at_eof():
            self._idle.append(conn)
        else:
            conn.close()
        self._slots.release()

    async def request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | memoryview | BodyStream = b"",
    ) -> Response:
        """Send one request; the caller must read the body or `release()` the response."""
        await self._slots.acquire()
        try:
            return await self._request(method, target, headers, body)
        except BaseException:
            self._slots.release()
            raise

    async def _send_body(self, conn: Connection, body: bytes | memoryview | BodyStream) -> None:
        """A large or streamed body, slice by slice, draining between slices: the transport
        never buffers a second copy of it, and every slice sent counts as progress."""
        loop = asyncio.get_running_loop()
        if isinstance(body, BodyStream):
            sent = 0
            async for chunk in body.chunks:
                sent += len(chunk)
                if sent > body.length:
                    break
                conn.writer.write(chunk)
                await conn.writer.drain()
                conn.active = loop.time()
            if sent != body.length:
                raise HTTPError(f"request body was {sent} bytes, not the {body.length} announced")
            return
        view = memoryview(body)
        for start in range(0, len(view), WRITE_SLICE):
            conn.writer.write(view[start : start + WRITE_SLICE])
            await conn.writer.drain()
            conn.active = loop.time()

    async def _request(
        self,
        method: str,
        target: str,
        headers: dict[str, str],
        body: bytes | memoryview | BodyStream,
    ) -> Response:
        streamed = isinstance(body, BodyStream)
        length = body.length if isinstance(body, BodyStream) else len(body)
        head = [f"{method} {target} HTTP/1.1\r\n"]
        head += [f"{k}: {v}\r\n" for k, v in headers.items()]
        if length or method in ("PUT", "POST"):
            head.append(f"Content-Length: {length}\r\n")
        head.append("\r\n")
        raw_head = "".join(head).encode("utf-8")
        self._ensure_watchdog()
        loop = asyncio.get_running_loop()
        # A pooled connection may have been closed by the server while idle: retry once
        # on a fresh one before reporting a failure (the request was never processed).
        # Not for a streamed body: its chunks cannot be produced twice.
        while True:
            reused = bool(self._idle)
            conn = self._idle.pop() if reused else await self._connect()
            if reused and streamed and loop.time() - conn.last_used() > STREAM_MAX_IDLE:
                conn.close()
                reused, conn = False, await self._connect()
            conn.active = loop.time()
            self._busy.add(conn)
            try:
                if not streamed and length <= SMALL_BODY:
                    conn.writer.write(raw_head + body)  # one syscall for a small request
                else:
                    conn.writer.write(raw_head)
                    await self._send_body(conn, body)
                await conn.writer.drain()
                status, reason, resp_headers = await _read_head(conn.reader)
            except (OSError, asyncio.IncompleteReadError, HTTPError) as exc:
                self._busy.discard(conn)
                conn.close()
                if conn.timed_out:
                    raise HTTPError(
                        f"no response from {self.host}:{self.port} in {self.read_timeout:g} s"
                    ) from None
                if reused and not streamed:
                    continue
                if isinstance(exc, HTTPError):
                    raise
                raise HTTPError(
                    f"connection to {self.host}:{self.port} failed ({type(exc).__name__})"
                ) from None
            except BaseException:
                self._busy.discard(conn)
                conn.close()
                raise
            break
        resp = Response(status, reason, resp_headers, conn, self)
        resp._keep_alive = resp_headers.get("connection", "").lower() != "close"
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            resp._remaining = 0
        elif "chunked" in resp_headers.get("transfer-encoding", "").lower():
            resp._remaining = None
        elif "content-length" in resp_headers:
            resp._remaining = int(resp_headers["content-length"])
        else:
            # Body runs to EOF: not reusable; read it as "length unknown" via chunks of EOF.
            resp._keep_alive = False
            resp._remaining = None
            data = await conn.reader.read()
            resp._buffer += data
            resp._finish()
        if resp._remaining == 0:
            resp._finish()
        return resp

    def close(self) -> None:
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        for conn in self._idle:
            conn.close()
        self._idle.clear()


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HTTPError("response header too large") from None
    lines = raw.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise HTTPError("not an HTTP/1.x response")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers
