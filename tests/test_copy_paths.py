"""The three ways an object is copied (read whole, streamed, in parts) and the HTTP
watchdog, against real SeaweedFS servers; a source that lies about its content and a
server that stalls mid-body are played by tiny asyncio servers of the test's own."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
from boto3.s3.transfer import TransferConfig
from conftest import store_dict, write_settings
from helpers import contents, log_records, md5s, run_cli, seed

from blobshift.copy import MIB, CopyOptions, IntegrityError, copy_object
from blobshift.lab.faultproxy import FaultProxy
from blobshift.ratelimit import Limits
from blobshift.s3.client import S3Client, S3Error
from blobshift.s3.http import HTTPError
from blobshift.settings import StoreSettings

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def client(server, bucket: str, *, read_timeout: float = 60) -> S3Client:
    store = StoreSettings(
        name=f"{server.ip} store",
        url=server.url,
        access_key=server.access_key,
        secret_key=server.secret_key,
        bucket=bucket,
        config={"signature_version": "s3v4", "read_timeout": read_timeout},
    )
    return S3Client(store)


def fake_store(port: int, bucket: str = "b", read_timeout: float = 60) -> S3Client:
    store = StoreSettings(
        name="fake store",
        url=f"http://127.0.0.1:{port}",
        access_key="K",
        secret_key="S",
        bucket=bucket,
        config={"signature_version": "s3v4", "read_timeout": read_timeout},
    )
    return S3Client(store)


@asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()


async def copy(old: S3Client, new: S3Client, key: str) -> int:
    try:
        return await copy_object(old, new, key, Limits(), CopyOptions())
    finally:
        old.close()
        new.close()


def test_medium_object_is_streamed_into_one_put_checked_by_the_source_etag(
    old_server, new_server, buckets
):
    old_b, new_b = buckets
    body = os.urandom(3 * MIB + 5)
    seed(old_server, old_b, {"medium.bin": body}, ContentType="application/x-m")
    copied = asyncio.run(copy(client(old_server, old_b), client(new_server, new_b), "medium.bin"))
    assert copied == len(body)
    head = new_server.client().head_object(Bucket=new_b, Key="medium.bin")
    # One PUT: the stored ETag is the content's MD5, not a multipart ETag.
    assert head["ETag"].strip('"') == hashlib.md5(body).hexdigest()
    assert head["ContentType"] == "application/x-m"


def test_source_uploaded_in_parts_is_copied_in_parts(old_server, new_server, buckets):
    old_b, new_b = buckets
    body = os.urandom(6 * MIB)
    old_server.client().upload_fileobj(
        io.BytesIO(body),
        old_b,
        "parts.bin",
        Config=TransferConfig(multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB),
    )
    assert "-" in old_server.client().head_object(Bucket=old_b, Key="parts.bin")["ETag"]
    asyncio.run(copy(client(old_server, old_b), client(new_server, new_b), "parts.bin"))
    got = new_server.client().get_object(Bucket=new_b, Key="parts.bin")
    # Its ETag is no MD5, so it cannot vouch for a streamed PUT: parts hashed here.
    assert got["ETag"].strip('"').endswith("-1")
    assert got["Body"].read() == body


def test_streamed_body_that_differs_from_the_source_etag_is_refused(new_server, buckets):
    _, new_b = buckets
    body = os.urandom(2 * MIB)
    wrong_etag = hashlib.md5(body + b"x").hexdigest()

    async def lying_source(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        head = f'HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nETag: "{wrong_etag}"\r\n\r\n'
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    async def run() -> None:
        async with serving(lying_source) as port:
            with pytest.raises(IntegrityError, match="does not match the source ETag"):
                await copy(fake_store(port), client(new_server, new_b), "lie.bin")

    asyncio.run(run())
    listed = new_server.client().list_objects_v2(Bucket=new_b).get("KeyCount", 0)
    assert listed == 0  # the new store refused the body: nothing half-written


def body_limited_store(limit: int, seen: list[str], parts: dict[int, bytes]) -> Handler:
    """A new store behind a proxy that admits bodies up to `limit` bytes: above it, as
    nginx's client_max_body_size, 413 at once, the body drained, the connection closed.
    Below, just enough of S3's multipart upload to take parts (checked by Content-MD5)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                line, *fields = head.split("\r\n")
                method, target, _ = line.split(" ")
                headers = {
                    k.lower(): v.strip() for k, _, v in (f.partition(":") for f in fields if f)
                }
                length = int(headers.get("content-length", "0"))
                query = target.partition("?")[2]
                seen.append(f"{method} {query.split('=')[0]} {length}")
                if length > limit:
                    page = b"<html>413 Request Entity Too Large</html>"
                    writer.write(
                        b"HTTP/1.1 413 Request Entity Too Large\r\nConnection: close\r\n"
                        b"Content-Length: %d\r\n\r\n%s" % (len(page), page)
                    )
                    await writer.drain()
                    await reader.readexactly(length)
                    return
                data = await reader.readexactly(length)
                extra, answer = "", b""
                if query == "uploads":
                    answer = b"<InitiateMultipartUploadResult><UploadId>u1</UploadId>"
                    answer += b"</InitiateMultipartUploadResult>"
                elif query.startswith("partNumber="):
                    md5 = hashlib.md5(data)
                    assert headers["content-md5"] == base64.b64encode(md5.digest()).decode()
                    parts[int(query.split("&")[0].split("=")[1])] = data
                    extra = f'ETag: "{md5.hexdigest()}"\r\n'
                elif method == "POST":
                    answer = b"<CompleteMultipartUploadResult></CompleteMultipartUploadResult>"
                writer.write(
                    f"HTTP/1.1 200 OK\r\n{extra}Content-Length: {len(answer)}\r\n\r\n".encode()
                    + answer
                )
                await writer.drain()
        except asyncio.IncompleteReadError:
            pass
        finally:
            writer.close()

    return handle


