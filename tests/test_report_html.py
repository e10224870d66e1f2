"""The runbook's report page (blobshift.lab.report_html) and the backfill samples it charts.

The page is rendered from a report.json a real runbook run wrote (tests/recorded/, with the
machine-specific paths replaced) and opened in headless Chromium: what the browser's DOM
shows is asserted, and a screenshot goes to build/test-artifacts/. The end-to-end run in
tests/test_runbook.py checks the page a live run writes beside its report.json.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest

from blobshift.lab.backfill_samples import BackfillSampler
from blobshift.lab.report_html import render, write_beside
from blobshift.runfiles import sealed, write_json_atomic

REPO = Path(__file__).resolve().parents[1]
RECORDED = Path(__file__).parent / "recorded" / "runbook-report.json"
ARTIFACTS = REPO / "build" / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FETCHING_TAGS = {"script", "link", "img", "iframe", "object", "embed", "image", "use", "audio"}
FETCHING_ATTRS = {"src", "href", "xlink:href", "srcset", "action", "data", "poster"}


class References(HTMLParser):
    """Whatever in a page a browser would fetch: elements that load something, attributes
    naming a resource, url() and @import in CSS."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_style = tag == "style"
        if tag in FETCHING_TAGS:
            self.found.append(f"<{tag}>")
        for name, value in attrs:
            if name in FETCHING_ATTRS and value and not value.startswith("#"):
                self.found.append(f"{name}={value}")
            if name == "style" and value and re.search(r"url\(|@import", value):
                self.found.append(f"style={value}")

    def handle_endtag(self, tag: str) -> None:
        self._in_style = False

    def handle_data(self, data: str) -> None:
        if self._in_style and re.search(r"url\(|@import", data):
            self.found.append("url() or @import in <style>")


def external_references(page: str) -> list[str]:
    """What in `page` would be fetched when viewed (nothing, for a self-contained page)."""
    refs = References()
    refs.feed(page)
    refs.close()
    return refs.found


class Texts(HTMLParser):
    """The text of every element that has an id, and the cells of every table row."""

    def __init__(self) -> None:
        super().__init__()
        self.by_id: dict[str, str] = {}
        self.rows: list[list[str]] = []
        self._open: list[tuple[str, str | None]] = []  # (tag, id)
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("meta", "br", "circle", "line", "rect", "polyline"):
            return
        ident = dict(attrs).get("id")
        self._open.append((tag, ident))
        if ident:
            self.by_id[ident] = ""
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        for _, ident in self._open:
            if ident:
                self.by_id[ident] += data
        if self._cell is not None:
            self._cell.append(data)


def chromium(*args: str, profile: Path, timeout: float = 90) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


@pytest.fixture
def recorded() -> dict:
    return json.loads(RECORDED.read_text())


needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="needs Debian's chromium (make deps)"
)


@needs_chromium
def test_recorded_report_in_chromium(recorded, tmp_path):
    """A real run's report, as the browser shows it: verdict, steps, counts, logged list."""
    page = write_beside(recorded, tmp_path / "report.json")
    assert page == tmp_path / "report.html"
    text = page.read_text()
    assert external_references(text) == []

    dom = chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile").stdout
    seen = Texts()
    seen.feed(dom)
    assert seen.by_id["verdict"].strip() == "PASSED"
    assert seen.by_id["verify-verdict"].strip() == "clean"
    assert seen.by_id["audit-verdict"].strip() == "intact"
    rows = seen.rows

    # The timeline: every step of the run, with its playbook, duration and result.
    steps = [r for r in rows if len(r) == 6 and r[-1] in ("ok", "rc 1")]
    assert [(r[0], r[1], r[3], r[5]) for r in steps] == [
        (s["step"], s["playbook"], f"{s['seconds']:.1f} s", "ok") for s in recorded["steps"]
    ]
    assert steps[0][2] == "+0:00"
    # The app: requests, writes, reads, deletes and failures of every phase, in run order.
    phases = recorded["app"]["phases"]
    shown = [r[:6] for r in rows if len(r) == 7 and r[0] in phases]
    order = ["lab-up", "phase1", "phase2", "phase3", "phase4", "phase5", "after"]
    assert [r[0] for r in shown] == order
    for r in shown:
        c = phases[r[0]]
        assert r[1:] == [
            f"{c.get(k, 0):,}" for k in ("requests", "write", "read", "delete", "failed")
        ]
    assert ["all phases", f"{recorded['app']['requests']:,}", "", "", "", "0", ""] in rows
    # The backfill's totals, retries among them.
    t = recorded["backfill"]["totals"]
    assert [f"{t['listed']:,}", f"{t['copied']:,}", "197.0 MiB", "0", "1", "0"] in rows
    # Every blob the backfill logged, with why, and the log check's verdict on it.
    assert recorded["backfill_logged"]
    for rec in recorded["backfill_logged"]:
        assert [rec["blob_key"], rec["error"], f"{rec['size']:,}"] in rows
    assert ["0", "0", "0", "1", "0", "0"] in rows  # Found in new/old, Not found, Not referenced
    # The rate charts: two SVG line charts with a point per sample interval.
    assert dom.count("<polyline") == 2
    assert "too few samples" not in dom.lower()

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "report.png"
    shot.unlink(missing_ok=True)
    chromium(
        f"--screenshot={shot}",
        "--window-size=1280,1600",
        page.as_uri(),
        profile=tmp_path / "profile",
    )
    assert png_size(shot) == (1280, 1600)
    assert shot.stat().st_size > 20_000  # drawn, not a blank page


