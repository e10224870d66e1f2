"""A run's metrics, in Prometheus' text format, in a file node_exporter's textfile
collector reads (`--metrics-file`).

The counts are not kept twice: at each write the file is made from a `Snapshot` the run
takes of its own counters (`Counts`, the clients' retries, the verify report). Only the
request latencies, which nothing else keeps, are a histogram of their own. Each run has
its own `CollectorRegistry` (no process-wide state), and the file is replaced whole
(`write_to_textfile`: a temp file in the same directory, then a rename), every
`interval` seconds and once at the end with the final state.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from blobshift.progress import Output
from blobshift.s3.client import S3Client
from blobshift.settings import OLD_STORE

# prometheus_client is imported by a run that writes a metrics file, when it starts to:
# its import (http.server, wsgiref) took ~0.02 s of every other run's start.
if TYPE_CHECKING:
    from prometheus_client.core import Metric

WRITE_INTERVAL = 5.0
PREFIX = "blobshift"
LABELS = ("shard", "host", "command")
# The shard label of the commands that are not sharded (verify, check-blob-logs).
UNSHARDED = "all"
# The states a run passes through; each is a series, 1 for the current one.
STATES = ("starting", "running", "finished", "stopped", "failed")
# Seconds to a response's headers (a GET's body streams after): LAN to a slow S3 node.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# (metric name, Snapshot field, help) of the counters every command reports (0 where one
# does not apply).
COUNTERS = (
    (
        "objects_listed",
        "listed",
        "Keys examined (migrate-backend), old objects compared (verify), logged records "
        "read (check-blob-logs)",
    ),
    ("objects_copied", "copied", "Blobs copied to the target store"),
    ("objects_skipped", "skipped", "Blobs found already present in the target store"),
    ("objects_logged", "logged", "Blobs that could not be copied, in the missing-blob log"),
    ("bytes_copied", "bytes_copied", "Bytes copied to the target store"),
)


@dataclass
class Snapshot:
    """What a run's own counters say right now."""

    listed: int = 0
    copied: int = 0
    skipped: int = 0
    logged: int = 0
    bytes_copied: int = 0
    retries: Mapping[str, int] = field(default_factory=dict)  # by cause
    checked: Mapping[str, int] = field(default_factory=dict)  # verify / log check outcomes
    # None: the run's own lifecycle (running until it returns or raises) tells.
    state: str | None = None
    checkpoint_age: float | None = None


