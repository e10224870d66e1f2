"""The engine's backfill on three HTTP layers (its own Pool, aiohttp, httpcore/h11) and
rclone, on the bench's small-blob set, in one run.

    .venv/bin/python bench/wire_layers.py                 # 20,000 x 4 KiB, 3 reps, W=16
    .venv/bin/python bench/wire_layers.py --objects 2000 --reps 1   # a quick look

Each layer runs `blobshift migrate-backend` in a child process whose
`blobshift.s3.client.Pool` is swapped for the adapter (bench/wire_adapters.py) before the
CLI starts; nothing in the engine knows. The child's own rusage (spawn.py, wait4) gives
the client CPU: user+sys / objects. Tools alternate (the order rotates every repetition),
each into a fresh bucket; the figures are medians. The servers take other ports than
`make bench` (see --ports), so the two can run at once (the figures would then suffer).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

LAYERS = ("current", "aiohttp", "httpcore")
RCLONE = "rclone"


def child(layer: str, argv: list[str]) -> int:
    """In the measured process: swap the engine's Pool, then run the CLI."""
    import blobshift.s3.client
    from blobshift.cli import main

    if layer != "current":
        import wire_adapters

        blobshift.s3.client.Pool = wire_adapters.LAYERS[layer]  # type: ignore[misc]
    return main(argv)


def bench(args: argparse.Namespace) -> int:
    import datasets
    from backfill_vs_rclone import snapshot_engine
    from datasets import KIB
    from lab import (
        Lab,
        blobshift_argv,
        check_destination,
        check_exit,
        loadavg,
        measure,
        rclone_argv,
        write_localsettings,
        write_rclone_config,
    )
    from report import Run

    old_port, new_port = (int(p) for p in args.ports.split(","))
    root = Path(tempfile.mkdtemp(prefix="blobshift-wire-"))
    lab = Lab(root, old_port, new_port)
    busy = lab.ports_in_use()
    if busy:
        print(f"ports in use: {busy}: pick others with --ports", file=sys.stderr)
        return 2
    data = datasets.uniform("small", args.objects, 4 * KIB, seed=1)
    env = snapshot_engine(root, None)
    runs: list[Run] = []
    started = time.monotonic()
    print(f"load at the start: {loadavg()}", flush=True)
    try:
        lab.start()
        lab.old.create_bucket(data.bucket)
        datasets.seed(lab.old_store(data.bucket, args.sig), data)
        tools = (*args.layers, RCLONE)
        for rep in range(args.reps):
            order = tools[rep % len(tools) :] + tools[: rep % len(tools)]
            for tool in order:
                dest = lab.fresh_bucket(f"dst-wire-{tool}-{rep}")
                where = root / "runs" / f"{tool}-{rep}"
                where.mkdir(parents=True)
                old, new = lab.old_store(data.bucket, args.sig), lab.new_store(dest)
                if tool == RCLONE:
                    config = write_rclone_config(where / "rclone.conf", old, new)
                    argv = rclone_argv("copy", config, data.bucket, dest, args.workers)
                    argv += ["--s3-upload-cutoff", "200M", "--s3-chunk-size", "8M"]
                else:
                    settings = write_localsettings(where / "localsettings.py", old, new)
                    extra = ("--log-dir", str(where / "logs"), "--progress-interval", "3600")
                    extra += ("--multipart-threshold", "200M", "--part-size", "8M")
                    extra += ("--log-unfaithful-keys",)  # as the main bench (SeaweedFS)
                    cli = blobshift_argv("migrate-backend", settings, args.workers, *extra)
                    argv = [sys.executable, str(Path(__file__).resolve()), "--child", tool]
                    argv += ["--", *cli[1:]]
                load = os.getloadavg()[0]
                m = measure(argv, where / "output.txt", env, args.timeout)
                run = Run("small", args.sig, tool, rep, data.count, data.total_bytes, m, load)
                print(f"  {run.line()}", flush=True)
                check_exit(m, where)
                check_destination(tool, new, data.count, data.total_bytes)
                runs.append(run)
                lab.drop_bucket(dest)
    finally:
        lab.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"load at the end: {loadavg()}; {time.monotonic() - started:.0f} s in all\n")
    for line in summary(runs, args):
        print(line)
    return 0


def summary(runs: list, args: argparse.Namespace) -> list[str]:
    """A markdown table of medians, as written into bench/RESULTS.md."""

    def med(tool: str, what: str) -> float:
        return statistics.median(getattr(r, what) for r in runs if r.tool == tool)

    rc_ops = med(RCLONE, "ops")
    out = [
        f"{args.objects:,} objects x 4 KiB, W={args.workers}, old side {args.sig}, "
        f"medians of {args.reps} runs per tool",
        "",
        "| HTTP layer | objects/s | x rclone | client CPU ms/obj (sys) | peak RSS MB | runs |",
        "|---|---|---|---|---|---|",
    ]
    for tool in (*args.layers, RCLONE):
        mine = [r for r in runs if r.tool == tool]
        ops = med(tool, "ops")
        rss = max(r.m.rss_mb for r in mine)
        out.append(
            f"| {tool} | {ops:,.0f} | {ops / rc_ops:.2f} | {med(tool, 'cpu_ms'):.3f} "
            f"({med(tool, 'sys_ms'):.3f}) | {rss:.0f} | {len(mine)} |"
        )
    return out


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        layer, rest = sys.argv[2], sys.argv[3:]
        return child(layer, rest[1:] if rest[:1] == ["--"] else rest)
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", type=int, default=20_000)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--workers", type=int, default=16, help="as the main bench's W")
    p.add_argument("--sig", choices=("v4", "v2"), default="v4", help="old-side signing")
    p.add_argument(
        "--ports", default="19940,19960", help="base ports of the old and new server (10 each)"
    )
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per tool run")
    p.add_argument("--layers", default=",".join(LAYERS), help=f"a subset of {','.join(LAYERS)}")
    args = p.parse_args()
    args.layers = tuple(args.layers.split(","))
    if set(args.layers) - set(LAYERS):
        p.error(f"--layers: one of {LAYERS}")
    return bench(args)


if __name__ == "__main__":
    sys.exit(main())
