"""The engine against Riak CS's S3 dialect, as Riak CS's source has it.

The rules are in blobshift.lab.riakcs_dialect, each named after the riak_cs function it
comes from. Three kinds of test:

- the rules themselves, and the recordings in tests/recorded/riakcs/ (what those rules
  render, byte for byte);
- recorded: those responses served by a tiny asyncio server of the test's own, which
  also checks every request's SigV2 signature the way Riak CS does, driven through the
  engine's real `S3Client` (and `copy_object`);
- the fault proxy's `dialect="riakcs"` in front of a real SeaweedFS (conftest's servers):
  a backfill from the "Riak CS" side and a multipart copy to a SigV2 "Riak CS" target.

Some of these fail while the engine lacks a Riak CS rule: that is what they are for.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.client
import io
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import store_dict, write_settings
from helpers import contents, log_records, md5s, run_cli, seed

from blobshift.copy import MIB, CopyOptions, IntegrityError, copy_object
from blobshift.lab import riakcs_dialect as riak
from blobshift.lab.faultproxy import FaultProxy
from blobshift.lab.seaweed import SeaweedServer
from blobshift.ratelimit import Limits
from blobshift.s3.client import RetryPolicy, S3Client, S3Error, is_plain_md5
from blobshift.settings import StoreSettings

RECORDED = Path(__file__).parent / "recorded" / "riakcs"
ACCESS = "RIAKCSTESTACCESSKEY0"
SECRET = "riak-cs-test-secret-do-not-leak-5e2b9d"
OLD_BUCKET, NEW_BUCKET = "riak-old", "riak-new"
UPLOAD_ID = "ax8--aTCTX-_4MPVobLk9w=="  # as recorded: base64url of 16 bytes, `-`, `_`, `==`
OTHER_MD5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()  # as recorded
KEYS = ["%7Afoo", "100%", "a+b", "multi", "sp ace", "unicodé/ключ", "x&y<z>"]
ODD_BLOBS = {"a+b": b"plus", "%7Afoo": b"percent-7A", "sp ace": b"space", "100%": b"pct"}
DIALECT_IP = "127.0.0.8"  # the other proxy tests use .4 to .7


def recorded(name: str) -> bytes:
    return (RECORDED / name).read_bytes()


def b64md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


# --- the rules and the recordings -----------------------------------------------------------


def test_recordings_are_what_the_dialect_renders() -> None:
    """The recordings and the proxy's renderer are one thing: if a rule changes, both do."""
    owner = riak.owner_for(ACCESS)

    def obj(key: str) -> riak.ListedObject:
        if key == "multi":
            etag = "9b2cf535f27731c974343645a3985328-2"
            return riak.ListedObject(key.encode(), "2016-05-04T10:21:35.000Z", etag, 6291456)
        body = f"v-{key}".encode()
        md5 = hashlib.md5(body).hexdigest()
        return riak.ListedObject(key.encode(), "2016-05-04T10:21:33.000Z", md5, len(body))

    common: dict[str, Any] = dict(
        name=OLD_BUCKET.encode(), prefix=None, delimiter=None, common_prefixes=[], owner=owner
    )
    pages = {
        "list_all.xml": (None, 1000, False, KEYS),
        "list_max3_1.xml": (None, 3, True, KEYS[0:3]),
        "list_max3_2.xml": (b"a+b", 3, True, KEYS[3:6]),
        "list_max3_3.xml": ("unicodé/ключ".encode(), 3, False, KEYS[6:]),
    }
    for name, (marker, max_keys, truncated, keys) in pages.items():
        xml = riak.list_objects_v1(
            marker=marker,
            max_keys=max_keys,
            truncated=truncated,
            contents=[obj(k) for k in keys],
            **common,
        )
        assert xml == recorded(name), name
    assert riak.initiate_result(b"riak-new", b"big.bin", UPLOAD_ID) == recorded(
        "initiate_multipart.xml"
    )
    assert riak.invalid_digest_document(OTHER_MD5) == recorded("error_invalid_digest.xml")
    assert riak.no_such_upload_document(UPLOAD_ID) == recorded("error_no_such_upload.xml")
    denied = riak.error_document("AccessDenied", "Access Denied", "/riak-new/big.bin")
    assert denied == recorded("error_access_denied.xml")


