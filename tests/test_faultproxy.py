"""The fault proxy, with boto3 (retries off) in front of a real SeaweedFS server."""

from __future__ import annotations

import hashlib
import http.client
import io
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, IncompleteReadError, ResponseStreamingError
from conftest import store_dict, write_settings

from blobshift.blobdb import MiB, S3BlobDB
from blobshift.lab.faultproxy import FaultProxy
from blobshift.lab.seaweed import SeaweedServer
from blobshift.settings import load_settings

PROXY_IP = "127.0.0.4"
CUT_ERRORS = (ResponseStreamingError, IncompleteReadError)


def client_via(url: str, server: SeaweedServer, signature_version: str = "s3v4") -> Any:
    """boto3 through `url`, signing for `server`'s credentials, with no retries."""
    return boto3.session.Session().client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
        config=Config(
            signature_version=signature_version,
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            read_timeout=20,
        ),
    )


@pytest.fixture
def proxy(new_server: SeaweedServer) -> Iterator[FaultProxy]:
    with FaultProxy((PROXY_IP, 0), (new_server.ip, new_server.s3_port), seed=7) as running:
        yield running


@pytest.fixture
def s3(proxy: FaultProxy, new_server: SeaweedServer) -> Any:
    return client_via(proxy.url, new_server)


def counters_without_connections(proxy: FaultProxy) -> dict[str, int]:
    counts = proxy.counters()
    del counts["connections"], counts["upstream_connections"]
    return counts


def zeros(**nonzero: int) -> dict[str, int]:
    base = dict.fromkeys(
        ("requests", "forwarded", "slowdown", "error", "reset", "upstream_errors"), 0
    )
    return {**base, **nonzero}


@pytest.mark.parametrize("signature_version", ["s3v4", "s3"])
def test_no_faults_everything_passes(
    old_server: SeaweedServer,
    new_server: SeaweedServer,
    buckets: tuple[str, str],
    signature_version: str,
) -> None:
    # SigV4 signs the Host header: it must reach the server as the client sent it.
    server, bucket = (
        (new_server, buckets[1]) if signature_version == "s3v4" else (old_server, buckets[0])
    )
    with FaultProxy((PROXY_IP, 0), (server.ip, server.s3_port)) as proxy:
        s3 = client_via(proxy.url, server, signature_version)
        big = os.urandom(MiB) * 20
        s3.put_object(Bucket=bucket, Key="big", Body=io.BytesIO(big))  # Expect: 100-continue
        s3.put_object(Bucket=bucket, Key="small", Body=b"tiny", ContentType="text/plain")
        assert s3.head_object(Bucket=bucket, Key="big")["ContentLength"] == len(big)
        got = s3.get_object(Bucket=bucket, Key="big")["Body"].read()
        assert hashlib.md5(got).digest() == hashlib.md5(big).digest()
        assert s3.get_object(Bucket=bucket, Key="small")["Body"].read() == b"tiny"
        if signature_version == "s3v4":  # SigV2 listing needs blobdb's workaround (see there)
            listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
            assert sorted(o["Key"] for o in listed) == ["big", "small"]
        with pytest.raises(ClientError) as missing:
            s3.head_object(Bucket=bucket, Key="nope")
        assert missing.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
        requests = 7 if signature_version == "s3v4" else 6
        assert counters_without_connections(proxy) == zeros(requests=requests, forwarded=requests)
        counts = proxy.counters()
        assert counts["connections"] == counts["upstream_connections"] == 1  # kept alive


def test_slowdown_answers_every_request(
    proxy: FaultProxy, s3: Any, new_server: SeaweedServer, buckets: tuple[str, str]
) -> None:
    bucket = buckets[1]
    new_server.client().put_object(Bucket=bucket, Key="there", Body=b"x")
    proxy.slowdown = 1.0
    calls = [
        lambda: s3.put_object(Bucket=bucket, Key="new", Body=b"abc"),
        lambda: s3.put_object(Bucket=bucket, Key="new", Body=io.BytesIO(b"abc")),  # Expect
        lambda: s3.get_object(Bucket=bucket, Key="there"),
        lambda: s3.list_objects_v2(Bucket=bucket),
        lambda: s3.delete_object(Bucket=bucket, Key="there"),
        lambda: s3.head_object(Bucket=bucket, Key="there"),
    ]
    for call in calls:
        with pytest.raises(ClientError) as caught:
            call()
        reply = caught.value.response
        assert reply["ResponseMetadata"]["HTTPStatusCode"] == 503
        # a HEAD answer has no body, so botocore only has the status to go on
        assert reply["Error"]["Code"] in (("503",) if call is calls[-1] else ("SlowDown",))
    assert counters_without_connections(proxy) == zeros(requests=6, slowdown=6)
    # A PUT waiting for 100 Continue is answered and its connection closed (its body
    # never came); after the other error answers the connection stays open.
    assert proxy.counters()["connections"] == 3
    direct = new_server.client()
    assert [o["Key"] for o in direct.list_objects_v2(Bucket=bucket)["Contents"]] == ["there"]
    proxy.slowdown = 0.0  # changed at runtime: the same client works again
    s3.put_object(Bucket=bucket, Key="new", Body=b"abc")
    assert direct.get_object(Bucket=bucket, Key="new")["Body"].read() == b"abc"


