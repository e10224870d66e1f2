"""Operator-facing output: a live line on a TTY, plain timestamped lines otherwise,
and a tee of every message into the run's summary file."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path
from typing import TextIO

from blobshift.runfiles import utc_iso


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class Output:
    """Messages for the operator; each is also appended to the summary file, if any."""

    def __init__(self, stream: TextIO | None = None, tty: bool | None = None) -> None:
        self.stream = stream or sys.stdout
        self.tty = self.stream.isatty() if tty is None else tty
        self._summary: TextIO | None = None
        self._live = False

    def tee_to(self, path: Path) -> None:
        self._summary = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held for the run

    def line(self, text: str) -> None:
        self._clear_live()
        print(text, file=self.stream, flush=True)
        if self._summary is not None:
            try:
                self._summary.write(f"{utc_iso()} {text}\n")
                self._summary.flush()
            except OSError:
                # The summary is only a copy of this output: a full log dir must not turn
                # a progress line into a crash (the log and checkpoint writes report it).
                self._drop_summary()

    def live(self, text: str) -> None:
        """Redraw the TTY status line (not teed: it changes every half second)."""
        self.stream.write("\r\x1b[2K" + text)
        self.stream.flush()
        self._live = True

    def _clear_live(self) -> None:
        if self._live:
            self.stream.write("\r\x1b[2K")
            self._live = False

    def _drop_summary(self) -> None:
        if self._summary is not None:
            with contextlib.suppress(OSError):
                self._summary.close()
            self._summary = None

    def close(self) -> None:
        self._clear_live()
        self._drop_summary()


class Progress:
    """Turns count snapshots into a live line (TTY) or a line every `interval` seconds."""

    def __init__(self, out: Output, interval: float = 10.0) -> None:
        self.out = out
        self.interval = interval
        self.started = time.monotonic()
        self._last_line = self.started

    def show(self, text: str) -> None:
        now = time.monotonic()
        if self.out.tty:
            self.out.live(text)
        elif now - self._last_line >= self.interval:
            self._last_line = now
            self.out.line(f"progress: {text}")


def rate_text(done: int, nbytes: int, elapsed: float, total: int | None) -> str:
    """'850 obj/s, 3.2 MiB/s, ETA 4m10s' from counts so far."""
    elapsed = max(elapsed, 1e-6)
    rate = done / elapsed
    parts = [f"{rate:,.0f} obj/s", f"{human_bytes(nbytes / elapsed)}/s"]
    if total and rate > 0 and done <= total:
        parts.append(f"ETA {human_duration((total - done) / rate)}")
    return ", ".join(parts)
