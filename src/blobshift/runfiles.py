"""The files a backfill keeps in its log dir: checkpoint, status, missing-blob log, lock.

The checkpoint is written atomically (temp file, fsync, rename) and carries a checksum
of its own content, so a truncated or hand-edited file is detected rather than trusted.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

CHECKPOINT_VERSION = 1


class RunFileError(Exception):
    """A problem with a file in the log dir, phrased for the operator."""


class LockedError(RunFileError):
    pass


class LogDirError(OSError):
    """The log dir cannot be written (full, read-only, permissions): the run stops.

    An OSError (errno, strerror, filename = the log dir), so callers that map OSError to
    "cannot write" (exit 5) keep doing so; `str()` is the whole operator message."""

    def __init__(self, message: str, exc: OSError, log_dir: Path) -> None:
        super().__init__(exc.errno, exc.strerror, str(log_dir))
        self.message = message

    def __str__(self) -> str:
        return self.message


FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def log_dir_writes(log_dir: Path, what: str) -> Iterator[None]:
    """Turn an OSError of a write into the log dir into one operator-facing line."""
    try:
        yield
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        fix = "free space there" if exc.errno in FULL else "fix it (permissions, mount)"
        message = (
            f"cannot write the {what} in log dir {log_dir} ({reason}): {fix}, then re-run "
            "to resume; progress is saved up to the last checkpoint"
        )
        raise LogDirError(message, exc, log_dir) from None


def utc_stamp(t: float | None = None) -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))


def utc_iso(t: float | None = None) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: Path, data: dict[str, Any], *, durable: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
            fh.write("\n")
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
    except OSError:
        # A half-written temp file would only take space (the real file is intact).
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    os.replace(tmp, path)
    if durable:
        _fsync_dir(path.parent)


def _digest(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def sealed(body: dict[str, Any]) -> dict[str, Any]:
    """`body` plus a checksum of itself, so an edit or a truncation shows."""
    return {**body, "sha256": _digest(body)}


def is_sealed(raw: object) -> bool:
    if not isinstance(raw, dict) or "sha256" not in raw:
        return False
    body = {k: v for k, v in raw.items() if k != "sha256"}
    return bool(raw["sha256"] == _digest(body))


@dataclass
class Checkpoint:
    """Everything at or before `position` has been handled (copied, skipped or logged)."""

    source: str
    shard: str
    position: str = ""
    complete: bool = False
    totals: dict[str, int] = field(default_factory=dict)
    logs: list[str] = field(default_factory=list)
    updated: str = ""

    def save(self, path: Path) -> None:
        self.updated = utc_iso()
        body = asdict(self)
        body["version"] = CHECKPOINT_VERSION
        write_json_atomic(path, {**body, "sha256": _digest(body)})

    @classmethod
    def load(cls, path: Path) -> Checkpoint | None:
        if not path.exists():
            return None
        fix = "inspect it, then re-run with --reset to start a new pass (present blobs are skipped)"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            reason = type(exc).__name__
            raise RunFileError(f"checkpoint {path} is unreadable ({reason}): {fix}") from None
        if not isinstance(raw, dict) or raw.pop("sha256", None) != _digest(raw):
            raise RunFileError(
                f"checkpoint {path} is truncated or was edited (checksum mismatch): {fix}"
            )
        if raw.pop("version", None) != CHECKPOINT_VERSION:
            raise RunFileError(f"checkpoint {path} has an unknown version: {fix}")
        try:
            return cls(**raw)
        except TypeError:
            raise RunFileError(f"checkpoint {path} has unexpected fields: {fix}") from None


@dataclass(frozen=True)
class RunPaths:
    log_dir: Path
    slug: str

    @classmethod
    def for_shard(cls, log_dir: Path, index: int, count: int, reverse: bool = False) -> RunPaths:
        slug = "migrate_backend-reverse" if reverse else "migrate_backend"
        if count > 1:
            slug += f"-shard{index}of{count}"
        return cls(log_dir, slug)

    @property
    def checkpoint(self) -> Path:
        return self.log_dir / f"{self.slug}-checkpoint.json"

    @property
    def status(self) -> Path:
        return self.log_dir / f"{self.slug}-status.json"

    @property
    def lock(self) -> Path:
        return self.log_dir / f"{self.slug}.lock"

    def new_log(self) -> Path:
        return self.log_dir / f"{self.slug}-blob-migration-{utc_stamp()}.txt"


def summary_path(log: Path) -> Path:
    return log.with_name(log.stem + "-summary.txt")


class RunLock:
    """An flock on the shard's lock file: two backfills for one shard cannot both run."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh: TextIO | None = None

    def __enter__(self) -> RunLock:
        fh = open(self.path, "a+", encoding="utf-8")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip() or "unknown process"
            fh.close()
            raise LockedError(
                f"another backfill for this shard is running ({holder}); lock file "
                f"{self.path}: wait for it to finish or stop it first"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()} since {utc_iso()}\n")
        fh.flush()
        self._fh = fh
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.truncate(0)
            self._fh.close()
            self._fh = None


class MissingLog:
    """JSON lines, one per blob that was not copied; fsynced before the checkpoint moves."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fh = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held for the run
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        self._fh.write(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n")
        self.count += 1

    def sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())

    def close(self) -> None:
        # On a full disk the buffered tail cannot be written: the checkpoint never moved
        # past it, so those keys are redone (and logged again) on resume.
        with contextlib.suppress(OSError):
            self.sync()
        with contextlib.suppress(OSError):
            self._fh.close()


def logged_keys(paths: Iterable[Path]) -> set[str]:
    """Keys already recorded in earlier logs (made durable first), so a resume that redoes
    the chunks in flight does not log them twice. Missing logs are skipped."""
    keys: set[str] = set()
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            continue
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        records, _ = read_log_records(path)
        keys.update(r["blob_key"] for r in records)
    return keys


def read_log_records(path: Path) -> tuple[list[dict[str, Any]], int]:
    """The records of a missing-blob log and the number of malformed lines."""
    records: list[dict[str, Any]] = []
    malformed = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                malformed += 1
                continue
            if not isinstance(rec, dict) or not isinstance(rec.get("blob_key"), str):
                malformed += 1
                continue
            records.append(rec)
    return records, malformed