def test_listing_shape_is_riak_cs_s() -> None:
    """riak_cs_xml: raw keys (only & < > escaped), no EncodingType, quoted ETags, Owner,
    NextMarker only when truncated with a delimiter."""
    page = recorded("list_all.xml")
    assert b"<EncodingType>" not in page and b"<KeyCount>" not in page
    assert b"<Key>a+b</Key>" in page and b"<Key>%7Afoo</Key>" in page
    assert b"<Key>sp ace</Key>" in page and b"<Key>x&amp;y&lt;z&gt;</Key>" in page
    assert "<Key>unicodé/ключ</Key>".encode() in page  # UTF-8 as is
    assert b'<ETag>"9b2cf535f27731c974343645a3985328-2"</ETag>' in page
    assert b"<Prefix></Prefix><Marker></Marker>" in page and b"NextMarker" not in page
    with_delimiter = riak.list_objects_v1(
        name=b"b",
        prefix=None,
        marker=None,
        max_keys=2,
        delimiter=b"/",
        truncated=True,
        contents=[riak.ListedObject(b"a", "t", "e", 1)],
        common_prefixes=[b"d/"],
        owner=riak.owner_for(ACCESS),
    )
    assert b"<NextMarker>d/</NextMarker>" in with_delimiter


def test_riak_cs_url_and_signature_rules() -> None:
    # mochiweb_util:unquote: `+` is a space, a lone `%` stays, %XX decodes.
    assert riak.mochi_unquote("a+b%2Bc%7A100%") == b"a b+cz100%"
    # A path's literal `+` is a space in the key; `%2B` is a plus.
    assert riak.bucket_and_key("/b/a+b") == (b"b", b"a b")
    assert riak.bucket_and_key("/b/a%2Bb") == (b"b", b"a+b")
    assert riak.bucket_and_key("/b/") == (b"b", None)
    # The canonical resource: raw path, sub-resources decoded and sorted, others dropped.
    resource = riak.canonical_resource(
        "/b/big%20x", "uploadId=ax8--aTCTX-_4MPVobLk9w%3D%3D&partNumber=2&encoding-type=url"
    )
    assert resource == b"/b/big%20x?partNumber=2&uploadId=ax8--aTCTX-_4MPVobLk9w=="
    # Upload ids: base64url of 16 bytes, padding kept.
    upload_id = riak.new_upload_id()
    assert len(upload_id) == 24 and upload_id.endswith("==")
    assert not set(upload_id) & set("+/") and riak.decode_upload_id(upload_id) is not None


def _signed(
    method: str, target: str, headers: list[tuple[str, str]], resource_from: str
) -> list[tuple[str, str]]:
    """`headers` signed as if the path and query were `resource_from`."""
    sts = riak.string_to_sign_v2(method, resource_from, headers)
    return [*headers, ("Authorization", f"AWS {ACCESS}:{riak.sign_v2(SECRET, sts)}")]


def test_a_signature_over_the_encoded_upload_id_is_refused() -> None:
    """riak_cs_s3_auth:canonicalize_qs/2 signs mochiweb-decoded values: `==`, not `%3D%3D`."""
    target = f"/b/k?partNumber=1&uploadId={UPLOAD_ID.replace('=', '%3D')}"
    headers = [("Date", formatdate(usegmt=True)), ("Content-MD5", b64md5(b"x"))]
    sts = riak.string_to_sign_v2("PUT", "/b/k", headers)
    bad = sts + f"?partNumber=1&uploadId={UPLOAD_ID.replace('=', '%3D')}".encode()
    encoded = [*headers, ("Authorization", f"AWS {ACCESS}:{riak.sign_v2(SECRET, bad)}")]
    assert riak.authenticate("PUT", target, encoded, {ACCESS: SECRET}) == "AccessDenied"
    good = _signed("PUT", target, headers, target)
    assert isinstance(riak.authenticate("PUT", target, good, {ACCESS: SECRET}), riak.Identity)
    # A stale Date is RequestTimeTooSkewed (riak_cs_wm_utils:check_timeskew/1, 900 s).
    stale = [("Date", formatdate(0, usegmt=True))]
    old = _signed("GET", "/b/k", stale, "/b/k")
    assert riak.authenticate("GET", "/b/k", old, {ACCESS: SECRET}) == "RequestTimeTooSkewed"


