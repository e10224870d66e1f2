"""Unit tests of the modules in library/, through patch_module_args (in-process).

The engine calls go to the real SeaweedFS servers of conftest.py; failure paths
(no engine, unreadable settings, unreachable store, bad arguments) are provoked.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess

import ansible.module_utils.blobshift_common as common
import pytest
import yaml
from ansible.module_utils.testing import patch_module_args
from helpers import contents, md5s, random_blobs, seed
from modtest import OLD_KEYS, REPO, VENV_BIN, load_module, store_dict, write_settings

from blobshift.runfiles import RunPaths

MODULES = (
    "blob_migration",
    "blob_log_check",
    "blob_migration_verify",
    "blob_migration_info",
    "blob_migration_poll",
)


def run_module(name: str, args: dict, capsys, *, check_mode: bool = False) -> dict:
    module = load_module(name)
    if name == "blob_migration":
        # The test stores are SeaweedFS, whose key probe fails for "a//b" and "x/" (see
        # blobshift.fidelity): let such keys be logged, as the lab's environment does.
        args = {"log_unfaithful_keys": True, **args}
    if check_mode:
        args = {**args, "_ansible_check_mode": True}
    with patch_module_args(args), pytest.raises(SystemExit):
        module.main()
    out = capsys.readouterr().out
    result = json.loads(out)
    assert OLD_KEYS[1] not in out  # a secret never reaches a result
    # Ansible fails a task whose result has a non-zero `rc`: the engine's code is exit_code.
    assert "rc" not in result
    return result


# -- documentation -------------------------------------------------------------------


@pytest.mark.parametrize("name", MODULES)
def test_ansible_doc_renders(name):
    proc = subprocess.run(
        [str(VENV_BIN / "ansible-doc"), "-M", "library", "-t", "module", name],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"MODULE \x1b[1m{name}" in proc.stdout or f"MODULE {name}" in proc.stdout
    assert "OPTIONS" in proc.stdout and "RETURN VALUES" in proc.stdout
    assert "[WARNING]" not in proc.stderr, proc.stderr


@pytest.mark.parametrize("name", MODULES)
def test_documentation_matches_argument_spec(name):
    module = load_module(name)
    doc = yaml.safe_load(module.DOCUMENTATION)
    yaml.safe_load(module.EXAMPLES)
    assert isinstance(yaml.safe_load(module.RETURN), dict)
    options = doc["options"]
    spec = module.ARGUMENT_SPEC
    assert set(options) == set(spec)
    for opt, documented in options.items():
        coded = spec[opt]
        assert documented.get("type", "str") == coded.get("type", "str"), opt
        assert documented.get("required", False) == coded.get("required", False), opt
        assert documented.get("default") == coded.get("default"), opt
        assert documented.get("elements") == coded.get("elements"), opt
        assert documented.get("description"), opt


def test_shard_paths_match_the_engine(tmp_path):
    for index, count in ((0, 1), (0, 2), (1, 2), (3, 5)):
        ours = common.shard_paths(str(tmp_path), index, count)
        engine = RunPaths.for_shard(tmp_path, index, count)
        assert ours["checkpoint"] == str(engine.checkpoint)
        assert ours["status"] == str(engine.status)
        assert ours["lock"] == str(engine.lock)


@pytest.mark.parametrize("text", ["2/2", "-1/2", "0/0", "a/b", "1"])
def test_parse_shard_refuses(text):
    with pytest.raises(ValueError, match="shard"):
        common.parse_shard(text)


# -- failure messages ------------------------------------------------------------------


def test_missing_engine_names_the_interpreter(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(common, "HAS_ENGINE", False)
    monkeypatch.setattr(common, "ENGINE_IMPORT_ERROR", "ModuleNotFoundError: blobshift")
    for name, args in (
        ("blob_migration", {"settings": "/x", "log_dir": str(tmp_path)}),
        ("blob_log_check", {"settings": "/x", "logs": ["/y"]}),
        ("blob_migration_verify", {"settings": "/x"}),
    ):
        result = run_module(name, args, capsys)
        assert result["failed"]
        assert "blobshift engine is not installed" in result["msg"]
        assert "blobshift_engine" in result["msg"]


def test_missing_settings_file(capsys, tmp_path):
    result = run_module(
        "blob_migration", {"settings": str(tmp_path / "nope.py"), "log_dir": str(tmp_path)}, capsys
    )
    assert result["failed"]
    assert f"settings file {tmp_path / 'nope.py'} does not exist" in result["msg"]


def test_unreadable_settings_file(capsys, tmp_path, monkeypatch, settings_file):
    real_access = os.access
    monkeypatch.setattr(
        common.os,
        "access",
        lambda p, mode: False if str(p) == str(settings_file) else real_access(p, mode),
    )
    result = run_module("blob_migration_verify", {"settings": str(settings_file)}, capsys)
    assert result["failed"]
    assert f"settings file {settings_file} is not readable" in result["msg"]


def test_invalid_settings_names_the_key(capsys, tmp_path):
    path = tmp_path / "localsettings.py"
    path.write_text("S3_BLOB_DB_SETTINGS = {'url': 'http://x'}\n")
    result = run_module("blob_migration_verify", {"settings": str(path)}, capsys)
    assert result["failed"]
    assert result["exit_code"] == 2
    assert "access_key" in result["msg"] and str(path) in result["msg"]


def test_unreachable_store(capsys, tmp_path, servers, buckets):
    old, new = servers
    dead = store_dict(new, buckets[1], sigv2=False)
    dead["url"] = "http://127.0.0.9:9"
    settings = write_settings(
        tmp_path / "localsettings.py", new=dead, old=store_dict(old, buckets[0], sigv2=True)
    )
    result = run_module(
        "blob_migration", {"settings": str(settings), "log_dir": str(tmp_path / "logs")}, capsys
    )
    assert result["failed"]
    assert result["exit_code"] == 3
    assert "cannot reach http://127.0.0.9:9" in result["msg"]
    assert "nothing was copied" in result["msg"]


@pytest.mark.parametrize(
    "args,message",
    [
        ({"shard": "2/2"}, "shard '2/2'"),
        ({"chunk_size": 0}, "chunk_size=0"),
        ({"bwlimit": "lots"}, "bwlimit"),
        ({"multipart_threshold": "huge"}, "multipart_threshold"),
        ({"multipart_threshold": "0"}, "multipart_threshold=0: must be positive"),
        ({"max_rps": -1}, "max_rps"),
    ],
)
def test_blob_migration_refuses_bad_arguments(capsys, tmp_path, args, message):
    base = {"settings": str(tmp_path / "s.py"), "log_dir": str(tmp_path)}
    result = run_module("blob_migration", {**base, **args}, capsys)
    assert result["failed"]
    assert message in result["msg"]


def test_locked_shard_fails_with_rc_4(capsys, tmp_path, settings_file):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    lock = RunPaths.for_shard(log_dir, 0, 1).lock
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fh.write("pid 1 on test\n")
        fh.flush()
        result = run_module(
            "blob_migration", {"settings": str(settings_file), "log_dir": str(log_dir)}, capsys
        )
        info = run_module("blob_migration_info", {"log_dir": str(log_dir)}, capsys)
    assert result["failed"] and result["exit_code"] == 4
    assert "another backfill for this shard is running" in result["msg"]
    assert info["running"] is True and info["state"] == "running"


# -- the engine, for real ----------------------------------------------------------------


def test_blob_migration_check_mode_then_copy_then_nothing(
    capsys, tmp_path, servers, buckets, settings_file
):
    old, new = servers
    blobs = random_blobs(40, 256)
    seed(old, buckets[0], blobs)
    log_dir = tmp_path / "logs"
    args = {"settings": str(settings_file), "log_dir": str(log_dir), "num_workers": 4}

    dry = run_module("blob_migration", args, capsys, check_mode=True)
    assert dry["changed"] is True and dry["would_copy"] == 40
    assert contents(new, buckets[1]) == {}
    assert not os.path.exists(dry["checkpoint_path"])

    done = run_module("blob_migration", args, capsys)
    assert done["changed"] is True
    assert done["counts"]["copied"] == 40 and done["counts"]["logged"] == 0
    assert done["complete"] is True and done["exit_code"] == 0
    assert os.path.isfile(done["log"]) and done["logs"] == [done["log"]]
    with open(done["status_path"]) as fh:
        assert json.load(fh)["state"] == "finished"
    assert contents(new, buckets[1]) == md5s(blobs)

    again = run_module("blob_migration", args, capsys)
    assert again["changed"] is False
    assert again["counts"]["copied"] == 0 and again["counts"]["skipped"] == 40

    info = run_module("blob_migration_info", {"log_dir": str(log_dir)}, capsys)
    assert info["state"] == "finished" and info["running"] is False
    assert info["existing_logs"] == [done["log"], again["log"]]


def test_blob_log_check_classifies_and_migrates(capsys, tmp_path, servers, buckets, settings_file):
    old, new = servers
    seed(old, buckets[0], {"in/old": b"1", "in/both": b"2"})
    seed(new, buckets[1], {"in/both": b"2", "in/new": b"3"})
    log = tmp_path / "migrate_backend-blob-migration-20260101T000000Z.txt"
    records = [
        {"blob_key": "in/old", "error": "too many retries", "type_code": "form"},
        {"blob_key": "in/both", "error": "too many retries", "type_code": "form"},
        {"blob_key": "in/new", "error": "not found in old db"},
        {"blob_key": "gone", "error": "not found in old db"},
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in records) + "not json\n")
    args = {"settings": str(settings_file), "logs": [str(log)]}

    checked = run_module("blob_log_check", {**args, "migrate": True}, capsys, check_mode=True)
    assert checked["changed"] is False and checked["would_migrate"] == 1
    assert checked["totals"] == {
        "Found in new db": 2,
        "Found in old db": 1,
        "Not referenced": 0,
        "Not found": 1,
    }
    assert checked["by_type"]["form"]["Found in old db"] == 1
    assert checked["by_type"]["(no type)"]["Not found"] == 1
    assert checked["malformed"] == 1 and checked["not_found_keys"] == ["gone"]
    assert checked["clean"] is False
    assert "in/old" not in contents(new, buckets[1])

    migrated = run_module("blob_log_check", {**args, "migrate": True}, capsys)
    assert migrated["changed"] is True and migrated["migrated"] == 1
    assert migrated["left_in_old"] == 0
    assert "in/old" in contents(new, buckets[1])

    after = run_module("blob_log_check", args, capsys)
    assert after["changed"] is False
    assert after["totals"]["Found in old db"] == 0
    assert after["totals"]["Found in new db"] == 3


def test_blob_log_check_missing_log(capsys, tmp_path, settings_file):
    result = run_module(
        "blob_log_check", {"settings": str(settings_file), "logs": [str(tmp_path / "x")]}, capsys
    )
    assert result["failed"] and "not found on this host" in result["msg"]


def test_blob_migration_verify_gate(capsys, tmp_path, servers, buckets, settings_file):
    old, new = servers
    blobs = random_blobs(10, 128)
    seed(old, buckets[0], blobs)
    seed(new, buckets[1], {k: v for k, v in blobs.items() if k != "blob/000003"})
    report = tmp_path / "reports" / "verify.json"
    args = {"settings": str(settings_file), "report": str(report)}

    failed = run_module("blob_migration_verify", args, capsys)
    assert failed["failed"] and failed["clean"] is False
    assert "1 missing" in failed["msg"] and "blob/000003" in failed["msg"]
    assert str(report) in failed["msg"]
    assert json.loads(report.read_text())["missing"] == ["blob/000003"]

    accepted = run_module(
        "blob_migration_verify", {**args, "accept_missing": ["blob/000003"]}, capsys
    )
    assert not accepted.get("failed") and accepted["clean"] is True
    assert accepted["report"]["accepted"] == ["blob/000003"]
    assert accepted["report_path"] == str(report)

    accept_file = tmp_path / "accepted.txt"
    accept_file.write_text("# lost in 2019\nblob/000003\n")
    from_file = run_module(
        "blob_migration_verify",
        {"settings": str(settings_file), "accept_missing_file": str(accept_file)},
        capsys,
        check_mode=True,
    )
    assert from_file["clean"] is True and from_file["changed"] is False
    assert from_file["report_path"] is None


def test_blob_migration_info_reports_a_dead_run(capsys, tmp_path):
    log_dir = tmp_path / "logs"
    log_dir.mkdir()
    paths = RunPaths.for_shard(log_dir, 1, 2)
    paths.status.write_text(json.dumps({"state": "running", "pid": 2**22 + 7, "counts": {}}))
    paths.lock.write_text("")
    info = run_module("blob_migration_info", {"log_dir": str(log_dir), "shard": "1/2"}, capsys)
    assert info["state"] == "dead" and info["running"] is False and info["pid_alive"] is False
    assert info["log_dir_exists"] and info["log_dir_writable"] and info["free_bytes"] > 0

    paths.checkpoint.write_text("{truncated")
    info = run_module("blob_migration_info", {"log_dir": str(log_dir), "shard": "1/2"}, capsys)
    assert info["checkpoint"] is None and "unreadable" in info["problems"][0]


def test_blob_migration_logged_blobs_warn_without_failing(
    capsys, tmp_path, servers, buckets, settings_file
):
    """A manifest key missing from the old store is logged: the task warns, does not fail."""
    old, new = servers
    blobs = random_blobs(5, 64)
    seed(old, buckets[0], blobs)
    manifest = tmp_path / "manifest.jsonl"
    rows = [{"blob_key": k, "type_code": "form"} for k in [*blobs, "ghost/missing"]]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_module(
        "blob_migration",
        {
            "settings": str(settings_file),
            "log_dir": str(tmp_path / "logs"),
            "keys_from": str(manifest),
            "shard": "0/1",
        },
        capsys,
    )
    assert not result.get("failed") and result["changed"] is True
    assert result["counts"]["copied"] == 5 and result["counts"]["logged"] == 1
    assert result["exit_code"] == 1
    assert "could not be copied" in json.dumps(result.get("warnings")), result.keys()
    with open(result["log"]) as fh:
        logged = [json.loads(line) for line in fh]
    assert [r["blob_key"] for r in logged] == ["ghost/missing"]
    assert contents(new, buckets[1]) == md5s(blobs)


def test_blob_migration_bad_manifest_is_bad_input(capsys, tmp_path, settings_file):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"blob_key": "a"}\nnot json\n')
    result = run_module(
        "blob_migration",
        {
            "settings": str(settings_file),
            "log_dir": str(tmp_path / "logs"),
            "keys_from": str(manifest),
        },
        capsys,
    )
    assert result["failed"] and result["exit_code"] == 2
    assert f"{manifest}:2" in result["msg"] and "nothing was changed" in result["msg"]


def test_metrics_file_is_passed_to_the_engine(capsys, tmp_path, servers, buckets, settings_file):
    from prometheus_client.parser import text_string_to_metric_families

    seed(servers[0], buckets[0], random_blobs(12, 256))
    args = {"settings": str(settings_file), "log_dir": str(tmp_path / "logs")}
    prom = tmp_path / "blobshift_migrate_backend_shard0of1.prom"
    dry = run_module("blob_migration", {**args, "metrics_file": str(prom)}, capsys, check_mode=True)
    assert dry["would_copy"] == 12 and not prom.exists()  # check mode writes no metrics
    done = run_module("blob_migration", {**args, "metrics_file": str(prom)}, capsys)
    samples = {
        s.name: s
        for family in text_string_to_metric_families(prom.read_text())
        for s in family.samples
    }
    copied = samples["blobshift_objects_copied_total"]
    assert copied.value == done["counts"]["copied"] == 12
    assert copied.labels["command"] == "migrate-backend" and copied.labels["shard"] == "0/1"
    bad = run_module(
        "blob_migration_verify",
        {"settings": str(settings_file), "metrics_file": str(tmp_path)},
        capsys,
    )
    assert bad["failed"] and "is a directory" in bad["msg"]
