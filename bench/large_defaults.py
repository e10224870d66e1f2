"""Large blobs as a new user first tries them: 12 x 32 MiB, 4 workers, each tool at its
defaults, in one run.

    .venv/bin/python bench/large_defaults.py
    .venv/bin/python bench/large_defaults.py --engine patched=/tmp/variant/src   # A/B

Tools: `blobshift` (the CLI's defaults: --multipart-threshold 200M, rclone's cutoff: one
streamed PUT per 32 MiB object, checked by the store against the source's MD5),
`blobshift 8M` (--multipart-threshold 8M, what the playbook passes when the new store is
behind the proxy's 9M body limit: 8 MiB parts, each hashed here) and `rclone` (its
defaults: --s3-upload-cutoff 200M, --transfers 4). Each `--engine LABEL=DIR` adds the
blobshift package under DIR at the CLI defaults. Tools alternate (the order rotates every
repetition), each into a fresh bucket; medians.
The servers take other ports than `make bench` (see --ports). Each run also counts the
CPU time both SeaweedFS servers spent on it: on two shared cores that is most of the work.
`--warm` writes and deletes one object in each fresh destination bucket first: SeaweedFS
spends ~0.2 s on a bucket's first write, which a migration's new bucket (written to by the
app since phase 1) has long paid.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import datasets  # noqa: E402
from backfill_vs_rclone import snapshot_engine  # noqa: E402
from datasets import MIB  # noqa: E402
from lab import (  # noqa: E402
    BIN,
    Lab,
    check_destination,
    check_exit,
    loadavg,
    measure,
    write_localsettings,
    write_rclone_config,
)
from report import Run  # noqa: E402

RCLONE = "rclone"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def servers_cpu(lab: Lab) -> float:
    return sum(process_cpu(s.process.pid) for s in (lab.old, lab.new) if s.process)


@dataclass(frozen=True)
class Tool:
    label: str
    engine: Path | None  # blobshift package root (None: rclone)
    extra: tuple[str, ...] = ()


def argv_for(tool: Tool, where: Path, lab: Lab, bucket: str, dest: str, workers: int):
    old, new = lab.old_store(bucket, "v4"), lab.new_store(dest)
    if tool.engine is None:
        config = write_rclone_config(where / "rclone.conf", old, new)
        cmd = [str(BIN / "rclone"), "--config", str(config), "copy", f"old:{bucket}"]
        return [*cmd, f"new:{dest}", "--transfers", str(workers), "-q", *tool.extra]
    settings = write_localsettings(where / "localsettings.py", old, new)
    cmd = [str(BIN / "blobshift"), "migrate-backend", "--settings", str(settings)]
    cmd += ["--log-dir", str(where / "logs"), "--num-workers", str(workers)]
    # Not a speed setting: SeaweedFS fails the key probe for "a//b" and "x/".
    return [*cmd, "--log-unfaithful-keys", *tool.extra]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", type=int, default=12)
    p.add_argument("--size-mib", type=int, default=32)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--engine", action="append", default=[], metavar="LABEL=DIR")
    p.add_argument("--no-8m", action="store_true", help="skip `blobshift 8M`")
    p.add_argument(
        "--rclone-parts",
        action="store_true",
        help="also `rclone 8M parts` (--s3-upload-cutoff 8M --s3-chunk-size 8M): rclone as "
        "behind the proxy, where it too must upload in parts and hash each one",
    )
    p.add_argument(
        "--warm", action="store_true", help="write to each destination bucket once first"
    )
    p.add_argument("--ports", default="19940,19960", help="base ports of old and new server")
    p.add_argument("--timeout", type=float, default=900.0)
    args = p.parse_args()

    src = HERE.parent / "src"
    tools = [Tool("blobshift", src)]
    if not args.no_8m:
        tools.append(Tool("blobshift 8M", src, ("--multipart-threshold", "8M")))
    for spec in args.engine:
        label, _, where = spec.partition("=")
        tools.append(Tool(label, Path(where)))
    tools.append(Tool(RCLONE, None))
    if args.rclone_parts:
        tools.append(
            Tool(f"{RCLONE} 8M parts", None, ("--s3-upload-cutoff", "8M", "--s3-chunk-size", "8M"))
        )

    old_port, new_port = (int(x) for x in args.ports.split(","))
    root = Path(tempfile.mkdtemp(prefix="blobshift-large-"))
    lab = Lab(root, old_port, new_port)
    if busy := lab.ports_in_use():
        print(f"ports in use: {busy}: pick others with --ports", file=sys.stderr)
        return 2
    envs = {}
    for t in tools:
        if t.engine is not None:  # each engine from its own snapshot (see snapshot_engine)
            envs[t.label] = snapshot_engine(root / t.label.replace(" ", "_"), t.engine)
    data = datasets.uniform(f"large{args.objects}", args.objects, args.size_mib * MIB, seed=2)
    runs: list[Run] = []
    server_s: dict[str, list[float]] = {t.label: [] for t in tools}
    started = time.monotonic()
    print(f"load at the start: {loadavg()}", flush=True)
    try:
        lab.start()
        lab.old.create_bucket(data.bucket)
        datasets.seed(lab.old_store(data.bucket, "v4"), data)
        for rep in range(args.reps):
            k = rep % len(tools)
            for tool in tools[k:] + tools[:k]:
                dest = lab.fresh_bucket(f"dst-large-{len(runs)}")
                if args.warm:
                    client = lab.new.client()
                    client.put_object(Bucket=dest, Key="warm", Body=b"warm")
                    client.delete_object(Bucket=dest, Key="warm")
                where = root / "runs" / f"{len(runs)}"
                where.mkdir(parents=True)
                argv = argv_for(tool, where, lab, data.bucket, dest, args.workers)
                env = envs.get(tool.label, envs.get("blobshift", dict(os.environ)))
                load = os.getloadavg()[0]
                before = servers_cpu(lab)
                m = measure(argv, where / "output.txt", env, args.timeout)
                server_s[tool.label].append(servers_cpu(lab) - before)
                run = Run("large", "v4", tool.label, rep, data.count, data.total_bytes, m, load)
                print(f"  {run.line()} servers {server_s[tool.label][-1]:.2f}s", flush=True)
                check_exit(m, where)
                check_destination(tool.label, lab.new_store(dest), data.count, data.total_bytes)
                runs.append(run)
                lab.drop_bucket(dest)
    finally:
        lab.stop()
        shutil.rmtree(root, ignore_errors=True)
    print(f"load at the end: {loadavg()}; {time.monotonic() - started:.0f} s in all\n")

    def med(label: str, what: str) -> float:
        return statistics.median(getattr(r, what) for r in runs if r.tool == label)

    rc = med(RCLONE, "ops")
    print(
        f"{data.count} x {args.size_mib} MiB, {args.workers} workers, each tool at its "
        f"defaults{', warm buckets' if args.warm else ''}; medians of {args.reps} runs\n"
    )
    print(
        "| tool | MB/s | x rclone | client CPU ms/obj (sys) | servers' CPU s | peak RSS MB | runs |"
    )
    print("|---|---|---|---|---|---|---|")
    for t in tools:
        mine = [r for r in runs if r.tool == t.label]
        mbps = data.total_bytes / 1e6 / statistics.median(r.m.wall for r in mine)
        print(
            f"| {t.label} | {mbps:.1f} | {med(t.label, 'ops') / rc:.2f} | "
            f"{med(t.label, 'cpu_ms'):.1f} ({med(t.label, 'sys_ms'):.1f}) | "
            f"{statistics.median(server_s[t.label]):.2f} | "
            f"{max(r.m.rss_mb for r in mine):.0f} | {len(mine)} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
