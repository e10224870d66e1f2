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

import asyncio
import bisect
import heapq
import json
import string
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from blobshift.runfiles import is_sealed, sealed, utc_iso, write_json_atomic

if TYPE_CHECKING:  # sources.py lists by these ranges
    from blobshift.s3.client import S3Client
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

    def summary(self) -> str:
        """One line for the operator: what the plan holds and what finding it cost."""
        return (
            f"{self.count} range{'s' if self.count != 1 else ''} of {self.source} "
            f"(prefix {self.prefix!r}): {self.sample_requests} list requests, "
            f"{self.sampled_keys:,} keys sampled; rough estimate (for balance, not a count): "
            f"{self.estimated_keys:,} keys in all"
        )

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


# -- the planner: split points from a cheap sample of the listing ------------------------
#
# A probe is one listing page after a start string s. It tells exactly: no key in
# (s, first), n keys in [first, last], and, when not truncated, no key after last. The
# probes, kept in key order, leave gaps (one probe's last key, the next probe's start] of
# unknown count. A gap's count is estimated as its width times its neighbours' density,
# where a key's position is a number whose digits are its characters after the prefix,
# each depth in the base of the characters sampled keys have there (see _Sampler.learn:
# hex, dated and worded keys spread about evenly over their positions, and every middle
# is a printable key). The gap with the largest estimate is probed at its middle, until
# the budget is spent or no gap is left; the split points are the sampled keys nearest
# each quantile. Deterministic: the same listing gives the same plan.
#
# Key families (the keys up to their first "/" after the prefix: "a/", "blobs/") of
# different shapes share a bucket, so each family is sampled on its own scale (its own
# alphabets and probes), found first by skipping from each family to the next (one
# request each). Widths over-count where keys fill few of the positions they span (each
# dated folder holding a narrow run of sequential hex names: a millionfold), about
# evenly within a family but not across families: a family with folders is counted by
# a sample path (_Planner.walk: subfolders counted by skipping, down to one folder of
# keys counted in full), and its gap estimates scaled so it holds that count.

PAGE_KEYS = 1000
# Depths a position reads (keys that share more count as one point: S3 keys are at most
# 1024 bytes).
POSITION_DIGITS = 256
# A gap's estimate is capped here (a width over positions that count as one point): far
# above any real count, so a family's count (see _Sampler.gaps) can scale it down.
MAX_ESTIMATE = 1e250
# Probes sent at once (the gaps with the largest estimates): the sample's wall time.
PARALLEL_PROBES = 8
# Sampled keys kept at most (as candidate split points, every n-th of each page when the
# budget could sample more): memory stays small.
MAX_KEPT = 250_000
LEARN_PER_PAGE = 128  # keys of each page the alphabets learn from (their CPU time)
# Characters seen at a depth that may be all it has (months, days: see _Sampler.learn).
FEW_SEEN = 4
# A midpoint probe keeps this many characters past the shortest prefix inside its gap.
EXTRA_DIGITS = 2
# How much longer than its gap's common prefix a probe's shared prefix must be for a jump
# (see _Sampler.jump): a page of 1000 hex keys shares about log16(keys / 1000) more.
JUMP_DEPTHS = 12
TOP = "\U0010ffff"  # sorts after every character
# Families found one request each, at most this many (and a quarter of the budget):
# beyond, or where keys have no "/" after the prefix, the listing is one family.
MAX_FAMILIES = 64
# A sample path (see _Planner.walk) counts a folder's subfolders up to this many, and
# the keys of the folder it ends in up to this many pages.
MAX_CHILDREN = 40
MAX_LEAF_PAGES = 4

# (start_after, max_keys) -> (keys after start_after in UTF-8 byte order, truncated?)
Lister = Callable[[str, int], Awaitable[tuple[list[str], bool]]]


def default_budget(ranges: int) -> int:
    """List requests a plan of `ranges` may spend by default (a full listing of 100M keys
    is 100,000). At least 192: on key families of different shapes fewer left 4 hosts
    1.5-1.9x their even share, 192 and more 1.05-1.12x (synthetic_s3.KeySpace, 1M-10M)."""
    return max(192, 64 + 8 * ranges)


