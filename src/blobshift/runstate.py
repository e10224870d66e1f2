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
from typing import Any

# Same names as blobshift.runfiles.RunPaths, plus the job file that
# playbooks/run_blob_migration.yml writes next to them (the async job id of the backfill).
RUN_FILE = re.compile(
    r"^migrate_backend(?P<reverse>-reverse)?(?:-shard(?P<index>\d+)of(?P<count>\d+))?"
    r"(?:-checkpoint\.json|-status\.json|\.lock|-ansible-job\.json)$"
)


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


def shard_state(status: dict[str, Any] | None, running: bool) -> str:
    """not started, running, finished, stopped, failed, or dead: the status file says
    running but no process holds the lock (killed, host rebooted)."""
    if status is None:
        return "running" if running else "not started"
    state = str(status.get("state") or "unknown")
    if running:
        return "running"
    if state in ("running", "starting"):
        return "dead"
    return state


def job_finished(job: dict[str, Any] | None) -> bool:
    """Whether the async job of the job file `job` has ended (async_status's rule: a results
    file still holding "started" is running until it says "finished")."""
    results_file = (job or {}).get("results_file")
    if not results_file:
        return False
    data, _ = read_json(str(results_file))
    if data is None:  # not written yet, or being replaced
        return False
    return "started" not in data or bool(data.get("finished"))


def read_shard(log_dir: str, index: int, count: int, reverse: bool = False) -> dict[str, Any]:
    """What the run files of one shard say; `problems` names the files that are unreadable."""
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
    if not running and status is not None and status.get("state") in ("running", "starting"):
        running = lock_held(paths["lock"])  # a run that started meanwhile is no dead one
    logs = [str(p) for p in (checkpoint or {}).get("logs") or (status or {}).get("logs") or []]
    return {
        "shard": f"{index}/{count}",
        "reverse": reverse,
        "paths": paths,
        "state": shard_state(status, running),
        "running": running,
        "pid_alive": pid_alive((status or {}).get("pid")),
        "status": status,
        "checkpoint": checkpoint,
        "job": files["job"],
        "job_finished": job_finished(files["job"]),
        "logs": logs,
        "existing_logs": [log for log in logs if os.path.isfile(log)],
        "problems": problems,
    }


def running_shards(log_dir: str) -> list[dict[str, Any]]:
    """Every shard of log_dir (backfill or reverse pass) whose lock a process holds now."""
    if not os.path.isdir(log_dir):
        return []
    running = []
    for index, count, reverse in find_shards(log_dir):
        paths = shard_paths(log_dir, index, count, reverse)
        if lock_held(paths["lock"]):
            status, _ = read_json(paths["status"])
            running.append(
                {"shard": f"{index}/{count}", "reverse": reverse, "pid": (status or {}).get("pid")}
            )
    return running
