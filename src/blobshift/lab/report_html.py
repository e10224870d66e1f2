"""The demo's report as one self-contained HTML page, beside its report.json.

Inline CSS and inline SVG charts drawn here: nothing is fetched when the page is viewed
(no script, no font, no image from elsewhere). It shows the verdict, the timeline of the
steps, the backfill (totals, retries and its rate over time from the runbook's samples of
the status files), the app's requests and failures per phase, the verify gate, the audit
and every blob the backfill logged. Every string from the report is escaped.

    python -m blobshift.lab.report_html demo-output/report.json   # writes report.html beside
"""

from __future__ import annotations

import argparse
import html
import itertools
import json
import math
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa;
  --ok: #1a7f37; --bad: #cf222e; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--ink); background: #fff;
  font: 14px/1.45 -apple-system, "Segoe UI", "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1120px; margin: 0 auto; padding: 0 24px 40px; }
header { border-bottom: 1px solid var(--line); background: var(--soft); }
header .inner { max-width: 1120px; margin: 0 auto; padding: 20px 24px 16px; }
h1 { font-size: 22px; margin: 0 0 6px; font-weight: 600; }
h2 { font-size: 17px; margin: 28px 0 10px; padding-bottom: 4px;
  border-bottom: 1px solid var(--line); font-weight: 600; }
h3 { font-size: 14px; margin: 16px 0 6px; font-weight: 600; }
.meta { color: var(--muted); margin: 0; }
.verdict { display: inline-block; padding: 3px 10px; border-radius: 4px; color: #fff;
  font-weight: 600; font-size: 13px; letter-spacing: .02em; vertical-align: middle;
  margin-right: 8px; }
.verdict.ok, .tag.ok { background: var(--ok); }
.verdict.bad, .tag.bad { background: var(--bad); }
.tag { display: inline-block; padding: 0 7px; border-radius: 3px; color: #fff;
  font-size: 12px; font-weight: 600; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(135px, 1fr));
  gap: 10px; margin-top: 14px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 6px;
  padding: 8px 12px; }
.card .n { font-size: 20px; font-weight: 600; font-variant-numeric: tabular-nums; }
.card .l { color: var(--muted); font-size: 12px; }
.card.bad .n { color: var(--bad); }
table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { background: var(--soft); font-weight: 600; font-size: 13px; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.bad { color: var(--bad); font-weight: 600; }
code, .mono { font-family: ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace;
  font-size: 12.5px; word-break: break-all; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr));
  gap: 12px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 8px; }
