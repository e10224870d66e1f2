"""A pytest plugin that records the reliability battery's figures for docs/RELIABILITY.md.

A battery case is a test marked ``@pytest.mark.reliability("what it shows", group="Faults")``;
it may take the ``evidence`` fixture and record measured figures
(``evidence["blobs lost"] = 0``). At the end of the session every case's outcome, duration
and figures go to ``build/reliability/<suite>.json``, which ``blobshift.lab.reliability_doc``
turns into the document. Enabled for every pytest run by ``-p`` in pyproject.toml.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

GROUPS = ("Faults", "Bad input", "Security")
OUT_DIR_ENV = "BLOBSHIFT_EVIDENCE_DIR"
SUITE_ENV = "BLOBSHIFT_EVIDENCE_SUITE"
_CASES = pytest.StashKey[dict[str, dict[str, Any]]]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "reliability(title, group): a case of the reliability battery (docs/RELIABILITY.md)",
    )
    config.stash[_CASES] = {}


def _case(item: pytest.Item) -> dict[str, Any] | None:
    marker = item.get_closest_marker("reliability")
    if marker is None:
        return None
    cases = item.config.stash[_CASES]
    if item.nodeid not in cases:
        group = marker.kwargs.get("group", "Faults")
        if group not in GROUPS:
            raise pytest.UsageError(f"{item.nodeid}: reliability group {group!r} not in {GROUPS}")
        title = marker.args[0] if marker.args else item.name
        param = getattr(item, "callspec", None)
        if param is not None:
            title = f"{title} [{param.id}]"
        cases[item.nodeid] = {
            "title": title,
            "group": group,
            "test": item.nodeid,
            "outcome": "not run",
            "seconds": 0.0,
            "figures": {},
        }
    return cases[item.nodeid]


@pytest.fixture
def evidence(request: pytest.FixtureRequest) -> dict[str, Any]:
    """The figures of this battery case; the test fills it in."""
    case = _case(request.node)
    if case is None:
        raise pytest.UsageError(f"{request.node.nodeid}: `evidence` needs @pytest.mark.reliability")
    return case["figures"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    case = _case(item)
    if case is None:
        return
    report = outcome.get_result()
    if report.when == "call" or (report.when == "setup" and not report.passed):
        case["outcome"] = "skipped" if report.skipped else report.outcome
        case["seconds"] = round(case["seconds"] + report.duration, 2)


def git_describe(root: Path) -> str:
    """The checkout's commit as `git describe --always --dirty` names it, or "unknown"."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except OSError:
        return "unknown"
    return proc.stdout.strip() or "unknown"


def pytest_sessionfinish(session: pytest.Session) -> None:
    cases = session.config.stash.get(_CASES, {})
    ran = [c for c in cases.values() if c["outcome"] != "not run"]
    if not ran:
        return
    root = Path(session.config.rootpath)
    out_dir = Path(os.environ.get(OUT_DIR_ENV) or root / "build" / "reliability")
    out_dir.mkdir(parents=True, exist_ok=True)
    # One file per test directory (or per lane, named by $BLOBSHIFT_EVIDENCE_SUITE), so the
    # pytest runs of `make test` do not overwrite each other.
    args = [a for a in session.config.args if not a.startswith("-")] or ["tests"]
    suite = os.environ.get(SUITE_ENV) or Path(args[0].split("::")[0]).name or "tests"
    record = {
        "suite": suite,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": git_describe(root),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}",
        "cases": sorted(ran, key=lambda c: (GROUPS.index(c["group"]), c["test"])),
    }
    path = out_dir / f"{suite}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    tmp.replace(path)