def test_completion_rules() -> None:
    """riak_cs_mp_utils:comb_parts/2, eval_part_sizes/1."""
    a, b = hashlib.md5(b"a").digest(), hashlib.md5(b"b").digest()
    parts = {1: riak.PartDone(riak.MIN_PART_SIZE, a), 2: riak.PartDone(1, b)}
    result = riak.combine_parts([(1, a), (2, b)], parts)
    assert not isinstance(result, str)
    etag, size = result
    assert etag == hashlib.md5(a + b).hexdigest() + "-2" and size == riak.MIN_PART_SIZE + 1
    assert riak.combine_parts([(2, b), (1, a)], parts) == "InvalidPartOrder"
    assert riak.combine_parts([(1, b)], parts) == "InvalidPart"
    small = {1: riak.PartDone(1, a), 2: riak.PartDone(1, b)}
    assert riak.combine_parts([(1, a), (2, b)], small) == "EntityTooSmall"
    body = b'<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>"'
    body += a.hex().encode() + b'"</ETag></Part></CompleteMultipartUpload>'
    assert riak.parse_complete_body(body) == [(1, a)]
    assert riak.parse_complete_body(b"<nope") is None


# --- a recorded Riak CS ------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as the fake Riak CS received it."""

    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def path(self) -> str:
        return self.target.partition("?")[0]

    @property
    def query(self) -> dict[str, str]:
        """Decoded as Riak CS decodes it (mochiweb_util:parse_qs)."""
        pairs = riak.mochi_parse_qs(self.target.partition("?")[2])
        return {k.decode(): v.decode("utf-8", "surrogateescape") for k, v in pairs}

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)


@dataclass
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


XML = {"Content-Type": "application/xml"}
Route = Callable[[Seen], Answer | None]


class FakeRiakCS:
    """Riak CS as its source answers: SigV2 checked first (riak_cs_s3_auth), then `routes`
    in order; a request no route answers is a 400 `NoRecording` naming it."""

    def __init__(self, *routes: Route) -> None:
        self.routes = routes
        self.seen: list[Seen] = []
        self.refused: list[tuple[Seen, str]] = []
        self.port = 0
        self._tasks: set[asyncio.Task[None]] = set()

    @asynccontextmanager
    async def running(self) -> AsyncIterator[FakeRiakCS]:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            server.close()
            for task in self._tasks:  # idle keep-alive connections of the engine's pool
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def client(self, bucket: str, list_version: int = 1, dialect: str = "riakcs") -> S3Client:
        store = StoreSettings(
            name="riak cs",
            url=f"http://127.0.0.1:{self.port}",
            access_key=ACCESS,
            secret_key=SECRET,
            bucket=bucket,
            list_version=list_version,
            config={"signature_version": "s3"},
            dialect=dialect,
        )
        return S3Client(store, retry=RetryPolicy(attempts=2, base=0.01, cap=0.05))

    def answer(self, seen: Seen) -> Answer:
        who = riak.authenticate(seen.method, seen.target, seen.headers, {ACCESS: SECRET})
        if not isinstance(who, riak.Identity):
            self.refused.append((seen, who))
            status, message = riak.ERRORS[who]
            return Answer(status, riak.error_document(who, message, seen.path), XML)
        for route in self.routes:
            answer = route(seen)
            if answer is not None:
                return answer
        text = f"no recording for {seen.method} {seen.target}"
        return Answer(400, riak.error_document("NoRecording", text, seen.path), XML)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            while True:
                try:
                    raw = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                start, *lines = raw[:-4].decode("latin-1").split("\r\n")
                method, target, _ = start.split(" ", 2)
                headers = [(k.strip(), v.strip()) for k, _, v in (x.partition(":") for x in lines)]
                length = int(next((v for k, v in headers if k.lower() == "content-length"), 0))
                body = await reader.readexactly(length) if length else b""
                seen = Seen(method, target, headers, body)
                self.seen.append(seen)
                answer = self.answer(seen)
                head = [f"HTTP/1.1 {answer.status} {riak.REASONS.get(answer.status, 'X')}"]
                out = {"Content-Length": str(len(answer.body)), **answer.headers}
                head += [f"{k}: {v}" for k, v in out.items()]
                data = "\r\n".join([*head, "", ""]).encode("latin-1")
                writer.write(data + (b"" if method == "HEAD" else answer.body))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            writer.close()

    def requests(self, method: str, **query: str) -> list[Seen]:
        return [
            s
            for s in self.seen
            if s.method == method and all(s.query.get(k) == v for k, v in query.items())
        ]


LISTINGS = {  # (marker, max-keys) as Riak CS reads them -> the recorded page
    (None, "1000"): "list_all.xml",
    (None, "3"): "list_max3_1.xml",
    ("a+b", "3"): "list_max3_2.xml",
    ("unicodé/ключ", "3"): "list_max3_3.xml",
}