@dataclass(frozen=True)
class Sample:
    """What sampling found: split points and what finding them cost."""

    bounds: tuple[str, ...]
    requests: int
    sampled_keys: int
    estimated_keys: int  # sampled keys plus the (calibrated) estimates of the gaps
    exact: bool  # the whole listing was seen: counts are exact
    families: int = 1  # key families sampled each on its own scale


@dataclass
class _Probe:
    start: str
    n: int
    last: str | None  # None: no key in (start, next probe's start]
    truncated: bool
    kept: list[tuple[int, str]]  # (rank within the probe, key), thinned
    first_key: str | None
    joined: bool = False  # the gap after it is known empty
    # Positions of start, first and last key (of start when none), by the alphabet.
    lo: int = 0
    first: int = 0
    hi: int = 0

    @property
    def shared(self) -> str:
        """The prefix its keys share (its start when it has none)."""
        if self.first_key is None or self.last is None:
            return self.start
        return _common(self.first_key, self.last)

    def keys_in(self, width: int) -> float | None:
        """Keys in `width` at its density between its first and last key (not from its
        start: that stretch is known empty and often wide); None: too few keys to tell."""
        if self.n < 2:
            return None
        return _ratio(width * (self.n - 1), self.hi - self.first)


def _ratio(num: int, den: int) -> float:
    """num / den for the huge integers positions are, capped at MAX_ESTIMATE."""
    try:
        return min(num / max(den, 1), MAX_ESTIMATE)
    except OverflowError:
        return MAX_ESTIMATE


_DIGITS = frozenset(string.digits)
_HEX = _DIGITS | frozenset("abcdef")
_LETTER_CLASSES = (frozenset(string.ascii_lowercase[6:]), frozenset(string.ascii_uppercase))


def _filled(seen: list[str], refuted: set[str]) -> set[str]:
    """The characters seen at a depth, and the rest of a class they suggest: a sample
    sees few of a depth's characters (a page's keys are consecutive, and probes start
    low in each region), and hex or decimal keys use them all. All hex where a digit is
    seen; a class of letters where two of it are (not one: a name's letters)."""
    out = set(seen)
    if _DIGITS.intersection(seen):
        if len(seen) <= FEW_SEEN:
            out |= _HEX - refuted
        else:  # many digits and no hex letter among them: decimals (zero-padded numbers)
            out |= _HEX if _HEX.difference(_DIGITS).intersection(seen) else _DIGITS
    for group in _LETTER_CLASSES:
        if len(group.intersection(seen)) >= 2:
            out |= group
    return out


def _common(a: str, b: str) -> str:
    """The longest prefix `a` and `b` share."""
    n = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return a[:n]


def _after(ch: str) -> str:
    """The next printable character after `ch` (`ch` itself at the top)."""
    cp = ord(ch) + 1
    cp = 0xA0 if 0x7F <= cp < 0xA0 else 0xE000 if 0xD800 <= cp < 0xE000 else cp
    return chr(cp) if cp < 0x110000 else ch