@needs_chromium
def test_failed_run_shows_failed(recorded, tmp_path):
    """A failed run is FAILED in the header, its failed requests and missing blobs listed."""
    report = copy.deepcopy(recorded)
    report["ok"] = False
    report["verify"]["clean"] = False
    report["app"]["phases"]["phase2"]["failed"] = 2
    report["app"]["failed"] = 2
    report["app"]["failures"] = [
        {"t": "2025-01-01T00:00:00Z", "phase": "phase2", "op": "read", "key": "k/1", "error": "X"}
    ]
    report["audit"]["missing_in_new_store"] = 1
    report["audit"]["keys"] = ["seed/lost one"]
    page = write_beside(report, tmp_path / "report.json")
    seen = Texts()
    seen.feed(chromium("--dump-dom", page.as_uri(), profile=tmp_path / "profile").stdout)
    assert seen.by_id["verdict"].strip() == "FAILED"
    assert seen.by_id["verify-verdict"].strip() == "NOT clean"
    assert seen.by_id["audit-verdict"].strip() == "BLOBS MISSING"
    assert ["2025-01-01T00:00:00Z", "phase2", "read", "k/1", "X"] in seen.rows
    assert "seed/lost one" in page.read_text()


def test_readiness_over_the_backfill_and_before_the_flip(recorded):
    report = copy.deepcopy(recorded)
    base = {"window": 20.0, "own_reads": 7}
    report["readiness_during_backfill"] = {
        **base,
        "verdict": "fallbacks",
        "app_reads": 50,
        "fallbacks": 12,
        "fallback_examples": ["blobdb/seed/<1>"],
    }
    report["readiness_before_flip"] = {
        **base,
        "verdict": "ready",
        "app_reads": 40,
        "fallbacks": 0,
        "fallback_examples": [],
    }
    page = render(report)
    assert "Flip readiness" in page
    assert '<td>over the backfill</td><td><span class="tag bad">fallbacks</span></td>' in page
    assert '<td>before the flip</td><td><span class="tag ok">ready</span></td>' in page
    assert "blobdb/seed/&lt;1&gt;" in page and "<1>" not in page
    assert "Flip readiness" not in render(recorded)  # an older report has none


def test_every_string_is_escaped(recorded):
    """Keys, errors, step titles and phase names from the report cannot inject markup."""
    report = copy.deepcopy(recorded)
    evil = '<script>alert("x")</script><img src=//x>'
    report["steps"][0]["step"] = evil
    report["app"]["phases"][evil] = {"requests": 1, "failed": 0}
    report["backfill_logged"] = [{"blob_key": evil, "error": evil, "size": 1}]
    report["check_blob_logs"]["not_found_keys"] = [evil]
    report["target"] = evil
    page = render(report)
    assert "<script" not in page and "<img" not in page
    assert page.count(html_escaped(evil)) >= 5
    assert external_references(page) == []


def html_escaped(text: str) -> str:
    return (
        text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    )