def is_listing(seen: Seen, bucket: str) -> bool:
    """riak_cs_s3_rewrite: a bucket GET without sub-resources is a listing, whatever else
    the query holds (encoding-type, list-type, start-after are not read)."""
    return (
        seen.method == "GET"
        and seen.path in (f"/{bucket}", f"/{bucket}/")
        and not set(seen.query) & riak.SUBRESOURCES
    )


def recorded_listing(seen: Seen) -> Answer | None:
    if not is_listing(seen, OLD_BUCKET) or "prefix" in seen.query or "delimiter" in seen.query:
        return None
    name = LISTINGS.get((seen.query.get("marker"), seen.query.get("max-keys", "1000")))
    return Answer(200, recorded(name), XML) if name else None


def objects(bucket: str, blobs: dict[str, tuple[bytes, str]]) -> Route:
    """GET/HEAD of `blobs` (key -> body, ETag) in `bucket`, as riak_cs_wm_object answers:
    the object's Content-Length and quoted ETag, on HEAD too."""

    def route(seen: Seen) -> Answer | None:
        bucket_, key = riak.bucket_and_key(seen.path)
        if seen.method not in ("GET", "HEAD") or bucket_ != bucket.encode() or key is None:
            return None
        found = blobs.get(key.decode("utf-8", "surrogateescape"))
        if found is None:
            text = riak.ERRORS["NoSuchKey"][1]
            return Answer(404, riak.error_document("NoSuchKey", text, seen.path), XML)
        body, etag = found
        headers = {"ETag": f'"{etag}"', "Content-Type": "application/octet-stream"}
        headers["Last-Modified"] = "Wed, 04 May 2016 10:21:33 GMT"
        # A HEAD answers the length of what a GET sends (the server drops the body).
        return Answer(200, body, headers)

    return route


class RiakTarget:
    """PUT and multipart upload of `big.bin` (and single PUTs of anything) into NEW_BUCKET,
    with Riak CS's checks: Content-MD5 (riak_cs_put_fsm:is_digest_valid/2), part number
    (riak_cs_wm_object_upload_part:valid_part_number/1), comb_parts at completion."""

    def __init__(self) -> None:
        self.stored: dict[str, bytes] = {}
        self.parts: dict[int, tuple[bytes, riak.PartDone]] = {}

    def __call__(self, seen: Seen) -> Answer | None:
        bucket, key_b = riak.bucket_and_key(seen.path)
        if bucket != NEW_BUCKET.encode() or key_b is None:
            return None
        key, q = key_b.decode("utf-8", "surrogateescape"), seen.query
        if seen.method == "POST" and "uploads" in q:
            return (
                Answer(200, recorded("initiate_multipart.xml"), XML) if key == "big.bin" else None
            )
        if "uploadId" in q and q["uploadId"] != UPLOAD_ID:
            return Answer(404, recorded("error_no_such_upload.xml"), XML)
        if seen.method == "PUT":
            md5 = seen.header("Content-MD5")
            if md5 is not None and md5 != b64md5(seen.body):
                # Riak CS has one answer for a malformed and a mismatching Content-MD5.
                doc = (
                    recorded("error_invalid_digest.xml")
                    if md5 == OTHER_MD5
                    else riak.invalid_digest_document(md5)
                )
                return Answer(400, doc, XML)
            etag = hashlib.md5(seen.body).hexdigest()
            if "uploadId" in q:
                number = int(q["partNumber"])
                done = riak.PartDone(len(seen.body), bytes.fromhex(etag))
                self.parts[number] = (seen.body, done)
            else:
                self.stored[key] = seen.body
            return Answer(200, b"", {"ETag": f'"{etag}"'})
        if seen.method == "POST" and "uploadId" in q:
            requested = riak.parse_complete_body(seen.body)
            if requested is None:
                return Answer(riak.BAD_COMPLETE_BODY_STATUS)
            result = riak.combine_parts(requested, {n: p for n, (_, p) in self.parts.items()})
            if isinstance(result, str):
                return Answer(400, riak.error_document(result, result, seen.path), XML)
            self.stored[key] = b"".join(self.parts[n][0] for n, _ in requested)
            return Answer(200, riak.complete_result(bucket, key_b, result[0]), XML)
        if seen.method == "DELETE" and "uploadId" in q:
            self.parts.clear()
            return Answer(204)
        return None


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


