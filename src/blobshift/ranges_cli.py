"""`blobshift plan-ranges`: split the old store's listing into ranges for range shards
(the sampling is blobshift.ranges)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from blobshift.exitcodes import EXIT_IO, EXIT_OK, EXIT_STOPPED, EXIT_STORE, EXIT_USAGE
from blobshift.jsonout import emit
from blobshift.ranges import PARALLEL_PROBES, RangePlan, RangePlanError, default_budget, plan_ranges
from blobshift.s3.client import S3Error
from blobshift.s3.http import HTTPError
from blobshift.settings import SettingsError, load_settings
from blobshift.stores import StoreError, open_stores, preflight

EPILOG = f"""examples:
  blobshift plan-ranges --settings /etc/app/localsettings.py --ranges 64 \\
      --out /opt/data/blob-migration-logs/range-plan.json
  blobshift plan-ranges --settings localsettings.py --ranges 16 --prefix blobs/ \\
      --sample-requests 500 --out plan.json --json | jq .bounds
  # then, on host I of N (each lists only the ranges r with r % N == I):
  blobshift migrate-backend --settings localsettings.py --log-dir logs \\
      --range-plan plan.json --shard 0/4

Samples the listing of the OLD store (OLD_S3_BLOB_DB_SETTINGS) with at most
--sample-requests LIST requests (default 64 + 8 per range, at least 192; a full listing of 100M keys
takes 100,000) and writes the split points of ranges of about equal key counts. Reads no
object, writes nothing to any store. Make the plan once, before the pass starts: a
backfill refuses a plan that changed under it, so an existing plan is kept unless --force.
More ranges than hosts (e.g. 4-16 per host) even out ranges that came out uneven.

exit codes:
  {EXIT_OK}    plan written
  {EXIT_USAGE}    bad input: settings file, flags, --out (missing directory, or a plan there
       already without --force); nothing was written
  {EXIT_STORE}    the old store failed its preflight or a listing request failed for good;
       nothing was written
  {EXIT_IO}    the plan cannot be written (disk full, permissions)
  {EXIT_STOPPED}  stopped by operator; nothing was written
"""


def add_parser(sub: Any, positive_int: Callable[[str], int]) -> None:
    """The subcommand, on the `blobshift` parser's subparsers (`positive_int`: the CLI's
    whole-number check, for the same messages as the other commands)."""
    help_text = "split the old store's listing into ranges of about equal key counts"
    p = sub.add_parser(
        "plan-ranges",
        help=help_text,
        description=help_text + ", for migrate-backend --range-plan",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--settings",
        type=Path,
        required=True,
        help="the app's localsettings.py (the old store and its credentials)",
    )
    p.add_argument(
        "--ranges",
        type=positive_int,
        required=True,
        metavar="R",
        help="how many ranges (fewer when the listing holds fewer distinct keys)",
    )
    p.add_argument("--prefix", default="", help="only keys starting with this prefix")
    p.add_argument(
        "--sample-requests",
        type=positive_int,
        metavar="N",
        help="at most N LIST requests of 1000 keys (default 64 + 8 x R, at least 192)",
    )
    p.add_argument(
        "--out", type=Path, required=True, metavar="PLAN.json", help="where to write the plan"
    )
    p.add_argument(
        "--force", action="store_true", help="replace an existing plan (never under a running pass)"
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="print the plan as one JSON document on stdout; messages go to stderr",
    )


def _check_out(out: Path, force: bool) -> None:
    if out.is_dir():
        raise SettingsError(f"--out {out} is a directory: name the plan file, e.g. {out}/plan.json")
    if not out.parent.is_dir():
        raise SettingsError(f"--out {out}: directory {out.parent} does not exist: create it first")
    if out.exists() and not force:
        raise SettingsError(
            f"--out {out} holds a plan already: a plan must not change under a running pass; "
            "pass --force to replace it (only when no backfill uses it)"
        )


async def _plan(args: argparse.Namespace) -> RangePlan:
    settings = load_settings(args.settings, require_old=True)
    assert settings.old is not None
    budget = args.sample_requests or default_budget(args.ranges)
    async with open_stores(settings, PARALLEL_PROBES, "plan-ranges") as (old, _new):
        await preflight(old, settings_path=settings.path)
        return await plan_ranges(old, args.prefix, args.ranges, budget)


def run(args: argparse.Namespace) -> int:
    err = sys.stderr
    try:
        _check_out(args.out, args.force)
        plan = asyncio.run(_plan(args))
        _check_out(args.out, args.force)  # again: the sample took a while
        plan.save(args.out)
    except (SettingsError, RangePlanError) as exc:
        print(f"blobshift: error: {exc}", file=err)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"blobshift: error: {exc}; no plan was written", file=err)
        return EXIT_STORE
    except (S3Error, HTTPError) as exc:
        print(
            f"blobshift: error: {exc}; no plan was written: re-run when the store is back", file=err
        )
        return EXIT_STORE
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(f"blobshift: error: cannot write{where}: {exc.strerror}", file=err)
        return EXIT_IO
    except KeyboardInterrupt:
        print("stopped by operator; no plan was written", file=err)
        return EXIT_STOPPED
    out = err if args.json else sys.stdout
    print(f"plan: {args.out}: {plan.summary()}", file=out, flush=True)
    if plan.count < args.ranges:
        why = (
            f"the listing holds only {plan.sampled_keys} keys"
            if plan.sampled_keys >= plan.estimated_keys
            else "the sample kept too few keys: raise --sample-requests"
        )
        print(f"note: {plan.count} ranges, not {args.ranges}: {why}", file=out, flush=True)
    if args.json:
        doc = {
            "command": "plan-ranges",
            "exit_code": EXIT_OK,
            "out": str(args.out),
            "ranges": plan.count,
            "digest": plan.digest,
            **plan.body(),
        }
        emit(doc, stdout=True, path=None)
    return EXIT_OK
