"""Medians, ratios, the targets of issue 6, and the markdown appended to RESULTS.md."""

from __future__ import annotations

import hashlib
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab import BIN, SIGS, Measured

ROOT = Path(__file__).resolve().parent.parent
BS, RC, RC_SUM = "blobshift", "rclone", "rclone --checksum"


@dataclass(frozen=True)
class Run:
    case: str
    sig: str
    tool: str
    rep: int
    objects: int
    nbytes: int
    m: Measured
    load: float  # 1-minute load average just before the run

    @property
    def ops(self) -> float:
        return self.objects / self.m.wall

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.m.cpu / self.objects

    @property
    def sys_ms(self) -> float:
        return 1000 * self.m.system / self.objects

    def line(self) -> str:
        return (
            f"{self.case:6} {self.sig} {self.tool:17} #{self.rep}: {self.m.wall:7.2f}s "
            f"{self.ops:8,.0f} obj/s {self.nbytes / 1e6 / self.m.wall:7.1f} MB/s "
            f"cpu {self.cpu_ms:.3f} ms/obj (sys {self.sys_ms:.3f}) "
            f"rss {self.m.rss_mb:.0f} MB load {self.load:.1f}"
        )


@dataclass(frozen=True)
class Stat:
    runs: int
    wall: float  # median seconds
    ops: float  # objects per median second
    mbps: float
    cpu_ms: float  # median CPU ms per object
    rss_mb: float  # peak over the runs


def stat(runs: list[Run], case: str, sig: str, tool: str) -> Stat | None:
    mine = [r for r in runs if (r.case, r.sig, r.tool) == (case, sig, tool)]
    if not mine:
        return None
    wall = statistics.median(r.m.wall for r in mine)
    first = mine[0]
    return Stat(
        runs=len(mine),
        wall=wall,
        ops=first.objects / wall,
        mbps=first.nbytes / 1e6 / wall,
        cpu_ms=statistics.median(r.cpu_ms for r in mine),
        rss_mb=max(r.m.rss_mb for r in mine),
    )


# -- machine facts -----------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=ROOT)
    except OSError as exc:
        return f"unavailable ({exc.strerror})"
    return (out.stdout or out.stderr).strip().splitlines()[0] if out.stdout or out.stderr else ""


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def commit() -> str:
    sha = _first_line(["git", "rev-parse", "HEAD"])
    diff = subprocess.run(["git", "diff", "HEAD", "--", "src"], capture_output=True, cwd=ROOT)
    if not diff.stdout:
        return sha
    digest = hashlib.sha1(diff.stdout).hexdigest()[:12]
    return f"{sha} + uncommitted changes in src/ (diff sha1 {digest})"


def machine_facts(engine: str) -> dict[str, str]:
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "engine measured (snapshot of src/ taken at the start)": engine,
        "commit at the end": commit(),
        "nproc": str(os.cpu_count()),
        "CPU": cpu_model(),
        "memory": f"{mem_kib / 1024 / 1024:.1f} GiB",
        "python": sys.version.split()[0],
        "rclone": _first_line([str(BIN / "rclone"), "version"]),
        "weed": _first_line([str(BIN / "weed"), "version"]),
        "load average at the end": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


# -- tables ------------------------------------------------------------------------------


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _f(x: float | None, fmt: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, fmt)


