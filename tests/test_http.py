"""Framing of the hand-written HTTP/1.1 client (s3/http.py) against a scripted server.

Each test plays a tiny asyncio server on 127.0.0.1 that answers every request it receives
with the next raw answer of its script, so each framing case (RFC 9112) is exact bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import pytest

from blobshift.s3 import http
from blobshift.s3.client import RetryPolicy, S3Client, S3Error, is_retryable
from blobshift.s3.http import HTTPError, Pool
from blobshift.settings import StoreSettings

T = TypeVar("T")
# An answer is raw bytes to write, or a coroutine function that plays a slow server.
Answer = bytes | Callable[[asyncio.StreamWriter], Awaitable[None]]
OK_EMPTY = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"


class Script:
    """Answers the n-th request received (on any connection) with the n-th answer; once
    the answers run out it closes the connection. Counts connections and requests."""

    def __init__(self, *answers: Answer) -> None:
        self.answers = list(answers)
        self.connections = 0
        self.requests: list[tuple[int, bytes]] = []  # (connection number, request head)
        self._tasks: set[asyncio.Task[Any]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Stopped by the test: end quietly (asyncio logs a handler that ends cancelled).
        with contextlib.suppress(asyncio.CancelledError):
            await self._handle(reader, writer)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        number = self.connections
        try:
            while self.answers:  # one answer per request: bounded by the script
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                self.requests.append((number, head))
                answer = self.answers.pop(0)
                if isinstance(answer, bytes):
                    writer.write(answer)
                    await writer.drain()
                else:
                    await answer(writer)
        except ConnectionError:
            pass
        finally:
            writer.close()
            self._tasks.discard(task)

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()


@asynccontextmanager
async def serving(script: Script) -> AsyncIterator[int]:
    server = await asyncio.start_server(script.handle, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        script.stop()


def pool(port: int, **kw: Any) -> Pool:
    options: dict[str, Any] = {"size": 2, "connect_timeout": 5, "read_timeout": 5} | kw
    return Pool("127.0.0.1", port, tls=None, **options)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Every test is bounded: a hang fails it instead of the whole run."""
    return asyncio.run(asyncio.wait_for(coro, 20))


async def get(p: Pool, target: str = "/k") -> bytes:
    resp = await p.request("GET", target, {"Host": "h"})
    return await resp.read()


async def exchange(*answers: Answer, requests: int = 1, **kw: Any) -> tuple[list[Any], Script]:
    """`requests` GETs on one pool; each result is the body or the exception raised."""
    script = Script(*answers)
    results: list[Any] = []
    async with serving(script) as port:
        p = pool(port, **kw)
        try:
            for _ in range(requests):
                try:
                    results.append(await get(p))
                except Exception as exc:
                    results.append(exc)
        finally:
            p.close()
    return results, script


# -- 1. interim (1xx) answers ---------------------------------------------------------


def test_interim_answers_are_skipped_and_the_final_one_is_read() -> None:
    async def go() -> None:
        script = Script(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\nerror",
            b'HTTP/1.1 200 OK\r\nETag: "e2"\r\nContent-Length: 0\r\n\r\n',
        )
        async with serving(script) as port:
            p = pool(port)
            resp = await p.request("PUT", "/k", {"Host": "h"}, b"data")
            assert (resp.status, await resp.read()) == (500, b"error")
            # The next request on the pooled connection reads its own answer.
            resp = await p.request("PUT", "/k", {"Host": "h"}, b"data")
            assert resp.status == 200 and resp.headers["etag"] == '"e2"'
            await resp.read()
            p.close()
        assert script.connections == 1

    run(go())


def test_a_put_answered_100_then_500_is_not_counted_as_copied() -> None:
    async def go() -> None:
        script = Script(
            b"HTTP/1.1 100 Continue\r\n\r\n"
            b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
        )
        async with serving(script) as port:
            store = StoreSettings(
                name="fake", url=f"http://127.0.0.1:{port}", access_key="K", secret_key="S"
            )
            client = S3Client(store, retry=RetryPolicy(attempts=1))
            try:
                with pytest.raises(S3Error) as err:
                    await client.put("k", b"data", {})
                assert err.value.status == 500
            finally:
                client.close()

    run(go())