def test_fault_survives_a_body_sent_without_waiting_for_100_continue() -> None:
    """A client may send the body anyway (botocore does after waiting 1 s): the proxy must
    not close on unread input, or the kernel's RST can destroy the 503 before it is read."""
    with FaultProxy((PROXY_IP, 0), ("127.0.0.1", 9), slowdown=1.0) as proxy:
        body = b"x" * (8 * MiB)
        with socket.create_connection((PROXY_IP, proxy.port), timeout=10) as sock:
            head = "PUT /b/k HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\n"
            sock.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode())
            sock.sendall(body)
            received = b"".join(iter(lambda: sock.recv(65536), b""))
    assert received.startswith(b"HTTP/1.1 503 Slow Down\r\n")
    assert b"Connection: close" in received
    assert received.endswith(b"</Error>")
    assert proxy.counters()["slowdown"] == 1


def test_internal_error(proxy: FaultProxy, s3: Any, buckets: tuple[str, str]) -> None:
    proxy.configure(error=1.0)
    with pytest.raises(ClientError) as caught:
        s3.put_object(Bucket=buckets[1], Key="k", Body=b"v")
    assert caught.value.response["Error"]["Code"] == "InternalError"
    assert caught.value.response["ResponseMetadata"]["HTTPStatusCode"] == 500
    assert counters_without_connections(proxy) == zeros(requests=1, error=1)


def test_reset_cuts_get_bodies_only(proxy: FaultProxy, s3: Any, buckets: tuple[str, str]) -> None:
    bucket = buckets[1]
    payload = os.urandom(2 * MiB)
    proxy.reset = 1.0
    s3.put_object(Bucket=bucket, Key="blob", Body=payload)  # PUTs are never cut
    s3.put_object(Bucket=bucket, Key="blob2", Body=io.BytesIO(payload))
    assert s3.head_object(Bucket=bucket, Key="blob")["ContentLength"] == len(payload)
    body = s3.get_object(Bucket=bucket, Key="blob")["Body"]  # headers arrive intact
    with pytest.raises(CUT_ERRORS) as caught:
        body.read()
    half = len(payload) // 2
    assert f"IncompleteRead({half} bytes read, {half} more expected)" in str(caught.value)
    assert counters_without_connections(proxy) == zeros(requests=4, forwarded=4, reset=1)
    proxy.reset = 0.0
    assert s3.get_object(Bucket=bucket, Key="blob")["Body"].read() == payload


def test_seeded_faults_are_reproducible(
    new_server: SeaweedServer, buckets: tuple[str, str]
) -> None:
    new_server.client().put_object(Bucket=buckets[1], Key="k", Body=b"v")
    upstream = (new_server.ip, new_server.s3_port)

    def pattern() -> list[bool]:
        with FaultProxy((PROXY_IP, 0), upstream, slowdown=0.5, seed=42) as proxy:
            s3 = client_via(proxy.url, new_server)
            failed = []
            for _ in range(40):
                try:
                    s3.head_object(Bucket=buckets[1], Key="k")
                    failed.append(False)
                except ClientError:
                    failed.append(True)
            assert proxy.counters()["slowdown"] == sum(failed)
            return failed

    first = pattern()
    assert first == pattern()
    assert 8 <= sum(first) <= 32  # about half


def test_rates_are_validated() -> None:
    proxy = FaultProxy((PROXY_IP, 0), ("127.0.0.1", 9))
    with pytest.raises(ValueError, match="slowdown"):
        proxy.configure(slowdown=1.5)
    with pytest.raises(ValueError, match="reset"):
        proxy.reset = -0.1
    assert proxy.rates() == {"slowdown": 0.0, "reset": 0.0, "error": 0.0}


def test_start_reports_a_busy_port() -> None:
    with FaultProxy((PROXY_IP, 0), ("127.0.0.1", 9)) as first, pytest.raises(OSError):
        FaultProxy((PROXY_IP, first.port), ("127.0.0.1", 9)).start()


def test_unreachable_upstream_is_a_502() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        dead = probe.getsockname()
    with FaultProxy((PROXY_IP, 0), dead) as proxy:
        conn = http.client.HTTPConnection(PROXY_IP, proxy.port, timeout=10)
        conn.request("GET", "/x")
        reply = conn.getresponse()
        assert (reply.status, reply.getheader("Connection")) == (502, "close")
    assert proxy.counters()["upstream_errors"] == 1


