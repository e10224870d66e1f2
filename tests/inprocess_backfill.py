"""A backfill run inside the test's process, for tests that look at what the engine does
while it runs (stop it at a given point, count its LIST requests), against the real
SeaweedFS servers of conftest."""

from __future__ import annotations

import asyncio
import io
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from blobshift.backfill import Backfill, BackfillOptions, BackfillResult
from blobshift.fidelity import PROBE_PREFIX
from blobshift.progress import Output
from blobshift.s3.client import S3Client
from blobshift.settings import OLD_STORE, load_settings


@dataclass
class ListCounter:
    """LIST requests of the run's listings (not the key probe's), by store, with where
    each one started. Pages are `page_keys` long, so a few thousand keys are many pages,
    as millions are in production."""

    page_keys: int
    lists: Counter[str] = field(default_factory=Counter)
    starts: dict[str, list[str]] = field(default_factory=lambda: {"old": [], "new": []})

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = S3Client.list_page
        counter = self

        async def list_page(
            client: S3Client, prefix: str, start_after: str, max_keys: int = 1000
        ) -> Any:
            if not prefix.startswith(PROBE_PREFIX):
                store = "old" if client.store.name == OLD_STORE else "new"
                counter.lists[store] += 1
                counter.starts[store].append(start_after)
            return await real(client, prefix, start_after, min(max_keys, counter.page_keys))

        monkeypatch.setattr(S3Client, "list_page", list_page)

    def clear(self) -> None:
        self.lists.clear()
        self.starts = {"old": [], "new": []}


@dataclass
class Run:
    backfill: Backfill
    result: BackfillResult | None  # None: crashed (cancelled) before it returned
    output: str


def run_backfill(
    settings_file: Path,
    log_dir: Path,
    *,
    stop_when: Callable[[Backfill], bool] | None = None,
    crash: bool = False,
    **options: Any,
) -> Run:
    """Run a backfill to its end; with `stop_when`, stop it once that holds: as SIGTERM
    does (finish the copies in flight, save), or with `crash` as a kill would (cancelled
    where it stands: the checkpoint stays as last saved)."""
    settings = load_settings(settings_file, require_old=True)
    opts = BackfillOptions(log_dir=log_dir, log_unfaithful_keys=True, **options)
    text = io.StringIO()
    backfill = Backfill(settings, opts, Output(text))

    async def main() -> BackfillResult | None:
        task = asyncio.create_task(backfill.run())
        if stop_when is not None:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while not task.done() and not stop_when(backfill):
                assert loop.time() < deadline, "timed out waiting for the point to stop at"
                await asyncio.sleep(0.002)
            assert not task.done(), "the run ended before the point to stop at"
            if crash:
                task.cancel()
            else:
                backfill.stopping.set()
        try:
            return await task
        except asyncio.CancelledError:
            return None

    result = asyncio.run(main())
    return Run(backfill, result, text.getvalue())
