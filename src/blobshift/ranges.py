"""Range shards: the old bucket's key space cut into contiguous ranges, each listed only
by the host that owns it, so N hosts together list each store about once.

A plan is made once per migration (`blobshift plan-ranges`) and kept as a sealed JSON file;
a backfill records the plan's digest in its checkpoint, so a plan changed under a running
pass is refused rather than silently listing other ranges.

Range r holds the keys k with bounds[r-1] < k <= bounds[r]: the first range starts at the
prefix's first key, the last one has no upper bound. Host I of N owns the ranges
r = I, I + N, I + 2N, ...: with more ranges than hosts, uneven ranges even out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blobshift.runfiles import is_sealed, sealed, utc_iso, write_json_atomic

if TYPE_CHECKING:  # sources.py lists by these ranges
    from blobshift.sources import Shard

PLAN_VERSION = 1


class RangePlanError(ValueError):
    """A plan file that cannot be used, phrased for the operator."""


@dataclass(frozen=True, slots=True)
class KeyRange:
    """Keys k with `after` < k <= `upto` (`upto` None: no upper bound)."""

    index: int
    after: str
    upto: str | None

    def holds(self, key: str) -> bool:
        return key > self.after and (self.upto is None or key <= self.upto)


@dataclass(frozen=True)
class RangePlan:
    """Split points of one store's listing under `prefix` (`source`: its URL and bucket)."""

    source: str
    prefix: str
    bounds: tuple[str, ...]
    # How the bounds were found: list requests spent, keys the sample saw, estimated total.
    sample_requests: int = 0
    sampled_keys: int = 0
    estimated_keys: int = 0
    created: str = ""

    def __post_init__(self) -> None:
        if any(b >= c for b, c in zip(self.bounds, self.bounds[1:], strict=False)):
            raise RangePlanError("range bounds must increase strictly")
        if any(not b.startswith(self.prefix) for b in self.bounds):
            raise RangePlanError(f"every range bound must start with the prefix {self.prefix!r}")

    @property
    def count(self) -> int:
        return len(self.bounds) + 1

    def ranges(self) -> list[KeyRange]:
        lows = ("", *self.bounds)
        highs: tuple[str | None, ...] = (*self.bounds, None)
        return [KeyRange(i, lo, hi) for i, (lo, hi) in enumerate(zip(lows, highs, strict=True))]

    def owned(self, shard: Shard) -> list[KeyRange]:
        """The ranges shard I/N lists, in key order."""
        return [r for r in self.ranges() if r.index % shard.count == shard.index]

    def body(self) -> dict[str, Any]:
        return {
            "version": PLAN_VERSION,
            "source": self.source,
            "prefix": self.prefix,
            "bounds": list(self.bounds),
            "sample_requests": self.sample_requests,
            "sampled_keys": self.sampled_keys,
            "estimated_keys": self.estimated_keys,
            "created": self.created or utc_iso(),
        }

    @property
    def digest(self) -> str:
        """What a checkpoint records: the same digest means the same ranges."""
        return str(sealed({"prefix": self.prefix, "bounds": list(self.bounds)})["sha256"])[:16]

    def save(self, path: Path) -> None:
        write_json_atomic(path, sealed(self.body()))

    @classmethod
    def load(cls, path: Path) -> RangePlan:
        fix = "make it again with: blobshift plan-ranges (before the pass starts)"
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise RangePlanError(f"range plan {path} does not exist: {fix}") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RangePlanError(
                f"range plan {path} is unreadable ({type(exc).__name__}): {fix}"
            ) from None
        if not is_sealed(raw):
            raise RangePlanError(f"range plan {path} is truncated or was edited: {fix}")
        if raw.get("version") != PLAN_VERSION:
            raise RangePlanError(f"range plan {path} has an unknown version: {fix}")
        bounds = raw.get("bounds")
        if not isinstance(bounds, list) or not all(isinstance(b, str) for b in bounds):
            raise RangePlanError(f"range plan {path} has no list of bounds: {fix}")
        try:
            return cls(
                source=str(raw["source"]),
                prefix=str(raw["prefix"]),
                bounds=tuple(bounds),
                sample_requests=int(raw.get("sample_requests", 0)),
                sampled_keys=int(raw.get("sampled_keys", 0)),
                estimated_keys=int(raw.get("estimated_keys", 0)),
                created=str(raw.get("created", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RangePlanError(f"range plan {path}: {exc}: {fix}") from None