# --- HTTP framing, against a tiny local upstream that answers chunked ----------------------


class ChunkedEcho(BaseHTTPRequestHandler):
    """Echoes the request body back chunked; HEAD gets a Content-Length and no body."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while size := int(self.rfile.readline().split(b";")[0], 16):
                data += self.rfile.read(size)
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b""):
                pass
            return data
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_PUT(self) -> None:
        self.send_chunked(self.read_body())

    def do_GET(self) -> None:
        self.send_chunked(b"g" * 5000)

    def send_chunked(self, data: bytes) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("X-Host-Seen", self.headers["Host"])
        self.end_headers()
        for i in range(0, len(data), 1000):
            piece = data[i : i + 1000]
            self.wfile.write(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
        self.wfile.write(b"0\r\nX-Trailer: yes\r\n\r\n")

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "12345")
        self.end_headers()


@pytest.fixture
def echo_upstream() -> Iterator[tuple[str, int]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), ChunkedEcho)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[:2]
    server.shutdown()
    server.server_close()


def test_chunked_bodies_and_head_keep_the_connection_in_step(
    echo_upstream: tuple[str, int],
) -> None:
    with FaultProxy((PROXY_IP, 0), echo_upstream) as proxy:
        conn = http.client.HTTPConnection(PROXY_IP, proxy.port, timeout=10)
        for size in (0, 5, 250_000):
            data = os.urandom(size)
            pieces = (data[i : i + 7000] for i in range(0, size, 7000))
            conn.request("PUT", "/echo", body=pieces, encode_chunked=True)
            reply = conn.getresponse()
            assert reply.read() == data
            assert reply.getheader("X-Host-Seen") == f"{PROXY_IP}:{proxy.port}"
            conn.request("HEAD", "/anything")
            head = conn.getresponse()
            assert (head.status, head.getheader("Content-Length"), head.read()) == (
                200,
                "12345",
                b"",
            )
        counts = proxy.counters()
        assert counts["connections"] == counts["upstream_connections"] == 1
        assert counts["forwarded"] == 6


def test_reset_cuts_a_chunked_body(echo_upstream: tuple[str, int]) -> None:
    with FaultProxy((PROXY_IP, 0), echo_upstream, reset=1.0) as proxy:
        conn = http.client.HTTPConnection(PROXY_IP, proxy.port, timeout=10)
        conn.request("PUT", "/echo", body=b"x" * 5000)  # not a GET: relayed whole
        assert conn.getresponse().read() == b"x" * 5000
        conn.request("GET", "/five-chunks")
        reply = conn.getresponse()
        assert reply.status == 200
        with pytest.raises(http.client.IncompleteRead) as caught:
            reply.read()
        assert len(caught.value.partial) < 5000
        assert proxy.counters()["reset"] == 1


# --- blobdb through the proxy ----------------------------------------------------------------


def test_blobdb_get_survives_one_cut_body(
    tmp_path: Path, proxy: FaultProxy, new_server: SeaweedServer, buckets: tuple[str, str]
) -> None:
    raw = {**store_dict(new_server, buckets[1], sigv2=False), "url": proxy.url}
    db = S3BlobDB(load_settings(write_settings(tmp_path / "ls.py", raw, None, False)).new)
    payload = os.urandom(3 * MiB)
    db.put("blob", payload)
    proxy.reset = 1.0

    def heal(**_: Any) -> None:  # the first GET's headers are in: later GETs go through
        proxy.reset = 0.0

    db.client.meta.events.register("after-call.s3.GetObject", heal)
    assert db.get("blob") == payload
    assert proxy.counters()["reset"] == 1

    proxy.reset = 1.0
    db.client.meta.events.unregister("after-call.s3.GetObject", heal)
    with pytest.raises(CUT_ERRORS):
        db.get("blob")
    assert proxy.counters()["reset"] == 1 + db.read_attempts


# --- the command line ----------------------------------------------------------------------


def test_cli(new_server: SeaweedServer, buckets: tuple[str, str]) -> None:
    with socket.socket() as probe:
        probe.bind((PROXY_IP, 0))
        port = probe.getsockname()[1]
    args = [
        sys.executable,
        "-m",
        "blobshift.lab.faultproxy",
        f"--listen={PROXY_IP}:{port}",
        f"--upstream={new_server.ip}:{new_server.s3_port}",
        "--slowdown=1",
        "--reset=0.1",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        banner = proc.stdout.readline()  # printed once it accepts connections
        assert f"listening on http://{PROXY_IP}:{port}" in banner
        s3 = client_via(f"http://{PROXY_IP}:{port}", new_server)
        with pytest.raises(ClientError) as caught:
            s3.list_objects_v2(Bucket=buckets[1])
        assert caught.value.response["Error"]["Code"] == "SlowDown"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "'slowdown': 1" in err
