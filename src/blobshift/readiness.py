"""Is the old store still needed? Judged from the proxy's store log (roles/nginx_proxy).

While migrating, the app reads the new store first and, when the blob is not there, the
old store (the proxy's main site). Every app read that the old store answered is a
fallback: the flip would make that blob unreadable. Ready means: app reads were seen in
the window, and none of them fell back. The app's delete asks each store whether the
blob exists before it deletes it (a HEAD, then a DELETE): such a HEAD is no read.
blobshift's own reads (backfill, verify, check-blob-logs, whose User-Agent starts with
`blobshift/`) are counted apart, never as the app's.

Each line of the log is one JSON object (the role's `nginx_proxy_store_log_format`):
`msec` (epoch seconds, the time nginx logged the request), `site`, `method`, `uri`,
`status`, `upstream`, `upstream_status`, `bytes`, `agent`.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The proxy's main site while migrating: the old store (blobshift_state's site names).
OLD_SITE = "riakcs"
# The engine's User-Agent (blobshift.s3.client.user_agent) starts with this.
OWN_AGENT_PREFIX = "blobshift/"
READ_METHODS = frozenset({"GET", "HEAD"})
EXAMPLES = 5
# The app's delete asks each store whether the blob exists (blobshift.blobdb's
# S3BlobDB.delete: HEAD, then DELETE): a HEAD the same site's DELETE of the same key
# follows within this many seconds is that delete, not a read.
DELETE_AFTER_HEAD_SECONDS = 5.0
# nginx logs a request when it ends, so lines are in time order only to within the
# longest request: read back this much before the window's start.
SLACK_SECONDS = 300.0
_BLOCK = 1 << 20
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}

VERDICT_READY = "ready"
VERDICT_FALLBACKS = "fallbacks"
VERDICT_NO_READS = "no_app_reads"


class ReadinessError(Exception):
    """Bad input: a log that cannot be read, a window that is no duration."""


def parse_window(text: str) -> float:
    """`15m`, `900`, `900s`, `1h`, `1d` -> seconds (> 0)."""
    m = _DURATION.match(text)
    seconds = float(m.group(1)) * _UNITS[m.group(2)] if m else 0.0
    if seconds <= 0:
        raise ReadinessError(f"window {text!r} is not a positive duration: give e.g. 15m, 900s, 1h")
    return seconds


@dataclass(frozen=True)
class Request:
    time: float
    site: str
    method: str
    uri: str
    status: int
    agent: str

    @property
    def is_read(self) -> bool:
        """A GET or HEAD of an object (`/bucket/key`), not of a bucket (a listing)."""
        return self.method in READ_METHODS and bool(self.key)

    @property
    def key(self) -> str:
        """`bucket/key` of a path-style object request, '' for the bucket or the root."""
        bucket, _, key = self.uri.lstrip("/").partition("/")
        return f"{bucket}/{key}" if key else ""

    @property
    def own(self) -> bool:
        return self.agent.startswith(OWN_AGENT_PREFIX)

    @property
    def answered(self) -> bool:
        """The store had the blob (a 404 means it had not: no fallback then)."""
        return 200 <= self.status < 300 or self.status == 304


def parse_line(line: str) -> Request | None:
    """One log line -> Request, None if it is not a line of the store log format."""
    try:
        raw = json.loads(line)
    except ValueError:
        return None
    if not isinstance(raw, dict):
        return None
    try:
        return Request(
            time=float(raw["msec"]),
            site=str(raw["site"]),
            method=str(raw["method"]),
            uri=str(raw["uri"]),
            status=int(raw["status"]),
            agent=str(raw.get("agent", "")),
        )
    except (KeyError, TypeError, ValueError):
        return None


@dataclass
class Readiness:
    """What the app's reads in the window say about the old store."""

    window: float
    since: float
    until: float
    old_site: str
    logs: list[str]
    lines: int = 0  # lines read in (or near) the window, malformed ones included
    app_reads: int = 0
    app_reads_by_site: dict[str, int] = field(default_factory=dict)
    fallbacks: int = 0
    fallback_examples: list[str] = field(default_factory=list)
    own_reads: int = 0
    own_agents: dict[str, int] = field(default_factory=dict)
    malformed: int = 0
    # Where (file@byte offset), never the content: a broken line may hold anything.
    malformed_examples: list[str] = field(default_factory=list)
    # HEADs on the old site not yet told apart from a delete's, oldest first, each
    # [time, key, still a read]; and the same entries by key, for the DELETE that cancels.
    _pending: deque[list[Any]] = field(default_factory=deque, repr=False)
    _pending_by_key: dict[str, list[list[Any]]] = field(default_factory=dict, repr=False)

    @property
    def verdict(self) -> str:
        if self.fallbacks:
            return VERDICT_FALLBACKS
        return VERDICT_READY if self.app_reads else VERDICT_NO_READS

    def add(self, req: Request) -> None:
        if req.method == "DELETE" and req.site == self.old_site and not req.own:
            self._drop_heads_of_delete(req)
        if not req.is_read:
            return
        if req.own:
            self.own_reads += 1
            agent = req.agent.split()[0] if req.agent.split() else req.agent
            self.own_agents[agent] = self.own_agents.get(agent, 0) + 1
            return
        self.app_reads += 1
        self.app_reads_by_site[req.site] = self.app_reads_by_site.get(req.site, 0) + 1
        if req.site == self.old_site and req.answered:
            if req.method == "HEAD":  # a fallback unless a DELETE follows (below)
                entry = [req.time, req.key, True]
                self._pending.append(entry)
                self._pending_by_key.setdefault(req.key, []).append(entry)
                self._count_heads_before(req.time - DELETE_AFTER_HEAD_SECONDS)
            else:
                self._count_fallback(req.key)

    def _drop_heads_of_delete(self, req: Request) -> None:
        # Only HEADs logged before this DELETE are pending; their times may be a little
        # later than its own (each nginx worker caches its clock), so either way counts.
        for entry in self._pending_by_key.get(req.key, ()):
            if abs(req.time - entry[0]) <= DELETE_AFTER_HEAD_SECONDS:
                entry[2] = False

    def _count_heads_before(self, cutoff: float) -> None:
        """HEADs older than `cutoff` can no longer be a delete's: the reads among them are
        fallbacks. The oldest first, so each HEAD is looked at once."""
        while self._pending and self._pending[0][0] < cutoff:
            _, key, read = self._pending.popleft()
            entries = self._pending_by_key[key]
            entries.pop(0)
            if not entries:
                del self._pending_by_key[key]
            if read:
                self._count_fallback(key)

    def _count_fallback(self, key: str) -> None:
        self.fallbacks += 1
        if len(self.fallback_examples) < EXAMPLES and key not in self.fallback_examples:
            self.fallback_examples.append(key)

    def finish(self) -> None:
        """Every HEAD still pending counts as a read: no DELETE followed in the log read
        (one still to be logged at its end fails the judgement closed, until the next)."""
        self._count_heads_before(float("inf"))

    def as_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if not k.startswith("_")}
        out["verdict"] = self.verdict
        return out

    def summary(self) -> list[str]:
        """What the operator reads: counts, examples, and what to do."""
        by_site = ", ".join(f"{s} {n}" for s, n in sorted(self.app_reads_by_site.items()))
        lines = [
            f"window: the last {self.window:g}s ({len(self.logs)} log(s), {self.lines} lines)",
            f"app reads: {self.app_reads}" + (f" ({by_site})" if by_site else ""),
            f"app reads answered by the old store (site {self.old_site}): {self.fallbacks}",
            f"blobshift's own reads (not counted): {self.own_reads}",
        ]
        if self.malformed:
            lines.append(
                f"malformed lines (skipped): {self.malformed}, e.g. "
                + ", ".join(self.malformed_examples)
            )
        if self.verdict == VERDICT_FALLBACKS:
            lines.append("fallback examples: " + ", ".join(self.fallback_examples))
            lines.append(
                "NOT READY: the old store still answers app reads; finish the backfill "
                "(phase2_backfill.yml, phase3_check_logs.yml -e migrate=true) and judge again"
            )
        elif self.verdict == VERDICT_NO_READS:
            lines.append(
                "no app reads in window: cannot judge; wait for app traffic through the "
                "proxy, or widen the window"
            )
        else:
            lines.append("READY: no app read fell back to the old store")
        return lines


