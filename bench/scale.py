"""`make bench-scale`: the listing merge, the checkpoint and the copy scheduler at scale.

Runs the real `blobshift migrate-backend` (a child process, as an operator runs it)
against the synthetic S3 endpoint (blobshift.lab.synthetic_s3: listings of millions of
keys computed, not stored, in its own process so that its CPU is apart), and rclone
beside it on the same endpoint. Reports keys/s merged, LIST requests per 1,000 objects
on each store (1 host, N hosts by range plan, N hosts by hash shard), peak RSS at 1M and
10M keys, and the time to resume after a SIGTERM. The full run appends to
bench/RESULTS.md; `--small` (50k keys, tests/test_bench_scale.py) appends nothing.

rclone runs `copy --ignore-existing`: a key present in the destination is done, which is
blobshift's rule (its default size+modtime comparison would HEAD every present object).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report  # bench/report.py
from backfill_vs_rclone import snapshot_engine
from lab import (
    BIN,
    Measured,
    blobshift_argv,
    check_exit,
    measure,
    rclone_argv,
    write_localsettings,
    write_rclone_config,
)

from blobshift.lab.synthetic_s3 import KeySpace, SyntheticServer, missing_count
from blobshift.ranges import RangePlan
from blobshift.settings import StoreSettings

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.6"  # the endpoint takes a free port there (no clash with other servers)
STATS_POLL = 0.02  # seconds between looks at the endpoint's counts while a run resumes


@dataclass(frozen=True)
class Config:
    keys: tuple[int, ...]  # key counts of the 1-host runs (RSS flat across them)
    shard_keys: int  # key count of the resume and hash-shard runs
    range_keys: int  # key count of the range-plan runs (the planner's budget is a share of it)
    hosts: tuple[int, ...]  # range-plan runs
    hash_hosts: tuple[int, ...]  # hash-shard runs
    ranges: int  # ranges of a plan (more than hosts)
    sample_requests: int | None  # the planner's budget of LIST requests (None: its default)
    miss_every: int
    workers: int
    rclone_keys: tuple[int, ...]
    results: Path | None
    timeout: float
    small: bool


@dataclass(frozen=True)
class ScaleRun:
    """One tool run: what the child measured and what the endpoint counted for it."""

    label: str
    tool: str
    keys: int
    hosts: int
    m: Measured
    counts: Counter[str]
    summary: dict = field(default_factory=dict)

    def lists(self, bucket: str) -> int:
        return self.counts[f"LIST {bucket}"]

    def per_1000(self, bucket: str) -> float:
        return 1000 * self.lists(bucket) / self.keys

    @property
    def merged(self) -> int:
        """Keys the old store's listings returned to this run (a shard's own share)."""
        return self.counts["LIST keys old"]

    @property
    def keys_per_s(self) -> float:
        return self.merged / self.m.wall if self.m.wall else 0.0

    def line(self) -> str:
        c = self.counts
        return (
            f"{self.label:34} {self.m.wall:7.1f}s {self.keys_per_s:9,.0f} keys/s "
            f"cpu {self.m.cpu:6.1f}s rss {self.m.rss_mb:6.0f} MB "
            f"LIST old {self.lists('old')} new {self.lists('new')} GET {c['GET']} "
            f"HEAD {c['HEAD']} PUT {c['PUT']} (missing {c['PUT missing']}, again "
            f"{c['PUT again']}, needless {c['PUT needless']})"
        )


@dataclass
class Resume:
    stopped_after: float  # seconds the first run ran before its SIGTERM
    first_listed: int
    run: ScaleRun
    first_copy: float | None  # seconds from the resumed run's start to its first new copy

    @property
    def redone(self) -> int:
        return self.first_listed + int(self.run.summary["counts"]["listed"]) - self.run.keys


@dataclass
class Multi:
    """N hosts over one key space, one after another: totals over the hosts."""

    mode: str  # "range plan" | "hash shard"
    hosts: int
    keys: int
    runs: list[ScaleRun]
    planner: Counter[str] = field(default_factory=Counter)
    planner_note: str = ""

    def lists(self, bucket: str) -> int:
        return sum(r.lists(bucket) for r in self.runs) + self.planner[f"LIST {bucket}"]

    def per_1000(self, bucket: str) -> float:
        return 1000 * self.lists(bucket) / self.keys

    def copied(self) -> int:
        return sum(r.counts["PUT missing"] for r in self.runs)

    @property
    def balance(self) -> float:
        """The busiest host's share of the keys, over an even share (1.00: even)."""
        return max(r.merged for r in self.runs) * self.hosts / self.keys


