"""A small keep-alive HTTP/1.1 client on asyncio streams.

Why not aiohttp or botocore: the backfill is bound by client CPU per object (the client
and both servers share two cores), and a plain request/response on a pooled stream costs
a fraction of what a general-purpose client spends per request.

Timeouts: rather than an `asyncio.timeout` around every read (a timer per request, a
measurable share of the CPU per small object), each pool has one watchdog task that
aborts a busy connection once nothing was sent or received on it for `read_timeout`
seconds. That also bounds a body that stops half way, which a head-only timeout misses.
The same watchdog bounds a peer that trickles: a request has `request_deadline` seconds,
plus one second for every `min_rate` bytes it moved (either way). Heads and small bodies
stay within the deadline; a streamed object body may take as long as it needs if it keeps
up `min_rate` on average. Keeping that bound costs a deadline and byte counters per
connection, updated where bytes move anyway; no timer per request.

Framing (RFC 9112) is strict where a mistake would mix up two answers: a head that is not
HTTP/1.x with CRLF line ends, or a body whose length cannot be trusted, is an HTTPError
and the connection is dropped, never pooled.
"""

from __future__ import annotations

import asyncio
import math
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

# The StreamReader's limit: the largest response head, and (doubled) how much unread body
# a connection buffers before it stops reading from the socket.
MAX_HEAD = 256 * 1024
SMALL_BODY = 64 * 1024
WRITE_SLICE = READ_SLICE = 256 * 1024
# A streamed body cannot be sent twice, so it avoids pooled connections idle this long
# (seconds): the server may have closed them, and that shows only once the body is gone.
STREAM_MAX_IDLE = 2.0
# `Response.read(limit=MAX_ERROR_BODY)` for an error answer: an S3 error document is a
# few hundred bytes, so anything much larger is not one and is not held in memory.
MAX_ERROR_BODY = 1024 * 1024
# A body delimited by the connection's end (no Content-Length, not chunked) cannot be told
# from one cut short, so it is accepted only when small: XML, never an object.
MAX_EOF_BODY = 8 * 1024 * 1024
# Bytes per second a request must move on average, once past its request deadline, to
# keep going (see Pool). Far below any link the copy runs on: what it catches is a peer
# that trickles to defeat the no-progress timeout.
MIN_RATE = 4096.0

# Response heads, from RFC 9112's grammar: a status line, then `name:value` lines, each
# ending in CRLF. No folded lines, no space before the colon, no bare CR or LF: each of
# those is read differently by different parsers, so a head with one is refused. A value
# may hold other control bytes (NUL too): they cannot break the framing here, and the
# caller decides what to do with them (the copy refuses to send them on).
_TOKEN = r"[-!#$%&'*+.^_`|~0-9A-Za-z]++"  # possessive (*+, ++): nothing to backtrack
_HEAD = re.compile(
    rf"HTTP/1\.[0-9] [1-9][0-9][0-9](?: [^\r\n]*+)?\r\n(?:{_TOKEN}:[^\r\n]*+\r\n)*+\r\n".encode()
)
_STATUS_LINE = re.compile(rb"HTTP/1\.[0-9] [1-9][0-9][0-9](?: [^\r\n]*)?")
_FIELD_LINE = re.compile(rf"{_TOKEN}:[^\r\n]*".encode())
_TRAILER = re.compile(rf"{_TOKEN}:[^\r\n]*\r\n".encode())
# chunk-size [ chunk-ext ] CRLF; 16 hex digits are 2**64: more is no real chunk.
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n")


class HTTPError(ConnectionError):
    """The connection broke or the peer spoke something that is not HTTP/1.1."""


class HeaderError(ValueError):
    """A request whose head cannot be written as given: a CR, LF or NUL in a header (or a
    space in the target) would end it early and let the rest be read as headers or a
    request of its own. Raised before anything is sent; retrying cannot help."""


def _buffered(reader: asyncio.StreamReader) -> int:
    """Bytes received and not read yet. StreamReader has no public way to tell; its
    `_buffer` has been there since asyncio began (tests/test_http.py notices if not)."""
    return len(reader._buffer)  # type: ignore[attr-defined]