def test_101_switching_protocols_is_an_error() -> None:
    results, script = run(
        exchange(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n", OK_EMPTY, requests=2)
    )
    assert isinstance(results[0], HTTPError) and "101" in str(results[0])
    assert results[1] == b""
    assert script.connections == 2  # the upgraded connection was not reused


# -- 2. which connections are reusable ------------------------------------------------


@pytest.mark.parametrize(
    ("head", "reused"),
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n", True),
        (b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive, close\r\nContent-Length: 2\r\n", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n", False),
        (b"HTTP/1.1 200 OK\r\nConnection: foo, Close\r\nContent-Length: 2\r\n", False),
    ],
)
def test_a_connection_is_pooled_only_when_the_answer_allows(head: bytes, reused: bool) -> None:
    # The server keeps its side open either way: only the client's rule decides.
    results, script = run(exchange(head + b"\r\nok", head + b"\r\nok", requests=2))
    assert results == [b"ok", b"ok"]
    assert script.connections == (1 if reused else 2)


def test_a_head_answer_has_no_body_whatever_its_content_length() -> None:
    async def go() -> list[bytes]:
        script = Script(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", OK_EMPTY)
        async with serving(script) as port:
            p = pool(port)
            resp = await p.request("HEAD", "/k", {"Host": "h"})
            out = [resp.headers["content-length"].encode(), await resp.read(), await get(p)]
            p.close()
        assert script.connections == 1
        return out

    assert run(go()) == [b"1000", b"", b""]


def test_an_answer_that_arrives_on_an_idle_connection_is_not_taken_for_the_next() -> None:
    asked = asyncio.Event()

    async def then_unasked(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst")
        await writer.drain()
        await asked.wait()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstale")
        await writer.drain()

    async def go() -> list[bytes]:
        fresh = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh"
        script = Script(then_unasked, fresh)
        async with serving(script) as port:
            p = pool(port)
            out = [await get(p)]
            asked.set()
            for _ in range(500):  # until the unasked bytes are in (bounded: 5 s)
                if p._idle and http._buffered(p._idle[0].reader):
                    break
                await asyncio.sleep(0.01)
            else:
                raise AssertionError("the unasked answer never arrived")
            out.append(await get(p))
            p.close()
        assert script.connections == 2
        return out

    assert run(go()) == [b"first", b"fresh"]


def test_a_pooled_connection_the_server_closed_is_replaced_without_an_error() -> None:
    async def answer_then_close(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        writer.close()

    results, script = run(exchange(answer_then_close, OK_EMPTY, requests=2))
    assert results == [b"ok", b""]
    assert script.connections == 2


def test_a_pooled_connection_cut_mid_answer_is_not_silently_retried() -> None:
    async def cut(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Le")
        writer.close()

    # The request reached the server, which began to answer: the caller decides on a retry.
    results, script = run(exchange(OK_EMPTY, cut, OK_EMPTY, requests=2))
    assert results[0] == b"" and isinstance(results[1], HTTPError)
    assert script.connections == 1 and len(script.requests) == 2


# -- 3. size caps for bodies read whole -----------------------------------------------


def test_read_with_a_limit_refuses_a_larger_body_before_reading_it() -> None:
    big = 2 * http.MAX_ERROR_BODY
    answer = b"HTTP/1.1 503 Slow Down\r\nContent-Length: %d\r\n\r\n" % big + b"x" * big

    async def go() -> None:
        async with serving(Script(answer)) as port:
            p = pool(port)
            resp = await p.request("GET", "/k", {"Host": "h"})
            with pytest.raises(HTTPError, match=r"larger than the 1048576 bytes"):
                await resp.read(limit=http.MAX_ERROR_BODY)
            p.close()

    run(go())


def test_read_with_a_limit_refuses_a_larger_chunked_body() -> None:
    chunk = b"x" * 65536
    answer = (
        b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n"
        + (b"10000\r\n" + chunk + b"\r\n") * 40
        + b"0\r\n\r\n"
    )

    async def go() -> None:
        async with serving(Script(answer)) as port:
            p = pool(port)
            resp = await p.request("GET", "/k", {"Host": "h"})
            with pytest.raises(HTTPError, match="larger than the 1048576 bytes"):
                await resp.read(limit=http.MAX_ERROR_BODY)
            p.close()

    run(go())


def test_a_body_that_runs_to_eof_is_capped() -> None:
    big = http.MAX_EOF_BODY + 1

    async def go() -> None:
        async with serving(Script(b"HTTP/1.1 200 OK\r\n\r\n" + b"x" * big)) as port:
            p = pool(port)
            resp = await p.request("GET", "/k", {"Host": "h"})
            with pytest.raises(HTTPError, match="no Content-Length"):
                await resp.read()
            p.close()

    run(go())


def test_a_body_that_runs_to_eof_is_not_read_before_request_returns() -> None:
    sent_rest = asyncio.Event()

    async def later(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.0 200 OK\r\n\r\nfirst ")
        await writer.drain()
        await sent_rest.wait()  # the client has its response: finish the body
        writer.write(b"second")
        writer.close()

    async def go() -> None:
        async with serving(Script(later)) as port:
            p = pool(port)
            resp = await p.request("GET", "/k", {"Host": "h"})
            sent_rest.set()
            assert await resp.read() == b"first second"
            p.close()

    run(go())


def test_object_bodies_read_whole_or_streamed_are_not_capped() -> None:
    size = 3 * http.MAX_ERROR_BODY
    body = bytes(range(256)) * (size // 256)
    chunked = b"".join(
        b"%x\r\n" % len(body[i : i + 100000]) + body[i : i + 100000] + b"\r\n"
        for i in range(0, size, 100000)
    )

    async def go() -> None:
        script = Script(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + body,
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked + b"0\r\n\r\n",
        )
        async with serving(script) as port:
            p = pool(port)
            assert await get(p) == body
            resp = await p.request("GET", "/k", {"Host": "h"})
            assert b"".join([c async for c in resp.iter_chunks(65536)]) == body
            p.close()
        assert script.connections == 1

    run(go())


# -- 4. slow servers ------------------------------------------------------------------


def trickle(prefix: bytes, piece: bytes, every: float = 0.05, steps: int = 200) -> Answer:
    """Sends `prefix`, then `piece` every `every` seconds: always something moves, so
    the no-progress watchdog never fires. Bounded: at most `steps` pieces."""

    async def answer(writer: asyncio.StreamWriter) -> None:
        writer.write(prefix)
        for _ in range(steps):
            await asyncio.sleep(every)
            writer.write(piece)
            await writer.drain()

    return answer


@pytest.mark.parametrize(
    "answer",
    [
        trickle(b"HTTP/1.1 200 OK\r\nX-Slow: ", b"a"),
        trickle(b"", b"HTTP/1.1 102 Processing\r\n\r\n"),
    ],
    ids=["head-byte-by-byte", "endless-102"],
)
def test_a_trickled_head_hits_the_request_deadline(answer: Answer) -> None:
    async def go() -> float:
        loop = asyncio.get_running_loop()
        async with serving(Script(answer)) as port:
            p = pool(port, read_timeout=1, request_deadline=0.5)
            started = loop.time()
            with pytest.raises(HTTPError, match=r"within the 0\.5 s request deadline"):
                await p.request("GET", "/k", {"Host": "h"})
            p.close()
            return loop.time() - started

    assert 0.5 <= run(go()) < 3


def test_a_body_trickled_below_the_minimum_rate_is_aborted() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"

    async def go() -> float:
        loop = asyncio.get_running_loop()
        async with serving(Script(trickle(head, b"x" * 20))) as port:
            p = pool(port, read_timeout=1, request_deadline=0.5, min_rate=4096)
            started = loop.time()
            resp = await p.request("GET", "/k", {"Host": "h"})
            with pytest.raises(HTTPError, match=r"slower than 4096 B/s"):
                await resp.read()
            p.close()
            return loop.time() - started

    assert 0.5 <= run(go()) < 3


def test_a_steady_stream_outlives_the_request_deadline() -> None:
    piece = b"y" * 8192
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (16 * len(piece))

    async def go() -> tuple[bytes, float]:
        loop = asyncio.get_running_loop()
        async with serving(Script(trickle(head, piece, steps=16))) as port:
            p = pool(port, read_timeout=1, request_deadline=0.3, min_rate=4096)
            started = loop.time()
            resp = await p.request("GET", "/k", {"Host": "h"})
            body = b"".join([c async for c in resp.iter_chunks(65536)])
            p.close()
            return body, loop.time() - started

    body, elapsed = run(go())
    assert body == b"y" * 16 * 8192
    assert elapsed > 0.6  # well past the request deadline, at 160 KiB/s


def test_the_default_request_deadline_is_generous() -> None:
    p = Pool("127.0.0.1", 1, tls=None, size=1, connect_timeout=1, read_timeout=60)
    assert p.request_deadline == 600
    assert Pool("h", 1, tls=None, size=1, connect_timeout=1, read_timeout=1).request_deadline == 300


# -- 5. message framing ---------------------------------------------------------------


def test_chunked_body_with_extensions_and_trailers_is_decoded() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;name=value\r\nhello\r\n"
        b'6 ; ext ; quoted="a;b"\r\n world\r\n'
        b"0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n"
    )
    results, script = run(exchange(answer, OK_EMPTY, requests=2))
    assert results == [b"hello world", b""]
    assert script.connections == 1


def test_read_up_to_across_chunks() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n4\r\ndefg\r\n2\r\nhi\r\n0\r\n\r\n"
    )

    async def go() -> list[bytes]:
        async with serving(Script(answer)) as port:
            p = pool(port)
            resp = await p.request("GET", "/k", {"Host": "h"})
            parts = [await resp.read_up_to(5), await resp.read_up_to(5), await resp.read_up_to(5)]
            p.close()
            return parts

    assert run(go()) == [b"abcde", b"fghi", b""]


@pytest.mark.parametrize("chunked", [False, True])
def test_readinto_fills_a_reused_buffer_across_slices(chunked: bool) -> None:
    """A part larger than a read slice, then the short last part; with Content-Length and
    chunked (where a chunk ends mid-slice and the rest waits in the response's buffer)."""
    body = bytes(range(256)) * 2560  # 640 KiB: more than two READ_SLICEs
    if chunked:
        framing = b"Transfer-Encoding: chunked\r\n\r\n"
        framing += b"%x\r\n%s\r\n" % (300_001, body[:300_001])
        framing += b"%x\r\n%s\r\n0\r\n\r\n" % (len(body) - 300_001, body[300_001:])
    else:
        framing = b"Content-Length: %d\r\n\r\n%s" % (len(body), body)

    async def go() -> list[bytes]:
        async with serving(Script(b"HTTP/1.1 200 OK\r\n" + framing)) as port:
            p = pool(port)
            resp = await p.request("GET", "/k", {"Host": "h"})
            buffer = memoryview(bytearray(400 * 1024))
            got = []
            for _ in range(3):
                n = await resp.readinto(buffer)
                got.append(bytes(buffer[:n]))
            p.close()
            return got

    assert run(go()) == [body[: 400 * 1024], body[400 * 1024 :], b""]


@pytest.mark.parametrize(
    "body",
    [
        b"0x5\r\nhello\r\n0\r\n\r\n",  # int(..., 16) would take these
        b"+5\r\nhello\r\n0\r\n\r\n",
        b"-1\r\nhello\r\n0\r\n\r\n",
        b"5_0\r\nhello\r\n0\r\n\r\n",
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"\r\nhello\r\n0\r\n\r\n",
        b"5\nhello\r\n0\r\n\r\n",  # bare LF
        b"5\r\nhelloXX0\r\n\r\n",  # no CRLF after the chunk's data
        b"3\r\nhello\r\n0\r\n\r\n",  # data longer than the chunk size
        b"0\r\nX-Trailer: t\n\r\n",  # bare LF in a trailer
        b"0\r\nNot a trailer\r\n\r\n",
    ],
)
def test_malformed_chunked_framing_is_refused_and_the_connection_dropped(body: bytes) -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body
    results, script = run(
        exchange(answer, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext", requests=2)
    )
    assert isinstance(results[0], HTTPError), results[0]
    assert "chunk" in str(results[0]) or "trailer" in str(results[0])
    assert results[1] == b"next"
    assert script.connections == 2


def test_chunked_body_cut_before_its_trailers_end_is_an_error() -> None:
    answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n"

    async def cut(writer: asyncio.StreamWriter) -> None:
        writer.write(answer)
        writer.close()

    results, _ = run(exchange(cut))
    assert isinstance(results[0], HTTPError), results[0]


def test_body_shorter_than_content_length_is_an_error() -> None:
    async def cut(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
        writer.close()

    results, _ = run(exchange(cut))
    assert isinstance(results[0], HTTPError) and "closed mid-body" in str(results[0])


def test_body_longer_than_content_length_is_not_read_as_the_next_answer() -> None:
    results, script = run(
        exchange(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n\r\nsmuggled",
            b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext",
            requests=2,
        )
    )
    assert results == [b"ok", b"next"]
    assert script.connections == 2


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n folded\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n\tfolded\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-A: a\rContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n: no name\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
        b"HTTP/2 200\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"ICY 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"http/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 099 Odd\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1200 OK\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_a_head_that_is_not_http_is_refused(head: bytes) -> None:
    results, script = run(exchange(head, OK_EMPTY, requests=2))
    assert isinstance(results[0], HTTPError), results[0]
    assert "not HTTP/1.1" in str(results[0])
    assert results[1] == b""
    assert script.connections == 2


def test_control_bytes_in_a_value_are_kept_for_the_caller_to_judge() -> None:
    # They cannot break the framing (lines end only in CRLF); the copy refuses to send
    # such a value on, with an error of its own that names the header.
    head = b"HTTP/1.1 200 OK\r\nX-Amz-Meta-A: a\x00b\x01\r\nContent-Length: 0\r\n\r\n"

    async def go() -> str:
        async with serving(Script(head)) as port:
            p = pool(port)
            resp = await p.request("GET", "/k", {"Host": "h"})
            p.close()
            return resp.headers["x-amz-meta-a"]

    assert run(go()) == "a\x00b\x01"


def test_a_head_with_bare_lf_line_ends_is_refused_when_the_server_closes() -> None:
    async def lf_only(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok")
        writer.close()

    results, _ = run(exchange(lf_only))
    assert isinstance(results[0], HTTPError) and "bare LF" in str(results[0])


def test_an_oversized_head_is_refused() -> None:
    head = b"HTTP/1.1 200 OK\r\n" + b"X-Pad: " + b"p" * http.MAX_HEAD + b"\r\n\r\n"
    results, _ = run(exchange(head))
    assert isinstance(results[0], HTTPError) and "too large" in str(results[0])


@pytest.mark.parametrize(
    "framing",
    [
        b"Content-Length: +2",
        b"Content-Length: 2, 3",
        b"Content-Length: -1",
        b"Content-Length: 0x2",
        b"Content-Length: 2\r\nContent-Length: 3",
        b"Content-Length: \xb2",  # a digit to str.isdigit, not to RFC 9110
        b"Transfer-Encoding: gzip",
        b"Transfer-Encoding: chunked, gzip",
    ],
)
def test_invalid_framing_headers_are_refused(framing: bytes) -> None:
    results, script = run(
        exchange(b"HTTP/1.1 200 OK\r\n" + framing + b"\r\n\r\nok", OK_EMPTY, requests=2)
    )
    assert isinstance(results[0], HTTPError), results[0]
    assert results[1] == b""
    assert script.connections == 2


def test_repeated_equal_content_lengths_are_one() -> None:
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok"
    results, script = run(exchange(head, OK_EMPTY, requests=2))
    assert results == [b"ok", b""]
    assert script.connections == 1


def test_transfer_encoding_overrides_content_length_but_the_connection_is_dropped() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5\r\nhello\r\n0\r\n\r\n"
    )
    results, script = run(exchange(answer, OK_EMPTY, requests=2))
    assert results == [b"hello", b""]
    assert script.connections == 2


def test_transfer_encoding_in_an_http10_answer_is_refused() -> None:
    answer = b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    results, _ = run(exchange(answer))
    assert isinstance(results[0], HTTPError), results[0]


# -- 6. request-side header injection -------------------------------------------------


@pytest.mark.parametrize(
    ("target", "headers", "named"),
    [
        ("/k", {"X-Meta": "a\r\nX-Evil: 1"}, "X-Meta"),
        ("/k", {"X-Meta": "a\nb"}, "X-Meta"),
        ("/k", {"X-Meta": "a\rb"}, "X-Meta"),
        ("/k", {"X-Meta": "a\x00b"}, "X-Meta"),
        ("/k", {"X-Evil\r\nX-Meta": "a"}, "X-Evil"),
        ("/k", {"X\x00": "a"}, "X"),
        ("/k HTTP/1.1\r\nX-Evil: 1\r\n", {}, "request target"),
        ("/a b", {}, "request target"),
    ],
)
def test_header_injection_is_refused_before_anything_is_sent(
    target: str, headers: dict[str, str], named: str
) -> None:
    async def go() -> None:
        script = Script(OK_EMPTY, OK_EMPTY)
        async with serving(script) as port:
            p = pool(port, size=1)
            with pytest.raises(http.HeaderError, match=named) as err:
                await p.request("PUT", target, {"Host": "h", **headers}, b"body")
            assert isinstance(err.value, ValueError) and not is_retryable(err.value)
            # Nothing went out, and the pool still works (its slot was given back).
            assert script.connections == 0
            assert await get(p) == b"" and await get(p) == b""
            p.close()

    run(go())