def test_raw_keys_come_back_exactly_as_stored() -> None:
    """No <EncodingType>url</EncodingType> in the answer: `+`, `%`, `%7A`, spaces are literal
    (riak_cs_wm_objects:get_options/1 never reads encoding-type)."""

    async def go() -> list[str]:
        async with FakeRiakCS(recorded_listing).running() as fake:
            client = fake.client(OLD_BUCKET)
            try:
                return [o.key async for o in client.iter_objects()]
            finally:
                client.close()

    assert run(go()) == KEYS


def test_the_v1_marker_is_the_raw_key() -> None:
    """Each page after the first starts at the raw last key, as Riak CS decodes the marker
    (mochiweb_util:parse_qs: `+` would be a space, so it must be sent as %2B)."""

    async def go() -> tuple[list[str], list[str | None]]:
        async with FakeRiakCS(recorded_listing).running() as fake:
            client = fake.client(OLD_BUCKET)
            keys: list[str] = []
            try:
                page, truncated = await client.list_page("", "", 3)
                keys += [o.key for o in page]
                while truncated:
                    page, truncated = await client.list_page("", page[-1].key, 3)
                    keys += [o.key for o in page]
            finally:
                client.close()
            return keys, [s.query.get("marker") for s in fake.requests("GET")]

    keys, markers = run(go())
    assert keys == KEYS
    assert markers == [None, "a+b", "unicodé/ключ"]


def test_multipart_etags_are_not_taken_for_md5s() -> None:
    """riak_cs_mp_utils: a completed upload's ETag is `hex-N` (of the parts' MD5s, not the
    content's): the copy hashes the content itself instead of trusting it."""
    small = os.urandom(300)
    medium = os.urandom(2 * MIB + 7)
    source = {
        "small.bin": (small, hashlib.md5(b"parts").hexdigest() + "-1"),
        "big.bin": (medium, hashlib.md5(b"more parts").hexdigest() + "-1"),
    }
    target = RiakTarget()

    async def go() -> tuple[list[Any], Any]:
        fake = FakeRiakCS(recorded_listing, objects(OLD_BUCKET, source), target)
        async with fake.running():
            old, new = fake.client(OLD_BUCKET), fake.client(NEW_BUCKET)
            try:
                listed = [o async for o in old.iter_objects()]
                head = await old.head("big.bin")
                await copy_object(old, new, "small.bin", Limits(), CopyOptions())
                await copy_object(old, new, "big.bin", Limits(), CopyOptions())
            finally:
                old.close()
                new.close()
            return listed, (head, fake)

    listed, (head, fake) = run(go())
    etags = {o.key: o.etag for o in listed}
    assert etags["multi"] == "9b2cf535f27731c974343645a3985328-2"
    assert not is_plain_md5(etags["multi"])
    assert all(is_plain_md5(e) for k, e in etags.items() if k != "multi")
    assert head is not None and head.size == len(medium) and head.etag == source["big.bin"][1]
    # The small one in one PUT, its Content-MD5 from the content; the medium one in parts
    # (no Content-MD5 can be made of a multipart ETag for a streamed PUT).
    puts = [s for s in fake.requests("PUT") if s.path == f"/{NEW_BUCKET}/small.bin"]
    assert [s.header("Content-MD5") for s in puts] == [b64md5(small)]
    assert fake.requests("POST", uploads="")
    assert target.stored == {"small.bin": small, "big.bin": medium}


def test_a_bad_content_md5_is_a_400_surfaced_not_retried() -> None:
    """riak_cs_put_fsm:is_digest_valid/2: malformed or mismatching, it is 400 InvalidDigest
    (never BadDigest), found after the whole body was read."""

    async def go() -> tuple[list[S3Error], FakeRiakCS]:
        fake = FakeRiakCS(RiakTarget())
        errors: list[S3Error] = []
        async with fake.running():
            new = fake.client(NEW_BUCKET)
            try:
                for md5 in (OTHER_MD5, "not-an-md5"):
                    try:
                        await new.put("k", b"hello", {"Content-MD5": md5})
                    except S3Error as exc:
                        errors.append(exc)
            finally:
                new.close()
        return errors, fake

    errors, fake = run(go())
    assert [(e.status, e.code) for e in errors] == [(400, "InvalidDigest")] * 2
    assert len(fake.requests("PUT")) == 2  # one each: a 400 is not retried


