"""The `blobshift` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from blobshift import __version__
from blobshift.backfill import Backfill, BackfillOptions
from blobshift.checklogs import LogFormatError, check_blob_logs, validate_log
from blobshift.copy import CopyOptions
from blobshift.progress import Output
from blobshift.ratelimit import parse_size
from blobshift.runfiles import LockedError, LogDirError, RunFileError
from blobshift.s3.client import S3Error
from blobshift.s3.http import HTTPError
from blobshift.settings import SettingsError, load_settings
from blobshift.sources import ManifestError, Shard
from blobshift.stores import StoreError
from blobshift.verify import load_accept_list, summarize, verify, write_report

EXIT_OK = 0
EXIT_INCOMPLETE = 1  # blobs logged / problems found
EXIT_USAGE = 2  # bad input: settings, flags, manifest, checkpoint
EXIT_STORE = 3  # a store failed its preflight
EXIT_LOCKED = 4  # another run holds the shard's lock
EXIT_IO = 5  # the log dir cannot be written (disk full, permissions)
EXIT_STOPPED = 130

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
        help="take only keys whose hash falls in shard I of N (0 <= I < N)",
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
        help="copy objects above SIZE in parts (default 8M, what a proxy with a 9M body "
        "limit admits; 200M saves hashing a store reached directly, and a PUT refused as "
        "too large is copied again in parts); smaller ones go in one PUT, streamed when "
        "over 1M",
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
    c.add_argument("--json", type=Path, metavar="FILE", help="also write the counts as JSON")
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
    v.add_argument("--report", type=Path, metavar="FILE", help="write the JSON report here")
    v.add_argument("--prefix", default="")
    v.add_argument("--num-workers", type=_positive_int, default=8)
    v.add_argument(
        "--accept-missing",
        type=Path,
        metavar="FILE",
        help="keys the operator accepts as lost (listed in the report)",
    )
    return parser


def _must_be_file(path: Path, what: str) -> None:
    if path.is_dir():
        raise SettingsError(f"{what} {path} is a directory: pass the file itself")
    if not path.is_file():
        raise SettingsError(f"{what} {path}: no such file: check the path")


def _check_paths(args: argparse.Namespace) -> None:
    if getattr(args, "keys_from", None) is not None:
        _must_be_file(args.keys_from, "--keys-from")
    for log in getattr(args, "logs", None) or []:
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
    )
    result = await Backfill(settings, options, out).run()
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
    )
    if args.json:
        args.json.write_text(json.dumps(result.as_dict(), indent=1) + "\n")
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
    )
    for line in summarize(report):
        out.line(line)
    if args.report:
        write_report(report, args.report, settings)
        out.line(f"report: {args.report}")
    return EXIT_OK if report.clean else EXIT_INCOMPLETE


COMMANDS = {"migrate-backend": _migrate, "check-blob-logs": _check, "verify": _verify}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    out = Output()
    err = sys.stderr
    try:
        _check_paths(args)
        return asyncio.run(COMMANDS[args.command](args, out))
    except (SettingsError, ManifestError, LogFormatError) as exc:
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