figcaption { color: var(--muted); font-size: 12px; margin-bottom: 4px; }
.note { color: var(--muted); font-size: 12px; }
.empty { color: var(--muted); font-style: italic; }
svg text { font: 11px -apple-system, "Segoe UI", Arial, sans-serif; fill: #59636e; }
footer { color: var(--muted); font-size: 12px; margin-top: 32px; }
"""


def e(value: object) -> str:
    """Any value as escaped text (None as an em dash)."""
    return html.escape("\u2014" if value is None else str(value), quote=True)


def num(value: object) -> str:
    """An int with thousands separators; anything else as it is (escaped)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return e(value)
    return e(f"{value:,}" if isinstance(value, int) else f"{value:,.1f}")


def human_bytes(n: object) -> str:
    if not isinstance(n, int | float) or isinstance(n, bool):
        return e(n)
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return e(f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}")
        size /= 1024
    return e(n)  # unreachable


def clock(seconds: float) -> str:
    s = round(seconds)
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


def table(head: Sequence[str], rows: Iterable[Sequence[str]], num_cols: Iterable[int] = ()) -> str:
    """A table; `head` is plain text (escaped here), `rows` hold cells already escaped."""
    nums = set(num_cols)
    th = "".join(
        (f'<th class="num">{e(h)}</th>' if i in nums else f"<th>{e(h)}</th>")
        for i, h in enumerate(head)
    )
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = "num" if i in nums else ""
            if cell.startswith("<td"):
                cells.append(cell)
            else:
                cells.append(f'<td class="{cls}">{cell}</td>' if cls else f"<td>{cell}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def yes_no(value: object) -> str:
    return e(("yes" if value else "no") if isinstance(value, bool) else value)


def tag(ok: bool, yes: str, no: str) -> str:
    return f'<span class="tag {"ok" if ok else "bad"}">{e(yes if ok else no)}</span>'


# -- charts ------------------------------------------------------------------------------


def nice_ticks(top: float, count: int = 4) -> list[float]:
    """Round tick values from 0 to at least `top`."""
    if top <= 0:
        return [0.0, 1.0]
    raw = top / count
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def tick_label(v: float) -> str:
    return f"{v:,.0f}" if v >= 10 or v == int(v) else f"{v:g}"


def line_chart(
    points: Sequence[tuple[float, float]], *, label: str, unit: str, color: str = "#0969da"
) -> str:
    """A small line chart of (seconds, value) points, axes and ticks included."""
    w, h, left, right, top, bottom = 520, 200, 56, 12, 12, 30
    pw, ph = w - left - right, h - top - bottom
    xt = nice_ticks(max(p[0] for p in points) or 1.0, 5)
    yt = nice_ticks(max(p[1] for p in points) or 1.0, 4)
    xmax, ymax = xt[-1], yt[-1]

    def x(v: float) -> float:
        return left + pw * v / xmax

    def y(v: float) -> float:
        return top + ph - ph * v / ymax

    parts = [
        f'<svg viewBox="0 0 {w} {h}" width="100%" '
        f'role="img" aria-label="{e(label)}"><title>{e(label)}</title>'
    ]
    for v in yt:
        parts.append(
            f'<line x1="{left}" x2="{w - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" '
            f'stroke="#eaeef2"/><text x="{left - 6}" y="{y(v) + 4:.1f}" '
            f'text-anchor="end">{e(tick_label(v))}</text>'
        )
    for v in xt:
        parts.append(
            f'<text x="{x(v):.1f}" y="{h - bottom + 16}" text-anchor="middle">{e(clock(v))}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{w - right}" y1="{top + ph}" y2="{top + ph}" stroke="#8c959f"/>'
        f'<text x="{left}" y="{top - 2}" text-anchor="start">{e(unit)}</text>'
    )
    coords = " ".join(f"{x(a):.1f},{y(b):.1f}" for a, b in points)
    parts.append(
        f'<polyline fill="none" stroke="{color}" stroke-width="2" '
        f'stroke-linejoin="round" points="{coords}"/>'
    )
    if len(points) <= 60:
        parts += [
            f'<circle cx="{x(a):.1f}" cy="{y(b):.1f}" r="2.5" fill="{color}"/>' for a, b in points
        ]
    parts.append("</svg>")
    return "".join(parts)


def bar(start: float, length: float, total: float, color: str, width: int = 220) -> str:
    """A one-row bar (a step on the run's time axis, or a count against the largest)."""
    total = total or 1.0
    x0 = width * start / total
    bw = max(1.5, width * length / total)
    return (
        f'<svg width="{width}" height="12" '
        f'viewBox="0 0 {width} 12" aria-hidden="true"><rect x="0" y="5" width="{width}" '
        f'height="2" fill="#eaeef2"/><rect x="{x0:.1f}" y="1" width="{bw:.1f}" height="10" '
        f'rx="2" fill="{color}"/></svg>'
    )


# -- sections ----------------------------------------------------------------------------


def parse_time(text: object) -> datetime | None:
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


def timeline(report: dict[str, Any]) -> str:
    steps: list[dict[str, Any]] = list(report.get("steps") or [])
    if not steps:
        return '<p class="empty">No step was recorded.</p>'
    began = parse_time(report.get("started"))
    starts: list[float] = []
    cursor = 0.0
    exact = True
    for step in steps:
        at = parse_time(step.get("started"))
        if at is not None and began is not None:
            cursor = (at - began).total_seconds()
        else:
            exact = False
        starts.append(cursor)
        cursor += float(step.get("seconds") or 0)
    total = max(s + float(st.get("seconds") or 0) for s, st in zip(starts, steps, strict=True))
    rows = []
    for start, step in zip(starts, steps, strict=True):
        ok = step.get("rc") == 0
        secs = float(step.get("seconds") or 0)
        rows.append(
            [
                e(step.get("step")),
                f"<code>{e(step.get('playbook'))}</code>",
                e("+" + clock(start)),
                e(f"{secs:.1f} s"),
                bar(start, secs, total, "#0969da" if ok else "#cf222e"),
                tag(ok, "ok", f"rc {step.get('rc')}"),
            ]
        )
    note = (
        ""
        if exact
        else '<p class="note">Start: time since the run began, from the durations of '
        "the steps before (the short pauses between steps are not counted).</p>"
    )
    return (
        table(
            ["Phase / step", "Playbook", "Start", "Duration", "On the run's time axis", "Result"],
            rows,
            num_cols=(2, 3),
        )
        + note
    )


def rate_points(samples: Sequence[dict[str, Any]]) -> tuple[list[tuple[float, float]], ...]:
    """(blobs/s, MiB/s) between consecutive samples, at the later sample's time, in seconds
    since the first sample (the backfill's first status, after the playbook's preflight)."""
    blobs: list[tuple[float, float]] = []
    mib: list[tuple[float, float]] = []
    t0 = float(samples[0]["t"]) if samples else 0.0
    for a, b in itertools.pairwise(samples):
        dt = float(b["t"]) - float(a["t"])
        if dt <= 0:
            continue
        done_a = sum(int(a.get(k, 0)) for k in ("copied", "skipped", "logged"))
        done_b = sum(int(b.get(k, 0)) for k in ("copied", "skipped", "logged"))
        at = float(b["t"]) - t0
        blobs.append((at, max(0.0, (done_b - done_a) / dt)))
        mib.append((at, max(0.0, (int(b["bytes"]) - int(a["bytes"])) / dt / 2**20)))
    if blobs:
        # The line starts at the first sample, at the rate of the first interval.
        blobs.insert(0, (0.0, blobs[0][1]))
        mib.insert(0, (0.0, mib[0][1]))
    return blobs, mib


def backfill_section(report: dict[str, Any]) -> str:
    b = report.get("backfill") or {}
    totals: dict[str, Any] = b.get("totals", b) if isinstance(b, dict) else {}
    out = []
    keys = ("listed", "copied", "skipped", "logged", "retries")
    out.append(
        table(
            ["Listed", "Copied", "Bytes copied", "Skipped (present)", "Logged", "Retries"],
            [
                [
                    num(totals.get("listed")),
                    num(totals.get("copied")),
                    human_bytes(totals.get("bytes")),
                    num(totals.get("skipped")),
                    num(totals.get("logged")),
                    num(totals.get("retries")),
                ]
            ],
            num_cols=range(len(keys) + 1),
        )
    )
    shards = b.get("shards") if isinstance(b, dict) else None
    if isinstance(shards, list) and len(shards) > 1:
        out.append(
            table(
                ["Host", "Shard", "Outcome", "Copied", "Logged", "Retries"],
                [
                    [
                        e(s.get("host")),
                        e(s.get("shard")),
                        e(s.get("outcome")),
                        num((s.get("counts") or {}).get("copied")),
                        num((s.get("counts") or {}).get("logged")),
                        num((s.get("counts") or {}).get("retries")),
                    ]
                    for s in shards
                ],
                num_cols=(3, 4, 5),
            )
        )
    samples = [s for s in report.get("backfill_samples") or [] if isinstance(s, dict) and "t" in s]
    blobs, mib = rate_points(samples)
    if len(blobs) >= 2:
        first, last = samples[0], samples[-1]
        out.append(
            '<div class="charts"><figure><figcaption>Blobs handled per second (copied, skipped '
            "or logged), by time since the backfill began</figcaption>"
            + line_chart(blobs, label="backfill rate, blobs per second", unit="blobs/s")
            + "</figure><figure><figcaption>Data copied, MiB per second</figcaption>"
            + line_chart(mib, label="backfill rate, MiB per second", unit="MiB/s", color="#8250df")
            + "</figure></div>"
            + f'<p class="note">{e(len(samples))} samples of the backfill\'s status file over '
            f"{e(clock(float(last['t']) - float(first['t'])))} (it began "
            f"{e(clock(float(first['t'])))} into phase 2, after the playbook's preflight); "
            f"last: copied {num(last.get('copied'))}, {human_bytes(last.get('bytes'))}.</p>"
        )
    else:
        out.append(
            f'<p class="empty">Too few samples of the backfill\'s progress for a rate chart '
            f"({e(len(samples))}): it finished between two looks at its status file.</p>"
        )
    return "".join(out)


# The runbook's app phases in the order it goes through them (the app's stats.json has
# its keys sorted); any other phase follows, in the report's order.
PHASE_ORDER = (
    "lab-up",
    "phase1",
    "rollback1",
    "phase1-again",
    "phase2",
    "phase3",
    "phase4",
    "rollback2",
    "phase4-again",
    "phase5",
    "after",
)


def in_run_order(phases: dict[str, Any]) -> dict[str, Any]:
    rank = {name: i for i, name in enumerate(PHASE_ORDER)}
    return dict(sorted(phases.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def app_section(report: dict[str, Any]) -> str:
    app = report.get("app") or {}
    phases: dict[str, dict[str, Any]] = in_run_order(app.get("phases") or {})
    if not phases:
        return '<p class="empty">The app recorded no request.</p>'
    most = max(int(c.get("requests", 0)) for c in phases.values()) or 1
    rows = []
    for name, c in phases.items():
        failed = int(c.get("failed", 0))
        rows.append(
            [
                e(name),
                num(c.get("requests", 0)),
                num(c.get("write", 0)),
                num(c.get("read", 0)),
                num(c.get("delete", 0)),
                f'<td class="num{" bad" if failed else ""}">{num(failed)}</td>',
                bar(0, int(c.get("requests", 0)), most, "#cf222e" if failed else "#0969da", 160),
            ]
        )
    rows.append(
        [
            "<strong>all phases</strong>",
            f"<strong>{num(app.get('requests'))}</strong>",
            "",
            "",
            "",
            f'<td class="num{" bad" if app.get("failed") else ""}"><strong>'
            f"{num(app.get('failed'))}</strong></td>",
            "",
        ]
    )
    out = table(
        ["Phase", "Requests", "Writes", "Reads", "Deletes", "Failed", ""],
        rows,
        num_cols=range(1, 6),
    )
    out += f'<p class="note">Settings reloads: {num(app.get("reloads"))}.</p>'
    failures = app.get("failures") or []
    if failures:
        out += "<h3>Failed requests (first 20)</h3>" + table(
            ["Time", "Phase", "Op", "Key", "Error"],
            [
                [
                    e(f.get("t")),
                    e(f.get("phase")),
                    e(f.get("op")),
                    f"<code>{e(f.get('key'))}</code>",
                    e(f.get("error")),
                ]
                for f in failures
            ],
        )
    return out


def verify_table(v: dict[str, Any]) -> str:
    return table(
        [
            "Verdict",
            "Old objects",
            "Matched",
            "Matched by content",
            "Size only",
            "Problems",
            "Accepted as lost",
        ],
        [
            [
                '<span id="verify-verdict">'
                + tag(bool(v.get("clean")), "clean", "NOT clean")
                + "</span>",
                num(v.get("old_objects")),
                num(v.get("matched")),
                num(v.get("matched_by_content")),
                num(v.get("size_only")),
                num(v.get("problems")),
                num(v.get("accepted")),
            ]
        ],
        num_cols=range(1, 7),
    )


def checks_section(report: dict[str, Any]) -> str:
    v = report.get("verify") or {}
    out = ["<h3>Verify gate (phase 4)</h3>", verify_table(v)]
    before = report.get("verify_before_rollback")
    if isinstance(before, dict):
        out.append('<p class="note">Before the rollback drill:</p>')
        out.append(verify_table(before).replace('id="verify-verdict"', ""))
    readiness = [
        (label, report[key])
        for key, label in (
            ("readiness_during_backfill", "over the backfill"),
            ("readiness_before_flip", "before the flip"),
            ("readiness_before_flip_again", "before the flip again (after the rollback)"),
        )
        if isinstance(report.get(key), dict)
    ]
    if readiness:
        out.append("<h3>Flip readiness: app reads the old store answered (proxy store log)</h3>")
        out.append(
            table(
                [
                    "When",
                    "Verdict",
                    "Window",
                    "App reads",
                    "Fallbacks",
                    "Engine reads",
                    "e.g.",
                ],
                [
                    [
                        e(label),
                        tag(r.get("verdict") == "ready", "ready", str(r.get("verdict", "?"))),
                        e(clock(float(r.get("window") or 0))),
                        num(r.get("app_reads")),
                        num(r.get("fallbacks")),
                        num(r.get("own_reads")),
                        e(", ".join(r.get("fallback_examples") or [])[:120]),
                    ]
                    for label, r in readiness
                ],
                num_cols=(3, 4, 5),
            )
        )
    a = report.get("audit") or {}
    missing = a.get("missing_in_new_store")
    through = a.get("missing_through_app_settings")
    audit_ok = missing == 0 and through == 0
    out.append("<h3>Audit: every blob written and not deleted, byte for byte</h3>")
    out.append(
        table(
            [
                "Verdict",
                "Blobs expected",
                "Missing or different in the new store",
                "Through the app's settings",
                "App still migrating",
                "App has an old store",
            ],
            [
                [
                    f'<span id="audit-verdict">{tag(audit_ok, "intact", "BLOBS MISSING")}</span>',
                    num(a.get("expected")),
                    num(missing),
                    num(through),
                    yes_no(a.get("app_settings_migrating")),
                    yes_no(a.get("app_settings_old_store")),
                ]
            ],
            num_cols=(1, 2, 3),
        )
    )
    keys = a.get("keys") or []
    if keys:
        out.append("<p>Missing or different:</p><ul>")
        out += [f"<li><code>{e(k)}</code></li>" for k in keys]
        out.append("</ul>")
    p = report.get("proxy") or {}
    out.append(
        f'<p class="note">Proxy at the end: 8080 {e("up" if p.get("8080_listening") else "down")}'
        f", 8081 {e('up' if p.get('8081_listening') else 'gone')}.</p>"
    )
    return "".join(out)


def logged_section(report: dict[str, Any]) -> str:
    b = report.get("backfill") or {}
    c = report.get("check_blob_logs") or {}
    out = []
    totals = c.get("totals") or {}
    if totals:
        out.append(
            table(
                [*totals.keys(), "Migrated in phase 3", "Left only in old"],
                [
                    [
                        *(num(n) for n in totals.values()),
                        num(c.get("migrated")),
                        num(c.get("left_in_old")),
                    ]
                ],
                num_cols=range(len(totals) + 2),
            )
        )
    records = report.get("backfill_logged") or []
    logged_total = (b.get("totals") or {}).get("logged") if isinstance(b, dict) else None
    if records:
        shown = f"{len(records)} of {logged_total}" if logged_total else str(len(records))
        out.append(f"<h3>Logged by the backfill ({e(shown)})</h3>")
        out.append(
            '<div id="logged">'
            + table(
                ["Key", "Why", "Size"],
                [
                    [f"<code>{e(r.get('blob_key'))}</code>", e(r.get("error")), num(r.get("size"))]
                    for r in records
                ],
                num_cols=(2,),
            )
            + "</div>"
        )
    elif logged_total:
        out.append(
            f'<p id="logged">{num(logged_total)} blobs logged; their keys are in the '
            "missing-blob logs below.</p>"
        )
    else:
        out.append('<p id="logged" class="empty">Nothing was logged.</p>')
    not_found = c.get("not_found_keys") or []
    if not_found:
        out.append("<h3>Not found in either store</h3><ul>")
        out += [f"<li><code>{e(k)}</code></li>" for k in not_found]
        out.append("</ul>")
    logs = b.get("logs") if isinstance(b, dict) else None
    if logs:
        out.append("<h3>Missing-blob logs</h3><ul>")
        out += [f"<li><code>{e(p)}</code></li>" for p in logs]
        out.append("</ul>")
    return "".join(out)


def cards(report: dict[str, Any]) -> str:
    b = report.get("backfill") or {}
    totals = b.get("totals", b) if isinstance(b, dict) else {}
    app = report.get("app") or {}
    audit = report.get("audit") or {}
    items = [
        ("blobs in old at the start", report.get("blobs_in_old_at_start"), False),
        ("copied by the backfill", totals.get("copied"), False),
        ("logged by the backfill", totals.get("logged"), False),
        ("backfill retries", totals.get("retries"), False),
        ("app requests", app.get("requests"), False),
        ("app requests failed", app.get("failed"), bool(app.get("failed"))),
        (
            "blobs missing at the end",
            audit.get("missing_in_new_store"),
            bool(audit.get("missing_in_new_store")),
        ),
    ]
    return (
        '<div class="cards">'
        + "".join(
            f'<div class="card{" bad" if bad else ""}"><div class="n">{num(n)}</div>'
            f'<div class="l">{e(label)}</div></div>'
            for label, n, bad in items
        )
        + "</div>"
    )


def render(report: dict[str, Any]) -> str:
    """The whole page for a runbook report (report.json's content)."""
    ok = bool(report.get("ok"))
    verdict = "PASSED" if ok else "FAILED"
    headline = (
        "every blob arrived intact, no app request failed"
        if ok
        else "the run did not meet its bar: see below"
    )
    title = f"blobshift runbook report: {verdict}"
    meta = (
        f"target {e(report.get('target'))}, new cluster "
        f"{e(report.get('new_cluster', 'seaweedfs'))} &middot; started "
        f"{e(report.get('started'))}, finished {e(report.get('finished'))}"
    )
    if "lab_idempotent" in report:
        meta += f" &middot; lab idempotent: {yes_no(report['lab_idempotent'])}"
    sections = [
        ("timeline", "Timeline", timeline(report)),
        ("backfill", "Backfill (phase 2)", backfill_section(report)),
        ("app", "App requests per phase", app_section(report)),
        ("checks", "Verify and audit", checks_section(report)),
        ("logged-blobs", "Logged blobs (phases 2 and 3)", logged_section(report)),
    ]
    body = "".join(
        f'<section id="{sid}"><h2>{e(h)}</h2>{content}</section>' for sid, h, content in sections
    )
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{e(title)}</title><style>{CSS}</style></head><body>"
        '<header><div class="inner">'
        f'<h1><span id="verdict" class="verdict {"ok" if ok else "bad"}">{e(verdict)}</span>'
        f"blobshift runbook: {e(headline)}</h1>"
        f'<p class="meta">{meta}</p>{cards(report)}</div></header>'
        f"<main>{body}"
        f"<footer>Generated from report.json by blobshift.lab.report_html.</footer>"
        "</main></body></html>\n"
    )


def write_beside(report: dict[str, Any], json_path: Path) -> Path:
    """Write the page as report.html (the JSON file's stem) next to `json_path`; its path."""
    out = json_path.with_suffix(".html")
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(render(report), encoding="utf-8")
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="render a runbook report.json as report.html")
    parser.add_argument("report", type=Path, help="the runbook's report.json")
    args = parser.parse_args(argv)
    try:
        report = json.loads(args.report.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(
            f"{args.report}: no such file; pass the report.json a runbook run wrote "
            "(make demo writes demo-output/report.json)",
            file=sys.stderr,
        )
        return 2
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        print(
            f"{args.report}: not a readable JSON report ({type(exc).__name__}: {exc})",
            file=sys.stderr,
        )
        return 2
    if not isinstance(report, dict):
        print(f"{args.report}: not a runbook report (a JSON object expected)", file=sys.stderr)
        return 2
    print(write_beside(report, args.report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