def test_a_streamed_copy_treats_invalid_digest_like_bad_digest() -> None:
    """A streamed copy's PUT carries the source ETag as Content-MD5; when the bytes do not
    match, S3 says BadDigest and Riak CS InvalidDigest (riak_cs_s3_response:
    invalid_digest_response/3): both mean the content is not what the source vouched for."""
    body = os.urandom(2 * MIB)
    lie = hashlib.md5(body + b"!").hexdigest()  # the bytes read are not the ones vouched for

    async def go() -> None:
        fake = FakeRiakCS(objects(OLD_BUCKET, {"medium.bin": (body, lie)}), RiakTarget())
        async with fake.running():
            old, new = fake.client(OLD_BUCKET), fake.client(NEW_BUCKET)
            try:
                await copy_object(old, new, "medium.bin", Limits(), CopyOptions())
            finally:
                old.close()
                new.close()

    with pytest.raises(IntegrityError):
        run(go())


def test_sigv2_multipart_with_an_upload_id_ending_in_equals() -> None:
    """The upload id `ax8--aTCTX-_4MPVobLk9w==` goes on the wire as `...%3D%3D` and is
    signed decoded (riak_cs_s3_auth:canonicalize_qs/2); otherwise every part is a 403."""
    body = b"a" * (5 * MIB) + b"b" * MIB
    etag = hashlib.md5(hashlib.md5(b"a" * (5 * MIB)).digest() + hashlib.md5(b"b" * MIB).digest())
    source = {"big.bin": (body, etag.hexdigest() + "-2")}
    target = RiakTarget()
    fake = FakeRiakCS(objects(OLD_BUCKET, source), target)

    async def go() -> None:
        async with fake.running():
            old, new = fake.client(OLD_BUCKET), fake.client(NEW_BUCKET)
            try:
                await copy_object(old, new, "big.bin", Limits(), CopyOptions(5 * MIB, 5 * MIB))
            finally:
                old.close()
                new.close()

    try:
        run(go())
    finally:
        refused = [(s.method, s.target, why) for s, why in fake.refused]
        assert refused == []
    parts = fake.requests("PUT", uploadId=UPLOAD_ID)
    assert sorted(s.query["partNumber"] for s in parts) == ["1", "2"]
    assert all("%3D%3D" in s.target for s in parts)  # sent encoded, signed decoded
    assert target.stored == {"big.bin": body}


def test_list_type_2_is_answered_as_v1_and_the_engine_does_not_loop() -> None:
    """riak_cs_wm_objects reads no list-type and no start-after: a V2 client gets the same
    first V1 page again and again. The engine must stop (with an error, or by finishing
    with each key once), not page forever."""
    keys = [f"blob/{i:06d}" for i in range(1000)]
    page = riak.list_objects_v1(
        name=OLD_BUCKET.encode(),
        prefix=None,
        marker=None,
        max_keys=1000,
        delimiter=None,
        truncated=True,
        contents=[
            riak.ListedObject(k.encode(), "2016-05-04T10:21:33.000Z", "0" * 32, 1) for k in keys
        ],
        common_prefixes=[],
        owner=riak.owner_for(ACCESS),
    )

    def first_page(seen: Seen) -> Answer | None:
        return Answer(200, page, XML) if is_listing(seen, OLD_BUCKET) else None

    fake = FakeRiakCS(first_page)
    seen_keys: list[str] = []

    async def go() -> None:
        async with fake.running():
            client = fake.client(OLD_BUCKET, list_version=2)
            try:
                async for obj in client.iter_objects():
                    seen_keys.append(obj.key)
                    if len(seen_keys) > 3 * len(keys):
                        break
            finally:
                client.close()

    with contextlib.suppress(S3Error):  # refusing the repeated page is a fine answer
        run(go())
    assert len(seen_keys) == len(set(seen_keys)), "a key came twice: the engine re-paged"
    assert len(fake.requests("GET")) <= 4


def test_non_ascii_metadata_is_signed_as_riak_cs_reads_it() -> None:
    """riak_cs_wm_utils:extract_amazon_headers/1 takes each x-amz-* value's bytes as code
    points and UTF-8-encodes them before signing (unicode:characters_to_binary/2 over
    mochiweb's byte lists): `café` in UTF-8 is signed as its bytes encoded once more.
    A rollback copy of such metadata to Riak CS must sign what Riak CS computes: the
    store's `dialect: riakcs` says so; without it the engine signs the bytes, as Go
    servers (SeaweedFS) read them, and Riak CS refuses."""
    value = "café".encode().decode("latin-1")  # header values are bytes in a latin-1 str

    async def go(dialect: str) -> FakeRiakCS:
        fake = FakeRiakCS(RiakTarget())
        async with fake.running():
            new = fake.client(NEW_BUCKET, dialect=dialect)
            try:
                with contextlib.suppress(S3Error):
                    await new.put(
                        "meta.bin", b"x", {"Content-MD5": b64md5(b"x"), "x-amz-meta-n": value}
                    )
            finally:
                new.close()
        return fake

    assert run(go("riakcs")).refused == []
    assert len(run(go("")).refused) == 1


