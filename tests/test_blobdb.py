"""S3BlobDB / MigratingBlobDB against two real SeaweedFS servers.

The old server is used with SigV2 (as Riak CS would be), the new one with SigV4.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from conftest import NEW_KEYS, OLD_KEYS, store_dict, write_settings

from blobshift.blobdb import (
    BlobDBError,
    MiB,
    MigratingBlobDB,
    NotFound,
    S3BlobDB,
    get_blob_db,
)
from blobshift.lab.seaweed import SeaweedServer
from blobshift.settings import NEW_STORE, OLD_STORE, StoreSettings, load_settings

SECRETS = (OLD_KEYS[1], NEW_KEYS[1])
ODD_KEYS = [
    "with space/and more spaces ",
    "unicodé/ключ/鍵/🙂",
    "plus+sign+",
    "percent%20literal%",
    "equals=sign&amp;x=y",
    "double//slash",
    "question?mark#hash",
    "tilde~star*(parens)!'quote'",
    "/".join(["s" * 199] * 4),  # ~800 bytes; SeaweedFS allows 255 per segment
]


def load_store(tmp_path: Path, raw: dict) -> StoreSettings:
    """A StoreSettings exactly as load_settings builds it from a localsettings.py."""
    path = write_settings(tmp_path / f"single-{raw['s3_bucket']}.py", raw, None, migrating=False)
    return load_settings(path).new


@pytest.fixture(params=["sigv2", "sigv4"])
def store_raw(
    request: pytest.FixtureRequest,
    old_server: SeaweedServer,
    new_server: SeaweedServer,
    buckets: tuple[str, str],
) -> dict:
    """Settings dict for one store: SigV2 on the "old" server or SigV4 on the "new" one."""
    if request.param == "sigv2":
        return store_dict(old_server, buckets[0], sigv2=True)
    return store_dict(new_server, buckets[1], sigv2=False)


@pytest.fixture
def db(tmp_path: Path, store_raw: dict) -> S3BlobDB:
    return S3BlobDB(load_store(tmp_path, store_raw))


@pytest.fixture
def migrating(settings_file: Path) -> MigratingBlobDB:
    db = get_blob_db(load_settings(settings_file))
    assert isinstance(db, MigratingBlobDB)
    return db


def record(db: S3BlobDB, event: str) -> list[Any]:
    """Every botocore request (or params dict) seen at `event` on db's client."""
    seen: list[Any] = []

    def hook(**kw: Any) -> None:
        seen.append(kw.get("request", kw.get("params")))

    db.client.meta.events.register(event, hook)
    return seen


def seaweed_name(key: str) -> str:
    """The name SeaweedFS lists a key under: its filer collapses repeated slashes."""
    return re.sub("/+", "/", key)


def listed_keys(db: S3BlobDB) -> set[str]:
    pages = db.client.get_paginator("list_objects").paginate(Bucket=db.bucket)
    return {obj["Key"] for page in pages for obj in page.get("Contents", [])}


# --- one store, both signature versions ------------------------------------------------


def test_put_get_exists_size_delete(db: S3BlobDB) -> None:
    assert not db.exists("a/blob")
    db.put("a/blob", b"hello world")
    assert db.exists("a/blob")
    assert db.get("a/blob") == b"hello world"
    assert db.size("a/blob") == 11
    with db.open("a/blob") as stream:
        assert stream.read(5) == b"hello"
    db.put("a/blob", io.BytesIO(b"replaced"))
    assert db.get("a/blob") == b"replaced"
    assert db.delete("a/blob") is True
    assert db.delete("a/blob") is False
    assert not db.exists("a/blob")
    with pytest.raises(NotFound) as caught:
        db.get("a/blob")
    assert caught.value.key == "a/blob"
    with pytest.raises(NotFound):
        db.size("a/blob")
    with pytest.raises(NotFound):
        db.open("a/blob")


def test_odd_keys_round_trip_unchanged(db: S3BlobDB) -> None:
    for key in ODD_KEYS:
        db.put(key, key.encode())
    assert listed_keys(db) == {seaweed_name(k) for k in ODD_KEYS}  # nothing else mangled
    for key in ODD_KEYS:
        assert db.exists(key), key
        assert db.get(key) == key.encode(), key
        assert db.size(key) == len(key.encode()), key
    assert db.bulk_delete(ODD_KEYS) is True
    assert listed_keys(db) == set()
    assert not any(db.exists(key) for key in ODD_KEYS)


def test_seaweedfs_slash_quirks(db: S3BlobDB) -> None:
    """Characterises the lab server, not our code: on SeaweedFS `a//b` and `a/b` are the
    same blob, and a key ending in `/` is a directory whose content is dropped. Riak CS
    and AWS keep such keys distinct, so a migration to SeaweedFS must not meet them."""
    db.put("a//b", b"double")
    db.put("a/b", b"single")
    assert db.get("a//b") == b"single"
    db.put("dir/", b"content")
    assert db.get("dir/") == b""


