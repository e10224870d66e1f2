"""blobshift `migrate-backend` against `rclone copy`, side by side on two local SeaweedFS.

Run with `make bench` (full, ~30-40 min) or `make bench-smoke` (a few hundred blobs, one
repetition, checks the harness only). Each case runs both tools in alternation, each
into a fresh destination bucket, same data, same concurrency W, same servers. Results
are appended to bench/RESULTS.md; the ratios are printed last.

Both tools get the same upload settings, explicitly: objects up to the cutoff (200 MiB,
rclone's default `--s3-upload-cutoff`) go in one PUT, larger ones in 8 MiB parts. The
`large-parts` case runs the large set again with a cutoff of 8 MiB, so that both tools
upload in parts (what a proxy with a 9M body limit in front of the new store requires).
"""

from __future__ import annotations

import argparse
import compileall
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datasets
import report
from datasets import KIB, MIB, Dataset
from lab import (
    SIGS,
    Lab,
    blobshift_argv,
    check_destination,
    check_exit,
    child_env,
    measure,
    rclone_argv,
    write_localsettings,
    write_rclone_config,
)
from report import Run

HERE = Path(__file__).resolve().parent
BLOBSHIFT, RCLONE, RCLONE_SUM = "blobshift", "rclone", "rclone --checksum"
CASES = ("small", "large", "large-parts", "mixed", "rerun", "verify", "memory")
UPLOAD_CUTOFF, PART_SIZE = "200M", "8M"
CUTOFFS = {"large-parts": "8M"}


@dataclass(frozen=True)
class Config:
    workers: int
    reps: int
    sigs: tuple[str, ...]
    cases: tuple[str, ...]
    small: Dataset
    large: Dataset
    mixed: Dataset
    big: Dataset | None
    results: Path
    smoke: bool
    timeout: float


