"""Wait for a host's backfill jobs, keeping each shard's latest checkpoint on the controller.

Why an action plugin: async_status with `until` polls, but nothing can run between its
polls, so the controller would get a shard's checkpoint only once the shard ends, which
is too late when the host is lost mid-pass (its shard is then taken over from the
controller's copy). Polling in bounded rounds of tasks instead would mean a loop of
include_tasks (hundreds of thousands of task results over a pass of days). This plugin
runs on the controller, polls every job of the host (a survivor runs two shards, its own
and the one it took over) with async_status, or, for a shard run by a systemd unit, reads
the unit with blob_migration_info, and every `fetch_interval` seconds reads each shard's
run files with blob_migration_info and writes its checkpoint and status file under the
shard's `fetch_to` directory, atomically.

Documented in library/blob_migration_poll.py (ansible-doc).
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from ansible.plugins.action import ActionBase
from ansible.utils.display import Display

display = Display()


def _argument_spec() -> dict[str, Any]:
    """The options documented with the module stub library/blob_migration_poll.py."""
    path = Path(__file__).resolve().parents[2] / "library" / "blob_migration_poll.py"
    spec = importlib.util.spec_from_file_location("blob_migration_poll_doc", path)
    assert spec is not None and spec.loader is not None
    stub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stub)
    return dict(stub.ARGUMENT_SPEC)


def write_if_changed(path: str, data: dict[str, Any]) -> bool:
    """Write `data` as JSON to `path` on the controller, atomically; False if unchanged."""
    text = json.dumps(data, indent=2) + "\n"
    try:
        with open(path, encoding="utf-8") as fh:
            if fh.read() == text:
                return False
    except FileNotFoundError:
        pass
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return True


def unit_result(info: dict[str, Any], restarts: int) -> dict[str, Any]:
    """The end of a shard run by a systemd unit, as the summary reads an async job's
    blob_migration result (failed, exit_code, counts, msg): from its status file, and from
    the unit while systemd keeps it (a transient unit is gone once it ended well)."""
    unit = info.get("unit") or {}
    status = info.get("status") or {}
    state = info.get("state")
    counts = status.get("counts") or {}
    name = unit.get("name", "?")
    look = f"see systemctl status {name}; journalctl -u {name}"
    # restarts: the most systemd reported while it ran (NRestarts is gone with the unit).
    result: dict[str, Any] = {
        "finished": True,
        "counts": counts,
        "unit": unit,
        "restarts": restarts,
    }
    if unit.get("failed") or state not in ("finished", "stopped"):
        code = unit.get("exec_main_status") if unit.get("exec_main_code") == 1 else None
        error = f": {status['error']}" if status.get("error") else ""
        how = (
            f"unit {name} {unit.get('active_state', '?')} (Result={unit.get('result') or '?'}, "
            f"exit status {unit.get('exec_main_status')}, {unit.get('n_restarts')} restart(s))"
        )
        return {
            **result,
            "failed": True,
            "exit_code": code,
            "msg": f"{how}, shard {state}{error}: {look}; progress is saved, re-run to resume",
        }
    if state == "stopped":
        return {
            **result,
            "failed": True,
            "exit_code": 130,
            "msg": f"stopped (SIGTERM) after copying {counts.get('copied', 0)} blobs; progress is "
            f"saved in {info['paths']['checkpoint']}: run it again to resume",
        }
    return {**result, "failed": False, "exit_code": 1 if counts.get("logged") else 0, "msg": ""}


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = False

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _, args = self.validate_argument_spec(argument_spec=_argument_spec())
        if args["retries"] < 0 or args["delay"] < 0 or args["fetch_interval"] < 0:
            result.update(failed=True, msg="delay, retries and fetch_interval must be >= 0")
            return result
        async_dir = self._remote_expand_user(
            self.get_shell_option("async_dir", default="~/.ansible_async")
        )
        for job in args["jobs"]:
            if not job["jid"] and not job["unit"]:
                result.update(failed=True, msg=f"shard {job['shard']}: give its jid or its unit")
                return result
        pending = {job["shard"]: job for job in args["jobs"]}
        jobs: dict[str, dict[str, Any]] = {}
        fetched: set[str] = set()
        last_fetch: float | None = None
        restarts: dict[str, int] = {}
        for poll in range(args["retries"] + 1):
            ended = []
            read: dict[str, dict[str, Any]] = {}  # blob_migration_info of the unit jobs
            for shard, job in list(pending.items()):
                if job["unit"]:
                    info = read[shard] = self._info(args["log_dir"], job, task_vars)
                    unit = info.get("unit") or {}
                    restarts[shard] = max(restarts.get(shard, 0), unit.get("n_restarts") or 0)
                    # An unreadable unit (systemctl failed) is read again at the next poll.
                    if not info.get("failed") and not unit.get("error") and not unit.get("active"):
                        jobs[shard] = unit_result(info, restarts[shard])
                        ended.append(job)
                        del pending[shard]
                    continue
                status = self._execute_module(
                    module_name="ansible.legacy.async_status",
                    module_args={"jid": job["jid"], "_async_dir": async_dir},
                    task_vars=task_vars,
                )
                # A job file gone (async dir cleaned) ends the wait too, as a failure.
                if status.get("finished") or status.get("failed"):
                    jobs[shard] = {**status, "finished": bool(status.get("finished"))}
                    ended.append(job)
                    del pending[shard]
            due = last_fetch is None or time.monotonic() - last_fetch >= args["fetch_interval"]
            # Every job at each interval; an ended job at once (its last checkpoint).
            for job in [*(pending.values() if due else ()), *ended]:
                info = read.get(job["shard"]) or self._info(args["log_dir"], job, task_vars)
                fetched.update(self._keep_run_files(info, job))
            if due:
                last_fetch = time.monotonic()
            if not pending:
                break
            display.vv(f"poll {poll + 1}: waiting for shard(s) {', '.join(sorted(pending))}")
            if poll < args["retries"]:
                time.sleep(args["delay"])
        for shard, job in pending.items():
            jobs[shard] = {
                "finished": False,
                "failed": True,
                "ansible_job_id": job["jid"] or None,
                "unit": {"name": job["unit"]} if job["unit"] else None,
                "msg": (
                    f"shard {shard} still running after {args['retries']} polls: it goes on; "
                    "run the playbook again to re-attach to it"
                ),
            }
        result.update(changed=False, jobs=jobs, fetched=sorted(fetched))
        return result

    def _info(self, log_dir: str, job: dict[str, Any], task_vars) -> dict[str, Any]:
        """blob_migration_info of the job's shard (and of its unit, if it has one)."""
        module_args = {"log_dir": log_dir, "shard": job["shard"], "reverse": bool(job["reverse"])}
        if job["unit"]:
            module_args["unit"] = job["unit"]
        info: dict[str, Any] = self._execute_module(
            module_name="blob_migration_info", module_args=module_args, task_vars=task_vars
        )
        return info

    def _keep_run_files(self, info: dict[str, Any], job: dict[str, Any]) -> list[str]:
        """The shard's checkpoint and status file, as blob_migration_info read them, on
        the controller; the paths written."""
        if info.get("failed"):
            display.warning(f"shard {job['shard']}: run files not read: {info.get('msg')}")
            return []
        written = []
        for name in ("checkpoint", "status"):
            data = info.get(name)
            if not isinstance(data, dict):
                continue
            path = os.path.join(job["fetch_to"], os.path.basename(info["paths"][name]))
            if write_if_changed(path, data):
                written.append(path)
        return written