def test_zero_byte_blob(db: S3BlobDB) -> None:
    db.put("empty", b"")
    assert db.exists("empty")
    assert db.size("empty") == 0
    assert db.get("empty") == b""


def test_content_type_and_metadata_kept(db: S3BlobDB) -> None:
    db.put("typed", b"{}", content_type="application/json", metadata={"domain": "demo"})
    head = db.client.head_object(Bucket=db.bucket, Key="typed")
    assert head["ContentType"] == "application/json"
    assert head["Metadata"] == {"domain": "demo"}


def test_put_sends_content_md5_and_no_crc32(db: S3BlobDB) -> None:
    sent = record(db, "before-send.s3.PutObject")
    db.put("md5", b"checked body")
    (request,) = sent
    expected = hashlib.md5(b"checked body").digest()
    assert request.headers["Content-MD5"] == base64.b64encode(expected)
    assert not [h for h in request.headers if h.lower().startswith("x-amz-checksum")]


def test_large_stream_is_uploaded_in_parts(tmp_path: Path, store_raw: dict) -> None:
    db = S3BlobDB(load_store(tmp_path, store_raw), part_size=5 * MiB)
    parts = record(db, "before-send.s3.UploadPart")
    data = hashlib.sha256(b"seed").digest() * (11 * MiB // 32)

    class OneWayStream(io.RawIOBase):
        """Not seekable, short reads: like a socket or a pipe."""

        def __init__(self) -> None:
            self.pos = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buf: Any) -> int:
            n = min(len(buf), 1_000_000, len(data) - self.pos)
            buf[:n] = data[self.pos : self.pos + n]
            self.pos += n
            return n

    db.put("big", OneWayStream(), content_type="application/octet-stream")
    assert len(parts) == 3  # 5 + 5 + 1 MiB
    assert all("Content-MD5" in p.headers for p in parts)
    assert db.client.head_object(Bucket=db.bucket, Key="big")["ETag"].endswith('-3"')
    assert db.size("big") == len(data)
    assert hashlib.sha256(db.get("big")).digest() == hashlib.sha256(data).digest()


def test_bulk_delete_in_chunks(tmp_path: Path, store_raw: dict) -> None:
    db = S3BlobDB(load_store(tmp_path, {**store_raw, "bulk_delete_chunksize": 7}))
    calls = record(db, "before-send.s3.DeleteObjects")
    keys = [f"bulk/{i:03d} +%" for i in range(30)]
    for key in keys:
        db.put(key, b"x")
    db.put("keep", b"k")
    assert db.bulk_delete(iter(keys)) is True  # any iterable, consumed lazily
    assert len(calls) == 5  # 7 + 7 + 7 + 7 + 2
    # Riak CS knows Content-MD5, not botocore's default CRC32, for DeleteObjects
    assert all("Content-MD5" in c.headers for c in calls)
    assert not [h for c in calls for h in c.headers if h.lower().startswith("x-amz-checksum")]
    # SigV2 bucket-level requests go to /bucket/ (see _SigV2BucketSlash), SigV4 ones do not
    slash = "/" if store_raw["config"]["signature_version"] == "s3" else ""
    assert {urlsplit(c.url).path for c in calls} == {f"/{db.bucket}{slash}"}
    assert listed_keys(db) == {"keep"}
    assert db.bulk_delete([]) is False
    assert db.bulk_delete(["never-existed"]) is True  # S3 acknowledges absent keys


def test_sigv2_bucket_requests_need_the_trailing_slash(
    tmp_path: Path, old_server: SeaweedServer, buckets: tuple[str, str]
) -> None:
    """Plain botocore SigV2 fails on bucket-level requests to SeaweedFS; ours succeed."""
    raw = store_dict(old_server, buckets[0], sigv2=True)
    plain = boto3.session.Session().client(
        "s3",
        endpoint_url=raw["url"],
        aws_access_key_id=raw["access_key"],
        aws_secret_access_key=raw["secret_key"],
        region_name="us-east-1",
        config=Config(signature_version="s3", s3={"addressing_style": "path"}),
    )
    with pytest.raises(ClientError) as caught:
        plain.list_objects(Bucket=buckets[0])
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"

    db = S3BlobDB(load_store(tmp_path, raw))
    db.put("k", b"v")
    assert listed_keys(db) == {"k"}
    assert db.bulk_delete(["k"]) is True
    assert not db.exists("k")


def test_secrets_never_in_messages_or_repr(tmp_path: Path, store_raw: dict) -> None:
    good = S3BlobDB(load_store(tmp_path, store_raw))
    bad = S3BlobDB(load_store(tmp_path, {**store_raw, "secret_key": "wrong-secret-zz"}))
    with pytest.raises(ClientError) as caught:
        bad.get("anything")
    assert caught.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    with pytest.raises(BlobDBError) as bad_config:
        S3BlobDB(load_store(tmp_path, {**store_raw, "config": {"no_such_option": 1}}))
    texts = [repr(good), repr(bad), str(caught.value), str(bad_config.value)]
    texts += [repr(good.store), str(NotFound("k"))]
    for text in texts:
        for secret in (*SECRETS, "wrong-secret-zz"):
            assert secret not in text


