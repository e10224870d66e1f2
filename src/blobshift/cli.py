"""The `blobshift` command line."""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from blobshift import __version__
from blobshift.backfill import Backfill, BackfillOptions
from blobshift.checklogs import LogFormatError, check_blob_logs, validate_log
from blobshift.copy import CopyOptions
from blobshift.exitcodes import (
    EXIT_INCOMPLETE,
    EXIT_IO,
    EXIT_LOCKED,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_STORE,
    EXIT_USAGE,
)
from blobshift.jsonout import backfill_document, emit
from blobshift.metrics import WRITE_INTERVAL, check_metrics_path
from blobshift.progress import Output
from blobshift.ranges import RangePlanError
from blobshift.ranges_cli import add_parser as add_plan_ranges_parser
from blobshift.ranges_cli import run as run_plan_ranges
from blobshift.ratelimit import parse_size
from blobshift.readiness_cli import add_parser as add_readiness_parser
from blobshift.readiness_cli import run as run_readiness
from blobshift.runfiles import LockedError, LogDirError, RunFileError
from blobshift.s3.client import S3Error
from blobshift.s3.http import HTTPError
from blobshift.settings import SettingsError, load_settings
from blobshift.sources import ManifestError, Shard
from blobshift.status import STALE_AFTER, StatusInputError, collect, render
from blobshift.stores import StoreError
from blobshift.verify import load_accept_list, report_document, summarize, verify

EXIT_CODES = """exit codes:
  0    done, nothing left behind
  1    done, but blobs were logged (migrate-backend), remain (check-blob-logs) or
       differ (verify)
  2    bad input: settings file, flags, manifest or checkpoint; nothing was changed
  3    a store failed its preflight (unreachable, credentials, bucket); nothing copied
  4    another backfill holds this shard's lock
  5    the log dir cannot be written (disk full, permissions): the run stops with a
       valid checkpoint; free space (or fix the mount) and re-run to resume
  130  stopped by operator (Ctrl-C / SIGTERM); progress is saved, re-run to resume
"""

MIGRATE_EXAMPLES = """examples:
  blobshift migrate-backend --settings /etc/app/localsettings.py \\
      --log-dir /opt/data/blob-migration-logs
  blobshift migrate-backend --settings localsettings.py --log-dir logs --shard 0/2
  blobshift migrate-backend --settings localsettings.py --log-dir logs --dry-run
  blobshift migrate-backend --settings localsettings.py --log-dir logs \\
      --keys-from manifest.jsonl --max-rps 200 --bwlimit 20M
  blobshift migrate-backend --settings localsettings.py --log-dir logs --json | jq .counts
"""

# --json on migrate-backend, check-blob-logs and verify (as kubectl -o json, restic --json).
JSON_HELP = (
    "print the summary as one JSON document on stdout; progress and messages go to stderr "
    "(nothing on stdout when the command fails before its summary)"
)

