"""A fault-injecting HTTP/1.1 proxy for the tests and the reliability battery.

It sits between an S3 client and one S3 server and, at configurable rates, answers a
request itself with `503 SlowDown` or `500 InternalError` (without forwarding it), or
cuts a GET response mid-body. Everything else is relayed unchanged but for hop-by-hop
headers: request line, `Host` (so SigV4 signatures still verify), bodies in their own
framing (Content-Length or chunked), streamed in both directions. Connections are kept
alive on both sides: each client connection gets its own upstream connection, reused for
its next requests.

With `dialect="riakcs"` (`--dialect riakcs --credentials FILE`) the proxy also plays Riak
CS in front of the server (see blobshift.lab.riakcs_dialect): it checks each request's
SigV2 signature the way Riak CS does, answers listings, multipart uploads and errors in
Riak CS's form (raw keys, V1 only, upload ids ending in `==`, InvalidDigest), and sends
the server its own SigV4-signed request. Faults are decided first, as before.

Stdlib only. Use `FaultProxy(...).start()` from tests (own event loop in a daemon thread)
or `python -m blobshift.lab.faultproxy --listen H:P --upstream H:P --slowdown 0.3`.
Probabilities can be changed at any time from any thread; `counters()` says what was done.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import enum
import json
import random
import signal
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from blobshift.lab.riakcs_dialect import Reply, RiakCSDialect

BUF = 64 * 1024
HEAD_LIMIT = 64 * 1024  # longest request/status line + headers we accept
IDLE_TIMEOUT = 300.0  # an idle client connection is closed after this many seconds
LINGER = 5.0  # at most this long discarding input before closing a client connection
# A dialect reads some bodies whole to rewrite them (listings, multipart documents, errors);
# none of those is anywhere near this.
DIALECT_BODY_LIMIT = 16 * 1024 * 1024
DIALECTS = ("riakcs",)
# Hop-by-hop headers are not relayed. Expect is answered by the proxy itself (like nginx),
# so the fault decision happens before the client sends a body. Transfer-Encoding is kept:
# bodies are relayed with their framing unchanged.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "upgrade", "expect"})
COUNTERS = (
    "connections",  # client connections accepted
    "upstream_connections",  # connections opened to the upstream server
    "requests",  # requests received
    "forwarded",  # requests sent upstream
    "slowdown",  # faults injected, per kind
    "error",
    "reset",
    "upstream_errors",  # 502s: upstream unreachable or closed without answering
)


class Fault(enum.Enum):
    SLOWDOWN = "slowdown"
    ERROR = "error"
    RESET = "reset"


# status, reason, S3 error code, message
ERRORS = {
    Fault.SLOWDOWN: (503, "Slow Down", "SlowDown", "Please reduce your request rate."),
    Fault.ERROR: (
        500,
        "Internal Server Error",
        "InternalError",
        "We encountered an internal error. Please try again.",
    ),
}


class ProtocolError(Exception):
    """Unparseable HTTP from a peer: the connection is closed."""


class SourceClosed(Exception):
    """The side we were reading a body from went away before its end."""


class SinkClosed(Exception):
    """The side we were writing a body to went away."""


@dataclass
class Head:
    """A request or response head: start line and headers, in order, as received."""

    start: str
    headers: list[tuple[str, str]]

    def get(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)

    def tokens(self, name: str) -> set[str]:
        return {t.strip().lower() for t in (self.get(name) or "").split(",") if t.strip()}

    def encode(self, extra: Iterable[tuple[str, str]] = ()) -> bytes:
        """The head to relay: hop-by-hop headers dropped, then `extra` (ours) appended."""
        drop = HOP_BY_HOP | self.tokens("connection")
        kept = [(k, v) for k, v in self.headers if k.lower() not in drop]
        lines = [self.start, *(f"{k}: {v}" for k, v in [*kept, *extra]), "", ""]
        return "\r\n".join(lines).encode("latin-1")


@dataclass(frozen=True)
class Framing:
    """How a body ends: `length` bytes, chunked, at connection close, or no body."""

    kind: str  # "none" | "length" | "chunked" | "close"
    length: int = 0


NO_BODY = Framing("none")


async def read_head(reader: asyncio.StreamReader) -> Head | None:
    """The next head, or None if the peer closed cleanly before sending one."""
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise ProtocolError("connection closed inside a header") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError("header block too large") from None
    start, *lines = raw[:-4].decode("latin-1").split("\r\n")
    headers = []
    for line in lines:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ProtocolError(f"bad header line {line!r}")
        headers.append((name.strip(), value.strip()))
    return Head(start, headers)


def body_framing(head: Head) -> Framing:
    if "chunked" in head.tokens("transfer-encoding"):
        return Framing("chunked")
    length = head.get("content-length")
    if length is None:
        return NO_BODY
    try:
        return Framing("length", int(length)) if int(length) else NO_BODY
    except ValueError:
        raise ProtocolError(f"bad Content-Length {length!r}") from None


def response_framing(method: str, status: int, head: Head) -> Framing:
    if method == "HEAD" or status < 200 or status in (204, 304):
        return NO_BODY  # e.g. HEAD: Content-Length describes the object, nothing follows
    if "chunked" not in head.tokens("transfer-encoding") and head.get("content-length") is None:
        return Framing("close")  # the body ends when the server closes the connection
    return body_framing(head)


def keep_alive(version: str, head: Head) -> bool:
    tokens = head.tokens("connection")
    if "close" in tokens:
        return False
    return version != "HTTP/1.0" or "keep-alive" in tokens


async def _read(reader: asyncio.StreamReader, n: int) -> bytes:
    try:
        data = await reader.read(n)
    except ConnectionError as exc:
        raise SourceClosed(str(exc)) from None
    if not data:
        raise SourceClosed("end of stream inside a body")
    return data


async def _readline(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.readuntil(b"\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        raise SourceClosed("end of stream inside a chunked body") from None
    except asyncio.LimitOverrunError:
        raise ProtocolError("chunk line too long") from None


async def _write(writer: asyncio.StreamWriter | None, data: bytes) -> None:
    if writer is None:  # draining a body nobody will receive
        return
    try:
        writer.write(data)
        await writer.drain()
    except ConnectionError as exc:
        raise SinkClosed(str(exc)) from None


async def copy_exact(src: asyncio.StreamReader, dst: asyncio.StreamWriter | None, n: int) -> None:
    while n > 0:
        data = await _read(src, min(n, BUF))
        await _write(dst, data)
        n -= len(data)


def chunk_size(line: bytes) -> int:
    """The size a chunk-size line (with any extensions) announces."""
    try:
        return int(line.split(b";")[0].strip(), 16)
    except ValueError:
        raise ProtocolError(f"bad chunk size line {line!r}") from None


async def copy_chunked(
    src: asyncio.StreamReader, dst: asyncio.StreamWriter | None, cut: bool = False
) -> bool:
    """Relay a chunked body as is (sizes, extensions, trailers). With `cut`, stop halfway
    through the first non-empty chunk and return True (False if the body was empty)."""
    while True:
        line = await _readline(src)
        size = chunk_size(line)
        await _write(dst, line)
        if size == 0:
            break
        if cut:
            await copy_exact(src, dst, size // 2)
            return True
        await copy_exact(src, dst, size + 2)  # data and its CRLF
    while (trailer := await _readline(src)) != b"\r\n":
        await _write(dst, trailer)
    await _write(dst, trailer)
    return False


async def copy_until_eof(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    while data := await src.read(BUF):
        await _write(dst, data)


async def read_body(src: asyncio.StreamReader, framing: Framing, limit: int) -> bytes:
    """A whole body, decoded from its framing (for the dialect, which rewrites it)."""
    if framing.kind == "none":
        return b""
    if framing.kind == "length":
        if framing.length > limit:
            raise ProtocolError(f"body of {framing.length} bytes is over {limit}")
        try:
            return await src.readexactly(framing.length)
        except (asyncio.IncompleteReadError, ConnectionError):
            raise SourceClosed("end of stream inside a body") from None
    data = bytearray()
    if framing.kind == "close":
        while chunk := await src.read(BUF):
            data += chunk
            if len(data) > limit:
                raise ProtocolError(f"body over {limit} bytes")
        return bytes(data)
    while True:
        line = await _readline(src)
        size = chunk_size(line)
        if size == 0:
            break
        if len(data) + size > limit:
            raise ProtocolError(f"body over {limit} bytes")
        try:
            data += await src.readexactly(size)
        except (asyncio.IncompleteReadError, ConnectionError):
            raise SourceClosed("end of stream inside a chunked body") from None
        await _readline(src)  # the CRLF after the chunk
    while await _readline(src) != b"\r\n":
        pass  # trailers: nothing a dialect needs
    return bytes(data)


async def relay(
    src: asyncio.StreamReader, dst: asyncio.StreamWriter | None, framing: Framing
) -> None:
    if framing.kind == "length":
        await copy_exact(src, dst, framing.length)
    elif framing.kind == "chunked":
        await copy_chunked(src, dst)
    elif framing.kind == "close" and dst is not None:
        await copy_until_eof(src, dst)


def error_body(fault: Fault, resource: str, request_id: str) -> tuple[int, str, bytes]:
    status, reason, code, message = ERRORS[fault]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>"
        f"<Resource>{escape(resource)}</Resource><RequestId>{request_id}</RequestId></Error>"
    )
    return status, reason, body.encode()


class FaultProxy:
    """The proxy. Probabilities (`slowdown`, `reset`, `error`) may be set from any thread.

    `dialect="riakcs"` makes it answer as Riak CS would, checking signatures with
    `credentials` (access key -> secret key, those of the upstream server's users) and
    signing its own requests upstream with them (SigV4, `region`).
    """

    def __init__(
        self,
        listen: tuple[str, int] = ("127.0.0.4", 0),
        upstream: tuple[str, int] = ("127.0.0.3", 9000),
        *,
        slowdown: float = 0.0,
        reset: float = 0.0,
        error: float = 0.0,
        seed: int | None = None,
        dialect: str | None = None,
        credentials: Mapping[str, str] | None = None,
        region: str = "us-east-1",
    ) -> None:
        self.listen = listen
        self.upstream = upstream
        if dialect is not None and dialect not in DIALECTS:
            raise ValueError(f"unknown dialect {dialect!r}: expected one of {DIALECTS}")
        self.dialect = RiakCSDialect(credentials or {}, region) if dialect == "riakcs" else None
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._rates = {Fault.SLOWDOWN: 0.0, Fault.RESET: 0.0, Fault.ERROR: 0.0}
        self._counts = dict.fromkeys(COUNTERS, 0)
        self.configure(slowdown=slowdown, reset=reset, error=error)
        self.port = listen[1]  # the bound port once listening (listen port 0 = any free one)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        up = f"{self.upstream[0]}:{self.upstream[1]}"
        dialect = f", {self.dialect!r}" if self.dialect is not None else ""
        return f"FaultProxy({self.url} -> {up}, {self.rates()}{dialect})"

    # --- configuration and counters (any thread) ---------------------------------------

    def configure(
        self,
        *,
        slowdown: float | None = None,
        reset: float | None = None,
        error: float | None = None,
        seed: int | None = None,
    ) -> None:
        """Change fault probabilities (0..1) and/or reseed; unnamed ones stay as they are."""
        new = {Fault.SLOWDOWN: slowdown, Fault.RESET: reset, Fault.ERROR: error}
        for fault, rate in new.items():
            if rate is not None and not 0.0 <= rate <= 1.0:
                raise ValueError(f"{fault.value} probability must be within 0..1, got {rate}")
        with self._lock:
            self._rates.update({f: float(r) for f, r in new.items() if r is not None})
            if seed is not None:
                self._rng.seed(seed)

    @property
    def slowdown(self) -> float:
        return self.rates()["slowdown"]

    @slowdown.setter
    def slowdown(self, rate: float) -> None:
        self.configure(slowdown=rate)

    @property
    def reset(self) -> float:
        return self.rates()["reset"]

    @reset.setter
    def reset(self, rate: float) -> None:
        self.configure(reset=rate)

    @property
    def error(self) -> float:
        return self.rates()["error"]

    @error.setter
    def error(self, rate: float) -> None:
        self.configure(error=rate)

    def rates(self) -> dict[str, float]:
        with self._lock:
            return {f.value: r for f, r in self._rates.items()}

    def counters(self) -> dict[str, int]:
        """A snapshot of the counts (see COUNTERS)."""
        with self._lock:
            return dict(self._counts)

    def reset_counters(self) -> None:
        with self._lock:
            self._counts = dict.fromkeys(COUNTERS, 0)

    def _count(self, name: str) -> int:
        with self._lock:
            self._counts[name] += 1
            return self._counts[name]

    def _decide(self, method: str) -> Fault | None:
        """One fault for this request, or None. Three draws every time, so a seeded run
        makes the same decisions for the same sequence of requests."""
        with self._lock:
            draws = {f: self._rng.random() for f in (Fault.SLOWDOWN, Fault.ERROR, Fault.RESET)}
            for fault, draw in draws.items():
                if draw < self._rates[fault] and (fault is not Fault.RESET or method == "GET"):
                    return fault
        return None

    @property
    def url(self) -> str:
        return f"http://{self.listen[0]}:{self.port}"

    # --- running inside an event loop ------------------------------------------------------

    async def open(self) -> None:
        """Start listening (returns once connections are accepted)."""
        self._server = await asyncio.start_server(
            self._on_client, self.listen[0], self.listen[1], limit=HEAD_LIMIT
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()  # 3.12+ waits for open connections: after cancel

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._count("connections")
        try:
            await _Connection(self, reader, writer).serve()
        except asyncio.CancelledError:
            pass  # aclose(): the connection is closed; Python 3.11's streams log a cancelled task
        finally:
            self._tasks.discard(task)

    # --- running in a thread (tests) ---------------------------------------------------------

    def start(self) -> FaultProxy:
        """Run on a private event loop in a daemon thread; returns once listening."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                loop.run_until_complete(self.open())
            except BaseException as exc:  # e.g. port in use: reported by start()
                failure.append(exc)
                loop.close()
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self.aclose())
                loop.close()

        self._thread = threading.Thread(target=run, name=f"faultproxy-{self.listen}", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Connection:
    """One client connection and its (lazily opened, reused) upstream connection."""

    def __init__(
        self, proxy: FaultProxy, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.proxy = proxy
        self.reader = reader
        self.writer = writer
        self.up: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def serve(self) -> None:
        try:
            while True:
                head = await asyncio.wait_for(read_head(self.reader), IDLE_TIMEOUT)
                if head is None or not await self.handle(head):
                    break
            self.close_upstream()
            await self.linger()
        except (ProtocolError, SourceClosed, SinkClosed, ConnectionError, TimeoutError):
            pass  # the connection just ends, as a broken peer would see from a real server
        finally:
            self.close_upstream()
            self.writer.close()
            with contextlib.suppress(Exception):
                await self.writer.wait_closed()

    async def linger(self) -> None:
        """Half-close, then discard what the client still sends, for a while.

        Closing a socket with unread input makes the kernel send RST, which can destroy
        a response the client has not read yet: e.g. a client that gave up waiting for
        100 Continue sends the body after our 503 (nginx's lingering_close does this too).
        """
        if self.reader.at_eof() or self.writer.is_closing():
            return
        if self.writer.can_write_eof():
            self.writer.write_eof()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINGER):
                while await self.reader.read(BUF):
                    pass

    async def handle(self, head: Head) -> bool:
        """Answer one request; True if the client connection can carry another."""
        try:
            method, target, version = head.start.split(" ", 2)
        except ValueError:
            raise ProtocolError(f"bad request line {head.start!r}") from None
        self.proxy._count("requests")
        request_body = body_framing(head)
        keep = keep_alive(version, head)
        expects = "100-continue" in head.tokens("expect")
        fault = self.proxy._decide(method)
        if fault in ERRORS:
            assert fault is not None
            if expects and request_body is not NO_BODY:
                keep = False  # the client waits for 100 Continue: it never sends the body
            else:
                await relay(self.reader, None, request_body)
            await self.answer_error(fault, method, target, keep)
            return keep
        if self.proxy.dialect is not None:
            return await self.forward_dialect(
                self.proxy.dialect, head, method, target, request_body, keep, expects, fault
            )
        if expects:
            await _write(self.writer, b"HTTP/1.1 100 Continue\r\n\r\n")
        return await self.forward(head, method, request_body, keep, fault is Fault.RESET)

    async def answer_error(self, fault: Fault, method: str, target: str, keep: bool) -> None:
        number = self.proxy._count(fault.value)
        status, reason, body = error_body(fault, target.split("?")[0], f"faultproxy-{number}")
        head = Head(
            f"HTTP/1.1 {status} {reason}",
            [
                ("Content-Type", "application/xml"),
                ("Content-Length", str(len(body))),
                ("x-amz-request-id", f"faultproxy-{number}"),
            ],
        )
        out = head.encode([("Connection", "keep-alive" if keep else "close")])
        await _write(self.writer, out + (b"" if method == "HEAD" else body))

    async def forward(
        self, head: Head, method: str, request_body: Framing, keep: bool, cut: bool
    ) -> bool:
        up = await self.open_upstream()
        if up is None:
            await self.bad_gateway()
            return False
        up_reader, up_writer = up
        self.proxy._count("forwarded")
        sent = True
        try:
            await _write(up_writer, head.encode())
            await relay(self.reader, up_writer, request_body)
        except SinkClosed:
            # The server stopped reading (e.g. it refused the request early): its answer
            # may already be waiting, but the client's body was not all read.
            sent = keep = False
        response = await self.read_response(up_reader)
        if response is None:
            await self.bad_gateway()
            return False
        return await self.relay_response(up_reader, response, method, keep, sent, cut)

    async def relay_response(
        self,
        up_reader: asyncio.StreamReader,
        response: Head,
        method: str,
        keep: bool,
        sent: bool,
        cut: bool,
    ) -> bool:
        """Relay upstream's response as it comes (cut halfway with `cut`)."""
        status = int(response.start.split(" ", 2)[1])
        framing = response_framing(method, status, response)
        up_keep = keep_alive(response.start.split(" ", 1)[0], response)
        keep = keep and framing.kind != "close"
        out = response.encode([("Connection", "keep-alive" if keep else "close")])
        if cut and 200 <= status < 300 and framing.kind in ("length", "chunked"):
            await _write(self.writer, out)
            await self.cut(up_reader, framing)
            return False
        await _write(self.writer, out)
        try:
            await relay(up_reader, self.writer, framing)
        except SourceClosed:
            self.close_upstream()
            return False  # the client sees the body end early, as the server sent it
        if not (sent and up_keep) or framing.kind == "close":
            self.close_upstream()
        return keep

    async def forward_dialect(
        self,
        dialect: RiakCSDialect,
        head: Head,
        method: str,
        target: str,
        request_body: Framing,
        keep: bool,
        expects: bool,
        fault: Fault | None,
    ) -> bool:
        """Forward through the dialect: it may answer itself (a bad signature, an unknown
        upload id, ...), rewrites the request for upstream, and rewrites what comes back
        unless it is an object's body, which is relayed (and cut, for a RESET fault)."""
        plan = dialect.plan(method, target, head.headers)
        if isinstance(plan, Reply):
            if expects and request_body is not NO_BODY:
                keep = False  # never told to send it: the body does not follow
            else:
                await relay(self.reader, None, request_body)
            await self.send_reply(plan, method, keep)
            return keep
        if expects:
            await _write(self.writer, b"HTTP/1.1 100 Continue\r\n\r\n")
        body: bytes | None = None
        if plan.needs_body:
            body = await read_body(self.reader, request_body, DIALECT_BODY_LIMIT)
            refused = dialect.check_body(plan, body)
            if refused is not None:
                await self.send_reply(refused, method, keep)
                return keep
        up = await self.open_upstream()
        if up is None:
            await self.bad_gateway()
            return False
        up_reader, up_writer = up
        self.proxy._count("forwarded")
        host = f"{self.proxy.upstream[0]}:{self.proxy.upstream[1]}"
        headers = dialect.upstream_headers(plan, host, None if body is None else len(body))
        sent = True
        try:
            await _write(up_writer, Head(f"{plan.method} {plan.target} HTTP/1.1", headers).encode())
            if body is None:
                await relay(self.reader, up_writer, request_body)
            else:
                await _write(up_writer, body)
        except SinkClosed:
            sent = keep = False
        response = await self.read_response(up_reader)
        if response is None:
            await self.bad_gateway()
            return False
        status = int(response.start.split(" ", 2)[1])
        if dialect.streams(plan, status):
            return await self.relay_response(
                up_reader, response, method, keep, sent, fault is Fault.RESET
            )
        framing = response_framing(method, status, response)
        try:
            data = await read_body(up_reader, framing, DIALECT_BODY_LIMIT)
        except (SourceClosed, ProtocolError):
            await self.bad_gateway()
            return False
        up_keep = keep_alive(response.start.split(" ", 1)[0], response)
        if not (sent and up_keep) or framing.kind == "close":
            self.close_upstream()
        await self.send_reply(dialect.response(plan, status, response.headers, data), method, keep)
        return keep

    async def send_reply(self, reply: Reply, method: str, keep: bool) -> None:
        """A dialect's answer, framed by Content-Length (a HEAD gets the head only)."""
        headers = list(reply.headers)
        if reply.status not in (204, 304):
            headers.append(("Content-Length", str(len(reply.body))))
        head = Head(f"HTTP/1.1 {reply.status} {reply.reason}", headers)
        out = head.encode([("Connection", "keep-alive" if keep else "close")])
        await _write(self.writer, out + (b"" if method == "HEAD" else reply.body))

    async def cut(self, up_reader: asyncio.StreamReader, framing: Framing) -> None:
        """Send part of the body, then close both connections (the caller closes the
        client's after flushing what was written, so the client sees a short body)."""
        if framing.kind == "length":
            await copy_exact(up_reader, self.writer, framing.length // 2)
            cut = True
        else:
            cut = await copy_chunked(up_reader, self.writer, cut=True)
        if cut:
            self.proxy._count("reset")
        self.close_upstream()  # the rest of the body is still in flight on it

    async def read_response(self, up_reader: asyncio.StreamReader) -> Head | None:
        """The final response head from upstream (1xx skipped), or None if it failed."""
        try:
            while True:
                response = await read_head(up_reader)
                if response is None:
                    return None
                status = int(response.start.split(" ", 2)[1])
                if status >= 200 or status == 101:
                    return response
        except (ProtocolError, ConnectionError, ValueError, IndexError):
            return None

    async def open_upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        if self.up is not None and (self.up[0].at_eof() or self.up[1].is_closing()):
            self.close_upstream()  # the server closed the idle connection
        if self.up is None:
            try:
                self.up = await asyncio.open_connection(*self.proxy.upstream, limit=HEAD_LIMIT)
            except OSError:
                return None
            self.proxy._count("upstream_connections")
        return self.up

    def close_upstream(self) -> None:
        if self.up is not None:
            self.up[1].close()
            self.up = None

    async def bad_gateway(self) -> None:
        self.proxy._count("upstream_errors")
        self.close_upstream()
        body = b"upstream unreachable or closed the connection\n"
        head = Head(
            "HTTP/1.1 502 Bad Gateway",
            [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
        )
        with contextlib.suppress(SinkClosed):
            await _write(self.writer, head.encode([("Connection", "close")]) + body)


# --- command line --------------------------------------------------------------------------


def host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host, int(port)


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a probability is within 0..1, got {text}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m blobshift.lab.faultproxy",
        description="HTTP proxy that injects S3 faults (SlowDown, InternalError, cut bodies).",
    )
    parser.add_argument("--listen", type=host_port, required=True, help="HOST:PORT to serve on")
    parser.add_argument("--upstream", type=host_port, required=True, help="HOST:PORT of S3")
    parser.add_argument("--slowdown", type=probability, default=0.0, help="P(503 SlowDown)")
    parser.add_argument("--reset", type=probability, default=0.0, help="P(GET body cut)")
    parser.add_argument("--error", type=probability, default=0.0, help="P(500 InternalError)")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible faults")
    parser.add_argument(
        "--dialect",
        choices=DIALECTS,
        default=None,
        help="answer as this S3 server would (riakcs: Riak CS 2.x; needs --credentials)",
    )
    parser.add_argument(
        "--credentials",
        type=Path,
        metavar="FILE",
        help="the users a dialect checks signatures with: a SeaweedFS -s3.config JSON "
        '(identities) or a JSON object {"ACCESS_KEY": "SECRET_KEY"}',
    )
    parser.add_argument("--region", default="us-east-1", help="region signed for upstream")
    args = parser.parse_args(argv)
    if args.dialect is not None and args.credentials is None:
        parser.error(f"--dialect {args.dialect} needs --credentials FILE")
    return args


def load_credentials(path: Path) -> dict[str, str]:
    """access key -> secret key from a SeaweedFS s3 config or a plain JSON object."""
    data = json.loads(path.read_text())
    if isinstance(data, dict) and "identities" in data:
        return {
            c["accessKey"]: c["secretKey"]
            for ident in data["identities"]
            for c in ident.get("credentials", [])
        }
    if isinstance(data, dict) and all(isinstance(v, str) for v in data.values()):
        return {str(k): v for k, v in data.items()}
    raise ValueError(f"{path}: neither a SeaweedFS s3 config nor an access->secret object")


async def serve_until_signalled(proxy: FaultProxy) -> None:
    await proxy.open()
    up = f"{proxy.upstream[0]}:{proxy.upstream[1]}"
    dialect = f" as {type(proxy.dialect).__name__}" if proxy.dialect is not None else ""
    print(f"faultproxy listening on {proxy.url} -> {up} {proxy.rates()}{dialect}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # SIGUSR1 prints the counters, so a long battery run can be watched.
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(_all_counters(proxy), flush=True))
    await stop.wait()
    await proxy.aclose()


def _all_counters(proxy: FaultProxy) -> dict[str, int]:
    dialect = proxy.dialect.counters() if proxy.dialect is not None else {}
    return {**proxy.counters(), **{f"dialect_{k}": v for k, v in dialect.items()}}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        credentials = load_credentials(args.credentials) if args.credentials else None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        # The message names the file, never its content (secrets).
        print(
            f"faultproxy: cannot read credentials from {args.credentials}: {type(exc).__name__}",
            file=sys.stderr,
        )
        return 2
    proxy = FaultProxy(
        args.listen,
        args.upstream,
        slowdown=args.slowdown,
        reset=args.reset,
        error=args.error,
        seed=args.seed,
        dialect=args.dialect,
        credentials=credentials,
        region=args.region,
    )
    try:
        asyncio.run(serve_until_signalled(proxy))
    except OSError as exc:
        print(
            f"faultproxy: cannot listen on {args.listen[0]}:{args.listen[1]}: {exc}",
            file=sys.stderr,
        )
        return 1
    print(f"faultproxy counters: {_all_counters(proxy)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