# --- the migrating db --------------------------------------------------------------------


def test_blob_only_in_old_is_readable_and_not_copied(migrating: MigratingBlobDB) -> None:
    migrating.old.put("legacy", b"old bytes", content_type="text/plain")
    assert migrating.exists("legacy")
    assert migrating.get("legacy") == b"old bytes"
    assert migrating.size("legacy") == 9
    with migrating.open("legacy") as stream:
        assert stream.read() == b"old bytes"
    assert not migrating.new.exists("legacy")  # no copy on read


def test_new_store_wins_over_old(migrating: MigratingBlobDB) -> None:
    migrating.old.put("both", b"stale")
    migrating.new.put("both", b"fresh!")
    assert migrating.get("both") == b"fresh!"
    assert migrating.size("both") == 6


def test_put_goes_to_new_only(migrating: MigratingBlobDB) -> None:
    migrating.put("fresh", b"new bytes", metadata={"k": "v"})
    assert migrating.new.get("fresh") == b"new bytes"
    assert not migrating.old.exists("fresh")


def test_missing_everywhere(migrating: MigratingBlobDB) -> None:
    assert not migrating.exists("ghost")
    with pytest.raises(NotFound):
        migrating.get("ghost")
    with pytest.raises(NotFound):
        migrating.size("ghost")
    assert migrating.delete("ghost") is False


@pytest.mark.parametrize("where", ["both", "old", "new"])
def test_delete_removes_from_both(migrating: MigratingBlobDB, where: str) -> None:
    if where in ("both", "old"):
        migrating.old.put("doomed", b"x")
    if where in ("both", "new"):
        migrating.new.put("doomed", b"x")
    assert migrating.delete("doomed") is True
    assert not migrating.new.exists("doomed")
    assert not migrating.old.exists("doomed")
    assert not migrating.exists("doomed")


def test_bulk_delete_on_both_in_chunks(tmp_path: Path, old_server, new_server, buckets) -> None:
    old_raw = {**store_dict(old_server, buckets[0], sigv2=True), "bulk_delete_chunksize": 4}
    new_raw = {**store_dict(new_server, buckets[1], sigv2=False), "bulk_delete_chunksize": 3}
    db = get_blob_db(load_settings(write_settings(tmp_path / "ls.py", new_raw, old_raw)))
    assert isinstance(db, MigratingBlobDB)
    old_calls = record(db.old, "before-call.s3.DeleteObjects")
    new_calls = record(db.new, "before-call.s3.DeleteObjects")
    keys = [f"k{i}" for i in range(10)]
    for key in keys[:6]:
        db.old.put(key, b"o")
    for key in keys[4:]:
        db.new.put(key, b"n")
    db.old.put("survivor", b"s")
    assert db.bulk_delete(k for k in keys) is True
    assert (len(old_calls), len(new_calls)) == (3, 4)  # ceil(10/4), ceil(10/3)
    assert listed_keys(db.old) == {"survivor"}
    assert listed_keys(db.new) == set()


def test_delete_still_reaches_old_when_new_fails(tmp_path: Path, settings_file: Path) -> None:
    settings = load_settings(settings_file)
    broken = {**store_dict_from(settings.new), "s3_bucket": "no-such-bucket-here"}
    db = MigratingBlobDB(S3BlobDB(load_store(tmp_path, broken)), S3BlobDB(settings.old))
    db.old.put("doomed", b"x")
    with pytest.raises(ClientError):
        db.delete("doomed")
    assert not db.old.exists("doomed")


def store_dict_from(store: StoreSettings) -> dict:
    return {
        "url": store.url,
        "access_key": store.access_key,
        "secret_key": store.secret_key,
        "s3_bucket": store.bucket,
        "config": dict(store.config),
    }


def test_other_attributes_come_from_new(migrating: MigratingBlobDB) -> None:
    assert migrating.bucket == migrating.new.bucket
    assert migrating.client is migrating.new.client


# --- get_blob_db -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "expected"), [(True, MigratingBlobDB), (False, S3BlobDB)], ids=["on", "off"]
)
def test_get_blob_db_follows_the_flag(
    tmp_path: Path, old_server, new_server, buckets, flag: bool, expected: Callable
) -> None:
    path = write_settings(
        tmp_path / "localsettings.py",
        new=store_dict(new_server, buckets[1], sigv2=False),
        old=store_dict(old_server, buckets[0], sigv2=True),
        migrating=flag,
    )
    db = get_blob_db(load_settings(path))
    assert type(db) is expected
    new = db.new if isinstance(db, MigratingBlobDB) else db
    assert (new.store.name, new.bucket, new.store.signature_version) == (
        NEW_STORE,
        buckets[1],
        "s3v4",
    )
    if isinstance(db, MigratingBlobDB):
        assert (db.old.store.name, db.old.bucket) == (OLD_STORE, buckets[0])
        assert db.old.store.signature_version == "s3"