def _lines_since(path: Path, since: float) -> Iterator[tuple[int, str]]:
    """(byte offset, text) of each line of the file's tail from about `since`.

    Reads blocks back from the end until a block starts before `since - SLACK_SECONDS`,
    so a log of many days costs what the window holds, not the whole file.
    """
    with path.open("rb") as f:
        end = f.seek(0, os.SEEK_END)
        start = end
        while start > 0:
            start = max(0, start - _BLOCK)
            f.seek(start)
            if start:
                f.readline()  # a partial line: its start is in the previous block
            first = f.readline()
            req = parse_line(first.decode("utf-8", "replace"))
            if req is not None and req.time < since - SLACK_SECONDS:
                break
        f.seek(start)
        if start:
            f.readline()
        offset = f.tell()
        for raw in f:
            yield offset, raw.decode("utf-8", "replace")
            offset += len(raw)


def judge(
    logs: Sequence[Path],
    window: float,
    *,
    now: float | None = None,
    old_site: str = OLD_SITE,
) -> Readiness:
    """Count the app's reads and fallbacks of the last `window` seconds in `logs`."""
    until = time.time() if now is None else now
    since = until - window
    result = Readiness(window, since, until, old_site, [str(p) for p in logs])
    for path in logs:
        if path.is_dir():
            raise ReadinessError(f"log {path} is a directory: pass the store log file itself")
        try:
            for offset, text in _lines_since(path, since):
                if not text.strip():
                    continue
                req = parse_line(text)
                if req is None:
                    result.lines += 1
                    result.malformed += 1
                    if len(result.malformed_examples) < EXAMPLES:
                        result.malformed_examples.append(f"{path}@{offset}")
                    continue
                if since <= req.time <= until:
                    result.lines += 1
                    result.add(req)
                elif req.time > until and req.method == "DELETE":
                    result.add(req)  # may tell a HEAD at the window's end from a read
        except FileNotFoundError:
            raise ReadinessError(
                f"log {path}: no such file: check the path (the proxy's store log, "
                "nginx_proxy_store_log)"
            ) from None
        except OSError as exc:
            raise ReadinessError(
                f"log {path}: cannot read it ({exc.strerror}): run as a user that can"
            ) from None
    result.finish()
    return result