@dataclass
class Bench:
    cfg: Config
    work: Path
    env: dict[str, str]
    runs: list[ScaleRun] = field(default_factory=list)
    resumes: list[Resume] = field(default_factory=list)
    multis: list[Multi] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    server_cpu: dict[int, float] = field(default_factory=dict)

    # -- files ------------------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        path = self.work / "runs" / name
        path.mkdir(parents=True, exist_ok=False)
        return path

    def _files(self, server: SyntheticServer, where: Path) -> tuple[Path, Path]:
        old, new = (
            _store("OLD_S3_BLOB_DB_SETTINGS", server, "old"),
            _store("S3_BLOB_DB_SETTINGS", server, "new"),
        )
        settings = write_localsettings(where / "localsettings.py", old, new)
        return settings, write_rclone_config(where / "rclone.conf", old, new)

    def _blobshift(self, server: SyntheticServer, where: Path, *extra: str) -> list[str]:
        settings, _ = self._files(server, where)
        extra = ("--log-dir", str(where / "logs"), "--progress-interval", "3600", *extra)
        extra += ("--json-file", str(where / "summary.json"))
        return blobshift_argv("migrate-backend", settings, self.cfg.workers, *extra)

    # -- one measured run ------------------------------------------------------------

    def measured(
        self, server: SyntheticServer, label: str, tool: str, argv: list[str], where: Path
    ) -> ScaleRun:
        before = server.counts()
        m = measure(argv, where / "output.txt", self.env, self.cfg.timeout)
        check_exit(m, where)
        counts = server.counts() - before
        summary_file = where / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
        hosts = 1
        run = ScaleRun(label, tool, server.keys, hosts, m, counts, summary)
        print(f"    {run.line()}", flush=True)
        return run

    def one_host(self, server: SyntheticServer) -> ScaleRun:
        n = server.keys
        where = self._dir(f"blobshift-{n}")
        run = self.measured(
            server, f"blobshift, {_k(n)} keys", "blobshift", self._blobshift(server, where), where
        )
        self.runs.append(run)
        _expect_copies(run, missing_count(n, self.cfg.miss_every))
        return run

    def rclone(self, server: SyntheticServer) -> ScaleRun:
        n = server.keys
        where = self._dir(f"rclone-{n}")
        _, config = self._files(server, where)
        argv = rclone_argv("copy", config, "old", "new", self.cfg.workers)
        argv += ["--ignore-existing", "--s3-no-check-bucket"]
        run = self.measured(server, f"rclone, {_k(n)} keys", "rclone", argv, where)
        self.runs.append(run)
        _expect_copies(run, missing_count(n, self.cfg.miss_every))
        return run

    # -- resume -------------------------------------------------------------------------

    def resume(self, server: SyntheticServer) -> Resume:
        """SIGTERM a run halfway through its copies, then time the re-run."""
        n, missing = server.keys, missing_count(server.keys, self.cfg.miss_every)
        where = self._dir(f"resume-{n}")
        argv = self._blobshift(server, where)
        first = where / "first"
        first.mkdir()
        argv_first = _replace(argv, "--json-file", str(first / "summary.json"))
        started = time.monotonic()
        with open(first / "output.txt", "wb") as out:
            proc = subprocess.Popen(argv_first, stdout=out, stderr=subprocess.STDOUT, env=self.env)
        try:
            _wait_for(lambda: server.counts()["PUT missing"] >= missing // 2, proc, self.cfg)
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=self.cfg.timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        stopped_after = time.monotonic() - started
        if rc != 130:
            tail = (first / "output.txt").read_text(errors="replace")[-2000:]
            raise RuntimeError(f"the run to stop exited {rc}, not 130 (stopped):\n{tail}")
        first_listed = int(json.loads((first / "summary.json").read_text())["counts"]["listed"])
        copied_before = server.counts()["PUT missing"]
        watch = _FirstCopy(server, copied_before)
        watch.start()
        try:
            run = self.measured(
                server, f"blobshift resumed, {_k(n)} keys", "blobshift", argv, where
            )
        finally:
            watch.stop()
        result = Resume(stopped_after, first_listed, run, watch.seconds)
        self.resumes.append(result)
        if server.counts()["PUT missing"] != missing:
            raise RuntimeError(
                f"after the resume {server.counts()['PUT missing']} of {missing} missing keys "
                "were copied"
            )
        print(
            f"    resumed: first new copy after {_f(result.first_copy, '.2f')}s, "
            f"{result.redone:,} keys listed again",
            flush=True,
        )
        return result

    # -- N hosts --------------------------------------------------------------------------

    def hash_shards(self, server: SyntheticServer, hosts: int) -> Multi:
        multi = Multi("hash shard", hosts, server.keys, [])
        for i in range(hosts):
            where = self._dir(f"hash-{hosts}-{i}-{server.keys}")
            argv = self._blobshift(server, where, "--shard", f"{i}/{hosts}")
            label = f"blobshift hash shard {i}/{hosts}"
            multi.runs.append(self.measured(server, label, "blobshift", argv, where))
        self._check_multi(server, multi)
        return multi

    def range_shards(self, server: SyntheticServer, hosts: int) -> Multi | None:
        if not _has_range_plan(self.env):
            return None
        where = self._dir(f"plan-{hosts}-{server.keys}")
        plan_file = where / "plan.json"
        multi = Multi("range plan", hosts, server.keys, [])
        if _has_planner(self.env):
            settings, _ = self._files(server, where)
            before = server.counts()
            argv = [str(BIN / "blobshift"), "plan-ranges", "--settings", str(settings)]
            argv += ["--ranges", str(self.cfg.ranges), "--out", str(plan_file)]
            if self.cfg.sample_requests is not None:
                argv += ["--sample-requests", str(self.cfg.sample_requests)]
            done = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=600)
            if done.returncode != 0:
                raise RuntimeError(f"plan-ranges exited {done.returncode}: {done.stderr[-2000:]}")
            multi.planner = server.counts() - before
            multi.planner_note = "blobshift plan-ranges"
        else:
            space = KeySpace(server.keys)
            cuts = range(1, self.cfg.ranges)
            bounds = tuple(space.key(r * server.keys // self.cfg.ranges) for r in cuts)
            RangePlan(f"{server.url}/old", "", bounds).save(plan_file)
            multi.planner_note = "computed from the key space (no plan-ranges yet)"
        for i in range(hosts):
            where_i = self._dir(f"range-{hosts}-{i}-{server.keys}")
            argv = self._blobshift(
                server, where_i, "--range-plan", str(plan_file), "--shard", f"{i}/{hosts}"
            )
            label = f"blobshift range shard {i}/{hosts}"
            multi.runs.append(self.measured(server, label, "blobshift", argv, where_i))
        self._check_multi(server, multi)
        return multi

    def _check_multi(self, server: SyntheticServer, multi: Multi) -> None:
        missing = missing_count(server.keys, self.cfg.miss_every)
        if multi.copied() != missing or any(r.counts["PUT again"] for r in multi.runs):
            raise RuntimeError(f"{multi.mode} x{multi.hosts}: copied {multi.copied()} of {missing}")
        self.multis.append(multi)
        server.reset()

    # -- the whole bench --------------------------------------------------------------------

    def run_all(self) -> None:
        every = {*self.cfg.keys, self.cfg.shard_keys, self.cfg.range_keys, *self.cfg.rclone_keys}
        for n in sorted(every):
            log = self.work / f"synthetic-{n}.log"
            with SyntheticServer(HOST, n, self.cfg.miss_every, log) as server:
                print(f"== {n:,} keys (synthetic S3 on {server.url})", flush=True)
                if n in self.cfg.keys:
                    self.one_host(server)
                    server.reset()
                if n in self.cfg.rclone_keys:
                    self.rclone(server)
                    server.reset()
                if n == self.cfg.shard_keys:
                    self.resume(server)
                    server.reset()
                    for hosts in self.cfg.hash_hosts:
                        self.hash_shards(server, hosts)
                if n == self.cfg.range_keys:
                    for hosts in self.cfg.hosts:
                        if self.range_shards(server, hosts) is None:
                            self.notes.append(
                                "range plans not measured: `migrate-backend --range-plan` is "
                                "not in this engine yet"
                            )
                            break
                self.server_cpu[n] = float(server.stats()["cpu_seconds"])


class _FirstCopy(threading.Thread):
    """Watches the endpoint's count of copies: when the first one past `before` lands."""

    def __init__(self, server: SyntheticServer, before: int) -> None:
        super().__init__(daemon=True)
        self.server, self.before = server, before
        self.started = time.monotonic()
        self.seconds: float | None = None
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(STATS_POLL):
            with contextlib.suppress(OSError):
                if self.server.counts()["PUT missing"] > self.before:
                    self.seconds = time.monotonic() - self.started
                    return

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=5)


def _wait_for(cond, proc: subprocess.Popen, cfg: Config) -> None:
    deadline = time.monotonic() + cfg.timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the run ended (exit {proc.returncode}) before it was stopped")
        if cond():
            return
        time.sleep(STATS_POLL)
    raise RuntimeError(f"the run did not get halfway in {cfg.timeout:g}s")


def _replace(argv: list[str], flag: str, value: str) -> list[str]:
    i = argv.index(flag)
    return [*argv[: i + 1], value, *argv[i + 2 :]]


def _help(env: dict[str, str], *args: str) -> str:
    argv = [str(BIN / "blobshift"), *args, "--help"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    return done.stdout if done.returncode == 0 else ""


def _has_planner(env: dict[str, str]) -> bool:
    return "--ranges" in _help(env, "plan-ranges")


def _has_range_plan(env: dict[str, str]) -> bool:
    return "--range-plan" in _help(env, "migrate-backend")


def _store(name: str, server: SyntheticServer, bucket: str) -> StoreSettings:
    # The endpoint checks no signature; SigV4 and ListObjectsV2, as a modern store.
    return StoreSettings(
        name=name,
        url=server.url,
        access_key="SYNTHETICKEY",
        secret_key="synthetic-secret-not-checked",
        bucket=bucket,
        config={"signature_version": "s3v4", "read_timeout": 120},
        list_version=2,
    )


def _expect_copies(run: ScaleRun, missing: int) -> None:
    c = run.counts
    if c["PUT missing"] != missing or c["PUT again"] or c["PUT needless"]:
        raise RuntimeError(
            f"{run.label}: {c['PUT missing']} of {missing} missing keys copied, "
            f"{c['PUT again']} twice, {c['PUT needless']} needlessly"
        )


def _k(n: int) -> str:
    return f"{n // 1_000_000}M" if n % 1_000_000 == 0 else f"{n // 1000}k"


def _f(x: float | None, fmt: str = ",.0f") -> str:
    return "n/a" if x is None else format(x, fmt)


# -- the report ------------------------------------------------------------------------------


def _ratio(a: float, b: float) -> str:
    return _f(a / b if b else None, ".2f")


def tables(bench: Bench) -> list[str]:
    runs = bench.runs
    lines = [
        "| run | keys | wall s | keys/s merged | LIST/1,000 old | LIST/1,000 new "
        "| copies | peak RSS MB | CPU s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in runs:
        lines.append(
            f"| {r.label} | {r.keys:,} | {r.m.wall:.1f} | {r.keys_per_s:,.0f} "
            f"| {r.per_1000('old'):.2f} | {r.per_1000('new'):.2f} | {r.counts['PUT missing']:,} "
            f"| {r.m.rss_mb:.0f} | {r.m.cpu:.1f} |"
        )
    pairs = [
        (b, r)
        for b in runs
        for r in runs
        if b.tool == "blobshift" and r.tool == "rclone" and b.keys == r.keys
    ]
    if pairs:
        lines += [
            "",
            "| keys | keys/s blobshift/rclone | LIST/1,000 old bs / rc | LIST/1,000 new bs / rc "
            "| peak RSS MB bs / rc (ratio) |",
            "|---|---|---|---|---|",
        ]
        for b, r in pairs:
            lines.append(
                f"| {b.keys:,} | {_ratio(b.keys_per_s, r.keys_per_s)} "
                f"| {b.per_1000('old'):.2f} / {r.per_1000('old'):.2f} "
                f"| {b.per_1000('new'):.2f} / {r.per_1000('new'):.2f} "
                f"| {b.m.rss_mb:.0f} / {r.m.rss_mb:.0f} ({_ratio(b.m.rss_mb, r.m.rss_mb)}) |"
            )
    bs = sorted((r for r in runs if r.label.startswith("blobshift,")), key=lambda r: r.keys)
    if len(bs) >= 2:
        lo, hi = bs[0], bs[-1]
        lines += [
            "",
            f"Peak RSS of blobshift at {lo.keys:,} keys: {lo.m.rss_mb:.0f} MB, at {hi.keys:,}: "
            f"{hi.m.rss_mb:.0f} MB ({_ratio(hi.m.rss_mb, lo.m.rss_mb)}x for "
            f"{hi.keys // lo.keys}x the keys).",
        ]
    # Each N-host run against the one-host run over the same key space.
    ones = {r.keys: r for r in bs}
    multis = [m for m in bench.multis if m.keys in ones]
    if multis:
        lines += [
            "",
            "| keys | hosts | split | LIST/1,000 old (total) | vs 1 host | LIST/1,000 new (total) "
            "| vs 1 host | planner LISTs | busiest host's keys vs an even share | copies |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for n in sorted({m.keys for m in multis}):
            one = ones[n]
            lines.append(
                f"| {n:,} | 1 | - | {one.per_1000('old'):.2f} | 1.00 | {one.per_1000('new'):.2f} "
                f"| 1.00 | 0 | 1.00 | {one.counts['PUT missing']:,} |"
            )
            for m in (m for m in multis if m.keys == n):
                lines.append(
                    f"| {n:,} | {m.hosts} | {m.mode} | {m.per_1000('old'):.2f} "
                    f"| {_ratio(m.lists('old'), one.lists('old'))} | {m.per_1000('new'):.2f} "
                    f"| {_ratio(m.lists('new'), one.lists('new'))} "
                    f"| {m.planner['LIST old'] + m.planner['LIST new']} | {m.balance:.2f} "
                    f"| {m.copied():,} |"
                )
        notes = {m.planner_note for m in bench.multis if m.planner_note}
        lines += [f"\nRange plans: {n}." for n in sorted(notes)]
    for res in bench.resumes:
        lines += [
            "",
            f"Resume at {res.run.keys:,} keys: SIGTERM after {res.stopped_after:.1f}s "
            f"(half the copies done, {res.first_listed:,} keys listed); the re-run's first new "
            f"copy after {_f(res.first_copy, '.2f')}s, whole re-run {res.run.m.wall:.1f}s, "
            f"{res.redone:,} keys listed again (chunks of 1,000), no key copied twice.",
        ]
    lines += [f"\nNote: {n}" for n in bench.notes]
    return lines


def render(bench: Bench, elapsed: float, engine: str) -> str:
    facts = report.machine_facts(engine)
    facts.pop("weed", None)
    lines = [f"## {facts['date']}: scale benchmark (synthetic S3, `make bench-scale`)", ""]
    lines += [f"- {k}: {v}" for k, v in facts.items()]
    cfg = bench.cfg
    cpu = ", ".join(f"{_k(n)} keys {s:.0f}s" for n, s in sorted(bench.server_cpu.items()))
    lines += [
        f"- endpoint: blobshift.lab.synthetic_s3 in its own process (its CPU over each "
        f"server's life: {cpu}); `new` lacks 1 key in {cfg.miss_every}",
        f"- W (blobshift --num-workers, rclone --transfers/--checkers): {cfg.workers}; "
        f"rclone: copy --ignore-existing; wall time of the whole bench: {elapsed / 60:.1f} min",
        f"- command: `{' '.join(sys.argv)}`",
        "",
        *tables(bench),
        "",
        "<details><summary>every run</summary>",
        "",
        "```",
        *[r.line() for r in bench.runs],
        *[r.line() for m in bench.multis for r in m.runs],
        *[r.run.line() for r in bench.resumes],
        "```",
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


def build_config(args: argparse.Namespace) -> Config:
    if args.small:
        return Config(
            keys=(50_000,),
            shard_keys=50_000,
            range_keys=50_000,
            hosts=(2,),
            hash_hosts=(),
            ranges=4,
            sample_requests=8,
            miss_every=20,
            workers=args.workers,
            rclone_keys=(),
            results=args.results,
            timeout=args.timeout,
            small=True,
        )
    return Config(
        keys=(1_000_000, 10_000_000),
        shard_keys=1_000_000,
        # At 10M keys the planner's default budget (192 LISTs for 16 ranges) is 2% of a
        # listing; at 1M it would be 19%.
        range_keys=10_000_000,
        hosts=(2, 4),
        hash_hosts=(2, 4),
        ranges=16,
        sample_requests=None,
        miss_every=args.miss_every,
        workers=args.workers,
        rclone_keys=(1_000_000,) + ((10_000_000,) if args.rclone_10m else ()),
        results=args.results or HERE / "RESULTS.md",
        timeout=args.timeout,
        small=False,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--small", action="store_true", help="50k keys, appends nothing")
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--miss-every", type=int, default=20, help="new lacks 1 key in this many")
    p.add_argument("--rclone-10m", action="store_true", help="rclone at 10M keys too")
    p.add_argument("--results", type=Path, help="append the report here")
    p.add_argument("--json", type=Path, help="write the figures as JSON here (for tests)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per tool run")
    p.add_argument("--keep", action="store_true", help="keep the runs' files (logs, plans)")
    return p.parse_args(argv)


def figures(bench: Bench) -> dict:
    """The measured figures, for tests/test_bench_scale.py."""

    def run_doc(r: ScaleRun) -> dict:
        return {
            "label": r.label,
            "tool": r.tool,
            "keys": r.keys,
            "wall": r.m.wall,
            "merged": r.merged,
            "rss_mb": r.m.rss_mb,
            "counts": dict(r.counts),
        }

    return {
        "miss_every": bench.cfg.miss_every,
        "ranges": bench.cfg.ranges,
        "runs": [run_doc(r) for r in bench.runs],
        "resumes": [
            {
                "first_copy": r.first_copy,
                "redone": r.redone,
                "first_listed": r.first_listed,
                "run": run_doc(r.run),
            }
            for r in bench.resumes
        ],
        "multis": [
            {
                "mode": m.mode,
                "hosts": m.hosts,
                "keys": m.keys,
                "lists_old": m.lists("old"),
                "lists_new": m.lists("new"),
                "planner": dict(m.planner),
                "copied": m.copied(),
                "runs": [run_doc(r) for r in m.runs],
            }
            for m in bench.multis
        ],
        "notes": bench.notes,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = build_config(args)
    root = Path(tempfile.mkdtemp(prefix="blobshift-bench-scale-"))
    started = time.monotonic()
    engine = report.commit()
    env = snapshot_engine(root, None)
    bench = Bench(cfg, root, env)
    try:
        bench.run_all()
    finally:
        if args.json:
            args.json.write_text(json.dumps(figures(bench), indent=1))
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    text = render(bench, time.monotonic() - started, engine)
    print("\n" + text)
    if cfg.results is not None:
        report.append(cfg.results, text)
        print(f"results appended to {cfg.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
