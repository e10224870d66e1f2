"""Read a backfill shard's run files without disturbing the backfill.

One implementation for `blobshift status` and the Ansible module blob_migration_info:
`module_utils/blobshift_runstate.py` is a symlink to this file, because that module runs
before the engine is installed on a host (run_blob_migration.yml's preflight checks the
log dir with it). So: Python standard library only, and no import from `blobshift`.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
from typing import Any

# Same names as blobshift.runfiles.RunPaths, plus the job file that
# playbooks/run_blob_migration.yml writes next to them (the async job id of the backfill).
RUN_FILE = re.compile(
    r"^migrate_backend(?P<reverse>-reverse)?(?:-shard(?P<index>\d+)of(?P<count>\d+))?"
    r"(?:-checkpoint\.json|-status\.json|\.lock|-ansible-job\.json)$"
)


# sd_booted(3): systemd is the host's init when this directory exists.
SYSTEMD_RUN_DIR = "/run/systemd/system"
# The transient unit of a shard is "<prefix>-<slug>.service" (blob_migration launcher=systemd).
UNIT_PREFIX = "blobshift"
# `systemctl show` properties reported for a shard's unit (reading them needs no root).
UNIT_PROPERTIES = {
    "Id": "id",
    "LoadState": "load_state",
    "ActiveState": "active_state",
    "SubState": "sub_state",
    "Result": "result",
    "ExecMainStatus": "exec_main_status",
    "ExecMainCode": "exec_main_code",
    "MainPID": "main_pid",
    "NRestarts": "n_restarts",
    "InvocationID": "invocation_id",
    "User": "user",
}
# A unit in one of these states runs the shard, or will again (auto-restart is "activating").
UNIT_ACTIVE_STATES = ("active", "activating", "deactivating", "reloading")


def systemd_booted() -> bool:
    return os.path.isdir(SYSTEMD_RUN_DIR)


def shard_slug(index: int, count: int, reverse: bool = False) -> str:
    slug = "migrate_backend-reverse" if reverse else "migrate_backend"
    return slug if count == 1 else f"{slug}-shard{index}of{count}"


def shard_paths(log_dir: str, index: int, count: int, reverse: bool = False) -> dict[str, str]:
    """The files a backfill of shard index/count keeps in log_dir, plus the Ansible job file."""
    slug = shard_slug(index, count, reverse)
    join = os.path.join
    return {
        "checkpoint": join(log_dir, f"{slug}-checkpoint.json"),
        "status": join(log_dir, f"{slug}-status.json"),
        "lock": join(log_dir, f"{slug}.lock"),
        "job": join(log_dir, f"{slug}-ansible-job.json"),
    }


def unit_name(prefix: str, index: int, count: int, reverse: bool = False) -> str:
    """The transient systemd unit that runs shard index/count (launcher=systemd)."""
    return f"{prefix}-{shard_slug(index, count, reverse)}.service"


def read_unit(name: str) -> dict[str, Any]:
    """What systemd says of unit `name` (`systemctl show`); load_state "not-found" once a
    unit that ended well is gone (a transient unit is unloaded unless it failed)."""
    props = ",".join(UNIT_PROPERTIES)
    try:
        proc = subprocess.run(
            ["systemctl", "show", f"--property={props}", "--", name],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return {"name": name, "active": False, "error": f"systemctl show {name}: {exc}"}
    if proc.returncode != 0:
        why = proc.stderr.strip() or f"rc {proc.returncode}"
        return {"name": name, "active": False, "error": f"systemctl show {name}: {why}"}
    raw = dict(line.partition("=")[::2] for line in proc.stdout.splitlines())
    unit: dict[str, Any] = {"name": name}
    for prop, key in UNIT_PROPERTIES.items():
        value: Any = raw.get(prop, "")
        if key in ("exec_main_status", "exec_main_code", "main_pid", "n_restarts"):
            value = int(value) if value.isdigit() else None
        unit[key] = value
    unit["active"] = unit["active_state"] in UNIT_ACTIVE_STATES
    unit["failed"] = unit["active_state"] == "failed"
    return unit


def shard_unit(
    job: dict[str, Any] | None, index: int, count: int, reverse: bool, unit: str | None, prefix: str
) -> dict[str, Any] | None:
    """The shard's unit on a systemd host (None elsewhere): `unit` if given, else the one
    its job file names, else the one named by `prefix`."""
    if not systemd_booted():
        return None
    name = unit or (job or {}).get("unit") or unit_name(prefix, index, count, reverse)
    return read_unit(str(name))


def find_shards(log_dir: str) -> list[tuple[int, int, bool]]:
    """(index, count, reverse) of every shard with a run file in log_dir, in order."""
    found = set()
    for name in os.listdir(log_dir):
        m = RUN_FILE.match(name)
        if m is None:
            continue
        index, count = int(m["index"] or 0), int(m["count"] or 1)
        if 0 <= index < count:
            found.add((index, count, bool(m["reverse"])))
    return sorted(found, key=lambda s: (s[2], s[1], s[0]))


def read_json(path: str) -> tuple[dict[str, Any] | None, str | None]:
    """(data, error): the parsed JSON object of `path`, or None and why not."""
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        return None, None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        return None, f"{path}: unreadable ({type(exc).__name__}: {exc})"
    if not isinstance(data, dict):
        return None, f"{path}: not a JSON object"
    return data, None


def lock_held(path: str) -> bool:
    """True when a process holds the shard's lock (a backfill of this shard is running).

    Takes a shared lock without blocking and drops it at once: a running backfill holds
    an exclusive one, so this never waits and never disturbs it.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def pid_alive(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[:1] != ["Z"]


def shard_state(status: dict[str, Any] | None, running: bool, unit_active: bool = False) -> str:
    """not started, running, finished, stopped, failed, or dead: the status file says
    running but no process holds the lock (killed, host rebooted). A shard whose unit is
    active runs, even while its engine has no lock yet (starting, or restarting)."""
    if status is None:
        return "running" if running or unit_active else "not started"
    state = str(status.get("state") or "unknown")
    if running or unit_active:
        return "running"
    if state in ("running", "starting"):
        return "dead"
    return state


def job_finished(job: dict[str, Any] | None, unit: dict[str, Any] | None = None) -> bool:
    """Whether the job of the job file `job` has ended: its systemd unit is no longer
    active, or its async job's results file says so (async_status's rule: a results file
    still holding "started" is running until it says "finished")."""
    if (job or {}).get("unit"):
        return unit is not None and not unit.get("active") and not unit.get("error")
    results_file = (job or {}).get("results_file")
    if not results_file:
        return False
    data, _ = read_json(str(results_file))
    if data is None:  # not written yet, or being replaced
        return False
    return "started" not in data or bool(data.get("finished"))


def read_shard(
    log_dir: str,
    index: int,
    count: int,
    reverse: bool = False,
    unit: str | None = None,
    unit_prefix: str = UNIT_PREFIX,
) -> dict[str, Any]:
    """What the run files of one shard (and, on a systemd host, its unit) say; `problems`
    names the files that are unreadable."""
    paths = shard_paths(log_dir, index, count, reverse)
    # The lock first: a backfill writes its last status before it lets the lock go, so
    # one that ends meanwhile reads as running or finished, never as dead.
    running = lock_held(paths["lock"])
    problems = []
    files: dict[str, dict[str, Any] | None] = {}
    for name in ("status", "checkpoint", "job"):
        data, error = read_json(paths[name])
        files[name] = data
        if error:
            problems.append(error)
    status, checkpoint = files["status"], files["checkpoint"]
    unit_info = shard_unit(files["job"], index, count, reverse, unit, unit_prefix)
    if not running and status is not None and status.get("state") in ("running", "starting"):
        running = lock_held(paths["lock"])  # a run that started meanwhile is no dead one
    unit_active = bool(unit_info and unit_info["active"])
    logs = [str(p) for p in (checkpoint or {}).get("logs") or (status or {}).get("logs") or []]
    return {
        "shard": f"{index}/{count}",
        "reverse": reverse,
        "paths": paths,
        "state": shard_state(status, running, unit_active),
        "running": running,
        "pid_alive": pid_alive((status or {}).get("pid")),
        "status": status,
        "checkpoint": checkpoint,
        "job": files["job"],
        "job_finished": job_finished(files["job"], unit_info),
        "unit": unit_info,
        "systemd_booted": systemd_booted(),
        "logs": logs,
        "existing_logs": [log for log in logs if os.path.isfile(log)],
        "problems": problems,
    }


def running_shards(log_dir: str) -> list[dict[str, Any]]:
    """Every shard of log_dir (backfill or reverse pass) whose lock a process holds now, or
    whose unit (named by its job file) is active: starting, or waiting to restart."""
    if not os.path.isdir(log_dir):
        return []
    running = []
    for index, count, reverse in find_shards(log_dir):
        paths = shard_paths(log_dir, index, count, reverse)
        held = lock_held(paths["lock"])
        job, _ = read_json(paths["job"])
        name = (job or {}).get("unit")
        unit = read_unit(str(name)) if name and systemd_booted() else None
        if held or (unit and unit["active"]):
            status, _ = read_json(paths["status"])
            pid = (status or {}).get("pid") if held else (unit or {}).get("main_pid") or None
            running.append(
                {
                    "shard": f"{index}/{count}",
                    "reverse": reverse,
                    "pid": pid,
                    "unit": unit["name"] if unit else None,
                }
            )
    return running
