"""check-blob-logs, verify, and the refusals that come before any copy."""

from __future__ import annotations

import json

from conftest import NEW_KEYS, OLD_KEYS, store_dict, write_settings
from helpers import contents, random_blobs, run_cli, seed, write_manifest


def _write_log(path, keys_types):
    path.write_text(
        "".join(
            json.dumps({"blob_key": k, "type_code": t, "error": "x"}) + "\n" for k, t in keys_types
        )
        + "this line is not json\n"
    )
    return path


def test_check_blob_logs_all_four_categories_and_migrate(
    settings_file, old_server, new_server, buckets, tmp_path
):
    old_b, new_b = buckets
    seed(new_server, new_b, {"in-new": b"n"})
    seed(old_server, old_b, {"in-old-1": b"o1", "in-old-2": b"o2"})
    log = _write_log(
        tmp_path / "migrate_backend-blob-migration-20260101T000000Z.txt",
        [
            ("in-new", "form"),
            ("in-old-1", "form"),
            ("in-old-2", "attachment"),
            ("deleted", "attachment"),
            ("lost", "attachment"),
        ],
    )
    manifest = write_manifest(
        tmp_path / "manifest.jsonl",
        [{"blob_key": k} for k in ("in-new", "in-old-1", "in-old-2", "lost")],
    )

    proc = run_cli(
        "check-blob-logs",
        "--settings",
        settings_file,
        log,
        "--keys-from",
        manifest,
        "--json",
        tmp_path / "c.json",
        check=1,
    )
    assert "attachment: checked 3 records" in proc.stdout
    assert "form: checked 2 records" in proc.stdout
    totals = json.loads((tmp_path / "c.json").read_text())["totals"]
    assert totals == {
        "Found in new db": 1,
        "Found in old db": 2,
        "Not referenced": 1,
        "Not found": 1,
    }
    assert "malformed lines: 1" in proc.stdout

    proc = run_cli(
        "check-blob-logs",
        "--settings",
        settings_file,
        log,
        "--keys-from",
        manifest,
        "--migrate",
        "--json",
        tmp_path / "m.json",
        check=1,
    )
    assert "Migrated from old db: in-old-1" in proc.stdout
    assert {"in-old-1", "in-old-2"} <= set(contents(new_server, new_b))
    run_cli(
        "check-blob-logs",
        "--settings",
        settings_file,
        log,
        "--keys-from",
        manifest,
        "--json",
        tmp_path / "a.json",
    )
    assert json.loads((tmp_path / "a.json").read_text())["totals"]["Found in old db"] == 0


def test_verify_catches_missing_and_same_size_corruption(
    settings_file, old_server, new_server, buckets, tmp_path
):
    old_b, new_b = buckets
    blobs = random_blobs(50, 300)
    seed(old_server, old_b, blobs)
    run_cli("migrate-backend", "--settings", settings_file, "--log-dir", tmp_path, check=0)
    report = tmp_path / "verify.json"
    run_cli("verify", "--settings", settings_file, "--report", report, check=0)
    assert json.loads(report.read_text())["matched"] == 50

    client = new_server.client()
    client.delete_object(Bucket=new_b, Key="blob/000007")
    corrupted = bytearray(blobs["blob/000011"])
    corrupted[100] ^= 0xFF
    client.put_object(Bucket=new_b, Key="blob/000011", Body=bytes(corrupted))
    proc = run_cli("verify", "--settings", settings_file, "--report", report, check=1)
    data = json.loads(report.read_text())
    assert data["missing"] == ["blob/000007"]
    assert data["etag_mismatch"] == ["blob/000011"]
    assert data["clean"] is False
    assert "2 PROBLEM(S)" in proc.stdout

    accept = tmp_path / "accepted.txt"
    accept.write_text("blob/000007\n")
    run_cli(
        "verify",
        "--settings",
        settings_file,
        "--accept-missing",
        accept,
        "--report",
        report,
        check=1,
    )
    data = json.loads(report.read_text())
    assert data["accepted"] == ["blob/000007"] and data["missing"] == []


def test_wrong_secret_is_refused_before_any_copy(old_server, new_server, buckets, tmp_path):
    old_b, new_b = buckets
    seed(old_server, old_b, {"k": b"v"})
    bad_old = store_dict(old_server, old_b, sigv2=True) | {"secret_key": "wrong-" + OLD_KEYS[1]}
    settings = write_settings(
        tmp_path / "ls.py", store_dict(new_server, new_b, sigv2=False), bad_old
    )
    proc = run_cli("migrate-backend", "--settings", settings, "--log-dir", tmp_path / "l", check=3)
    assert "rejected the credentials of OLD_S3_BLOB_DB_SETTINGS" in proc.stderr
    assert "nothing was copied" in proc.stderr
    assert contents(new_server, new_b) == {}
    assert OLD_KEYS[1] not in proc.stderr + proc.stdout
    assert not list((tmp_path / "l").glob("*-blob-migration-*"))