# --- the fault proxy's riakcs dialect in front of SeaweedFS --------------------------------------


@pytest.fixture
def old_riak(old_server: SeaweedServer) -> Iterator[FaultProxy]:
    """The old SeaweedFS, seen as Riak CS."""
    creds = {old_server.access_key: old_server.secret_key}
    upstream = (old_server.ip, old_server.s3_port)
    with FaultProxy((DIALECT_IP, 0), upstream, dialect="riakcs", credentials=creds) as proxy:
        yield proxy


@pytest.fixture
def new_riak(new_server: SeaweedServer) -> Iterator[FaultProxy]:
    """The new SeaweedFS, seen as Riak CS."""
    creds = {new_server.access_key: new_server.secret_key}
    upstream = (new_server.ip, new_server.s3_port)
    with FaultProxy((DIALECT_IP, 0), upstream, dialect="riakcs", credentials=creds) as proxy:
        yield proxy


def via(proxy: FaultProxy | None, server: SeaweedServer, bucket: str) -> S3Client:
    """The engine's client for `server` as Riak CS (through `proxy`: SigV2, ListObjects V1)
    or, with no proxy, directly (SigV4, V2)."""
    store = StoreSettings(
        name="riak cs" if proxy else "direct",
        url=proxy.url if proxy else server.url,
        access_key=server.access_key,
        secret_key=server.secret_key,
        bucket=bucket,
        list_version=1 if proxy else 2,
        config={"signature_version": "s3" if proxy else "s3v4"},
        dialect="riakcs" if proxy else "",
    )
    return S3Client(store, retry=RetryPolicy(attempts=3, base=0.01, cap=0.1))


