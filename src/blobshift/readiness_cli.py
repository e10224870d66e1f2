"""`blobshift readiness`: may the old store go? (the parsing is blobshift.readiness)"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, TextIO

from blobshift.exitcodes import EXIT_USAGE
from blobshift.readiness import (
    OLD_SITE,
    VERDICT_FALLBACKS,
    VERDICT_READY,
    ReadinessError,
    judge,
    parse_window,
)

EXIT_READY = 0
EXIT_FALLBACKS = 1
EXIT_NO_READS = 3

EPILOG = f"""examples:
  blobshift readiness --log /var/log/nginx/blobshift_store.log --window 15m
  blobshift readiness --log store.log.1 --log store.log --window 1h --json

exit codes:
  {EXIT_READY}    ready: app reads were seen in the window, none answered by the old store
  {EXIT_FALLBACKS}    not ready: app reads fell back to the old store (examples printed)
  {EXIT_USAGE}    bad input: a log that cannot be read, a window that is no duration
  {EXIT_NO_READS}    no app reads in the window: cannot judge
"""


def _window(text: str) -> float:
    try:
        return parse_window(text)
    except ReadinessError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: Any) -> None:
    """The subcommand, on the `blobshift` parser's subparsers."""
    help_text = "judge from the proxy's store log whether app reads still need the old store"
    p = sub.add_parser(
        "readiness",
        help=help_text,
        description=help_text,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--log",
        type=Path,
        action="append",
        required=True,
        metavar="FILE",
        help="the proxy's store log (nginx_proxy_store_log); repeat for rotated or other "
        "proxies' logs",
    )
    p.add_argument(
        "--window",
        type=_window,
        default=parse_window("15m"),
        metavar="DURATION",
        help="judge the requests of the last DURATION (e.g. 15m, 900s, 1h; default 15m)",
    )
    p.add_argument(
        "--old-site",
        default=OLD_SITE,
        metavar="NAME",
        help=f"the proxy site in front of the old store (default {OLD_SITE}, the main site)",
    )
    p.add_argument(
        "--now",
        type=float,
        metavar="EPOCH",
        help="judge the window that ends at this time (Unix seconds; default: now), e.g. "
        "to judge a past log again",
    )
    p.add_argument("--json", action="store_true", help="print the counts as JSON")


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    try:
        result = judge(args.log, args.window, now=args.now, old_site=args.old_site)
    except ReadinessError as exc:
        print(f"blobshift: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(result.as_dict(), indent=1), file=out)
    else:
        for line in result.summary():
            print(line, file=out)
    if result.verdict == VERDICT_READY:
        return EXIT_READY
    return EXIT_FALLBACKS if result.verdict == VERDICT_FALLBACKS else EXIT_NO_READS