def case_table(runs: list[Run], sig: str) -> list[str]:
    head = [
        "| case | blobshift obj/s | rclone obj/s | ratio | blobshift MB/s | rclone MB/s "
        "| ratio | CPU ms/obj bs / rc | peak RSS MB bs / rc | runs |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    rows = []
    for case, rc_tool in _pairs():
        bs, rc = stat(runs, case, sig, BS), stat(runs, case, sig, rc_tool)
        if bs is None and rc is None:
            continue
        label = case if rc_tool == RC else f"{case} (vs rclone --checksum)"
        rows.append(_row(label, bs, rc))
    return head + rows


def _pairs() -> list[tuple[str, str]]:
    return [(c, RC) for c in ("small", "large", "large-parts", "mixed", "rerun")] + [
        ("rerun", RC_SUM),
        ("verify", RC),
        ("memory", RC),
    ]


def _row(label: str, bs: Stat | None, rc: Stat | None) -> str:
    def g(s: Stat | None, attr: str) -> float | None:
        return None if s is None else getattr(s, attr)

    mb = g(bs, "mbps") or g(rc, "mbps")
    return (
        f"| {label} | {_f(g(bs, 'ops'))} | {_f(g(rc, 'ops'))} "
        f"| {_f(_ratio(g(bs, 'ops'), g(rc, 'ops')), '.2f')} "
        f"| {_f(g(bs, 'mbps'), '.1f') if mb else '-'} | {_f(g(rc, 'mbps'), '.1f') if mb else '-'} "
        f"| {_f(_ratio(g(bs, 'mbps'), g(rc, 'mbps')), '.2f') if mb else '-'} "
        f"| {_f(g(bs, 'cpu_ms'), '.3f')} / {_f(g(rc, 'cpu_ms'), '.3f')} "
        f"| {_f(g(bs, 'rss_mb'))} / {_f(g(rc, 'rss_mb'))} "
        f"| {g(bs, 'runs') or 0} / {g(rc, 'runs') or 0} |"
    )


# -- targets -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    measured: float | None
    goal: float
    higher_is_better: bool
    unit: str

    @property
    def met(self) -> bool | None:
        if self.measured is None:
            return None
        ok = self.measured >= self.goal if self.higher_is_better else self.measured <= self.goal
        return ok

    def text(self) -> str:
        cmp = ">=" if self.higher_is_better else "<="
        verdict = {True: "MET", False: "MISSED", None: "not measured"}[self.met]
        fmt = {"x": ".4f", " MB": ".1f"}.get(self.unit, ".3f")  # 1.4998x is not 1.5x
        value = "n/a" if self.measured is None else f"{self.measured:{fmt}}{self.unit}"
        return f"{self.name}: {value} (target {cmp} {self.goal:g}{self.unit}) {verdict}"


def targets(runs: list[Run], sig: str) -> list[Target]:
    def s(case: str, tool: str) -> Stat | None:
        return stat(runs, case, sig, tool)

    def r(case: str, attr: str, tool: str = RC) -> float | None:
        a, b = s(case, BS), s(case, tool)
        return None if a is None or b is None else _ratio(getattr(a, attr), getattr(b, attr))

    bs_rss = [x.m.rss_mb for x in runs if x.sig == sig and x.tool == BS]
    small, memory = s("small", BS), s("memory", BS)
    growth = None if small is None or memory is None else memory.rss_mb / small.rss_mb - 1
    small_cpu = None if small is None else small.cpu_ms
    return [
        Target("small blobs: objects/s blobshift/rclone", r("small", "ops"), 1.5, True, "x"),
        Target("small blobs: blobshift client CPU per object", small_cpu, 0.5, False, " ms"),
        Target("large blobs: MB/s blobshift/rclone", r("large", "mbps"), 1.0, True, "x"),
        Target(
            "large blobs in 8 MiB parts: MB/s blobshift/rclone",
            r("large-parts", "mbps"),
            1.0,
            True,
            "x",
        ),
        Target(
            "re-run over a complete destination: blobshift/rclone",
            r("rerun", "ops"),
            2.0,
            True,
            "x",
        ),
        Target(
            "re-run: blobshift/rclone --checksum (extra, stricter)",
            r("rerun", "ops", RC_SUM),
            2.0,
            True,
            "x",
        ),
        Target("verify vs rclone check --one-way: speed ratio", r("verify", "ops"), 1.0, True, "x"),
        Target("blobshift peak RSS, any run", max(bs_rss) if bs_rss else None, 150, False, " MB"),
        Target("peak RSS growth 20,000 -> 200,000 objects", growth, 0.15, False, ""),
    ]


# -- the report --------------------------------------------------------------------------


def render(runs: list[Run], cfg: Any, elapsed: float, engine: str) -> str:
    facts = machine_facts(engine)
    lines = [f"## {facts['date']}: {'SMOKE ' if cfg.smoke else ''}benchmark run", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    lines += [
        f"- W (blobshift --num-workers, rclone --transfers/--checkers): {cfg.workers}; "
        f"repetitions per tool and case: {cfg.reps}; wall time of the whole bench: "
        f"{elapsed / 60:.1f} min",
        f"- data: {_describe([cfg.small, cfg.large, cfg.mixed, cfg.big])}",
        f"- command: `{' '.join(sys.argv)}`",
        "",
    ]
    for sig in cfg.sigs:
        lines += [f"### Old side {SIGS[sig]} (new side SigV4)", ""]
        lines += case_table(runs, sig)
        lines += ["", "Targets (issue 6):", ""]
        lines += [f"- {t.text()}" for t in targets(runs, sig)]
        lines.append("")
    lines += ["<details><summary>every run</summary>", "", "```"]
    lines += [r.line() for r in runs]
    lines += ["```", "", "</details>", ""]
    return "\n".join(lines)


def _describe(sets: Iterable[Any]) -> str:
    return "; ".join(
        f"{d.name} = {d.count:,} objects / {d.total_bytes / 1e6:,.1f} MB" for d in sets if d
    )


def append(path: Path, text: str) -> None:
    if not path.exists():
        path.write_text(
            "# blobshift migrate-backend vs rclone copy: results\n\n"
            "Appended by `make bench` (bench/backfill_vs_rclone.py); newest last.\n\n"
        )
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(text + "\n")


def ratio_lines(runs: list[Run], cfg: Any) -> list[str]:
    out = []
    for sig in cfg.sigs:
        out += [f"[{sig}] {t.text()}" for t in targets(runs, sig) if t.measured is not None]
    return out
