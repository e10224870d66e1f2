"""`migrate-backend`: copy every blob of the old store that the new store lacks.

Keys stream from the old listing (merged in order with the new listing, so a present
key costs no request) or from a manifest. They are grouped in chunks of `chunk_size`
examined keys; a chunk is finished when each of its keys is copied, skipped or logged,
and the checkpoint advances over finished chunks only, in order, after the missing-blob
log is fsynced. A crash therefore redoes at most the chunks in flight, and redone keys
are found present in new and skipped, so no blob is copied twice. At most
`max_chunks_ahead` chunks are in flight: a slow copy at the head holds the checkpoint, and
the listing waits for it rather than running ahead into keys a crash would make it redo.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import socket
import time
from calendar import timegm
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blobshift.copy import CopyOptions, copy_object
from blobshift.fidelity import PROBE_PREFIX, classes_of, unfaithful_classes
from blobshift.metrics import WRITE_INTERVAL, RunMetrics, Snapshot, published
from blobshift.progress import Output, Progress, human_bytes, rate_text
from blobshift.ranges import RangePlan, RangePlanError
from blobshift.ratelimit import Limits
from blobshift.runfiles import (
    Checkpoint,
    MissingLog,
    RunFileError,
    RunLock,
    RunPaths,
    is_sealed,
    log_dir_writes,
    logged_keys,
    sealed,
    summary_path,
    utc_iso,
    write_json_atomic,
)
from blobshift.s3.client import NotFound, RetryPolicy, S3Client, is_retryable, retry_cause
from blobshift.settings import BlobSettings
from blobshift.sources import (
    PRESENT,
    Job,
    Shard,
    Work,
    listing_source,
    manifest_source,
    scan_manifest,
)
from blobshift.stores import StoreError, open_stores, preflight

STATUS_INTERVAL = 2.0
UNFAITHFUL = "cannot be stored faithfully in the target store"
# In a checkpoint's source: the range plan the pass lists by (its digest follows).
RANGES_TAG = ":ranges="

# The error of a logged blob that its source no longer held when its copy came (deleted
# since the listing); the rollback's passes tell the app's deletions by it
# (playbooks/filter_plugins/rollback_reverse_passes.py says it too).
GONE_FROM_SOURCE = "not found in old db"


@dataclass(frozen=True)
class BackfillOptions:
    log_dir: Path
    chunk_size: int = 1000
    num_workers: int = 15
    reset: bool = False
    dry_run: bool = False
    prefix: str = ""
    keys_from: Path | None = None
    shard: Shard = field(default_factory=Shard)
    max_rps: float | None = None
    bwlimit: int | None = None
    copy: CopyOptions = field(default_factory=CopyOptions)
    progress_interval: float = 10.0
    # Rollback: copy what only the new store holds back to the old one.
    reverse: bool = False
    # Keys of a class the target cannot hold as written: logged instead of refusing to start.
    log_unfaithful_keys: bool = False
    # Prometheus text file rewritten every `metrics_interval` seconds (not by a dry run).
    metrics_file: Path | None = None
    metrics_interval: float = WRITE_INTERVAL
    # Range shards (blobshift.ranges): list only the ranges `shard` owns in this plan.
    range_plan: Path | None = None
    # The listing does not open chunk c + K while chunk c is unfinished: a crash redoes
    # at most K chunks.
    max_chunks_ahead: int = 4


@dataclass
class Counts:
    listed: int = 0
    copied: int = 0
    skipped: int = 0
    logged: int = 0
    bytes: int = 0
    retries: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class BackfillResult:
    counts: Counts
    log: Path | None
    status: Path | None
    checkpoint: Path | None
    stopped: bool = False
    complete: bool = False
    would_copy: int = 0
    elapsed: float = 0.0
    logs: list[str] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        if self.stopped:
            return 130
        return 1 if self.counts.logged else 0


class _Chunks:
    """Tracks unfinished keys per chunk; tells how far the checkpoint may move."""

    def __init__(self) -> None:
        self._open: deque[list[Any]] = deque()  # per chunk: [pending keys, end position]
        self._base = 0  # number of the chunk at the front of `_open`
        self._moved = asyncio.Event()  # set when finished chunks are popped
        self.waiting = False  # the listing waits for the front chunk (see `room`)

    def new_chunk(self) -> int:
        self._open.append([0, None])
        return self._base + len(self._open) - 1

    def add(self, chunk: int) -> None:
        self._open[chunk - self._base][0] += 1

    def close(self, chunk: int, position: str) -> None:
        self._open[chunk - self._base][1] = position

    def done(self, chunk: int) -> None:
        self._open[chunk - self._base][0] -= 1

    def advance(self) -> str | None:
        """Pop finished chunks from the front; the last popped end position, if any."""
        position = None
        while self._open and self._open[0][0] == 0 and self._open[0][1] is not None:
            position = self._open.popleft()[1]
            self._base += 1
        if position is not None:
            self._moved.set()
        return position

    async def room(self, limit: int) -> None:
        """Wait until fewer than `limit` chunks are open. (A stop cancels the producer,
        and with it this wait.)"""
        while len(self._open) >= limit:
            self._moved.clear()
            self.waiting = True
            try:
                await self._moved.wait()
            finally:
                self.waiting = False


class Backfill:
    def __init__(
        self, settings: BlobSettings, options: BackfillOptions, out: Output | None = None
    ) -> None:
        if settings.old is None:
            raise ValueError("the backfill needs OLD_S3_BLOB_DB_SETTINGS")
        if options.max_chunks_ahead < 1:
            raise ValueError("max_chunks_ahead must be at least 1")
        if options.reverse:
            settings = dataclasses.replace(settings, new=settings.old, old=settings.new)
        self.settings = settings
        self.opts = options
        self.out = out or Output()
        self.paths = RunPaths.for_shard(
            options.log_dir, options.shard.index, options.shard.count, reverse=options.reverse
        )
        self.counts = Counts()
        self.would_copy = 0
        self.stopping = asyncio.Event()
        self.limits = Limits(options.max_rps, options.bwlimit)
        self.copy_retry = RetryPolicy(attempts=10)
        self._chunks = _Chunks()
        self._plan: RangePlan | None = None
        self._log: MissingLog | None = None
        self._checkpoint: Checkpoint | None = None
        self._totals_before: dict[str, int] = {}
        self._started = time.monotonic()
        self._total: int | None = None
        self._state = "starting"
        self._fatal: BaseException | None = None
        self._copy_retries: Counter[str] = Counter()  # whole copies retried, by cause
        self._clients: tuple[S3Client, ...] = ()
        self._metrics = (
            RunMetrics(
                options.metrics_file,
                "migrate-backend",
                str(options.shard),
                self._snapshot,
                interval=options.metrics_interval,
                out=self.out,
            )
            if options.metrics_file is not None and not options.dry_run
            else None
        )
        # Keys in this checkpoint's earlier logs: a resume does not log them again.
        self._logged_before: set[str] = set()
        self._relogged = 0
        # Key classes the target does not hold as written (see blobshift.fidelity).
        self._unfaithful: frozenset[str] = frozenset()

    # -- identity of what is enumerated: a checkpoint is only valid for the same one --

    def _source_id(self) -> str:
        if self.opts.keys_from is not None:
            st = self.opts.keys_from.stat()
            return (
                f"manifest:{self.opts.keys_from.resolve()}:{st.st_size}:prefix={self.opts.prefix}"
            )
        listing = self._listing_id()
        return listing if self._plan is None else f"{listing}{RANGES_TAG}{self._plan.digest}"

    def _listing_id(self) -> str:
        old = self.settings.old
        assert old is not None
        return f"listing:{old.url}/{old.bucket}:prefix={self.opts.prefix}"

    def _same_listing(self, source: str) -> bool:
        """`source` (a checkpoint's) lists the same store and prefix, by any range plan."""
        listing, _, _ = source.partition(RANGES_TAG)
        return self.opts.keys_from is None and listing == self._listing_id()

    def _load_plan(self) -> RangePlan | None:
        """The range plan, refused unless it cuts this run's listing (before any change)."""
        path = self.opts.range_plan
        if path is None:
            return None
        if self.opts.keys_from is not None:
            raise RangePlanError(
                f"--range-plan {path} cuts the old bucket's listing into ranges, but "
                "--keys-from reads a manifest instead: split a manifest with hash shards "
                "(--shard I/N alone), or drop --keys-from to list by the plan"
            )
        plan = RangePlan.load(path)
        old = self.settings.old
        assert old is not None
        listing = f"{old.url}/{old.bucket}"
        if plan.source != listing or plan.prefix != self.opts.prefix:
            raise RangePlanError(
                f"range plan {path} cuts the listing of {plan.source} under prefix "
                f"{plan.prefix!r}, but this run lists {listing} under prefix "
                f"{self.opts.prefix!r}: make a plan for this store with blobshift "
                "plan-ranges (same --settings and --prefix as the backfill)"
            )
        return plan

    def _previous_status(self) -> dict[str, Any] | None:
        """The last run's status file, reporting (not trusting) a garbled one: it is only
        for watchers, the checkpoint alone decides where to resume."""
        path = self.paths.status
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raw = exc
        if not is_sealed(raw) or not isinstance(raw.get("position"), str):
            self.out.line(
                f"status file {path} is unreadable, truncated or was edited (checksum "
                "mismatch): ignored and rewritten; where to resume comes from the checkpoint"
            )
            return None
        status: dict[str, Any] = raw
        return status

    def _load_checkpoint(self) -> Checkpoint:
        source, shard = self._source_id(), str(self.opts.shard)
        status = None if self.opts.dry_run else self._previous_status()
        cp = None if self.opts.reset else Checkpoint.load(self.paths.checkpoint)
        if cp is None and not self.opts.reset and status and status.get("position"):
            # A previous run saved progress, but its checkpoint is gone: starting over
            # silently would hide that (and redo days of listing).
            raise RunFileError(
                f"checkpoint {self.paths.checkpoint} is missing, but status file "
                f"{self.paths.status} shows a run that got to {status['position']!r}: "
                "restore the checkpoint, or re-run with --reset to start a new pass "
                "(present blobs are skipped)"
            )
        # The same listing cut by another range plan (or none): a finished pass may
        # start the next with another plan, a running one must finish with its own.
        plan_changed = cp is not None and cp.source != source and self._same_listing(cp.source)
        if cp is not None and plan_changed and cp.shard == shard and not cp.complete:
            was = cp.source.partition(RANGES_TAG)[2] or "none"
            now = self._plan.digest if self._plan is not None else "none"
            raise RunFileError(
                f"the range plan changed under a running pass: checkpoint "
                f"{self.paths.checkpoint} was saved with range plan {was}, this run has "
                f"{now}, which gives shard {shard} other keys: finish that pass with the "
                "plan it started with, or re-run with --reset to start a new pass with "
                "this plan (present blobs are skipped)"
            )
        if cp is not None and (cp.shard != shard or (cp.source != source and not plan_changed)):
            raise RunFileError(
                f"checkpoint {self.paths.checkpoint} belongs to another run "
                f"({cp.source}, shard {cp.shard}): use another --log-dir, or --reset"
            )
        if cp is not None and cp.complete:
            self.out.line(
                f"previous pass finished at {cp.updated}; starting a new pass "
                "(blobs already in the new store are skipped)"
            )
            cp = Checkpoint(source, shard, totals={}, logs=cp.logs)
        if cp is None:
            cp = Checkpoint(source, shard)
        return cp

    # -- the run ------------------------------------------------------------------

    async def run(self) -> BackfillResult:
        # Bad input (range plan, manifest, stores) is refused before the log dir is touched.
        self._plan = self._load_plan()
        if self.opts.keys_from is not None:
            self._total = scan_manifest(self.opts.keys_from)
        async with open_stores(self.settings, self.opts.num_workers, "migrate-backend") as (
            old,
            new,
        ):
            self._clients = (old, new)
            if self._metrics is not None:
                self._metrics.observe(old, new)
            await preflight(old, new, settings_path=self.settings.path)
            if self.opts.dry_run:  # the probe writes to the target; a dry run writes nothing
                self.out.line("dry run: the key probe of the target is skipped (it writes)")
            else:
                await self._probe_key_fidelity(new)
            with contextlib.ExitStack() as held:
                with log_dir_writes(self.opts.log_dir, "lock file"):
                    self.opts.log_dir.mkdir(parents=True, exist_ok=True)
                    held.enter_context(RunLock(self.paths.lock))
                # Only the shard's lock holder writes its metrics file: a second run
                # refused by the lock must not overwrite the running one's.
                async with published(self._metrics):
                    cp = self._load_checkpoint()
                    if self.opts.dry_run:
                        return await self._dry_run(old, new, cp)
                    return await self._copy_run(old, new, cp)

    async def _probe_key_fidelity(self, new: S3Client) -> None:
        unfaithful = await unfaithful_classes(new)
        if not unfaithful:
            return
        names = ", ".join(unfaithful)
        if not self.opts.log_unfaithful_keys:
            raise StoreError(
                f"{new.store.describe()} does not hold keys of these kinds as written: "
                f"{names} (probed under {PROBE_PREFIX}); copied, such blobs would be lost "
                "or mangled. Use a target that holds them, or re-run with "
                "--log-unfaithful-keys to log such keys instead of copying them"
            )
        self._unfaithful = frozenset(unfaithful)
        self.out.line(
            f"{new.store.describe()} cannot hold keys with: {names}: such keys are logged"
        )

    def _source(
        self, old: S3Client, new: S3Client, cp: Checkpoint
    ) -> AsyncIterator[tuple[str, Job]]:
        if self.opts.keys_from is not None:
            start = int(cp.position or 0)
            return manifest_source(self.opts.keys_from, start, self.opts.prefix, self.opts.shard)
        ranges = None if self._plan is None else self._plan.owned(self.opts.shard)
        return listing_source(old, new, self.opts.prefix, cp.position, self.opts.shard, ranges)

    def _ranges_text(self) -> str:
        if self._plan is None:
            return ""
        owned = [r.index for r in self._plan.owned(self.opts.shard)]
        which = ", ".join(map(str, owned)) if owned else "none: nothing to list"
        return f" (ranges {which} of {self._plan.count}, plan {self._plan.digest})"

    async def _dry_run(self, old: S3Client, new: S3Client, cp: Checkpoint) -> BackfillResult:
        self._state = "dry-run"
        self.out.line(
            f"dry run{self._ranges_text()}: counting what would be copied from "
            f"{old.store.describe()}"
        )
        async for _, work in self._source(old, new, cp):
            if work is None:
                continue
            self.counts.listed += 1
            if work is PRESENT or (
                isinstance(work, Work) and work.check_new and await new.head(work.key)
            ):
                self.counts.skipped += 1
            else:
                self.would_copy += 1
        result = BackfillResult(self.counts, None, None, None, would_copy=self.would_copy)
        result.elapsed = time.monotonic() - self._started
        self.out.line(
            f"dry run: listed {self.counts.listed}, would copy {self.would_copy}, "
            f"already present {self.counts.skipped}; nothing was copied"
        )
        return result

    async def _copy_run(self, old: S3Client, new: S3Client, cp: Checkpoint) -> BackfillResult:
        log_path = self.paths.new_log()
        if not cp.complete and cp.position:
            self._logged_before = logged_keys(Path(p) for p in cp.logs)
        with log_dir_writes(self.opts.log_dir, "missing-blob log"):
            self._log = MissingLog(log_path)
            self.out.tee_to(summary_path(log_path))
        cp.logs.append(str(log_path))
        self._checkpoint = cp
        self._totals_before = dict(cp.totals)
        where = f"from key after {cp.position!r}" if cp.position else "from the start"
        self.out.line(
            f"backfill shard {self.opts.shard}{self._ranges_text()}: {old.store.describe()} -> "
            f"{new.store.describe()}, {where}, {self.opts.num_workers} workers, "
            f"chunks of {self.opts.chunk_size}"
        )
        self.out.line(f"missing-blob log: {log_path}")
        self._state = "running"
        self._write_status()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            complete = await self._pump(old, new, cp)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if self._fatal is not None:
            self._state = "failed"
            self._write_status(error=f"{type(self._fatal).__name__}: {self._fatal}")
            self._log.close()
            self.out.close()
            raise self._fatal
        self._advance_checkpoint(final=complete)
        self._log.close()
        self._state = "finished" if complete else "stopped"
        self._write_status()
        return self._finish(log_path, complete)

    async def _pump(self, old: S3Client, new: S3Client, cp: Checkpoint) -> bool:
        """Run producer and workers until the source is exhausted or a stop; complete?"""
        queue: asyncio.Queue[tuple[int, Work] | None] = asyncio.Queue(self.opts.num_workers * 4)
        workers = [
            asyncio.create_task(self._worker(queue, old, new)) for _ in range(self.opts.num_workers)
        ]
        ticker = asyncio.create_task(self._ticker())
        producer = asyncio.create_task(self._produce(queue, old, new, cp))
        stop = asyncio.create_task(self.stopping.wait())
        await asyncio.wait({producer, stop}, return_when=asyncio.FIRST_COMPLETED)
        if not producer.done():
            producer.cancel()
        try:
            await producer
        except asyncio.CancelledError:
            pass
        except Exception as exc:
            self._fail(exc)
        stop.cancel()
        if self.stopping.is_set():
            while not queue.empty():  # queued keys stay in unfinished chunks: redone on resume
                queue.get_nowait()
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
        ticker.cancel()
        return not self.stopping.is_set()

    def _fail(self, exc: BaseException) -> None:
        if self._fatal is None:
            self._fatal = exc
        self.stopping.set()

    def _on_signal(self, sig: int) -> None:
        if not self.stopping.is_set():
            name = signal.Signals(sig).name
            self.out.line(f"{name} received: finishing the copies in flight, then stopping")
        self.stopping.set()

    async def _produce(
        self,
        queue: asyncio.Queue[tuple[int, Work] | None],
        old: S3Client,
        new: S3Client,
        cp: Checkpoint,
    ) -> None:
        chunks = self._chunks
        chunk = chunks.new_chunk()
        in_chunk = 0
        position = cp.position
        async for position, work in self._source(old, new, cp):
            if work is None:
                continue
            self.counts.listed += 1
            in_chunk += 1
            if work is PRESENT:
                self.counts.skipped += 1
            else:
                chunks.add(chunk)
                await queue.put((chunk, work))
            if in_chunk >= self.opts.chunk_size:
                chunks.close(chunk, position)
                self._advance_checkpoint()
                # Keys listed past a slow copy at the head would all be redone after a crash.
                await chunks.room(self.opts.max_chunks_ahead)
                chunk, in_chunk = chunks.new_chunk(), 0
        if not self.stopping.is_set():
            chunks.close(chunk, position)

    async def _worker(
        self, queue: asyncio.Queue[tuple[int, Work] | None], old: S3Client, new: S3Client
    ) -> None:
        while True:
            item = await queue.get()
            if item is None or self.stopping.is_set():
                return
            chunk, work = item
            try:
                await self._handle(work, old, new)
                self._chunks.done(chunk)
                self._advance_checkpoint()
            except Exception as exc:
                self._fail(exc)
                return

    async def _handle(self, work: Work, old: S3Client, new: S3Client) -> None:
        if self._unfaithful and (classes := classes_of(work.key, self._unfaithful)):
            self._record(work, f"{UNFAITHFUL} ({', '.join(classes)})")
            return
        if work.check_new and await new.head(work.key) is not None:
            self.counts.skipped += 1
            return

        def retried(exc: BaseException) -> None:
            self._copy_retries[retry_cause(exc)] += 1

        try:
            n = await self.copy_retry.run(
                lambda: copy_object(
                    old, new, work.key, self.limits, self.opts.copy, work.size, work.etag
                ),
                retried,
            )
        except NotFound:
            # Gone from old: fine if the app already has it in new, else it is missing.
            if await new.head(work.key) is not None:
                self.counts.skipped += 1
            else:
                self._record(work, GONE_FROM_SOURCE)
            return
        except Exception as exc:
            text = str(exc) or type(exc).__name__
            self._record(work, f"too many retries: {text}" if is_retryable(exc) else text)
            return
        self.counts.copied += 1
        self.counts.bytes += n

    def _record(self, work: Work, error: str) -> None:
        assert self._log is not None
        self.counts.logged += 1
        if work.key in self._logged_before:
            self._relogged += 1  # redone after a crash: its line is in an earlier log
            return
        record: dict[str, Any] = {"blob_key": work.key, "error": error, "size": work.size}
        if work.meta:
            record.update(work.meta)
        with log_dir_writes(self.opts.log_dir, "missing-blob log"):
            self._log.write(record)

    def _advance_checkpoint(self, final: bool = False) -> None:
        position = self._chunks.advance()
        if (position is None and not final) or self._checkpoint is None or self.opts.dry_run:
            return
        assert self._log is not None
        with log_dir_writes(self.opts.log_dir, "missing-blob log"):
            self._log.sync()  # the log must hold every failure the checkpoint moves past
        cp = self._checkpoint
        if position is not None:
            cp.position = position
        cp.complete = final
        run = self.counts.as_dict()
        cp.totals = {k: self._totals_before.get(k, 0) + v for k, v in run.items()}
        with log_dir_writes(self.opts.log_dir, "checkpoint"):
            cp.save(self.paths.checkpoint)

    # -- progress and status --------------------------------------------------------

    async def _ticker(self) -> None:
        progress = Progress(self.out, self.opts.progress_interval)
        last_status = 0.0
        while True:
            await asyncio.sleep(0.5)
            progress.show(self._progress_text())
            now = time.monotonic()
            if now - last_status >= STATUS_INTERVAL:
                last_status = now
                self._write_status()

    @property
    def listing_held(self) -> bool:
        """The listing waits for the chunk at the checkpoint (`max_chunks_ahead` open)."""
        return self._chunks.waiting

    def _progress_text(self) -> str:
        c = self.counts
        done = c.copied + c.skipped + c.logged
        elapsed = time.monotonic() - self._started
        held = ", listing waits for a slow copy at the checkpoint" if self.listing_held else ""
        return (
            f"listed {c.listed:,} copied {c.copied:,} skipped {c.skipped:,} "
            f"logged {c.logged:,} ({human_bytes(c.bytes)}), "
            + rate_text(done, c.bytes, elapsed, self._total)
            + held
        )

    def _retry_causes(self) -> Counter[str]:
        """Retries of whole copies plus those of single requests inside both clients."""
        causes = Counter(self._copy_retries)
        for client in self._clients:
            causes.update(client.retry_causes)
        return causes

    def _count_retries(self) -> None:
        self.counts.retries = sum(self._retry_causes().values())

    def _snapshot(self) -> Snapshot:
        """The run's counts for its metrics file."""
        c = self.counts
        age = None
        if self._checkpoint is not None:
            # Since the position last moved (saved), else since this run started.
            saved = self._checkpoint.updated
            since = (
                timegm(time.strptime(saved, "%Y-%m-%dT%H:%M:%SZ"))
                if saved
                else time.time() - (time.monotonic() - self._started)
            )
            age = max(0.0, time.time() - since)
        return Snapshot(
            listed=c.listed,
            copied=c.copied,
            skipped=c.skipped,
            logged=c.logged,
            bytes_copied=c.bytes,
            retries=self._retry_causes(),
            state=self._state,
            checkpoint_age=age,
        )

    def _write_status(self, error: str | None = None) -> None:
        self._count_retries()
        elapsed = time.monotonic() - self._started
        done = self.counts.copied + self.counts.skipped + self.counts.logged
        status: dict[str, Any] = {
            "state": self._state,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "shard": str(self.opts.shard),
            "updated": utc_iso(),
            "elapsed_seconds": round(elapsed, 1),
            "counts": self.counts.as_dict(),
            "objects_per_second": round(done / elapsed, 1) if elapsed > 0 else 0.0,
            "total": self._total,
            "checkpoint": str(self.paths.checkpoint),
            "position": self._checkpoint.position if self._checkpoint else "",
            "log": str(self._log.path) if self._log else None,
            "logs": list(self._checkpoint.logs) if self._checkpoint else [],
        }
        if error:
            status["error"] = error
        # The status is for watchers; a full disk is reported by the checkpoint write.
        with contextlib.suppress(OSError):
            write_json_atomic(self.paths.status, sealed(status), durable=False)

    def _finish(self, log_path: Path, complete: bool) -> BackfillResult:
        self._count_retries()
        c = self.counts
        elapsed = time.monotonic() - self._started
        cp = self._checkpoint
        assert cp is not None
        head = "backfill finished" if complete else "stopped by operator"
        done = c.copied + c.skipped + c.logged
        self.out.line(
            f"{head}: listed {c.listed}, copied {c.copied} ({human_bytes(c.bytes)}), "
            f"skipped as present {c.skipped}, logged {c.logged}, retries {c.retries}, "
            f"in {elapsed:.1f}s ({rate_text(done, c.bytes, elapsed, None)})"
        )
        if c.logged:
            where = str(log_path)
            if self._relogged:
                where += f" ({self._relogged} of them, redone after a crash, in earlier logs)"
            logs = " ".join(cp.logs) if self._relogged else str(log_path)
            self.out.line(
                f"{c.logged} blobs could not be copied; they are listed in {where}; "
                f"classify them with: blobshift check-blob-logs {logs}"
            )
        else:
            self.out.line(f"no blob was logged; log: {log_path}")
        if not complete:
            self.out.line(f"progress saved in {self.paths.checkpoint}; re-run to resume")
        self.out.close()
        return BackfillResult(
            counts=c,
            log=log_path,
            status=self.paths.status,
            checkpoint=self.paths.checkpoint,
            stopped=not complete,
            complete=complete,
            elapsed=elapsed,
            logs=list(cp.logs),
            totals=dict(cp.totals),
        )