class _Protocol(asyncio.StreamReaderProtocol):
    """A StreamReaderProtocol that notes when data last arrived and how much, for the
    watchdog."""

    def __init__(self, reader: asyncio.StreamReader, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(reader, loop=loop)
        self._clock = loop.time
        self.last_rx = 0.0
        self.rx = 0  # bytes received on this connection

    def data_received(self, data: bytes) -> None:
        self.last_rx = self._clock()
        self.rx += len(data)
        super().data_received(data)


@dataclass(eq=False)
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    protocol: _Protocol
    # Loop time of the last sign of life on our side (request start, a body slice sent).
    active: float = 0.0
    # The request in flight is too slow past this loop time, plus 1 s per `min_rate`
    # bytes moved since `moved_at_start`.
    deadline: float = math.inf
    moved_at_start: int = 0
    sent: int = 0  # request body bytes written on this connection
    timed_out: str = ""  # why the watchdog aborted it: "idle" or "slow"

    def last_used(self) -> float:
        """Loop time of the last byte sent or received."""
        return max(self.active, self.protocol.last_rx)

    def moved(self) -> int:
        return self.protocol.rx + self.sent

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
    _remaining: int | None = None  # bytes of body left; None = chunked, or up to EOF
    _to_eof: bool = False  # the body runs to the end of the connection
    _eof_read: int = 0
    _chunk_left: int = 0
    _done: bool = False
    _keep_alive: bool = True
    _buffer: bytearray = field(default_factory=bytearray)

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body (small objects, XML). With `limit`, a body longer than that is
        an HTTPError rather than read (an error answer: `limit=MAX_ERROR_BODY`); a body
        that runs to EOF is capped at MAX_EOF_BODY regardless."""
        remaining = self._remaining
        if remaining and not self._buffer:  # Content-Length: one read, no copies
            if limit is not None and remaining > limit:
                raise self._too_large(f"a {remaining}-byte body", limit)
            data = await self._read_exact(remaining)
            self._remaining = 0
            self._finish()
            return data
        out = bytearray()
        async for chunk in self._iter(1 << 20):
            out += chunk
            if limit is not None and len(out) > limit:
                raise self._too_large("a body", limit)
        return bytes(out)

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

    async def readinto(self, view: memoryview) -> int:
        """Fill `view` with the next bytes of the body; fewer only at its end. Reads it
        in slices of READ_SLICE: a part-sized read would allocate (and page-fault in)
        three fresh part-sized buffers per part, which cost more than the copy itself;
        slices reuse the same small blocks, and `view` (reused part after part) is the
        only part-sized buffer."""
        filled, size = 0, len(view)
        while filled < size:
            chunk = await self.read_up_to(min(size - filled, READ_SLICE))
            if not chunk:
                break
            view[filled : filled + len(chunk)] = chunk
            filled += len(chunk)
        return filled

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
                if self._remaining == 0:
                    self._finish()  # now, not at the next step: a caller may stop here
                yield data
            else:
                data = await (self._read_eof(size) if self._to_eof else self._read_chunked(size))
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
            return HTTPError(self._pool._timeout_message(conn, mid_body=True))
        return HTTPError(f"connection closed mid-body ({type(exc).__name__})")

    def _refuse(self, problem: str) -> HTTPError:
        self._abort()
        return HTTPError(f"{self._pool.host}:{self._pool.port} sent {problem}")

    def _too_large(self, what: str, limit: int) -> HTTPError:
        return self._refuse(f"{what}, larger than the {limit} bytes accepted here")

    async def _read_eof(self, size: int) -> bytes:
        conn = self._conn
        assert conn is not None
        try:
            data = await conn.reader.read(size)
        except OSError as exc:
            raise self._broken(exc) from None
        if not data:
            if conn.timed_out:  # the watchdog's abort reads as an end of stream too
                raise self._broken(TimeoutError())
            self._finish()
            return b""
        self._eof_read += len(data)
        if self._eof_read > MAX_EOF_BODY:
            raise self._too_large("a body with no Content-Length", MAX_EOF_BODY)
        return data

    async def _read_chunked(self, size: int) -> bytes:
        assert self._conn is not None
        reader = self._conn.reader
        try:
            if self._chunk_left == 0:
                line = await reader.readuntil(b"\n")
                m = _CHUNK_SIZE.fullmatch(line)
                if m is None:
                    raise self._refuse(f"a malformed chunk-size line {line[:40]!r}")
                self._chunk_left = int(m.group(1), 16)
                if self._chunk_left == 0:
                    await self._read_trailers(reader)
                    self._finish()
                    return b""
            n = min(size, self._chunk_left)
            data = await reader.readexactly(n)
            self._chunk_left -= n
            if self._chunk_left == 0 and await reader.readexactly(2) != b"\r\n":
                raise self._refuse("a chunk longer than its chunk-size")
            return data
        except HTTPError:
            raise
        except asyncio.LimitOverrunError:
            raise self._refuse("a chunked-body line over 256 KiB") from None
        except (asyncio.IncompleteReadError, OSError) as exc:
            raise self._broken(exc) from None

    async def _read_trailers(self, reader: asyncio.StreamReader) -> None:
        """Skip the trailer fields after the last chunk, up to the empty line that ends
        the body; as strict as a head, and no larger."""
        total = 0
        while (line := await reader.readuntil(b"\n")) != b"\r\n":
            total += len(line)
            if total > MAX_HEAD:
                raise self._refuse("trailers over 256 KiB")
            if _TRAILER.fullmatch(line) is None:
                raise self._refuse(f"a malformed trailer line {line[:40]!r}")

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
    """Keep-alive connections to one endpoint, at most `size` open at once.

    `request_deadline` (seconds) bounds a request that keeps moving bytes too slowly for
    the no-progress timeout to fire: past it, the request must have moved `min_rate`
    bytes per second on average or it is aborted. The default, 10 x `read_timeout` and at
    least 5 minutes, leaves room for a slow answer that is still honest (S3 may take
    minutes over a CompleteMultipartUpload, sending spaces meanwhile) while no worker is
    held for ever by a trickle.
    """

    def __init__(
        self,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None,
        size: int,
        connect_timeout: float,
        read_timeout: float,
        request_deadline: float | None = None,
        min_rate: float = MIN_RATE,
    ) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.request_deadline = (
            max(10 * read_timeout, 300.0) if request_deadline is None else request_deadline
        )
        self.min_rate = min_rate
        if self.request_deadline <= 0 or min_rate <= 0:
            raise ValueError("request_deadline and min_rate must be positive")
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
        interval = max(0.01, min(1.0, self.read_timeout / 4, self.request_deadline / 4))
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for conn in list(self._busy):
                if now - conn.last_used() > self.read_timeout:
                    conn.timed_out = "idle"
                elif now > conn.deadline + (conn.moved() - conn.moved_at_start) / self.min_rate:
                    conn.timed_out = "slow"
                else:
                    continue
                self._busy.discard(conn)
                conn.writer.transport.abort()  # the pending read fails at once

    def _timeout_message(self, conn: Connection, *, mid_body: bool) -> str:
        where = f"{self.host}:{self.port}"
        if conn.timed_out == "slow":
            if mid_body:
                return (
                    f"{where} sent the body slower than {self.min_rate:g} B/s on average "
                    f"past the {self.request_deadline:g} s request deadline"
                )
            return (
                f"no complete response from {where} within the {self.request_deadline:g} s "
                f"request deadline (plus 1 s per {self.min_rate:g} bytes moved)"
            )
        if mid_body:
            return f"{where} sent nothing for {self.read_timeout:g} s mid-body"
        return f"no response from {where} in {self.read_timeout:g} s"

    def release(self, conn: Connection, *, reusable: bool) -> None:
        self._busy.discard(conn)
        # Bytes already waiting once the answer is complete belong to no request (a body
        # longer than its Content-Length): the next request would read them as its answer.
        if (
            reusable
            and not conn.timed_out
            and not conn.reader.at_eof()
            and not _buffered(conn.reader)
        ):
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
                conn.sent += len(chunk)
            if sent != body.length:
                raise HTTPError(f"request body was {sent} bytes, not the {body.length} announced")
            return
        view = memoryview(body)
        for start in range(0, len(view), WRITE_SLICE):
            piece = view[start : start + WRITE_SLICE]
            conn.writer.write(piece)
            await conn.writer.drain()
            conn.active = loop.time()
            conn.sent += len(piece)

    def _checkout(self, streamed: bool, now: float) -> Connection | None:
        """An idle connection fit for this request, or None (connect a new one)."""
        while self._idle:
            conn = self._idle.pop()
            # Closed by the server while idle, or sent bytes that answer nothing: unusable.
            if conn.reader.at_eof() or _buffered(conn.reader):
                conn.close()
                continue
            if streamed and now - conn.last_used() > STREAM_MAX_IDLE:
                conn.close()
                return None
            return conn
        return None

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
        try:
            raw_head = "".join(head).encode("latin-1")  # header values: bytes in a latin-1 str
        except UnicodeEncodeError:
            raise _unwritable(method, target, headers) from None
        # Each line above ends in the one CRLF put there: any other CR, LF or NUL came from
        # a name, a value or the target. Three scans in C, not a loop over the headers.
        if (
            raw_head.count(b"\n") != len(head)
            or raw_head.count(b"\r") != len(head)
            or b"\0" in raw_head
            or " " in target
        ):
            raise _unwritable(method, target, headers)
        self._ensure_watchdog()
        loop = asyncio.get_running_loop()
        # A pooled connection may have been closed by the server while idle: retry once
        # on a fresh one when nothing came back (the request was never processed).
        # Not for a streamed body: its chunks cannot be produced twice.
        while True:
            now = loop.time()
            conn = self._checkout(streamed, now)
            reused = conn is not None
            if conn is None:
                conn = await self._connect()
                now = loop.time()
            conn.active = now
            conn.deadline = now + self.request_deadline
            conn.moved_at_start = conn.moved()
            rx_before = conn.protocol.rx
            self._busy.add(conn)
            try:
                if not isinstance(body, BodyStream) and length <= SMALL_BODY:
                    conn.writer.write(raw_head + body)  # one syscall for a small request
                else:
                    conn.writer.write(raw_head)
                    await self._send_body(conn, body)
                await conn.writer.drain()
                minor, status, reason, resp_headers = await _read_head(conn.reader)
                while status < 200:
                    # 1xx answers are interim (100 Continue, 103 Early Hints): no body, and
                    # the final answer follows. 101 would switch protocols: never asked for.
                    if status == 101:
                        raise HTTPError(f"{self.host}:{self.port} answered 101 Switching Protocols")
                    minor, status, reason, resp_headers = await _read_head(conn.reader)
                return self._response(conn, method, minor, status, reason, resp_headers)
            except (OSError, asyncio.IncompleteReadError) as exc:  # HTTPError is an OSError
                self._busy.discard(conn)
                conn.close()
                if isinstance(exc, HTTPError):
                    raise  # the peer answered, and not in HTTP/1.1: a retry would not help
                if conn.timed_out:
                    raise HTTPError(self._timeout_message(conn, mid_body=False)) from None
                if reused and not streamed and conn.protocol.rx == rx_before:
                    continue
                raise HTTPError(
                    f"connection to {self.host}:{self.port} failed ({type(exc).__name__})"
                ) from None
            except BaseException:
                self._busy.discard(conn)
                conn.close()
                raise

    def _response(
        self,
        conn: Connection,
        method: str,
        minor: int,
        status: int,
        reason: str,
        headers: dict[str, str],
    ) -> Response:
        """The final answer, and how its body is framed (RFC 9112 section 6.3)."""
        resp = Response(status, reason, headers, conn, self)
        connection = headers.get("connection")
        if connection is None:
            resp._keep_alive = minor > 0  # HTTP/1.0 closes unless it says keep-alive
        else:
            tokens = {t.strip(" \t") for t in connection.lower().split(",")}
            resp._keep_alive = "close" not in tokens and (minor > 0 or "keep-alive" in tokens)
        encoding = headers.get("transfer-encoding")
        if method == "HEAD" or status in (204, 304):
            resp._remaining = 0
        elif encoding is not None:
            if minor == 0:  # RFC 9112 6.1: an HTTP/1.0 message's framing is then faulty
                raise HTTPError(f"{self.host}:{self.port} sent Transfer-Encoding in HTTP/1.0")
            if encoding.lower() != "chunked":  # none was asked for: no other is decoded
                raise HTTPError(f"{self.host}:{self.port} sent Transfer-Encoding {encoding!r}")
            if "content-length" in headers:
                # Chunked wins (RFC 9112 6.3), but the peer frames oddly: not reused.
                resp._keep_alive = False
        elif "content-length" in headers:
            resp._remaining = _content_length(headers["content-length"], self)
        else:
            # Runs to EOF: not reusable, and read lazily (capped) like any other body.
            resp._to_eof = True
            resp._keep_alive = False
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


def _unwritable(method: str, target: str, headers: dict[str, str]) -> HeaderError:
    """Which part of a request head would not be read as written (the slow path): a CR,
    LF or NUL would end or split a line; a character above U+00FF is no byte."""

    def bad(text: str) -> bool:
        return any(c in text for c in "\r\n\0") or (not text.isascii() and max(text) > "\xff")

    if bad(target) or " " in target:
        return HeaderError(f"request target {target[:60]!r} has a CR, LF, NUL, space or non-byte")
    for name, value in headers.items():
        if bad(name):
            return HeaderError(f"header name {name!r} has a CR, LF, NUL or non-byte: not sent")
        if bad(value):  # the value may be private: not shown
            return HeaderError(
                f"header {name} has a CR, LF, NUL or non-byte in its value: not sent "
                "(it would not arrive as written)"
            )
    return HeaderError(f"request method {method[:20]!r} has a CR, LF, NUL or non-byte")


def _content_length(value: str, pool: Pool) -> int:
    """RFC 9110 8.6: digits only; a list of one repeated value (a repeated header) is one."""
    if value.isdigit() and value.isascii() and len(value) < 19:
        return int(value)
    values = {v.strip(" \t") for v in value.split(",")}
    if len(values) == 1:
        (one,) = values
        if one.isdigit() and one.isascii() and len(one) < 19:
            return int(one)
    raise HTTPError(f"{pool.host}:{pool.port} sent Content-Length {value[:40]!r}")


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, int, str, dict[str, str]]:
    """One response head: (HTTP/1 minor version, status, reason, headers by lower name)."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.LimitOverrunError:
        raise HTTPError(f"response head too large (over {MAX_HEAD // 1024} KiB)") from None
    except asyncio.IncompleteReadError as exc:
        if b"\n\n" in exc.partial:  # it ended (or waited) after a head we cannot read
            raise HTTPError("not HTTP/1.1: bare LF line ends in the response head") from None
        raise
    # One regex over the whole head (in C): cheaper than checking line by line.
    if _HEAD.fullmatch(raw) is None:
        raise HTTPError(f"not HTTP/1.1: {_bad_line(raw)}")
    lines = raw.decode("latin-1").split("\r\n")
    status_line = lines[0]
    fields = lines[1:-2]
    headers: dict[str, str] = {}
    for line in fields:
        name, _, value = line.partition(":")
        headers[name.lower()] = value.strip(" \t")
    if len(headers) != len(fields):
        headers = _combined(fields)  # rare, so not checked line by line
    return int(status_line[7]), int(status_line[9:12]), status_line[13:], headers


def _combined(fields: list[str]) -> dict[str, str]:
    """Headers where a repeated field is one list (RFC 9110 5.3): two Content-Lengths that
    differ then read as "5, 6", which is refused, instead of the last one winning."""
    headers: dict[str, str] = {}
    for line in fields:
        name, _, value = line.partition(":")
        name, value = name.lower(), value.strip(" \t")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _bad_line(raw: bytes) -> str:
    """What is wrong with a head `_HEAD` refused, for the message (the slow path). Field
    values stay out of it: object metadata may be private."""
    lines = raw[:-4].split(b"\r\n")
    if _STATUS_LINE.fullmatch(lines[0]) is None:
        return f"status line {lines[0][:60]!r}"
    for line in lines[1:]:
        if _FIELD_LINE.fullmatch(line) is not None:
            continue
        name, colon, _ = line.partition(b":")
        if line[:1] in (b" ", b"\t"):
            return "a folded header line (obs-fold)"
        if b"\r" in name or b"\n" in name or not colon:
            return f"a header line with no colon or a bare CR/LF, from {name[:40]!r}"
        if name.rstrip(b" \t") != name:
            return f"whitespace before the colon in header {name[:40]!r}"
        if _FIELD_LINE.fullmatch(name + b":") is None:
            return f"header name {name[:40]!r} is not a token"
        return f"a bare CR or LF in the value of header {name[:40]!r}"
    return "malformed head"