def test_unreachable_endpoint_and_missing_bucket(old_server, new_server, buckets, tmp_path):
    old_b, new_b = buckets
    unreachable = store_dict(new_server, new_b, sigv2=False) | {"url": "http://127.0.0.9:1"}
    settings = write_settings(
        tmp_path / "ls.py", unreachable, store_dict(old_server, old_b, sigv2=True)
    )
    proc = run_cli("migrate-backend", "--settings", settings, "--log-dir", tmp_path / "l", check=3)
    assert "cannot reach http://127.0.0.9:1" in proc.stderr and "S3_BLOB_DB_SETTINGS" in proc.stderr

    nobucket = store_dict(new_server, "no-such-bucket", sigv2=False)
    settings = write_settings(
        tmp_path / "ls2.py", nobucket, store_dict(old_server, old_b, sigv2=True)
    )
    proc = run_cli("verify", "--settings", settings, check=3)
    assert "bucket 'no-such-bucket' does not exist" in proc.stderr


def test_settings_errors_name_file_and_key(tmp_path, old_server, new_server, buckets):
    _old_b, new_b = buckets
    new = store_dict(new_server, new_b, sigv2=False)
    cases = {
        "missing file": (None, "settings file not found"),
        "syntax": ("S3_BLOB_DB_SETTINGS = {", "not valid Python"),
        "no dict": ("X = 1\n", "S3_BLOB_DB_SETTINGS is missing"),
        "missing key": (
            f"S3_BLOB_DB_SETTINGS = {new | {'url': ''}!r}\n"
            f"OLD_S3_BLOB_DB_SETTINGS = {new | {'s3_bucket': 'x'}!r}",
            "S3_BLOB_DB_SETTINGS['url'] must be a non-empty string",
        ),
        "wrong type": (
            f"S3_BLOB_DB_SETTINGS = {new | {'list_version': '1'}!r}",
            "['list_version'] must be int",
        ),
        "no old": (f"S3_BLOB_DB_SETTINGS = {new!r}", "OLD_S3_BLOB_DB_SETTINGS is missing"),
        "secret in exception": (f"S = {NEW_KEYS[1]!r}\nraise ValueError(S)", "ValueError"),
    }
    for name, (text, expected) in cases.items():
        path = tmp_path / f"{name.replace(' ', '_')}.py"
        if text is not None:
            path.write_text(text)
        proc = run_cli("migrate-backend", "--settings", path, "--log-dir", tmp_path / "l", check=2)
        assert expected in proc.stderr, (name, proc.stderr)
        assert str(path) in proc.stderr, name
        assert NEW_KEYS[1] not in proc.stderr, name
    assert not (tmp_path / "l").exists()


def test_bad_flags_are_refused(settings_file, tmp_path):
    for args, expected in (
        (["--shard", "2/2"], "0 <= I < N"),
        (["--chunk-size", "-5"], "must be at least 1"),
        (["--bwlimit", "lots"], "is not a size"),
        (["--keys-from", tmp_path / "nope.jsonl"], "no such file"),
        (["--dry-run", "--reset"], "make no sense"),
    ):
        proc = run_cli(
            "migrate-backend",
            "--settings",
            settings_file,
            "--log-dir",
            tmp_path / "l",
            *args,
            check=2,
        )
        assert expected in proc.stderr, (args, proc.stderr)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"blob_key": "a"}\n{"no_key": 1}\n')
    proc = run_cli(
        "migrate-backend",
        "--settings",
        settings_file,
        "--log-dir",
        tmp_path / "l",
        "--keys-from",
        bad,
        check=2,
    )
    assert f"{bad}:2:" in proc.stderr


def test_edited_checkpoint_is_detected_not_trusted(settings_file, old_server, buckets, tmp_path):
    old_b, _ = buckets
    seed(old_server, old_b, random_blobs(20, 10))
    run_cli("migrate-backend", "--settings", settings_file, "--log-dir", tmp_path, check=0)
    cp = tmp_path / "migrate_backend-checkpoint.json"
    data = json.loads(cp.read_text())
    data["position"] = "zzz"
    cp.write_text(json.dumps(data))
    proc = run_cli("migrate-backend", "--settings", settings_file, "--log-dir", tmp_path, check=2)
    assert "checksum mismatch" in proc.stderr and "--reset" in proc.stderr
    cp.write_text(cp.read_text()[:40])
    proc = run_cli("migrate-backend", "--settings", settings_file, "--log-dir", tmp_path, check=2)
    assert "unreadable" in proc.stderr
    run_cli(
        "migrate-backend", "--settings", settings_file, "--log-dir", tmp_path, "--reset", check=0
    )
