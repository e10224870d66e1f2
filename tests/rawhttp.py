"""Requests signed by the engine's client and sent on a plain socket, so that tests see
header bytes exactly as a server sends and keeps them (not as an HTTP library parses them).
"""

from __future__ import annotations

import socket
from typing import Any

from blobshift.s3.client import S3Client
from blobshift.settings import StoreSettings

Headers = dict[bytes, bytes]


def store_client(server: Any, bucket: str, *, sigv2: bool) -> S3Client:
    return S3Client(
        StoreSettings(
            name=f"{server.ip} store",
            url=server.url,
            access_key=server.access_key,
            secret_key=server.secret_key,
            bucket=bucket,
            list_version=1 if sigv2 else 2,
            config={"signature_version": "s3" if sigv2 else "s3v4"},
        )
    )


def raw(
    server: Any,
    client: S3Client,
    method: str,
    key: str,
    headers: Headers | None = None,
    body: bytes = b"",
) -> tuple[int, Headers, bytes]:
    """One request signed by `client`, sent and read on a plain socket: the status, the
    response headers as bytes (lower-case names) and the body."""
    sent = {k.decode("latin-1"): v.decode("latin-1") for k, v in (headers or {}).items()}
    target, signed = client.prepare(method, key, headers=sent)
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in signed.items())]
    lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
    with socket.create_connection((server.ip, server.s3_port), timeout=30) as sock:
        sock.sendall("\r\n".join(lines).encode("latin-1") + body)
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    got: Headers = {}
    for line in header_lines:
        name, _, value = line.partition(b":")
        got[name.strip().lower()] = value.strip(b" \t")  # what an HTTP parser strips
    return int(status_line.split()[1]), got, rest


def put_old(server: Any, bucket: str, key: str, headers: Headers, body: bytes) -> Headers:
    """PUT with SigV2 (as the Riak CS stand-in takes it); what the old store then holds."""
    client = store_client(server, bucket, sigv2=True)
    status, _, answer = raw(server, client, "PUT", key, headers, body)
    assert status == 200, answer
    status, held, _ = raw(server, client, "HEAD", key)
    assert status == 200
    return held


def head_new(server: Any, bucket: str, key: str) -> Headers:
    status, got, _ = raw(server, store_client(server, bucket, sigv2=False), "HEAD", key)
    assert status == 200, (status, key)
    return got


def utf8(text: str) -> bytes:
    return text.encode("utf-8")


METADATA: Headers = {
    b"Content-Type": b"application/pdf",
    b"Content-Disposition": utf8('attachment; filename="é.pdf"'),
    b"x-amz-meta-utf8": utf8("Grüße, 鍵 🙂"),
    b"x-amz-meta-rfc2047": b"=?UTF-8?B?w6kucGRm?=",
    b"x-amz-meta-latin1": b"caf\xe9",  # not UTF-8: still bytes to keep
    b"x-amz-meta-spaced": b"a  b",
    # Go servers and botocore fold the NBSP run when signing (SigV4), Ceph RGW does not:
    # the engine's client learns which from the first refusal.
    b"x-amz-meta-nbsp": utf8("a\u00a0\u00a0b"),
    b"x-amz-meta-ellipsis": utf8("to be continued… fin"),
}


def assert_same_metadata(got: Headers, want: Headers) -> None:
    for name, value in want.items():
        assert got.get(name.lower()) == value, name
