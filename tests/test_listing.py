"""Listing answers the engine must not trust: each would end or skip a pass silently.

Narrow unit tests: a scripted HTTP server on 127.0.0.1 answers canned listing pages to the
engine's real S3Client (the behaviour of real servers is in the interop suite).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import pytest

from blobshift.s3.client import BadListing, RetryPolicy, S3Client
from blobshift.settings import StoreSettings

NS = 'xmlns="http://s3.amazonaws.com/doc/2006-03-01/"'

Answer = Callable[[dict[str, list[str]]], bytes]


def page(keys: list[str], *, truncated: bool = False, encoding: str | None = None) -> bytes:
    contents = "".join(
        f"<Contents><Key>{k}</Key><Size>1</Size><ETag>&quot;{'0' * 32}&quot;</ETag></Contents>"
        for k in keys
    )
    enc = f"<EncodingType>{encoding}</EncodingType>" if encoding else ""
    return (
        f"<?xml version='1.0' encoding='UTF-8'?><ListBucketResult {NS}><Name>b</Name>{enc}"
        f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>{contents}"
        "</ListBucketResult>"
    ).encode()


@dataclass
class Script:
    """Answers to give, in order (the last one repeats), and the queries received."""

    answers: list[Answer] = field(default_factory=list)
    seen: list[dict[str, list[str]]] = field(default_factory=list)
    port: int = 0


@pytest.fixture
def scripted() -> Iterator[Script]:
    script = Script()
    answers, seen = script.answers, script.seen

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
            seen.append(query)
            body = answers[min(len(seen), len(answers)) - 1](query)
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    script.port = server.server_address[1]
    try:
        yield script
    finally:
        server.shutdown()
        server.server_close()


def client(port: int, list_version: int = 1) -> S3Client:
    store = StoreSettings(
        name="old",
        url=f"http://127.0.0.1:{port}",
        access_key="AK",
        secret_key="SK",
        bucket="b",
        list_version=list_version,
        config={"signature_version": "s3", "connect_timeout": 2, "read_timeout": 5},
    )
    return S3Client(store, retry=RetryPolicy(attempts=3, base=0.01, cap=0.02))


def keys_listed(port: int, list_version: int = 1) -> list[str]:
    async def run() -> list[str]:
        c = client(port, list_version)
        try:
            return [o.key async for o in c.iter_objects()]
        finally:
            c.close()

    return asyncio.run(run())


def test_raw_keys_are_not_decoded_when_the_answer_does_not_say_url(scripted):
    # Riak CS ignores encoding-type: "+" and "%" in its keys are literal.
    answers, seen = scripted.answers, scripted.seen
    answers.append(lambda q: page(["%7Afoo", "a b", "a+b", "c%2Bd"]))
    assert keys_listed(scripted.port) == ["%7Afoo", "a b", "a+b", "c%2Bd"]
    assert seen[0]["encoding-type"] == ["url"]


def test_keys_are_decoded_when_the_answer_says_url(scripted):
    answers = scripted.answers
    answers.append(lambda q: page(["a+b", "c%2Bd", "%7Afoo"], encoding="url"))
    assert keys_listed(scripted.port) == ["a b", "c+d", "zfoo"]


def test_the_v1_marker_is_the_raw_key(scripted):
    answers, seen = scripted.answers, scripted.seen
    answers.append(lambda q: page(["a+b", "a+c"], truncated=True))
    answers.append(lambda q: page(["b"]))
    assert keys_listed(scripted.port) == ["a+b", "a+c", "b"]
    assert seen[1]["marker"] == ["a+c"]


def test_an_error_document_with_status_200_is_refused_not_taken_for_an_empty_page(scripted):
    answers, seen = scripted.answers, scripted.seen
    answers.append(
        lambda q: (
            b"<?xml version='1.0'?><Error><Code>InternalError</Code>"
            b"<Message>try again</Message></Error>"
        )
    )
    with pytest.raises(BadListing, match="error document: InternalError"):
        keys_listed(scripted.port)
    assert len(seen) == 3  # retried, then refused


def test_an_error_document_once_is_retried_and_the_pass_goes_on(scripted):
    answers = scripted.answers
    answers.append(lambda q: b"<Error><Code>SlowDown</Code></Error>")
    answers.append(lambda q: page(["a", "b"]))
    assert keys_listed(scripted.port) == ["a", "b"]


def test_a_page_that_is_not_a_listing_is_refused(scripted):
    answers = scripted.answers
    answers.append(lambda q: b"<html><body>proxy error</body></html>")
    with pytest.raises(BadListing, match="not a <ListBucketResult>"):
        keys_listed(scripted.port)


def test_a_truncated_page_without_keys_is_refused(scripted):
    answers = scripted.answers
    answers.append(lambda q: page(["a"], truncated=True))
    answers.append(lambda q: page([], truncated=True))
    with pytest.raises(BadListing, match="truncated page without keys"):
        keys_listed(scripted.port)


def test_keys_that_do_not_increase_are_refused(scripted):
    answers = scripted.answers
    answers.append(lambda q: page(["b", "a"]))
    with pytest.raises(BadListing, match="does not come after 'b'"):
        keys_listed(scripted.port)


def test_a_store_that_ignores_start_after_is_refused(scripted):
    # A store without ListObjectsV2 may answer list-type=2 as V1 and ignore start-after:
    # the second page starts over, which would loop or repeat keys forever.
    answers, seen = scripted.answers, scripted.seen
    answers.append(lambda q: page(["a", "b"], truncated=True))
    with pytest.raises(BadListing, match="ignores marker/start-after"):
        keys_listed(scripted.port, list_version=2)
    assert seen[1]["start-after"] == ["b"]