@dataclass
class Bench:
    cfg: Config
    lab: Lab
    work: Path
    runs: list[Run] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=child_env)

    # -- one measured run -------------------------------------------------------------

    def _dir(self, name: str) -> Path:
        path = self.work / "runs" / name
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True)
        return path

    def _files(self, name: str, data: Dataset, sig: str, dest: str) -> tuple[Path, Path, Path]:
        where = self._dir(name)
        old, new = self.lab.old_store(data.bucket, sig), self.lab.new_store(dest)
        settings = write_localsettings(where / "localsettings.py", old, new)
        config = write_rclone_config(where / "rclone.conf", old, new)
        return where, settings, config

    def _argv(
        self, tool: str, command: str, case: str, name: str, data: Dataset, sig: str, dest: str
    ):
        where, settings, config = self._files(name, data, sig, dest)
        w = self.cfg.workers
        cutoff = CUTOFFS.get(case, UPLOAD_CUTOFF)
        if tool == BLOBSHIFT and command == "copy":
            extra = ("--log-dir", str(where / "logs"), "--progress-interval", "3600")
            extra += ("--multipart-threshold", cutoff, "--part-size", PART_SIZE)
            # SeaweedFS fails the key probe for "a//b" and "x/" (the data set has none).
            extra += ("--log-unfaithful-keys",)
            return where, blobshift_argv("migrate-backend", settings, w, *extra)
        if tool == BLOBSHIFT:
            return where, blobshift_argv("verify", settings, w)
        argv = rclone_argv(command, config, data.bucket, dest, w)
        if command == "copy":
            argv += ["--s3-upload-cutoff", cutoff, "--s3-chunk-size", PART_SIZE]
        return where, argv + (["--checksum"] if tool == RCLONE_SUM else [])

    def run(self, tool: str, command: str, case: str, data: Dataset, sig: str, dest: str) -> Run:
        rep = sum(1 for r in self.runs if (r.case, r.sig, r.tool) == (case, sig, tool))
        name = f"{case}-{sig}-{tool.replace(' ', '')}-{rep}"
        where, argv = self._argv(tool, command, case, name, data, sig, dest)
        load = os.getloadavg()[0]
        m = measure(argv, where / "output.txt", self.env, self.cfg.timeout)
        nbytes = (
            data.total_bytes if case in ("small", "large", "large-parts", "mixed", "memory") else 0
        )
        result = Run(case, sig, tool, rep, data.count, nbytes, m, load)
        self.runs.append(result)
        print(f"    {result.line()}", flush=True)
        check_exit(m, where)
        return result

    def copy(self, tool: str, case: str, data: Dataset, sig: str, dest: str) -> Run:
        self.lab.fresh_bucket(dest)
        result = self.run(tool, "copy", case, data, sig, dest)
        check_destination(f"{tool} {case}", self.lab.new_store(dest), data.count, data.total_bytes)
        return result

    # -- cases --------------------------------------------------------------------------

    def copy_case(self, case: str, data: Dataset, sig: str) -> dict[str, str]:
        """Alternate the tools; keep each tool's last destination (for re-run and verify)."""
        kept: dict[str, str] = {}
        for rep in range(self.cfg.reps):
            for tool in _order(rep):
                dest = f"dst-{case}-{sig}-{'bs' if tool == BLOBSHIFT else 'rc'}-{rep}"
                self.copy(tool, case, data, sig, dest)
                if tool in kept:
                    self.lab.drop_bucket(kept[tool])
                kept[tool] = dest
        return kept

    def rerun_case(self, data: Dataset, sig: str, kept: dict[str, str]) -> None:
        """Each tool over the complete destination it wrote itself."""
        for rep in range(self.cfg.reps):
            for tool in (*_order(rep), RCLONE_SUM):
                dest = kept[BLOBSHIFT if tool == BLOBSHIFT else RCLONE]
                self.run(tool, "copy", "rerun", data, sig, dest)

    def verify_case(self, data: Dataset, sig: str, dest: str) -> None:
        """Both tools check the same copied set (blobshift's destination)."""
        for rep in range(self.cfg.reps):
            for tool in _order(rep):
                self.run(tool, "check", "verify", data, sig, dest)

    def memory_case(self, sig: str) -> None:
        big = self.cfg.big
        if big is None:
            return
        dest = f"dst-memory-{sig}"
        self.copy(BLOBSHIFT, "memory", big, sig, dest)
        self.lab.drop_bucket(dest)

    def one_sig(self, sig: str) -> None:
        cases = self.cfg.cases
        print(f"== {SIGS[sig]} on the old side", flush=True)
        kept: dict[str, str] = {}
        sets = (("small", self.cfg.small), ("large", self.cfg.large))
        for case, data in (*sets, ("large-parts", self.cfg.large)):
            if case in cases or (case == "small" and {"rerun", "verify"} & set(cases)):
                print(f"  {case}: {data.count:,} objects, {data.total_bytes / 1e6:,.0f} MB")
                dests = self.copy_case(case, data, sig)
                if case == "small":
                    kept = dests
                else:
                    self._drop(dests)
        if "mixed" in cases:
            m = self.cfg.mixed
            print(f"  mixed: {m.count:,} objects, {m.total_bytes / 1e6:,.0f} MB")
            self._drop(self.copy_case("mixed", self.cfg.mixed, sig))
        if "rerun" in cases:
            print("  rerun over a complete destination")
            self.rerun_case(self.cfg.small, sig, kept)
        if "verify" in cases:
            print("  verify / rclone check --one-way")
            self.verify_case(self.cfg.small, sig, kept[BLOBSHIFT])
        self._drop(kept)
        if "memory" in cases and self.cfg.big is not None:
            print(f"  memory: blobshift on {self.cfg.big.count:,} objects")
            self.memory_case(sig)

    def _drop(self, dests: dict[str, str]) -> None:
        for dest in dests.values():
            self.lab.drop_bucket(dest)


def _order(rep: int) -> tuple[str, str]:
    """Alternate who goes first, so neither tool always meets a warmer server."""
    return (BLOBSHIFT, RCLONE) if rep % 2 == 0 else (RCLONE, BLOBSHIFT)


