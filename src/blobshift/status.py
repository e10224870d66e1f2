"""`blobshift status`: where a backfill stands, from its run files alone.

Reads (never locks for long, never signals) the status file, checkpoint, lock, job file
and missing-blob logs of each shard in a log dir, through `blobshift.runstate`, the
reader the Ansible module blob_migration_info shares.
"""

from __future__ import annotations

import calendar
import os
import time
from pathlib import Path
from typing import Any

from blobshift.progress import human_bytes, human_duration
from blobshift.runfiles import is_sealed, utc_iso
from blobshift.runstate import find_shards, read_shard
from blobshift.sources import Shard

# Exit codes of `blobshift status` (its --help): a script waits while it gets 3.
FINISHED_CLEAN = 0
ATTENTION = 1
BAD_INPUT = 2
IN_PROGRESS = 3

# A running backfill rewrites its status file every 2 s (backfill.STATUS_INTERVAL).
STALE_AFTER = 60.0

COUNT_NAMES = ("listed", "copied", "skipped", "logged", "bytes", "retries")


class StatusInputError(ValueError):
    """The log dir cannot be reported on (missing, not a dir, no run files)."""


def _age(stamp: object, now: float) -> float | None:
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        t = calendar.timegm(time.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ"))
    except ValueError:
        return None
    return round(max(now - t, 0.0), 1)


def _log_lines(path: str) -> int | None:
    """Non-empty lines of a missing-blob log (one blob each), None when it is absent."""
    try:
        with open(path, "rb") as fh:
            return sum(1 for line in fh if line.strip())
    except OSError:
        return None


def _manifest_size(source: object) -> int | None:
    """The manifest's size in bytes, from a checkpoint's source id (manifest runs only)."""
    if not isinstance(source, str) or not source.startswith("manifest:"):
        return None
    head = source.rsplit(":prefix=", 1)[0]
    try:
        return int(head.rsplit(":", 1)[1])
    except (IndexError, ValueError):
        return None


def _ints(raw: object) -> dict[str, int]:
    data = raw if isinstance(raw, dict) else {}
    return {k: int(data.get(k) or 0) for k in COUNT_NAMES}


def _eta(
    state: str, total: object, count: int, pass_done: int, rate: float
) -> tuple[int | None, float | None, str]:
    """(remaining, eta_seconds, text). Only a manifest run knows its total; a shard's
    share of it is estimated (keys are spread over the shards by hash)."""
    if state == "finished":
        return 0, 0.0, "done"
    if not isinstance(total, int):
        return None, None, "unknown (listing the old bucket: its total is not known)"
    remaining = max(round(total / count) - pass_done, 0)
    if state != "running":
        return remaining, None, f"unknown ({state})"
    if rate <= 0:
        return remaining, None, "unknown (no progress yet)"
    seconds = round(remaining / rate, 1)
    approx = "about " if count > 1 else ""
    return remaining, seconds, approx + human_duration(seconds)


def shard_report(
    log_dir: Path, index: int, count: int, reverse: bool, now: float, stale_after: float
) -> dict[str, Any]:
    info = read_shard(str(log_dir), index, count, reverse)
    status = info["status"]
    cp = info["checkpoint"]
    problems = list(info["problems"])
    if status is not None and not is_sealed(status):
        problems.append(f"{info['paths']['status']}: truncated or edited (checksum mismatch)")
    if cp is not None and not is_sealed(cp):
        problems.append(
            f"{info['paths']['checkpoint']}: truncated or edited (checksum mismatch): a "
            "backfill refuses it; inspect it, then re-run with --reset"
        )
    st: dict[str, Any] = status or {}
    state = info["state"]
    counts = _ints(st.get("counts"))
    pass_totals = _ints((cp or {}).get("totals"))
    elapsed = float(st.get("elapsed_seconds") or 0.0)
    done = counts["copied"] + counts["skipped"] + counts["logged"]
    rate = done / elapsed if elapsed > 0 else 0.0
    byte_rate = counts["bytes"] / elapsed if elapsed > 0 else 0.0
    total = st.get("total")
    # Handled, not listed: the listing runs ahead of the copies by a queue's length.
    pass_done = max(sum(pass_totals[k] for k in ("copied", "skipped", "logged")), done)
    remaining, eta_seconds, eta = _eta(state, total, count, pass_done, rate)
    updated_age = _age(st.get("updated"), now)
    stale = state == "running" and updated_age is not None and updated_age > stale_after
    logs = [{"path": p, "exists": os.path.isfile(p), "lines": _log_lines(p)} for p in info["logs"]]
    logged_lines = sum(log["lines"] or 0 for log in logs)
    checkpoint = None
    if cp is not None:
        checkpoint = {
            "path": info["paths"]["checkpoint"],
            "position": cp.get("position", ""),
            "complete": bool(cp.get("complete")),
            "updated": cp.get("updated"),
            "age_seconds": _age(cp.get("updated"), now),
            "manifest_bytes": _manifest_size(cp.get("source")),
        }

    attention = []
    if state == "failed":
        attention.append(f"failed: {st.get('error') or 'see the summary file of its log'}")
    if state == "dead":
        attention.append(
            f"dead: the status file says running but no process holds the lock "
            f"{info['paths']['lock']}: re-run the same backfill to resume from the checkpoint"
        )
    if stale:
        attention.append(
            f"stale: the status file was last written {updated_age:.0f}s ago (a running "
            f"backfill writes it every few seconds): is pid {st.get('pid')} hung?"
        )
    logged = max(logged_lines, counts["logged"], pass_totals["logged"])
    if logged:
        with_lines = [log["path"] for log in logs if log["lines"]]
        paths = with_lines or [log["path"] for log in logs if log["exists"]]
        attention.append(
            f"{logged} blob(s) logged as not copied: classify them with blobshift "
            "check-blob-logs " + " ".join(paths)
        )
    unit = info["unit"]
    if unit is not None and unit.get("failed"):
        name = unit["name"]
        attention.append(
            f"unit {name} failed (Result={unit['result']}, exit status "
            f"{unit['exec_main_status']}, {unit['n_restarts']} restart(s)): see systemctl "
            f"status {name}; journalctl -u {name}; run_blob_migration.yml resets it and resumes"
        )
    attention += [f"unreadable: {p}" for p in problems]
    if state not in ("running", "finished", "stopped", "not started", "failed", "dead"):
        attention.append(f"unknown state {state!r} in {info['paths']['status']}")

    if attention:
        verdict = "attention"
    elif state == "finished":
        verdict = "finished clean"
    else:
        verdict = "in progress"
    return {
        "shard": info["shard"],
        "direction": "reverse" if reverse else "forward",
        "state": state,
        "verdict": verdict,
        "attention": attention,
        "lock_held": info["running"],
        "pid": st.get("pid"),
        "pid_alive": info["pid_alive"],
        "host": st.get("host"),
        "counts": counts,
        "pass_totals": pass_totals,
        "pass_complete": bool((cp or {}).get("complete")),
        "elapsed_seconds": elapsed,
        "objects_per_second": round(rate, 1),
        "bytes_per_second": round(byte_rate),
        "total": total if isinstance(total, int) else None,
        "remaining": remaining,
        "eta_seconds": eta_seconds,
        "eta": eta,
        "checkpoint": checkpoint,
        "updated": st.get("updated"),
        "updated_age_seconds": updated_age,
        "stale": stale,
        "log": st.get("log"),
        "logs": logs,
        "logged_lines": logged_lines,
        "error": st.get("error"),
        "job": info["job"],
        "job_finished": info["job_finished"],
        # On a systemd host, the shard's transient unit (launcher=systemd), else null.
        "unit": unit if unit is not None and unit.get("load_state") != "not-found" else None,
        "problems": problems,
        "paths": info["paths"],
    }


def collect(
    log_dir: Path, shard: Shard | None = None, stale_after: float = STALE_AFTER
) -> dict[str, Any]:
    """The report on every shard of `log_dir` (or on `shard` alone), with its exit code."""
    now = time.time()
    hint = "pass the backfill's --log-dir (blob_migration_log_dir in the playbooks)"
    if not log_dir.exists():
        raise StatusInputError(f"--log-dir {log_dir}: no such directory: {hint}")
    if not log_dir.is_dir():
        raise StatusInputError(f"--log-dir {log_dir} is not a directory: {hint}")
    try:
        found = find_shards(str(log_dir))
    except OSError as exc:
        raise StatusInputError(f"--log-dir {log_dir}: cannot list it ({exc.strerror})") from None
    if not found:
        raise StatusInputError(
            f"--log-dir {log_dir} holds no backfill run files (migrate_backend*-status.json, "
            "-checkpoint.json, .lock): no backfill ran with this log dir; check the path"
        )
    if shard is not None:
        mine = [s for s in found if s[:2] == (shard.index, shard.count)]
        found = mine or [(shard.index, shard.count, False)]
    shards = [shard_report(log_dir, i, n, rev, now, stale_after) for i, n, rev in found]
    verdicts = {s["verdict"] for s in shards}
    code = (
        ATTENTION
        if "attention" in verdicts
        else IN_PROGRESS
        if "in progress" in verdicts
        else FINISHED_CLEAN
    )
    return {
        "log_dir": str(log_dir),
        "checked": utc_iso(now),
        "exit_code": code,
        "shards": shards,
    }


def _ago(seconds: float | None) -> str:
    return "?" if seconds is None else f"{human_duration(seconds)} ago"


def _position(cp: dict[str, Any]) -> str:
    position = cp["position"]
    if not position:
        return "at the start"
    size = cp["manifest_bytes"]
    if size:
        return f"manifest byte {int(position):,} of {size:,} ({100 * int(position) / size:.0f}%)"
    return f"after key {position!r}"


def render(doc: dict[str, Any]) -> list[str]:
    """A few aligned plain-text lines per shard."""
    states = [s["state"] for s in doc["shards"]]
    tally = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
    lines = [f"log dir {doc['log_dir']} at {doc['checked']}: {len(states)} shard(s), {tally}"]
    for s in doc["shards"]:
        c = s["counts"]
        head = f"shard {s['shard']}" + (" (reverse)" if s["direction"] == "reverse" else "")
        pid = ""
        if s["pid"] is not None:
            alive = "alive" if s["pid_alive"] else "not alive"
            pid = f", pid {s['pid']} {alive}" + (", lock held" if s["lock_held"] else "")
        lines.append(f"{head}: {s['state']}{pid}")
        rows = [
            (
                "run",
                f"listed {c['listed']:,}, copied {c['copied']:,} ({human_bytes(c['bytes'])}), "
                f"skipped {c['skipped']:,}, logged {c['logged']:,}, retries {c['retries']:,}",
            )
        ]
        p = s["pass_totals"]
        if s["checkpoint"] is not None and p["listed"] != c["listed"]:
            rows.append(
                (
                    "pass",
                    f"listed {p['listed']:,}, copied {p['copied']:,}, skipped "
                    f"{p['skipped']:,}, logged {p['logged']:,} (all runs of this pass)",
                )
            )
        rows.append(
            (
                "rate",
                f"{s['objects_per_second']:,.1f} obj/s, {human_bytes(s['bytes_per_second'])}/s "
                f"over {human_duration(s['elapsed_seconds'])}; ETA {s['eta']}",
            )
        )
        cp = s["checkpoint"]
        if cp is not None:
            done = ", pass complete" if cp["complete"] else ""
            rows.append(("checkpoint", f"{_position(cp)}{done}, saved {_ago(cp['age_seconds'])}"))
        else:
            rows.append(("checkpoint", "none"))
        if s["updated"]:
            stale = " STALE" if s["stale"] else ""
            rows.append(("updated", f"{s['updated']} ({_ago(s['updated_age_seconds'])}){stale}"))
        if s.get("unit"):
            u = s["unit"]
            rows.append(
                (
                    "unit",
                    f"{u['name']}: {u['active_state']} ({u['sub_state']}), main pid "
                    f"{u['main_pid']}, {u['n_restarts']} restart(s)",
                )
            )
        for log in s["logs"]:
            lines_text = "missing" if log["lines"] is None else f"{log['lines']} line(s)"
            rows.append(("log", f"{log['path']}: {lines_text}"))
        rows += [("attention", reason) for reason in s["attention"]]
        lines += [f"  {label:<11} {text}" for label, text in rows]
    return lines
