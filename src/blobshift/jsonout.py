"""The summaries that `--json` (stdout) and `--json-file FILE` give of migrate-backend,
check-blob-logs and verify: one JSON document each, the same in both places."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from blobshift.backfill import BackfillResult
from blobshift.runfiles import write_json_atomic


def backfill_document(result: BackfillResult, dry_run: bool) -> dict[str, Any]:
    def path(p: Path | None) -> str | None:
        return None if p is None else str(p)

    return {
        "command": "migrate-backend",
        "exit_code": result.exit_code,
        "dry_run": dry_run,
        "complete": result.complete,
        "stopped": result.stopped,
        "counts": result.counts.as_dict(),
        "would_copy": result.would_copy,
        "elapsed_seconds": round(result.elapsed, 1),
        "pass_totals": dict(result.totals),
        "log": path(result.log),
        "logs": list(result.logs),
        "checkpoint": path(result.checkpoint),
        "status": path(result.status),
    }


def emit(doc: dict[str, Any], *, stdout: bool, path: Path | None) -> None:
    """Print `doc` on stdout (the command's progress went to stderr) and/or write it."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, doc)
    if stdout:
        json.dump(doc, sys.stdout, indent=1, sort_keys=True)
        sys.stdout.write("\n")
        sys.stdout.flush()