STATUS_EXAMPLES = """examples:
  blobshift status --log-dir /opt/data/blob-migration-logs
  blobshift status --log-dir logs --shard 1/2 --json | jq '.shards[0].state'
  # wait for the backfill, then act on how it ended:
  while blobshift status --log-dir logs >/dev/null; [ $? -eq 3 ]; do sleep 60; done

Per shard: state (running, finished, stopped, failed, not started, or dead: the status
file says running but no process holds the shard's lock), counts, rate over the run, ETA
(a --keys-from manifest run knows its total; a listing run does not: "unknown"),
checkpoint position and age, missing-blob logs with their line counts, pid, last update.
Read-only: it never locks a running backfill for more than an instant, never signals it.

exit codes:
  0    every shard finished, nothing logged
  1    attention: blobs logged, a shard failed or is dead, a running shard's status file
       is stale (--stale-after), or a run file is unreadable
  2    bad input: no such log dir, or no run files in it (nothing was read)
  3    not done, nothing wrong yet: a shard is running, stopped or not started
"""


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line (with where to look), not the whole usage block."""

    def __init__(self, *args: typing.Any, **kwargs: typing.Any) -> None:
        super().__init__(*args, **kwargs)
        # So `--bwlimit -5M` reaches the size check ("must be positive") instead of
        # being taken for an option ("expected one argument").
        self._negative_number_matcher = re.compile(r"^-\.?\d\S*$")

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be at least 1")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _size(text: str) -> int:
    if text.strip().startswith("-"):
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    try:
        value = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _shard(text: str) -> Shard:
    try:
        return Shard.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="blobshift",
        description="Move a blob store between S3 backends while the app keeps serving.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"blobshift {__version__}")
    sub = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )

    def add(name: str, help_text: str, epilog: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=epilog + "\n" + EXIT_CODES,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument(
            "--settings",
            type=Path,
            required=True,
            help="the app's localsettings.py (both stores and their credentials)",
        )
        p.add_argument(
            "--metrics-file",
            type=Path,
            metavar="FILE.prom",
            help="keep the run's metrics in this file, in Prometheus' text format, for "
            "node_exporter's textfile collector (e.g. /var/lib/prometheus/node-exporter/"
            "blobshift.prom); replaced whole every --metrics-interval seconds and at the end",
        )
        p.add_argument(
            "--metrics-interval",
            type=_positive_float,
            default=WRITE_INTERVAL,
            metavar="SECONDS",
            help=f"seconds between writes of --metrics-file (default {WRITE_INTERVAL:g})",
        )
        return p

    m = add(
        "migrate-backend",
        "copy every blob of the old store missing in the new one",
        MIGRATE_EXAMPLES,
    )
    m.add_argument(
        "--log-dir",
        type=Path,
        required=True,
        help="where the missing-blob log, checkpoint and status live (kept)",
    )
    m.add_argument(
        "--chunk-size",
        type=_positive_int,
        default=1000,
        help="keys per checkpointed chunk (default 1000)",
    )
    m.add_argument(
        "--num-workers", type=_positive_int, default=15, help="concurrent copies (default 15)"
    )
    m.add_argument("--reset", action="store_true", help="forget saved progress, start a new pass")
    m.add_argument(
        "--dry-run", action="store_true", help="count what would be copied, copy nothing"
    )
    m.add_argument("--prefix", default="", help="only keys starting with this prefix")
    m.add_argument(
        "--keys-from",
        type=Path,
        metavar="FILE",
        help="JSON lines manifest (blob_key, parent_id, type_code, domain) "
        "instead of listing the old bucket",
    )
    m.add_argument(
        "--shard",
        type=_shard,
        default=Shard(),
        metavar="I/N",
        help="take only keys whose hash falls in shard I of N (0 <= I < N); with "
        "--range-plan, the plan's ranges I, I+N, I+2N, ...",
    )
    m.add_argument(
        "--range-plan",
        type=Path,
        metavar="FILE",
        help="list only this shard's ranges of the plan made by blobshift plan-ranges, so "
        "N hosts together list each store about once (a listing only, not --keys-from)",
    )
    m.add_argument(
        "--max-chunks-ahead",
        type=_positive_int,
        default=BackfillOptions.max_chunks_ahead,
        metavar="K",
        help="list at most K chunks past the checkpoint: a slow copy holds the checkpoint, "
        "and a crash redoes the keys listed past it (default %(default)s)",
    )
    m.add_argument(
        "--max-rps",
        type=_positive_float,
        metavar="N",
        help="at most N objects read from the old store per second",
    )
    m.add_argument(
        "--bwlimit",
        type=_size,
        metavar="SIZE",
        help="at most SIZE bytes read from the old store per second (e.g. 20M)",
    )
    m.add_argument(
        "--multipart-threshold",
        type=_size,
        default=CopyOptions().multipart_threshold,
        metavar="SIZE",
        help="copy objects above SIZE in parts (default 200M, as rclone); smaller ones go "
        "in one PUT, streamed when over 1M. Behind a body limit (a proxy's 9M), the first "
        "PUT refused as too large goes again in parts and so does every object as large "
        "for the rest of the run; 8M avoids even that one refusal",
    )
    m.add_argument(
        "--part-size",
        type=_size,
        default=CopyOptions().part_size,
        metavar="SIZE",
        help="multipart part size (default 8M; at least 5M for S3)",
    )
    m.add_argument(
        "--reverse",
        action="store_true",
        help="rollback: copy the blobs only the new store holds back to the old one",
    )
    m.add_argument(
        "--log-unfaithful-keys",
        action="store_true",
        help="log keys of a kind the target does not hold as written (found by the key "
        "probe before the first copy, e.g. 'a//b' or 'x/' on SeaweedFS) instead of "
        "refusing to start",
    )
    m.add_argument(
        "--progress-interval",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between progress lines when not on a terminal (default 10)",
    )

    c = add(
        "check-blob-logs",
        "classify the blobs a backfill logged as missing",
        "examples:\n  blobshift check-blob-logs --settings localsettings.py "
        "logs/migrate_backend-blob-migration-20261124T010203Z.txt --migrate\n",
    )
    c.add_argument("logs", type=Path, nargs="+", metavar="LOG")
    c.add_argument("--migrate", action="store_true", help='copy the "Found in old db" blobs now')
    c.add_argument("--num-workers", type=_positive_int, default=15)
    c.add_argument(
        "--keys-from",
        type=Path,
        metavar="FILE",
        help="current manifest: a logged key absent from it is 'Not referenced'",
    )
    c.add_argument(
        "--json-file",
        type=Path,
        metavar="FILE",
        help="also write the summary (the document of --json) to FILE",
    )
    c.add_argument(
        "--skip-malformed",
        action="store_true",
        help="skip lines that are not records instead of refusing the log",
    )

    v = add(
        "verify",
        "compare old and new: every old blob present and intact in new",
        "examples:\n  blobshift verify --settings localsettings.py --report verify.json\n"
        "  blobshift verify --settings localsettings.py --checksum\n",
    )
    v.add_argument(
        "--checksum",
        action="store_true",
        help="download both sides where ETags cannot tell (multipart)",
    )
    v.add_argument(
        "--metadata",
        action="store_true",
        help="also compare content type, encoding, disposition, cache control and user "
        "metadata (one HEAD per side and blob)",
    )
    v.add_argument(
        "--report",
        "--json-file",
        dest="json_file",
        type=Path,
        metavar="FILE",
        help="write the JSON report (the document of --json) here",
    )
    v.add_argument("--prefix", default="")
    v.add_argument("--num-workers", type=_positive_int, default=8)
    v.add_argument(
        "--accept-missing",
        type=Path,
        metavar="FILE",
        help="keys the operator accepts as lost (listed in the report)",
    )
    for p in (m, c, v):
        p.add_argument("--json", action="store_true", help=JSON_HELP)
    m.add_argument(
        "--json-file",
        type=Path,
        metavar="FILE",
        help="also write the summary (the document of --json) to FILE",
    )

    st = sub.add_parser(
        "status",
        help="where a backfill stands, from its run files",
        description="where a backfill stands, per shard, from the run files in its log dir",
        epilog=STATUS_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    st.add_argument(
        "--log-dir", type=Path, required=True, help="the backfill's --log-dir (read only)"
    )
    st.add_argument(
        "--shard", type=_shard, metavar="I/N", help="only this shard (default: every one found)"
    )
    st.add_argument("--json", action="store_true", help="one JSON document on stdout")
    st.add_argument(
        "--stale-after",
        type=_positive_float,
        default=STALE_AFTER,
        metavar="SECONDS",
        help="a running shard whose status file is older is flagged stale "
        f"(default {STALE_AFTER:g}; a backfill rewrites it every few seconds)",
    )
    add_readiness_parser(sub)
    add_plan_ranges_parser(sub, _positive_int)
    return parser


def _must_be_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise SettingsError(f"{what} {path} is a directory: pass the file itself")
    if not path.is_file():
        raise SettingsError(f"{what} {path}: no such file: check the path")


def _check_paths(args: argparse.Namespace) -> None:
    if args.metrics_file is not None and (why := check_metrics_path(args.metrics_file)):
        raise SettingsError(why)
    if getattr(args, "keys_from", None) is not None:
        _must_be_file(args.keys_from, "--keys-from")
    for log in getattr(args, "logs", None) or []:
        if args.json and log.suffix == ".json":  # the former `--json FILE`: never read it
            raise SettingsError(
                f"log {log} is a .json file, not a backfill log: --json takes no FILE (it "
                f"prints the summary on stdout); write it to a file with --json-file {log}"
            )
        _must_be_file(log, "log")
        if not args.skip_malformed:
            validate_log(log)
    if getattr(args, "accept_missing", None) is not None and not args.accept_missing.is_file():
        raise SettingsError(f"--accept-missing {args.accept_missing}: no such file")
    if args.command == "migrate-backend":
        if args.log_dir.exists() and not args.log_dir.is_dir():
            raise SettingsError(f"--log-dir {args.log_dir} exists and is not a directory")
        if args.part_size < 5 * 1024 * 1024:
            raise SettingsError("--part-size must be at least 5M (the S3 minimum part size)")
        if args.dry_run and args.reset:
            raise SettingsError(
                "--dry-run and --reset together make no sense: a dry run "
                "never touches saved progress"
            )


async def _migrate(args: argparse.Namespace, out: Output) -> int:
    settings = load_settings(args.settings, require_old=True)
    options = BackfillOptions(
        log_dir=args.log_dir,
        chunk_size=args.chunk_size,
        num_workers=args.num_workers,
        reset=args.reset,
        dry_run=args.dry_run,
        prefix=args.prefix,
        keys_from=args.keys_from,
        shard=args.shard,
        max_rps=args.max_rps,
        bwlimit=args.bwlimit,
        copy=CopyOptions(args.multipart_threshold, args.part_size),
        progress_interval=args.progress_interval,
        reverse=args.reverse,
        log_unfaithful_keys=args.log_unfaithful_keys,
        metrics_file=args.metrics_file,
        metrics_interval=args.metrics_interval,
        range_plan=args.range_plan,
        max_chunks_ahead=args.max_chunks_ahead,
    )
    result = await Backfill(settings, options, out).run()
    if args.json or args.json_file:
        doc = backfill_document(result, args.dry_run)
        emit(doc, stdout=args.json, path=args.json_file)
    return result.exit_code


async def _check(args: argparse.Namespace, out: Output) -> int:
    settings = load_settings(args.settings, require_old=True)
    result = await check_blob_logs(
        settings,
        args.logs,
        migrate=args.migrate,
        num_workers=args.num_workers,
        keys_from=args.keys_from,
        out=out,
        metrics_file=args.metrics_file,
        metrics_interval=args.metrics_interval,
    )
    if args.json or args.json_file:
        doc = {"command": "check-blob-logs", "exit_code": result.exit_code, **result.as_dict()}
        emit(doc, stdout=args.json, path=args.json_file)
    return result.exit_code


async def _verify(args: argparse.Namespace, out: Output) -> int:
    settings = load_settings(args.settings, require_old=True)
    accept = load_accept_list(args.accept_missing) if args.accept_missing else None
    report = await verify(
        settings,
        checksum=args.checksum,
        metadata=args.metadata,
        prefix=args.prefix,
        num_workers=args.num_workers,
        accept=accept,
        out=out,
        metrics_file=args.metrics_file,
        metrics_interval=args.metrics_interval,
    )
    for line in summarize(report):
        out.line(line)
    code = EXIT_OK if report.clean else EXIT_INCOMPLETE
    if args.json or args.json_file:
        doc = {"command": "verify", "exit_code": code, **report_document(report, settings)}
        emit(doc, stdout=args.json, path=args.json_file)
        if args.json_file:
            out.line(f"report: {args.json_file}")
    return code


def _status(args: argparse.Namespace) -> int:
    """Reads run files only: no settings, no stores, no metrics."""
    try:
        doc = collect(args.log_dir, args.shard, args.stale_after)
    except StatusInputError as exc:
        print(f"blobshift: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        emit(doc, stdout=True, path=None)
    else:
        print("\n".join(render(doc)), flush=True)
    code: int = doc["exit_code"]
    return code


COMMANDS = {"migrate-backend": _migrate, "check-blob-logs": _check, "verify": _verify}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "readiness":  # reads a log only: no settings, stores or metrics
        return run_readiness(args)
    if args.command == "plan-ranges":  # lists the old store only: no run files, no metrics
        return run_plan_ranges(args)
    if args.command == "status":
        return _status(args)
    # With --json, stdout holds the summary document alone.
    out = Output(sys.stderr if getattr(args, "json", False) else None)
    err = sys.stderr
    try:
        _check_paths(args)
        return asyncio.run(COMMANDS[args.command](args, out))
    except (SettingsError, ManifestError, LogFormatError, RangePlanError) as exc:
        print(f"blobshift: error: {exc}", file=err)
        return EXIT_USAGE
    except LockedError as exc:
        print(f"blobshift: error: {exc}", file=err)
        return EXIT_LOCKED
    except LogDirError as exc:
        print(f"blobshift: error: {exc}", file=err)
        return EXIT_IO
    except RunFileError as exc:
        print(f"blobshift: error: {exc}", file=err)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"blobshift: error: {exc}; nothing was copied", file=err)
        return EXIT_STORE
    except (S3Error, HTTPError) as exc:  # a store failed for good in the middle of a run
        print(f"blobshift: error: {exc}; progress is saved: re-run to resume", file=err)
        return EXIT_STORE
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        print(
            f"blobshift: error: cannot write{where}: {exc.strerror}; progress is saved up to "
            "the last checkpoint: free space or fix permissions, then re-run",
            file=err,
        )
        return EXIT_IO
    except KeyboardInterrupt:
        print("stopped by operator", file=err)
        return EXIT_STOPPED
    finally:
        out.close()


if __name__ == "__main__":
    sys.exit(main())