def build_config(args: argparse.Namespace) -> Config:
    if args.smoke:
        small = datasets.uniform("small-smoke", 300, 4 * KIB, seed=1)
        large = datasets.uniform("large-smoke", 2, 10 * MIB, seed=2)
        mixed = datasets.mixed("mixed-smoke", 120, seed=3, max_size=3 * MIB)
        big = None
    else:
        small = datasets.uniform("small", 20_000, 4 * KIB, seed=1)
        large = datasets.uniform("large", 48, 32 * MIB, seed=2)
        mixed = datasets.mixed("mixed", 2_000, seed=3)
        big = None if args.skip_memory else datasets.uniform("big", 200_000, 4 * KIB, seed=4)
    default_results = HERE / "RESULTS.md" if not args.smoke else None
    return Config(
        workers=args.workers,
        reps=1 if args.smoke else args.reps,
        sigs=tuple(args.sigs.split(",")),
        cases=tuple(args.cases.split(",")),
        small=small,
        large=large,
        mixed=mixed,
        big=big,
        results=args.results
        or default_results
        or Path(tempfile.gettempdir()) / "blobshift-bench-smoke.md",
        smoke=args.smoke,
        timeout=args.timeout,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition")
    p.add_argument("--workers", type=int, default=16, help="W: concurrency of both tools")
    p.add_argument("--reps", type=int, default=3, help="repetitions per tool and case")
    p.add_argument("--sigs", default="v4,v2", help="old-side signing: v4, v2 or both")
    p.add_argument("--cases", default=",".join(CASES), help=f"subset of {','.join(CASES)}")
    p.add_argument("--skip-memory", action="store_true", help="no 200,000-object run")
    p.add_argument("--results", type=Path, help="results file (default bench/RESULTS.md)")
    p.add_argument("--keep", action="store_true", help="keep the servers' data dir")
    p.add_argument("--engine", type=Path, help="measure the blobshift package under DIR")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per tool run")
    args = p.parse_args(argv)
    bad = set(args.sigs.split(",")) - set(SIGS) or set(args.cases.split(",")) - set(CASES)
    if bad:
        p.error(f"unknown --sigs/--cases value(s): {sorted(bad)}")
    return args


def seed_all(cfg: Config, lab: Lab) -> None:
    print("seeding the old server (not measured)", flush=True)
    needs = {
        "small": {"small", "rerun", "verify", "memory"},
        "large": {"large", "large-parts"},
        "mixed": {"mixed"},
        "big": {"memory"},
    }
    sets = {"small": cfg.small, "large": cfg.large, "mixed": cfg.mixed, "big": cfg.big}
    wanted = [d for name, d in sets.items() if d is not None and needs[name] & set(cfg.cases)]
    for data in wanted:
        lab.old.create_bucket(data.bucket)
        datasets.seed(lab.old_store(data.bucket, "v4"), data)


def snapshot_engine(root: Path, source: Path | None) -> dict[str, str]:
    """Copy src/ (or `--engine DIR`, for A/B experiments) aside and run every blobshift
    child from the copy: engine edits made in the work tree while the bench runs cannot
    mix versions into one result. The copy is byte-compiled, as pip does when it installs
    the wheel: the children never write bytecode (child_env), and compiling the engine's
    modules at every start would cost each blobshift run ~40 ms no user pays."""
    engine = (source or HERE.parent / "src") / "blobshift"
    shutil.copytree(engine, root / "engine" / "blobshift")
    if not compileall.compile_dir(root / "engine", quiet=1):
        raise SystemExit(f"cannot byte-compile the engine's copy in {root / 'engine'}")
    env = child_env()
    env["PYTHONPATH"] = str(root / "engine")
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = build_config(args)
    root = Path(tempfile.mkdtemp(prefix="blobshift-bench-"))
    lab = Lab(root)
    started = time.monotonic()
    engine = report.commit() if args.engine is None else f"experimental tree {args.engine}"
    env = snapshot_engine(root, args.engine)
    try:
        lab.start()
        seed_all(cfg, lab)
        bench = Bench(cfg, lab, root, env=env)
        for sig in cfg.sigs:
            bench.one_sig(sig)
    finally:
        lab.stop()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    text = report.render(bench.runs, cfg, time.monotonic() - started, engine)
    report.append(cfg.results, text)
    print(f"\nresults appended to {cfg.results}\n")
    if cfg.smoke:
        print("smoke run: too small for the targets (startup dominates); it checks the harness")
    for line in report.ratio_lines(bench.runs, cfg):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