@pytest.mark.parametrize("part_size", [8 * MIB, 32 * MIB])
def test_a_put_refused_as_too_large_is_copied_again_in_parts(old_server, buckets, part_size):
    """--multipart-threshold 200M behind a proxy with a 9M body limit: the streamed PUT
    is answered 413 and the object goes again, in parts, when parts are smaller."""
    old_b, _ = buckets
    body = os.urandom(20 * MIB + 3)
    seed(old_server, old_b, {"big.bin": body})
    seen: list[str] = []
    parts: dict[int, bytes] = {}
    options = CopyOptions(multipart_threshold=200 * MIB, part_size=part_size)

    async def run() -> int:
        async with serving(body_limited_store(9 * MIB, seen, parts)) as port:
            old, new = client(old_server, old_b), fake_store(port)
            try:
                return await copy_object(old, new, "big.bin", Limits(), options)
            finally:
                old.close()
                new.close()

    if part_size > len(body):  # parts no smaller than what was refused: no second try
        with pytest.raises(S3Error, match="413"):
            asyncio.run(run())
        assert seen == [f"PUT  {len(body)}"]
        return
    assert asyncio.run(run()) == len(body)
    assert seen[0] == f"PUT  {len(body)}"  # the single PUT, refused
    assert seen[1:-1] == [
        "POST uploads 0",
        f"PUT partNumber {8 * MIB}",
        f"PUT partNumber {8 * MIB}",
        f"PUT partNumber {4 * MIB + 3}",
    ]
    assert seen[-1].startswith("POST uploadId ")  # complete
    assert b"".join(parts[n] for n in sorted(parts)) == body


