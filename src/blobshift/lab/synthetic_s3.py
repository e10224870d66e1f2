"""A synthetic S3 endpoint for `make bench-scale`: listings of millions of keys, no storage.

The key space is computed, not stored: key i of N comes from a few segments of different
shapes (`a/0000000042`, `blobs/2019/03/05/<hex>`, `zz/<long name>/<index>`), each key a
function of its index and increasing with it, so the first key after any string is found
by bisection and a listing page from any marker costs O(page). Two buckets:

- `old` holds every key;
- `new` holds every key but one in `--miss-every` (those the backfill must copy), plus
  what was PUT since (one bit per key of the space, so a resumed run sees its copies).

Objects have a small deterministic body (ETag its MD5). PUTs into the key space are
counted (duplicates and needless ones apart) and their bodies dropped; other keys (the
backfill's key probe) are kept in a small in-memory overlay. Signatures are not checked.
`GET /__stats` answers the request counts as JSON, `POST /__reset` forgets what was PUT
and zeroes the counts (a fresh `new` bucket for the next run).

Run as its own process (its CPU apart from the client's):
`python -m blobshift.lab.synthetic_s3 --host 127.0.0.6 --port 23010 --keys 1000000`.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import datetime
import hashlib
import json
import resource
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote
from xml.sax.saxutils import escape

from blobshift.lab.faultproxy import ProtocolError, body_framing, keep_alive, read_body, read_head

BUCKETS = ("old", "new")
MAX_BODY = 64 * 1024 * 1024
LAST_MODIFIED = "2024-01-02T03:04:05.000Z"
HTTP_DATE = "Tue, 02 Jan 2024 03:04:05 GMT"
PROBE_LIMIT = 10_000  # overlay keys (the key probe's): a bound, not a store
_HIGH = "\U0010ffff"  # sorts after every character a key of the space holds


@dataclass(frozen=True)
class Segment:
    start: int  # index of its first key in the whole space
    count: int
    kind: str  # "flat" | "dated" | "long"


class KeySpace:
    """N keys in S3 (code point) order, each computed from its index."""

    PER_DAY = 2_000
    EPOCH = datetime.date(2015, 1, 1).toordinal()

    def __init__(self, n: int) -> None:
        self.n = n
        flat, dated = n * 3 // 10, n * 6 // 10
        counts = [("flat", flat), ("dated", dated), ("long", n - flat - dated)]
        segments, start = [], 0
        for kind, count in counts:
            segments.append(Segment(start, count, kind))
            start += count
        self.segments = tuple(segments)
        self._starts = [s.start for s in self.segments]
        self._days: dict[int, str] = {}
        self._all = range(n)

    def key(self, i: int) -> str:
        seg = self.segments[bisect.bisect_right(self._starts, i) - 1]
        j = i - seg.start
        if seg.kind == "flat":
            return f"a/{j:010d}"
        if seg.kind == "dated":
            day = self._days.get(j // self.PER_DAY)
            if day is None:
                date = datetime.date.fromordinal(self.EPOCH + j // self.PER_DAY)
                day = self._days[j // self.PER_DAY] = date.strftime("%Y/%m/%d")
            return f"blobs/{day}/{j:08x}{(j * 2654435761) & 0xFFFFFFFF:08x}"
        return f"zz/attachments-of-a-rather-long-application-name/{j:09d}.bin"

    def first_after(self, s: str) -> int:
        """Index of the first key > s (n when none)."""
        return bisect.bisect_right(self._all, s, key=self.key)

    def first_from(self, s: str) -> int:
        """Index of the first key >= s."""
        return bisect.bisect_left(self._all, s, key=self.key)

    def index(self, key: str) -> int | None:
        i = self.first_from(key)
        return i if i < self.n and self.key(i) == key else None


def body_of(key: str) -> bytes:
    return b"synthetic blob " + key.encode() + b"\n"


class Bucket:
    """One bucket: which keys of the space it holds, plus the overlay of other keys."""

    def __init__(self, name: str, space: KeySpace, miss_every: int) -> None:
        self.name = name
        self.space = space
        self.miss_every = miss_every  # 0: holds every key
        self.put = bytearray((space.n + 7) // 8)
        self.overlay: dict[str, bytes] = {}
        self.overlay_keys: list[str] = []  # sorted

    def missing_at_start(self, i: int) -> bool:
        return self.miss_every > 0 and i % self.miss_every == self.miss_every - 1

    def was_put(self, i: int) -> bool:
        return bool(self.put[i >> 3] & (1 << (i & 7)))

    def holds(self, i: int) -> bool:
        return not self.missing_at_start(i) or self.was_put(i)

    def reset(self) -> None:
        self.put = bytearray(len(self.put))
        self.overlay.clear()
        self.overlay_keys.clear()

    def entries_after(self, s: str) -> Iterator[tuple[str, int, str]]:
        """(key, size, etag) of every key > s, in order: the space merged with the overlay."""
        space = self.space
        i = space.first_after(s)
        o = bisect.bisect_right(self.overlay_keys, s)
        okeys = self.overlay_keys
        while True:
            while i < space.n and not self.holds(i):
                i += 1
            key = space.key(i) if i < space.n else None
            if o < len(okeys) and (key is None or okeys[o] < key):
                body = self.overlay[okeys[o]]
                yield okeys[o], len(body), hashlib.md5(body).hexdigest()
                o += 1
                continue
            if key is None:
                return
            body = body_of(key)
            yield key, len(body), hashlib.md5(body).hexdigest()
            i += 1

    def get(self, key: str) -> bytes | None:
        if key in self.overlay:
            return self.overlay[key]
        i = self.space.index(key)
        return body_of(key) if i is not None and self.holds(i) else None


CONTENTS = (
    "<Contents><Key>{}</Key><LastModified>" + LAST_MODIFIED + "</LastModified>"
    "<ETag>&quot;{}&quot;</ETag><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>"
)


class SyntheticS3:
    """The request handling (no sockets): path-style buckets `old` and `new`."""

    def __init__(self, keys: int, miss_every: int = 20) -> None:
        self.space = KeySpace(keys)
        self.buckets = {
            "old": Bucket("old", self.space, 0),
            "new": Bucket("new", self.space, miss_every),
        }
        self.counts: Counter[str] = Counter()
        self.started = time.process_time()

    # -- stats --------------------------------------------------------------------

    def stats(self) -> dict[str, object]:
        new = self.buckets["new"]
        return {
            "keys": self.space.n,
            "miss_every": new.miss_every,
            "missing_at_start": missing_count(self.space.n, new.miss_every),
            "counts": dict(self.counts),
            "cpu_seconds": round(time.process_time() - self.started, 3),
            "maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        }

    def reset(self) -> None:
        for bucket in self.buckets.values():
            bucket.reset()
        self.counts.clear()

    # -- requests -----------------------------------------------------------------

    def handle(
        self, method: str, target: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes, bool]:
        """(status, headers, body, body_is_sent: False for HEAD)."""
        path, _, query = target.partition("?")
        if path == "/__stats":
            return (
                200,
                {"Content-Type": "application/json"},
                json.dumps(self.stats()).encode(),
                True,
            )
        if path == "/__reset" and method == "POST":
            self.reset()
            return 200, {}, b"", True
        name, _, raw_key = path.lstrip("/").partition("/")
        key = unquote(raw_key)
        if not name:
            self.counts["LIST buckets"] += 1
            return 200, XML, _list_buckets(), True
        bucket = self.buckets.get(name)
        if bucket is None:
            return _error(404, "NoSuchBucket", f"/{name}")
        if not key:
            return self._bucket_request(method, bucket, dict(parse_qsl(query, True)))
        if method in ("GET", "HEAD"):
            self.counts[method] += 1
            data = bucket.get(key)
            if data is None:
                status, hdrs, err, _ = _error(404, "NoSuchKey", path)
                return status, hdrs, err, method == "GET"
            etag = hashlib.md5(data).hexdigest()
            hdrs = {
                "ETag": f'"{etag}"',
                "Content-Type": "application/octet-stream",
                "Last-Modified": HTTP_DATE,
            }
            return 200, hdrs, data, method == "GET"
        if method == "PUT":
            return self._put(bucket, key, body)
        if method == "DELETE":
            self.counts["DELETE"] += 1
            if key in bucket.overlay:
                del bucket.overlay[key]
                bucket.overlay_keys.remove(key)
            return 204, {}, b"", True
        return _error(501, "NotImplemented", path)

    def _put(
        self, bucket: Bucket, key: str, body: bytes
    ) -> tuple[int, dict[str, str], bytes, bool]:
        self.counts["PUT"] += 1
        i = self.space.index(key)
        if i is None:
            if key not in bucket.overlay:
                if len(bucket.overlay) >= PROBE_LIMIT:
                    return _error(507, "InsufficientStorage", key)
                bisect.insort(bucket.overlay_keys, key)
            bucket.overlay[key] = body
        elif bucket.was_put(i):
            self.counts["PUT again"] += 1  # the same key copied twice
        elif not bucket.missing_at_start(i):
            self.counts["PUT needless"] += 1  # the bucket held it already
        else:
            bucket.put[i >> 3] |= 1 << (i & 7)
            self.counts["PUT missing"] += 1
        return 200, {"ETag": f'"{hashlib.md5(body).hexdigest()}"'}, b"", True

    def _bucket_request(
        self, method: str, bucket: Bucket, q: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes, bool]:
        if method == "HEAD":
            self.counts["HEAD bucket"] += 1
            return 200, {}, b"", False
        if method == "PUT":  # create bucket: it exists
            self.counts["PUT bucket"] += 1
            return 200, {}, b"", True
        if method != "GET":
            return _error(501, "NotImplemented", f"/{bucket.name}")
        if "location" in q:
            return 200, XML, b'<?xml version="1.0" encoding="UTF-8"?><LocationConstraint/>', True
        self.counts[f"LIST {bucket.name}"] += 1
        page = self._list(bucket, q)
        self.counts[f"LIST keys {bucket.name}"] += page[1]
        return 200, XML, page[0], True

    def _list(self, bucket: Bucket, q: dict[str, str]) -> tuple[bytes, int]:
        v2 = q.get("list-type") == "2"
        prefix, delimiter = q.get("prefix", ""), q.get("delimiter", "")
        encoded = q.get("encoding-type", "").lower() == "url"
        try:
            max_keys = max(0, min(1000, int(q.get("max-keys", "1000"))))
        except ValueError:
            max_keys = 1000
        token = q.get("continuation-token", "")
        after = unquote(token) if v2 and token else q.get("start-after" if v2 else "marker", "")
        if prefix > after:  # start at the prefix (the listing stops at its end)
            after = _just_before(prefix)

        def enc(text: str) -> str:
            return quote(text, safe="/~") if encoded else escape(text)

        parts: list[str] = []
        prefixes: list[str] = []
        n, last, truncated = 0, "", False
        entries = bucket.entries_after(after)
        while True:
            entry = next(entries, None)
            if entry is None or not entry[0].startswith(prefix):
                break
            if n >= max_keys:
                truncated = True
                break
            key = entry[0]
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            if cut >= 0:
                common = key[: cut + len(delimiter)]
                prefixes.append(f"<CommonPrefixes><Prefix>{enc(common)}</Prefix></CommonPrefixes>")
                last = common
                entries = bucket.entries_after(common + _HIGH)
            else:
                parts.append(CONTENTS.format(enc(key), entry[2], entry[1]))
                last = key
            n += 1
        head = [
            '<?xml version="1.0" encoding="UTF-8"?>',
            '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
            f"<Name>{bucket.name}</Name><Prefix>{enc(prefix)}</Prefix>",
            f"<MaxKeys>{max_keys}</MaxKeys>",
        ]
        if delimiter:
            head.append(f"<Delimiter>{enc(delimiter)}</Delimiter>")
        if encoded:
            head.append("<EncodingType>url</EncodingType>")
        if v2:
            head.append(f"<KeyCount>{n}</KeyCount>")
            if token:
                head.append(f"<ContinuationToken>{escape(token)}</ContinuationToken>")
            if truncated:
                nxt = quote(last, safe="")
                head.append(f"<NextContinuationToken>{nxt}</NextContinuationToken>")
            if q.get("start-after"):
                head.append(f"<StartAfter>{enc(q['start-after'])}</StartAfter>")
        else:
            head.append(f"<Marker>{enc(q.get('marker', ''))}</Marker>")
            if truncated and delimiter:
                head.append(f"<NextMarker>{enc(last)}</NextMarker>")
        head.append(f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>")
        text = "".join(head) + "".join(parts) + "".join(prefixes) + "</ListBucketResult>"
        return text.encode(), len(parts)


XML = {"Content-Type": "application/xml"}


def missing_count(n: int, every: int) -> int:
    return n // every if every > 0 else 0


def _just_before(prefix: str) -> str:
    """A string below `prefix` with no key between the two: `prefix` with its last
    character lowered by one, then the highest character (no key holds it)."""
    return prefix[:-1] + (chr(ord(prefix[-1]) - 1) + _HIGH if prefix[-1] > "\0" else "")


def _list_buckets() -> bytes:
    names = "".join(
        f"<Bucket><Name>{b}</Name><CreationDate>{LAST_MODIFIED}</CreationDate></Bucket>"
        for b in BUCKETS
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?><ListAllMyBucketsResult><Owner><ID>synthetic</ID>'
        f"</Owner><Buckets>{names}</Buckets></ListAllMyBucketsResult>"
    ).encode()


def _error(status: int, code: str, resource: str) -> tuple[int, dict[str, str], bytes, bool]:
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
        f"<Message>{code}</Message><Resource>{escape(resource)}</Resource></Error>"
    ).encode()
    return status, XML, body, True


REASONS = {200: "OK", 204: "No Content", 404: "Not Found", 501: "Not Implemented"}


async def _serve_connection(
    s3: SyntheticS3, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    try:
        while True:
            head = await read_head(reader)
            if head is None:
                return
            method, target, version = head.start.split(" ", 2)
            if "100-continue" in head.tokens("expect"):
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = await read_body(reader, body_framing(head), MAX_BODY)
            status, headers, data, send = s3.handle(method, target, body)
            length = len(data)
            lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}"]
            lines += [f"{k}: {v}" for k, v in headers.items()]
            lines += [f"Content-Length: {length}", "Server: blobshift-synthetic-s3", "", ""]
            writer.write("\r\n".join(lines).encode("latin-1") + (data if send else b""))
            await writer.drain()
            if not keep_alive(version, head):
                return
    except (ProtocolError, ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def serve(host: str, port: int, s3: SyntheticS3, port_file: Path | None = None) -> None:
    server = await asyncio.start_server(
        lambda r, w: _serve_connection(s3, r, w), host, port, reuse_address=True, backlog=512
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    bound = server.sockets[0].getsockname()[1]
    if port_file is not None:  # port 0: the kernel's choice, told to whoever started us
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(bound))
        tmp.replace(port_file)
    print(f"synthetic S3 on http://{host}:{bound}: {s3.space.n:,} keys", flush=True)
    async with server:
        await stop.wait()


class SyntheticServer:
    """The endpoint as a child process on a port the kernel picks (no clash with other
    servers): start() waits until it answers, stop() ends it."""

    def __init__(self, host: str, keys: int, miss_every: int, log: Path) -> None:
        self.host, self.keys, self.miss_every, self.log = host, keys, miss_every, log
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        port_file = self.log.with_suffix(".port")
        port_file.unlink(missing_ok=True)
        argv = [sys.executable, "-m", "blobshift.lab.synthetic_s3", "--host", self.host]
        argv += ["--port", "0", "--port-file", str(port_file), "--keys", str(self.keys)]
        argv += ["--miss-every", str(self.miss_every)]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                raise RuntimeError(f"synthetic S3 exited with {code}: see {self.log}")
            if port_file.exists():
                self.port = int(port_file.read_text())
                with contextlib.suppress(OSError):
                    self.stats()
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"synthetic S3 did not answer in {timeout:g}s: see {self.log}")

    def _call(self, method: str, path: str) -> bytes:
        req = urllib.request.Request(self.url + path, method=method)
        with urllib.request.urlopen(req, timeout=10) as resp:
            data: bytes = resp.read()
            return data

    def stats(self) -> dict:
        return json.loads(self._call("GET", "/__stats"))

    def counts(self) -> Counter[str]:
        return Counter(self.stats()["counts"])

    def reset(self) -> None:
        self._call("POST", "/__reset")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)

    def __enter__(self) -> SyntheticServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True, help="0: any free port")
    p.add_argument("--port-file", type=Path, help="write the port bound here")
    p.add_argument("--keys", type=int, default=1_000_000)
    p.add_argument("--miss-every", type=int, default=20, help="new lacks 1 key in this many")
    args = p.parse_args(argv)
    if not args.host.startswith("127."):
        p.error("--host: a loopback address (127.x) only")
    asyncio.run(
        serve(args.host, args.port, SyntheticS3(args.keys, args.miss_every), args.port_file)
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
