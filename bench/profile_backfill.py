"""Profile one blobshift run on the bench's lab with py-spy; print where the CPU goes.

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile_backfill.py --sig v2 --command migrate-backend
    .venv/bin/python bench/profile_backfill.py --sig v4 --command verify

Uses the same servers, ports and small data set as backfill_vs_rclone.py (do not run
both at once). Prints the top functions by own (self) time and by inclusive time, from
py-spy's collapsed stacks (idle time in the event loop's select is excluded by py-spy).
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datasets
from datasets import KIB
from lab import BIN, Lab, blobshift_argv, child_env, write_localsettings


def summarize(collapsed: Path, top: int) -> list[str]:
    """Self and inclusive sample shares per function from py-spy's raw (collapsed) output."""
    own: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        own[frames[-1]] += n
        for frame in set(frames):
            incl[frame] += n
    out = [f"{total} samples", "", "self time:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    out += ["", "inclusive time:"]
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in incl.most_common(top)]
    return out


def run(args: argparse.Namespace) -> list[str]:
    root = Path(tempfile.mkdtemp(prefix="blobshift-profile-"))
    lab = Lab(root)
    name = "small" if args.size_kib == 4 else f"profile-{args.size_kib}k"
    data = datasets.uniform(name, args.objects, args.size_kib * KIB, seed=1)
    try:
        lab.start()
        lab.old.create_bucket(data.bucket)
        datasets.seed(lab.old_store(data.bucket, "v4"), data)
        lab.fresh_bucket("dst-profile")
        settings = write_localsettings(
            root / "localsettings.py",
            lab.old_store(data.bucket, args.sig),
            lab.new_store("dst-profile"),
        )
        migrate = blobshift_argv(
            "migrate-backend",
            settings,
            args.workers,
            "--log-dir",
            str(root / "logs"),
            "--log-unfaithful-keys",  # SeaweedFS fails the key probe for "a//b" and "x/"
            *args.extra,
        )
        if args.command == "verify":
            subprocess.run(migrate, check=True, capture_output=True, env=child_env())
            target = blobshift_argv("verify", settings, args.workers)
        else:
            target = migrate
        out = root / "profile.txt"
        spy = [str(BIN / "py-spy"), "record", "-r", str(args.rate), "-f", "raw", "--nolineno"]
        spy += ["--gil"] if args.gil else []
        spy += ["-o", str(out), "--", *target]
        subprocess.run(spy, check=True, env=child_env(), capture_output=True)
        if args.save:
            shutil.copy(out, args.save)
        return summarize(out, args.top)
    finally:
        lab.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sig", choices=("v4", "v2"), default="v4")
    p.add_argument("--command", choices=("migrate-backend", "verify"), default="migrate-backend")
    p.add_argument("--objects", type=int, default=20_000)
    p.add_argument("--size-kib", type=int, default=4, help="object size (KiB)")
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    p.add_argument("--top", type=int, default=30)
    p.add_argument(
        "--gil",
        action="store_true",
        help="only samples holding the GIL: Python CPU, not time in syscalls or runnable "
        "but descheduled (the servers share the cores)",
    )
    p.add_argument("--save", type=Path, help="keep the collapsed stacks here")
    p.add_argument("extra", nargs="*", help="more migrate-backend flags (after --)")
    args = p.parse_args()
    for line in run(args):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