class _Sampler:
    """The probes of one key family (every key starting with `prefix`) and its scale."""

    def __init__(self, prefix: str, budget: int, page: int) -> None:
        self.prefix = prefix
        self.stride = max(1, budget * page // MAX_KEPT)
        self.probes: list[_Probe] = []
        # Per depth after the prefix, the printable characters seen there in sampled keys
        # (sorted), and the digits of positions: slots[i] (see learn); a key's digit at
        # depth i is the index of the last slot at or below its character (the end of a
        # key counts as the first). A depth where every key has the same character only
        # doubles widths, so a dated or worded path spreads as its varying characters do.
        self.alphabets: list[list[str]] = []
        self.seen: list[set[str]] = []
        self.refuted: list[set[str]] = []  # hex characters a lead-in showed unused (learn)
        self.slots: list[list[str]] = []
        self.weights: list[int] = []  # a digit's weight per depth
        self.end = 1  # the position past every key
        # One folder per depth on the family's sample path (see _Planner.walk), and the
        # keys each holds, the family first (empty: not counted; see gaps).
        self.path: list[tuple[str, float]] = []

    def learn(self, keys: list[str], start: str = "", first: str | None = None) -> None:
        """Add the keys' characters to the alphabets; where one grows, every position moves.

        A probe's lead-in, (start, first key) empty, shows the characters above start's
        at each depth past where the two part unused (there, at least): at a depth where
        few characters are seen (months, days), those are not filled in."""
        grew = False
        skip = len(self.prefix)
        part = len(_common(start, first)) if first is not None else skip - 1
        if not start.startswith(self.prefix):
            part = len(start)  # a start below the family: its characters are another's
        for e in range(max(part + 1, skip), min(len(start), skip + POSITION_DIGITS)):
            while e - skip >= len(self.refuted):
                self.alphabets.append([])
                self.seen.append(set())
                self.refuted.append(set())
            ch = start[e]
            no = {h for h in _HEX if h > ch or (h == ch and e == len(start) - 1)}
            if e > skip and start[e - 1] not in self.seen[e - 1 - skip]:
                break  # off the keys' paths: what it shows holds there only
            if not no <= self.refuted[e - skip]:
                self.refuted[e - skip] |= no
                grew = True
        for key in keys:
            for i, ch in enumerate(key[skip : skip + POSITION_DIGITS]):
                if i == len(self.alphabets):
                    self.alphabets.append([])
                    self.seen.append(set())
                    self.refuted.append(set())
                if ch not in self.seen[i] and not (ch < " " or "\x7f" <= ch < "\xa0"):
                    self.seen[i].add(ch)
                    bisect.insort(self.alphabets[i], ch)
                    grew = True
        if not grew:
            return
        # A digit per character seen (and per one its class suggests, _filled) and one for
        # the characters just after each (those not seen yet, between it and the next
        # seen or above them all): where probes go to find the characters a sample has
        # not seen, and where the listing ends.
        self.slots = [
            sorted(_filled(at, no).union(map(_after, at)))
            for at, no in zip(self.alphabets, self.refuted, strict=True)
        ]
        self.weights = [1] * len(self.slots)
        for i in range(len(self.slots) - 2, -1, -1):
            self.weights[i] = self.weights[i + 1] * max(len(self.slots[i + 1]), 1)
        self.end = self.weights[0] * max(len(self.slots[0]), 1) if self.slots else 1
        for probe in self.probes:
            self.place(probe)

    def place(self, probe: _Probe) -> None:
        probe.lo = self.pos(probe.start)
        probe.first = probe.lo if probe.first_key is None else self.pos(probe.first_key)
        probe.hi = probe.lo if probe.last is None else self.pos(probe.last)

    def pos(self, key: str) -> int:
        """Where `key` (or a probe string) lies: comparable while the alphabets stay."""
        if not key.startswith(self.prefix):
            return 0 if key < self.prefix else self.end
        value = 0
        tail = key[len(self.prefix) :][: len(self.slots)]
        for ch, seen, slots, weight in zip(tail, self.seen, self.slots, self.weights, strict=False):
            value += max(bisect.bisect_right(slots, ch) - 1, 0) * weight
            if ch not in seen:
                # A character not seen here (only probe strings have them): the start of
                # its slot, where the keys it stands for begin.
                break
        return value

    def make_probe(self, start: str, keys: list[str], truncated: bool) -> _Probe:
        stride = self.stride
        kept = [(i + 1, k) for i, k in enumerate(keys) if i % stride == 0 or i == len(keys) - 1]
        self.learn(keys[:: max(1, len(keys) // LEARN_PER_PAGE)], start, keys[0] if keys else None)
        probe = _Probe(
            start,
            len(keys),
            keys[-1] if keys else None,
            truncated,
            kept,
            keys[0] if keys else None,
        )
        self.place(probe)
        return probe

    def take(self, start: str, keys: list[str], truncated: bool) -> _Probe:
        """A page of the listing after `start`: its keys in this family, as a probe."""
        inside = len(keys)
        while inside and not keys[inside - 1].startswith(self.prefix):
            inside -= 1  # keys past the family: it ends before them
        if inside < len(keys):
            keys, truncated = keys[:inside], False
        if not self.probes:
            self.probes = [self.make_probe(start, keys, truncated)]
            return self.probes[0]
        return self.insert(start, keys, truncated)

    def insert(self, start: str, keys: list[str], truncated: bool) -> _Probe:
        """A probe's answer, into the sorted probes. Every probe asks for a full page, so
        keys it returns beyond the next probe's start are that probe's (or lie in gaps
        already known empty): they are dropped and the gap between the two is closed."""
        at = bisect.bisect_right([p.start for p in self.probes], start)
        before = self.probes[at - 1]
        if before.last is not None and before.last > start:
            # It starts inside a page already listed (a sample path's first page, after
            # the discovery's): only the keys past that page are new, or they count twice.
            keys = [k for k in keys if k > before.last]
            if not keys:
                return before
            start = before.last
        after = self.probes[at] if at < len(self.probes) else None
        joined = False
        if after is not None and (not truncated or (keys and keys[-1] > after.start)):
            keys = [k for k in keys if k <= after.start]
            joined = True
        probe = self.make_probe(start, keys, truncated)
        probe.joined = joined
        if before.last == start:
            before.joined = True
        self.probes.insert(at, probe)
        return probe

    def gaps(self) -> list[float | None]:
        """Estimated keys between each probe and the next one (or the end); None: known.
        By width and density, on the family's scale: where a sample path counted the
        family (about: see _Planner.walk), the gaps hold what the probes did not see."""
        raw = self.raw_gaps()
        if not self.path:
            return raw
        unseen = self.path[0][1] - sum(p.n for p in self.probes)
        total = sum(est for est in raw if est is not None)
        scale = unseen / total if unseen > 0 and total > 0 else 1.0
        return [None if est is None else est * scale for est in raw]

    def raw_gaps(self) -> list[float | None]:
        """Gaps' estimates by width alone: a gap's width times its neighbours' mean
        density (the sample's where neither holds enough keys to tell)."""
        dense = [p for p in self.probes if p.n >= 2]
        keys, span = sum(p.n - 1 for p in dense), sum(p.hi - p.first for p in dense)
        out: list[float | None] = []
        for i, probe in enumerate(self.probes):
            nxt = self.probes[i + 1] if i + 1 < len(self.probes) else None
            if probe.joined or (nxt is None and not probe.truncated):
                out.append(None)
                continue
            width = max((self.end if nxt is None else nxt.lo) - probe.hi, 0)
            known = [
                e for p in (probe, nxt) if p is not None and (e := p.keys_in(width)) is not None
            ]
            out.append(sum(known) / len(known) if known else _ratio(width * keys, span))
        return out

    def jump(self, i: int) -> str | None:
        """Past half of the prefix probe i's keys share beyond where gap i's ends part,
        when that prefix goes on for JUMP_DEPTHS characters or more (long names in one
        folder): the keys' density, measured that deep, would be absurd over the gap,
        and a midpoint would walk down the name one character per probe. Each jump
        halves what is left; the first past the cluster tells where it ends."""
        probe, nxt = self.probes[i], self.probes[i + 1] if i + 1 < len(self.probes) else None
        shared = probe.shared
        outer = len(_common(probe.last or probe.start, nxt.start if nxt else self.prefix))
        if probe.n < 2 or len(shared) - outer < JUMP_DEPTHS:
            return None
        cut = (outer + len(shared)) // 2
        skip = len(self.prefix)
        if any(len(seen) > 1 for seen in self.seen[max(outer - skip, 0) : cut - skip]):
            return None  # the keys vary there (dated folders): a midpoint finds their scale
        text = shared[:cut] + TOP
        low = probe.last or probe.start
        return text if low < text and (nxt is None or text < nxt.start) else None

    def midpoint(self, i: int, part: int = 1, parts: int = 2) -> str:
        """A probe string `part`/`parts` of the way across gap i (its middle by default;
        its low end when none fits between)."""
        probe = self.probes[i]
        nxt = self.probes[i + 1] if i + 1 < len(self.probes) else None
        low = probe.last if probe.last is not None else probe.start
        top = self.end if nxt is None else nxt.lo
        mid = probe.hi + (top - probe.hi) * part // parts
        # The middle's first digits, EXTRA_DIGITS past the shortest prefix inside the gap
        # (a probe at that prefix would start low in every region: depths seen only low
        # would never be sampled high).
        text, found, extra = self.prefix, "", 0
        for at, weight in zip(self.slots, self.weights, strict=True):
            digit, mid = divmod(mid, weight)
            if not at:
                break
            text += at[digit]
            if nxt is not None and text >= nxt.start:
                break
            if low < text:
                found = text
                extra += 1
                if extra > EXTRA_DIGITS:
                    break
        return found or low


class _Planner:
    """Finds the key families, then probes the largest gaps of any family."""

    def __init__(self, lister: Lister, prefix: str, budget: int, page: int) -> None:
        self.lister = lister
        self.prefix = prefix
        self.budget = budget
        self.page = page
        self.requests = 0
        self.families: list[_Sampler] = []

    async def fetch(self, start_after: str) -> tuple[list[str], bool]:
        self.requests += 1
        return await self.lister(start_after, self.page)

    def family_of(self, key: str) -> str | None:
        cut = key.find("/", len(self.prefix))
        return None if cut < 0 else key[: cut + 1]

    async def discover(self) -> None:
        """A page at the listing's start, then one past each family found, until the
        listing ends: each page starts the families it holds."""
        pages: list[tuple[str, list[str], bool]] = []
        names: list[str] = []
        start, loose = "", False
        most = min(MAX_FAMILIES, max(2, self.budget // 4))
        while True:
            keys, truncated = await self.fetch(start)
            pages.append((start, keys, truncated))
            found = [self.family_of(k) for k in keys]
            loose = None in found
            names += [f for f in dict.fromkeys(found) if f is not None and f not in names]
            if loose or not truncated or self.requests >= self.budget or len(names) >= most:
                break
            start = names[-1] + TOP
        if loose or not names or (truncated and len(names) >= most):
            self.families = [_Sampler(self.prefix, self.budget, self.page)]
            for start, keys, truncated in pages:
                self.families[0].take(start, keys, truncated)
            return
        own = {name: _Sampler(name, self.budget, self.page) for name in names}
        self.families = list(own.values())
        for start, keys, truncated in pages:
            low = 0
            for high in range(1, len(keys) + 1):  # runs of one family's keys
                if high < len(keys) and keys[high].startswith(str(self.family_of(keys[low]))):
                    continue
                after = start if low == 0 else keys[low - 1]
                more = truncated if high == len(keys) else False
                own[str(self.family_of(keys[low]))].take(after, keys[low:high], more)
                low = high

    async def walk(self, family: _Sampler, spend: int) -> None:
        """The family's sample path: from the family down, a folder's subfolders found
        by skipping from each to the next (each a sampled page too), into the middle one,
        down to a folder of keys only, counted in full. A folder holds its subfolders'
        count times the one counted below: dated folders hold about equal counts.
        Requests stop at `spend`: a path not finished by then counts nothing."""
        folder, path = family.prefix, list[tuple[str, int]]()
        while True:
            children: list[str] = []
            start, direct, pages, closed = folder, 0, 0, False
            while (
                self.requests < spend
                and len(children) <= MAX_CHILDREN
                and (not direct or pages < MAX_LEAF_PAGES)
            ):
                keys, truncated = await self.fetch(start)
                pages += 1
                family.take(start, keys, truncated)
                inside = [k for k in keys if k.startswith(folder)]
                for key in inside:
                    cut = key.find("/", len(folder))
                    if cut < 0:
                        direct += 1
                    elif not children or children[-1] != key[: cut + 1]:
                        children.append(key[: cut + 1])
                if len(inside) < len(keys) or not truncated:
                    closed = True
                    break
                last = inside[-1]
                start = children[-1] + TOP if children and last.startswith(children[-1]) else last
            if not closed or (direct and children) or not (direct or children):
                return  # too big to count, or keys beside subfolders: no path
            if direct:
                break
            path.append((folder, len(children)))
            folder = children[len(children) // 2]
        held = float(direct)
        family.path = [(folder, held)]
        for name, count in reversed(path):
            held *= count
            family.path.insert(0, (name, held))

    async def run(self) -> None:
        await self.discover()
        spend = self.requests + self.budget // 3  # for the sample paths, at most
        for family in self.families:
            first = family.probes[0].first_key or ""
            if family.prefix != self.prefix and "/" in first[len(family.prefix) :]:
                await self.walk(family, spend)  # it has folders
        while self.requests < self.budget:
            gaps = [
                (est, f, i)
                for f, family in enumerate(self.families)
                for i, est in enumerate(family.gaps())
                if est is not None
            ]
            if not gaps:
                return
            # Probes go to the gaps with the largest estimates, several (spread across it)
            # to one each still PARALLEL_PROBES times any other family's largest: a family
            # of one gap (decimals whose end is not found yet) is not found out one probe
            # per round, while the others wait.
            best = [0.0] * len(self.families)
            for est, f, _ in gaps:
                best[f] = max(best[f], est)
            shares: dict[tuple[int, int], int] = {}
            heap = [(-est, f, i, est) for est, f, i in gaps]
            heapq.heapify(heap)
            for _ in range(min(PARALLEL_PROBES, self.budget - self.requests)):
                if not heap:
                    break
                _, f, i, est = heapq.heappop(heap)
                shares[f, i] = shares.get((f, i), 0) + 1
                others = max((b for g, b in enumerate(best) if g != f), default=float("inf"))
                if est / (shares[f, i] + 1) > others / PARALLEL_PROBES:
                    heapq.heappush(heap, (-est / (shares[f, i] + 1), f, i, est))
            starts: list[tuple[_Sampler, str]] = []
            for (f, i), parts in sorted(shares.items()):
                family = self.families[f]
                jump = family.jump(i) if parts == 1 else None
                if jump is not None:
                    starts.append((family, jump))
                    continue
                texts = dict.fromkeys(family.midpoint(i, k, parts + 1) for k in range(1, parts + 1))
                starts += [(family, text) for text in texts]
            pages = await asyncio.gather(*(self.fetch(start) for _, start in starts))
            for (family, start), (keys, more) in zip(starts, pages, strict=True):
                family.take(start, keys, more)

    def split(self, ranges: int) -> Sample:
        """Sampled keys whose estimated cumulative rank is nearest each r/ranges."""
        ranks: list[float] = []
        keys: list[str] = []
        total = 0.0
        exact = True
        probes = [p for family in self.families for p in family.probes]
        gaps = [est for family in self.families for est in family.gaps()]
        for probe, est in zip(probes, gaps, strict=True):
            ranks += [total + r for r, _ in probe.kept]
            keys += [k for _, k in probe.kept]
            total += probe.n
            if est is not None:
                total += est
                exact = False
        last = max((i for i, p in enumerate(probes) if p.n), default=0)
        if keys and all(est is None for est in gaps[last:]):
            # A bound at the listing's (known) last key would leave the last range empty.
            ranks.pop()
            keys.pop()
        bounds: list[str] = []
        j = 0
        for r in range(1, ranges):
            if j >= len(keys):
                break
            target = r * total / ranges
            k = bisect.bisect_left(ranks, target, lo=j)
            if k == len(keys) or (k > j and target - ranks[k - 1] <= ranks[k] - target):
                k -= 1
            bounds.append(keys[k])
            j = k + 1
        return Sample(
            bounds=tuple(bounds),
            requests=self.requests,
            sampled_keys=sum(p.n for p in probes),
            estimated_keys=round(total),
            exact=exact,
            families=len(self.families),
        )


async def sample_bounds(
    lister: Lister, prefix: str, ranges: int, budget: int, page: int = PAGE_KEYS
) -> Sample:
    """Split points for `ranges` ranges of about equal key counts, from at most `budget`
    list requests of `page` keys (deterministic: the same listing gives the same bounds).
    Fewer distinct keys than ranges give fewer ranges."""
    if ranges < 1 or budget < 1:
        raise ValueError("ranges and budget must be at least 1")
    planner = _Planner(lister, prefix, budget, page)
    await planner.run()
    return planner.split(ranges)


async def plan_ranges(client: S3Client, prefix: str, ranges: int, budget: int) -> RangePlan:
    """A plan of `ranges` ranges of the client's bucket under `prefix`, from at most
    `budget` list requests."""

    async def lister(start_after: str, max_keys: int) -> tuple[list[str], bool]:
        page, truncated = await client.list_page(prefix, start_after, max_keys)
        return [o.key for o in page], truncated

    found = await sample_bounds(lister, prefix, ranges, budget)
    return RangePlan(
        source=f"{client.store.url}/{client.store.bucket}",
        prefix=prefix,
        bounds=found.bounds,
        sample_requests=found.requests,
        sampled_keys=found.sampled_keys,
        estimated_keys=found.estimated_keys,
        created=utc_iso(),
    )
