"""Object metadata moves byte for byte, against the two real SeaweedFS servers.

Header values travel as bytes carried in a latin-1 `str` (one character per byte), read
and written that way, and the signers sign those bytes. Values here are written to the
old store and read back from the new one over plain sockets of the test's own (not the
engine's HTTP client), and compared as bytes. A source header that HTTP cannot carry (a
line break, a NUL) is refused: that blob is logged, never copied with a different value.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from conftest import store_dict, write_settings
from helpers import log_records, run_cli, write_manifest
from rawhttp import METADATA, assert_same_metadata, head_new, put_old, store_client, utf8

from blobshift.copy import MIB, CopyOptions, copy_object
from blobshift.lab.seaweed import SeaweedServer
from blobshift.ratelimit import Limits
from blobshift.s3.client import S3Client, is_retryable
from blobshift.s3.http import HeaderError, Pool, Response
from blobshift.settings import StoreSettings


@pytest.mark.parametrize(
    "size",
    [
        pytest.param(11, id="read whole"),
        pytest.param(MIB + 1, id="streamed"),
        pytest.param(8 * MIB + 1, id="multipart"),
    ],
)
def test_metadata_arrives_byte_for_byte(
    settings_file: Path,
    old_server: SeaweedServer,
    new_server: SeaweedServer,
    buckets: tuple[str, str],
    tmp_path: Path,
    size: int,
) -> None:
    old_b, new_b = buckets
    key = "docs/é 鍵.pdf"
    held = put_old(old_server, old_b, key, METADATA, os.urandom(size))
    # The premise: the old store keeps the bytes it was sent.
    assert_same_metadata(held, METADATA)

    run_cli("migrate-backend", "--settings", settings_file, "--log-dir", tmp_path / "logs", check=0)
    assert log_records(tmp_path / "logs") == []
    assert_same_metadata(head_new(new_server, new_b, key), METADATA)


def test_metadata_ending_in_byte_a0_arrives_intact(
    settings_file: Path,
    old_server: SeaweedServer,
    new_server: SeaweedServer,
    buckets: tuple[str, str],
    tmp_path: Path,
) -> None:
    """Read as latin-1, these end in "\xa0" and "\x85", which str.strip() would drop."""
    old_b, new_b = buckets
    metadata = {b"x-amz-meta-word": utf8("voilà"), b"x-amz-meta-dots": utf8("wait…")}
    assert_same_metadata(put_old(old_server, old_b, "k", metadata, b"x"), metadata)
    run_cli("migrate-backend", "--settings", settings_file, "--log-dir", tmp_path / "l", check=0)
    assert_same_metadata(head_new(new_server, new_b, "k"), metadata)


def test_engine_client_writes_and_reads_metadata_bytes(
    new_server: SeaweedServer, buckets: tuple[str, str]
) -> None:
    """The engine's own PUT (SigV4, signed over the bytes sent) and HEAD round-trip them."""
    _, new_b = buckets
    wire = {k.decode().lower(): v.decode("latin-1") for k, v in METADATA.items()}

    async def put_and_head() -> dict[str, str]:
        client = store_client(new_server, new_b, sigv2=False)
        try:
            await client.put("k", b"body", wire)
            head = await client.head("k")
        finally:
            client.close()
        assert head is not None
        return dict(head.headers)

    assert {k: v for k, v in asyncio.run(put_and_head()).items() if k in wire} == wire
    assert_same_metadata(head_new(new_server, new_b, "k"), METADATA)


# -- headers HTTP cannot carry -----------------------------------------------------------


def response_with(headers: dict[str, str]) -> Response:
    pool = Pool("unused", 1, tls=None, size=1, connect_timeout=1, read_timeout=1)
    return Response(200, "OK", headers, None, pool)


class _OddStore(BaseHTTPRequestHandler):
    """An old store that answers every object with a header value holding `BAD`."""

    protocol_version = "HTTP/1.1"
    BAD = ""

    def _answer(self, body: bool) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        bucket_root = self.path.partition("?")[0].rstrip("/").count("/") <= 1
        if bucket_root:  # the preflight listing
            data = b'<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
            data += b"<IsTruncated>false</IsTruncated></ListBucketResult>"
            extra = b"Content-Type: application/xml\r\n"
        else:
            data = b"content"
            note = self.BAD if self.path.endswith("/bad") else "fine"
            extra = f"Content-Type: text/plain\r\nx-amz-meta-note: {note}\r\n".encode()
        head = b"HTTP/1.1 200 OK\r\n" + extra
        head += b'ETag: "9a0364b9e99bb480dd25e1f0284c8555"\r\n'
        head += f"Content-Length: {len(data)}\r\n\r\n".encode()
        self.wfile.write(head + (data if body else b""))

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def odd_store(bad: str) -> Iterator[str]:
    handler = type("Handler", (_OddStore,), {"BAD": bad})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# A line break is refused by the HTTP reader already (no bare CR/LF in a head), a NUL
# passes it and is refused by the PUT's head; either way the blob is logged, nothing
# written, and the value (metadata may be private) is in no message.
@pytest.mark.parametrize(
    "bad, problem",
    [
        ("a\0b", "header x-amz-meta-note has a CR, LF, NUL or non-byte in its value"),
        ("a\nb", ""),
    ],
    ids=["NUL", "LF"],
)
def test_blob_with_an_uncopyable_header_is_logged_not_copied(
    new_server: SeaweedServer, buckets: tuple[str, str], tmp_path: Path, bad: str, problem: str
) -> None:
    _, new_b = buckets
    with odd_store(bad) as url:
        old = {**store_dict(new_server, "old", sigv2=True), "url": url}
        settings = write_settings(
            tmp_path / "localsettings.py", new=store_dict(new_server, new_b, sigv2=False), old=old
        )
        manifest = write_manifest(tmp_path / "m.jsonl", [{"blob_key": "bad"}, {"blob_key": "ok"}])
        proc = run_cli(
            "migrate-backend",
            "--settings",
            settings,
            "--log-dir",
            tmp_path / "logs",
            "--keys-from",
            manifest,
        )
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    records = log_records(tmp_path / "logs")
    assert [r["blob_key"] for r in records] == ["bad"]
    assert problem in records[0]["error"]
    assert bad not in records[0]["error"]
    client = new_server.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=new_b).get("Contents", [])]
    assert keys == ["ok"]
    assert client.head_object(Bucket=new_b, Key="ok")["Metadata"] == {"note": "fine"}


def test_copy_refuses_an_uncopyable_header_at_once(
    new_server: SeaweedServer, buckets: tuple[str, str]
) -> None:
    """Not retried (every attempt would fail), and nothing is written."""
    _, new_b = buckets

    async def copy(url: str) -> None:
        store = StoreSettings(name="odd store", url=url, access_key="K", secret_key="S", bucket="b")
        old, new = S3Client(store), store_client(new_server, new_b, sigv2=False)
        try:
            await copy_object(old, new, "bad", Limits(), CopyOptions())
        finally:
            old.close()
            new.close()

    with odd_store("x\0y") as url, pytest.raises(HeaderError) as info:
        asyncio.run(copy(url))
    assert str(info.value) == (
        "header x-amz-meta-note has a CR, LF, NUL or non-byte in its value: not sent "
        "(it would not arrive as written)"
    )
    assert not is_retryable(info.value)
    assert "Contents" not in new_server.client().list_objects_v2(Bucket=new_b)