def test_without_samples_or_logs(recorded):
    """An older report (no samples, nothing logged) still renders, saying so."""
    report = {k: v for k, v in recorded.items() if k not in ("backfill_samples", "backfill_logged")}
    report["backfill"]["totals"]["logged"] = 0
    page = render(report)
    assert "Too few samples of the backfill" in page
    assert '<p id="logged" class="empty">Nothing was logged.</p>' in page
    assert render({}).startswith("<!DOCTYPE html>")  # nothing at all: an empty page, no error


def test_cli_renders_beside_the_json(recorded, tmp_path):
    src = tmp_path / "report.json"
    src.write_text(json.dumps(recorded))
    cmd = [sys.executable, "-m", "blobshift.lab.report_html"]
    done = subprocess.run([*cmd, str(src)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(tmp_path / "report.html")
    assert (tmp_path / "report.html").read_text() == render(recorded)

    missing = subprocess.run(
        [*cmd, str(tmp_path / "nope.json")], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2
    assert f"{tmp_path / 'nope.json'}: no such file" in missing.stderr
    (tmp_path / "bad.json").write_text("{not json")
    bad = subprocess.run(
        [*cmd, str(tmp_path / "bad.json")], capture_output=True, text=True, timeout=60
    )
    assert bad.returncode == 2 and "not a readable JSON report" in bad.stderr


def status(counts: dict[str, int], logs: list[str]) -> dict:
    return sealed({"state": "running", "counts": counts, "logs": logs})


def test_sampler_records_progress_and_logged(tmp_path):
    """Samples the shard status files as the engine rewrites them (real files, atomic
    replace), sums the shards, ignores a stale file, the reverse copy's and a garbled one,
    and reads the logged records the last statuses name."""
    stale = tmp_path / "migrate_backend-shard1of2-status.json"
    write_json_atomic(stale, status({"copied": 999}, []), durable=False)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    (tmp_path / "migrate_backend-reverse-status.json").write_text(
        json.dumps(status({"copied": 5000}, []))
    )
    log = tmp_path / "migrate_backend-shard0of2-blob-migration-x.txt"
    log.write_text(
        json.dumps({"blob_key": "a//b", "error": "not found in old db", "size": 3, "x": 1})
        + "\nnot json\n"
    )
    shard0 = tmp_path / "migrate_backend-shard0of2-status.json"
    steps = [
        {"copied": 0, "bytes": 0},
        {"copied": 40, "bytes": 4000, "retries": 1},
        {"copied": 100, "bytes": 10000, "logged": 1, "retries": 2},
    ]
    with BackfillSampler(tmp_path, interval=0.02) as sampler:
        for counts in steps:
            write_json_atomic(shard0, status(counts, [str(log)]), durable=False)
            n = len(sampler.samples)
            deadline = time.monotonic() + 10
            while len(sampler.samples) == n and time.monotonic() < deadline:
                time.sleep(0.01)
        # The second shard starts; the sum covers both.
        write_json_atomic(stale, status({"copied": 7, "bytes": 70}, []), durable=False)
        (tmp_path / "migrate_backend-shard9of9-status.json").write_text("{")
    copied = [s["copied"] for s in sampler.samples]
    assert copied == [0, 40, 100, 107]
    last = sampler.samples[-1]
    assert (last["bytes"], last["logged"], last["retries"]) == (10070, 1, 2)
    ts = [s["t"] for s in sampler.samples]
    assert ts == sorted(ts) and ts[0] >= 0
    assert sampler.logged() == [{"blob_key": "a//b", "error": "not found in old db", "size": 3}]


def test_sampler_is_bounded(tmp_path):
    sampler = BackfillSampler(tmp_path, interval=0.1, max_samples=10)
    shard = tmp_path / "migrate_backend-status.json"
    sampler._t0 = time.time() - 1
    for i in range(35):
        write_json_atomic(shard, status({"copied": i}, []), durable=False)
        os_utime_later(shard, i)
        sampler.sample()
    assert len(sampler.samples) <= 11
    assert sampler.samples[0]["copied"] == 0 and sampler.samples[-1]["copied"] == 34
    assert sampler.interval > 0.1  # looks less often once it had to thin out


def os_utime_later(path: Path, i: int) -> None:
    """A distinct mtime per write (the sampler keys changes on it)."""
    t = time.time() + i
    os.utime(path, (t, t))