def boto_sigv2(url: str, server: SeaweedServer) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name="us-east-1",
        config=Config(
            signature_version="s3",
            s3={"addressing_style": "path"},
            retries={"total_max_attempts": 1},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def test_dialect_lists_raw_keys_as_v1_whatever_is_asked(old_riak, old_server, buckets) -> None:
    old_b, _ = buckets
    seed(old_server, old_b, {**ODD_BLOBS, "zz": b"last"})

    async def go() -> bytes:
        client = via(old_riak, old_server, old_b)
        try:
            query = [("encoding-type", "url"), ("list-type", "2"), ("start-after", "zz")]
            resp = await client.request("GET", None, query=query)
            return await resp.read()
        finally:
            client.close()

    page = run(go())
    assert b"<EncodingType>" not in page and b"<KeyCount>" not in page  # V1, not encoded
    for key in [*ODD_BLOBS, "zz"]:  # start-after was not read either
        assert f"<Key>{key}</Key>".encode() in page
    assert old_riak.dialect is not None
    assert old_riak.dialect.counters()["listings_rewritten"] == 1


def test_dialect_refuses_what_riak_cs_refuses(new_riak, new_server, buckets) -> None:
    _, new_b = buckets
    # botocore signs sub-resources decoded, like Riak CS: its multipart goes through.
    s3 = boto_sigv2(new_riak.url, new_server)
    upload_id = s3.create_multipart_upload(Bucket=new_b, Key="k")["UploadId"]
    assert len(upload_id) == 24 and upload_id.endswith("==")
    s3.upload_part(Bucket=new_b, Key="k", UploadId=upload_id, PartNumber=1, Body=b"x")
    # The same request signed over `%3D%3D` is AccessDenied, as in riak_cs_wm_common.
    encoded = upload_id.replace("=", "%3D")
    target = f"/{new_b}/k?partNumber=1&uploadId={encoded}"
    headers = [("Date", formatdate(usegmt=True)), ("Content-MD5", b64md5(b"x"))]
    sts = riak.string_to_sign_v2("PUT", f"/{new_b}/k", headers)
    sts += f"?partNumber=1&uploadId={encoded}".encode()
    auth = f"AWS {new_server.access_key}:{riak.sign_v2(new_server.secret_key, sts)}"
    conn = http.client.HTTPConnection(DIALECT_IP, new_riak.port, timeout=20)
    conn.request("PUT", target, body=b"x", headers={**dict(headers), "Authorization": auth})
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    assert resp.status == 403 and b"<Code>AccessDenied</Code>" in body
    # SigV4 is refused while auth_v4_enabled is false (riak_cs_s3_auth:parse_auth_header/1).
    v4 = boto3.session.Session().client(
        "s3",
        endpoint_url=new_riak.url,
        aws_access_key_id=new_server.access_key,
        aws_secret_access_key=new_server.secret_key,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", retries={"total_max_attempts": 1}),
    )
    with pytest.raises(ClientError) as refused:
        v4.list_objects(Bucket=new_b)
    assert refused.value.response["Error"]["Code"] == "InvalidRequest"
    s3.abort_multipart_upload(Bucket=new_b, Key="k", UploadId=upload_id)


def test_dialect_answers_a_bad_content_md5_with_invalid_digest(new_riak, new_server, buckets):
    _, new_b = buckets

    async def go() -> tuple[S3Error | None, Any]:
        client = via(new_riak, new_server, new_b)
        try:
            try:
                await client.put("k", b"hello", {"Content-MD5": OTHER_MD5})
                error = None
            except S3Error as exc:
                error = exc
            return error, await client.head("k")
        finally:
            client.close()

    error, head = run(go())
    assert error is not None and (error.status, error.code) == (400, "InvalidDigest")
    assert head is None  # nothing stored


def test_backfill_from_riak_cs_copies_raw_keys(
    old_riak, old_server, new_server, buckets, tmp_path
) -> None:
    """The old store is "Riak CS" (SigV2, ListObjects V1, raw keys): every key arrives as
    it was written, none decoded on the way."""
    old_b, new_b = buckets
    blobs = {**ODD_BLOBS, "plain": b"plain"}
    seed(old_server, old_b, blobs)
    old = store_dict(old_server, old_b, sigv2=True)
    old["url"] = old_riak.url
    settings = write_settings(
        tmp_path / "localsettings.py", new=store_dict(new_server, new_b, sigv2=False), old=old
    )
    proc = run_cli("migrate-backend", "--settings", settings, "--log-dir", tmp_path / "logs")
    assert contents(new_server, new_b) == md5s(blobs), (proc.stdout, proc.stderr)
    assert log_records(tmp_path / "logs") == []
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert old_riak.dialect is not None
    assert old_riak.dialect.counters()["rejected_signatures"] == 0


def test_multipart_copy_to_a_sigv2_riak_cs_target(
    new_riak, old_server, new_server, buckets
) -> None:
    """Into "Riak CS" in parts: its upload id ends in `==`, and every part's signature
    must cover it decoded."""
    old_b, new_b = buckets
    body = os.urandom(6 * MIB)
    seed(old_server, old_b, {"big.bin": body}, ContentType="application/x-big")

    async def go() -> int:
        old = via(None, old_server, old_b)  # the source directly
        new = via(new_riak, new_server, new_b)
        try:
            return await copy_object(old, new, "big.bin", Limits(), CopyOptions(5 * MIB, 5 * MIB))
        finally:
            old.close()
            new.close()

    assert run(go()) == len(body)
    assert new_riak.dialect is not None
    counts = new_riak.dialect.counters()
    assert counts["uploads_started"] == 1 and counts["rejected_signatures"] == 0
    got = new_server.client().get_object(Bucket=new_b, Key="big.bin")
    assert got["ETag"].strip('"').endswith("-2")
    assert got["ContentType"] == "application/x-big"
    assert hashlib.md5(got["Body"].read()).digest() == hashlib.md5(body).digest()


def test_dialect_command_line(old_server, buckets) -> None:
    """`--dialect riakcs` needs `--credentials` (SeaweedFS's own s3 config will do)."""
    old_b, _ = buckets
    module = [sys.executable, "-m", "blobshift.lab.faultproxy"]
    upstream = f"{old_server.ip}:{old_server.s3_port}"
    args = ["--listen", f"{DIALECT_IP}:0", "--upstream", upstream, "--dialect", "riakcs"]
    refused = subprocess.run([*module, *args], capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "--credentials" in refused.stderr
    identities = old_server.data_dir / "identities.json"
    proc = subprocess.Popen(
        [*module, *args, "--credentials", str(identities)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "as RiakCSDialect" in line, line
        url = line.split()[3]
        s3 = boto_sigv2(url, old_server)
        s3.put_object(Bucket=old_b, Key="a+b", Body=io.BytesIO(b"plus"))
        assert s3.get_object(Bucket=old_b, Key="a+b")["Body"].read() == b"plus"
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert old_server.secret_key not in err