def test_after_one_refused_put_the_run_sends_objects_that_large_in_parts(old_server, buckets):
    """The default threshold (200M) behind a 9M body limit: the first large object is
    refused once and goes in parts; the next ones go in parts at once (one refusal per
    run, not per object), and objects under the refused size still try one PUT."""
    old_b, _ = buckets
    blobs = {
        "a.bin": os.urandom(20 * MIB + 3),
        "b.bin": os.urandom(24 * MIB),
        "c.bin": os.urandom(12 * MIB),
    }
    seed(old_server, old_b, blobs)
    seen: list[str] = []
    parts: dict[int, bytes] = {}
    limits = Limits()

    async def run() -> None:
        async with serving(body_limited_store(9 * MIB, seen, parts)) as port:
            old, new = client(old_server, old_b), fake_store(port)
            try:
                for key, body in blobs.items():
                    assert await copy_object(
                        old, new, key, limits, CopyOptions(), len(body)
                    ) == len(body)
            finally:
                old.close()
                new.close()

    asyncio.run(run())
    single_puts = [s for s in seen if s.startswith("PUT  ")]
    # a.bin: refused; b.bin (larger): parts at once; c.bin (smaller): tried, refused.
    assert single_puts == [f"PUT  {20 * MIB + 3}", f"PUT  {12 * MIB}"]
    assert limits.refused_put_size == 12 * MIB
    assert seen.count("POST uploads 0") == 3


def test_a_body_that_stops_half_way_times_out(tmp_path):
    async def stalling(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 10)
        await writer.drain()
        await asyncio.sleep(30)  # never sends the rest

    async def run() -> float:
        async with serving(stalling) as port:
            store = fake_store(port, read_timeout=1)
            loop = asyncio.get_running_loop()
            started = loop.time()
            resp = await store.get("k")
            with pytest.raises(HTTPError, match="sent nothing for 1 s mid-body"):
                await resp.read()
            store.close()
            return loop.time() - started

    elapsed = asyncio.run(run())
    assert 1 <= elapsed < 5


def test_a_server_that_never_answers_times_out():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(30)

    async def run() -> None:
        async with serving(silent) as port:
            store = fake_store(port, read_timeout=1)
            with pytest.raises(HTTPError, match=r"no response from 127\.0\.0\.1:\d+ in 1 s"):
                await store.request("GET", "k")
            store.close()

    asyncio.run(run())


@pytest.mark.reliability(
    "GETs cut mid-body while streamed into PUTs, and 503 SlowDown, on all three copy paths",
    group="Faults",
)
def test_every_copy_path_survives_cut_gets_and_slowdowns(
    old_server, new_server, buckets, tmp_path, evidence
):
    """A GET cut while its body streams into a PUT fails that PUT cleanly; the copy is
    tried again and nothing half-written is left behind."""
    old_b, new_b = buckets
    blobs = {f"small/{i}": os.urandom(4096) for i in range(30)}
    blobs |= {f"streamed/{i}": os.urandom(2 * MIB + i) for i in range(6)}
    blobs |= {"parts/0": os.urandom(9 * MIB)}
    seed(old_server, old_b, blobs)
    old_proxy = FaultProxy(("127.0.0.6", 0), (old_server.ip, old_server.s3_port), seed=3)
    new_proxy = FaultProxy(("127.0.0.7", 0), (new_server.ip, new_server.s3_port), seed=5)
    with old_proxy.start(), new_proxy.start():
        old_proxy.configure(reset=0.3)
        new_proxy.configure(slowdown=0.3)
        settings = write_settings(
            tmp_path / "localsettings.py",
            new=store_dict(new_server, new_b, sigv2=False) | {"url": new_proxy.url},
            old=store_dict(old_server, old_b, sigv2=True) | {"url": old_proxy.url},
        )
        run_cli("migrate-backend", "--settings", settings, "--log-dir", tmp_path, check=0)
        cut, slowed = old_proxy.counters()["reset"], new_proxy.counters()["slowdown"]
        assert cut > 3 and slowed > 3, (cut, slowed)
    assert log_records(tmp_path) == []
    copied = contents(new_server, new_b)
    lost = sum(1 for k, v in md5s(blobs).items() if copied.get(k) != v)
    evidence.update({"blobs": len(blobs), "GETs cut": cut, "SlowDowns": slowed})
    evidence["blobs lost"] = lost
    assert lost == 0
