"""The systemd launcher's pieces that need no systemd: the one mapping from blob_migration's
options to `blobshift migrate-backend`'s flags, the refusal on a host without systemd, and
how the poll turns a unit's end into the summary's result. On the fleet (systemd as init):
tests/fleet/test_fleet_backfill_unit.py. Under a second."""

from __future__ import annotations

import json
import os
import sys
import types

import pytest
from modtest import REPO, _load, load_module, write_settings
from test_modules import run_module

from blobshift.cli import build_parser
from blobshift.runstate import SYSTEMD_RUN_DIR, job_finished, shard_state

UNIT_OPTIONS = {
    "launcher",
    "unit_prefix",
    "unit_user",
    "unit_restart_sec",
    "unit_start_limit_burst",
    "unit_start_limit_interval",
}


def test_every_engine_option_has_its_flag():
    module = load_module("blob_migration")
    assert set(module.CLI_FLAGS) == set(module.ARGUMENT_SPEC) - UNIT_OPTIONS


def test_the_units_command_line_means_what_the_options_mean(tmp_path):
    """The argv a unit runs parses, by the CLI's own parser, into the engine options the
    module builds in-process from the same arguments."""
    module = load_module("blob_migration")
    (tmp_path / "plan.json").write_text("{}")
    params = {
        "settings": "/etc/app/blobshift_settings.py",
        "log_dir": str(tmp_path / "logs"),
        "chunk_size": 50,
        "num_workers": 3,
        "reset": True,
        "shard": "1/3",
        "max_rps": 12.5,
        "bwlimit": "20M",
        "multipart_threshold": "8M",
        "keys_from": None,
        "prefix": "blob/",
        "range_plan": str(tmp_path / "plan.json"),
        "reverse": False,
        "max_chunks_ahead": 4,
        "log_unfaithful_keys": True,
        "metrics_file": str(tmp_path / "m.prom"),
    }
    argv = module.cli_argv(params)
    assert argv[:2] == [
        os.path.join(os.path.dirname(sys.executable), "blobshift"),
        "migrate-backend",
    ]
    args = build_parser().parse_args(argv[1:])
    fake = types.SimpleNamespace(params=params, check_mode=False)
    opts = module.engine_options(fake, 20 * 1024 * 1024, 8 * 1024 * 1024, 1, 3)
    assert str(args.settings) == params["settings"]
    for name in (
        "log_dir",
        "chunk_size",
        "num_workers",
        "reset",
        "prefix",
        "keys_from",
        "shard",
        "max_rps",
        "bwlimit",
        "reverse",
        "log_unfaithful_keys",
        "metrics_file",
        "range_plan",
        "max_chunks_ahead",
    ):
        assert getattr(args, name) == getattr(opts, name), name
    assert args.multipart_threshold == opts.copy.multipart_threshold
    # Unset and false options are left out: the CLI's defaults are the module's.
    bare = module.cli_argv(
        {
            **dict.fromkeys(params),
            "settings": "s",
            "log_dir": "l",
            "chunk_size": 1000,
            "num_workers": 15,
            "reset": False,
            "shard": "0/1",
            "prefix": "",
            "reverse": False,
            "log_unfaithful_keys": False,
        }
    )
    assert bare[2:] == [
        "--settings",
        "s",
        "--log-dir",
        "l",
        "--chunk-size",
        "1000",
        "--num-workers",
        "15",
        "--shard",
        "0/1",
    ]


@pytest.mark.skipif(os.path.isdir(SYSTEMD_RUN_DIR), reason="this host's init is systemd")
def test_launcher_systemd_is_refused_without_systemd(capsys, tmp_path):
    store = {"url": "http://127.0.0.1:1", "access_key": "k", "secret_key": "s", "s3_bucket": "b"}
    settings = write_settings(
        tmp_path.parent / f"{tmp_path.name}-s.py", new=store, old={**store, "s3_bucket": "old"}
    )
    result = run_module(
        "blob_migration",
        {"settings": str(settings), "log_dir": str(tmp_path), "launcher": "systemd"},
        capsys,
    )
    assert result["failed"] and "init is not systemd" in result["msg"]
    assert not list(tmp_path.iterdir())  # nothing was started or written


def test_a_shard_whose_unit_is_active_runs_even_without_its_lock():
    status = {"state": "running"}
    assert shard_state(status, running=False) == "dead"
    assert shard_state(status, running=False, unit_active=True) == "running"
    unit_job = {"unit": "blobshift-migrate_backend.service"}
    assert not job_finished(unit_job, {"active": True})
    assert job_finished(unit_job, {"active": False})
    assert not job_finished(unit_job, None)


@pytest.fixture(scope="module")
def unit_result():
    plugin = _load(
        "blob_migration_poll_action", REPO / "playbooks/action_plugins/blob_migration_poll.py"
    )
    return plugin.unit_result


def info(state, unit, counts=None, error=None):
    status = {"state": state, "counts": counts or {"copied": 5, "logged": 0}}
    if error:
        status["error"] = error
    return {
        "state": state,
        "status": status,
        "unit": unit,
        "paths": {"checkpoint": "/l/migrate_backend-checkpoint.json"},
    }


GONE = {
    "name": "u.service",
    "load_state": "not-found",
    "active_state": "inactive",
    "active": False,
    "failed": False,
}


def test_a_units_end_reads_as_an_async_jobs_result(unit_result):
    done = unit_result(info("finished", GONE), 1)
    assert (done["failed"], done["exit_code"], done["restarts"]) == (False, 0, 1)
    logged = unit_result(info("finished", GONE, {"copied": 3, "logged": 2}), 0)
    assert (logged["failed"], logged["exit_code"], logged["counts"]["logged"]) == (False, 1, 2)
    stopped = unit_result(info("stopped", GONE), 0)
    assert (stopped["failed"], stopped["exit_code"]) == (True, 130)
    failed_unit = {
        **GONE,
        "load_state": "loaded",
        "active_state": "failed",
        "failed": True,
        "result": "exit-code",
        "exec_main_code": 1,
        "exec_main_status": 2,
        "n_restarts": 0,
    }
    failed = unit_result(info("running", failed_unit, error=None), 0)
    assert (failed["failed"], failed["exit_code"]) == (True, 2)
    assert "journalctl -u u.service" in failed["msg"] and "Result=exit-code" in failed["msg"]
    json.dumps(failed)  # a task result