class _RunCollector:
    """Builds the counter and gauge families from the run's snapshot at each write (a
    prometheus_client Collector: the registry asks for `collect` only)."""

    def __init__(self, metrics: RunMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        m = self._metrics
        snap = m.snapshot()
        labels = list(LABELS)
        values = [m.shard, m.host, m.command]
        for name, attr, help_text in COUNTERS:
            family = CounterMetricFamily(f"{PREFIX}_{name}", help_text, labels=labels)
            family.add_metric(values, getattr(snap, attr))
            yield family
        retries = CounterMetricFamily(
            f"{PREFIX}_retries",
            "Requests and copies retried, by cause (S3 error code, HTTP status, timeout, "
            "connection)",
            labels=[*labels, "cause"],
        )
        for cause, n in sorted(snap.retries.items()):
            retries.add_metric([*values, cause], n)
        yield retries
        if snap.checked:
            checked = CounterMetricFamily(
                f"{PREFIX}_objects_checked",
                "Objects by outcome: verify's comparison, check-blob-logs' classification",
                labels=[*labels, "result"],
            )
            for result, n in sorted(snap.checked.items()):
                checked.add_metric([*values, result], n)
            yield checked
        if snap.checkpoint_age is not None:
            age = GaugeMetricFamily(
                f"{PREFIX}_checkpoint_age_seconds",
                "Seconds since the checkpoint's position last moved",
                labels=labels,
            )
            age.add_metric(values, round(snap.checkpoint_age, 1))
            yield age
        state = GaugeMetricFamily(
            f"{PREFIX}_run_state",
            "1 for the run's current state, 0 for the others",
            labels=[*labels, "state"],
        )
        current = m.state(snap)
        for name in STATES:
            state.add_metric([*values, name], 1.0 if name == current else 0.0)
        yield state


class RunMetrics:
    """The metrics of one run of `command` (shard `shard`), written to `path`."""

    def __init__(
        self,
        path: Path,
        command: str,
        shard: str,
        snapshot: Callable[[], Snapshot],
        *,
        interval: float = WRITE_INTERVAL,
        out: Output | None = None,
    ) -> None:
        self.path = path
        self.command = command
        self.shard = shard
        self.host = socket.gethostname()
        self.snapshot = snapshot
        self.interval = interval
        self.out = out
        self._lifecycle = "starting"
        self._write_failed = False
        from prometheus_client import CollectorRegistry, Histogram

        self.registry = CollectorRegistry(auto_describe=False)
        self._latency = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Seconds from sending an S3 request to its answer's headers (a GET's body "
            "streams after), by store and operation",
            labelnames=[*LABELS, "store", "operation"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_RunCollector(self))

    def state(self, snap: Snapshot) -> str:
        """The run's own state, unless it ended in a way it did not see (an exception)."""
        if self._lifecycle in ("failed", "stopped") and snap.state in (None, "starting", "running"):
            return self._lifecycle
        return snap.state or self._lifecycle

    def observe(self, *clients: S3Client) -> None:
        """Time every request of these clients; the store label is the app's name for the
        store (old, new), whichever way the copy goes."""
        for client in clients:
            store = "old" if client.store.name == OLD_STORE else "new"
            client.on_request = self._observer(store)

    def _observer(self, store: str) -> Callable[[str, float], None]:
        def observe(operation: str, seconds: float) -> None:
            labels = (self.shard, self.host, self.command, store, operation)
            self._latency.labels(*labels).observe(seconds)

        return observe

    def write(self) -> None:
        """Replace the file; a failure is reported once and does not stop the run (the
        metrics are for watchers, like the status file)."""
        from prometheus_client import write_to_textfile

        try:
            write_to_textfile(str(self.path), self.registry)
        except OSError as exc:
            if not self._write_failed and self.out is not None:
                self.out.line(
                    f"cannot write the metrics file {self.path} ({exc.strerror or exc}): "
                    "the run goes on without it"
                )
            self._write_failed = True
        else:
            self._write_failed = False

    async def _keep_written(self) -> None:
        while True:
            self.write()
            await asyncio.sleep(self.interval)

    @contextlib.asynccontextmanager
    async def published(self) -> AsyncIterator[None]:
        """Write the file every `interval` seconds while the block runs, and once when it
        ends, with the final state."""
        self._lifecycle = "running"
        writer = asyncio.create_task(self._keep_written())
        try:
            yield
        except (asyncio.CancelledError, KeyboardInterrupt):
            self._lifecycle = "stopped"
            raise
        except BaseException:
            self._lifecycle = "failed"
            raise
        else:
            self._lifecycle = "finished"
        finally:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
            self.write()


@contextlib.asynccontextmanager
async def published(metrics: RunMetrics | None) -> AsyncIterator[None]:
    """`metrics.published()`, or nothing when the run writes no metrics file."""
    if metrics is None:
        yield
        return
    async with metrics.published():
        yield


def check_metrics_path(path: Path, what: str = "--metrics-file") -> str | None:
    """Why `path` cannot be the metrics file, or None: checked before a run starts."""
    if path.is_dir():
        return f"{what} {path} is a directory: name the file, e.g. {path}/blobshift.prom"
    if not path.parent.is_dir():
        return f"{what} {path}: directory {path.parent} does not exist: create it or fix the path"
    if path.suffix != ".prom":
        return (
            f"{what} {path}: the name must end in .prom (node_exporter's textfile collector "
            "reads only those)"
        )
    return None
