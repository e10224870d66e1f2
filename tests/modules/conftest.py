"""Fixtures for the tests of library/ (the blob_* modules) and of the backfill playbooks.

See modtest.py for the lab. These tests are run by `make test-modules`
(BLOBSHIFT_MODULE_TESTS=1) or by naming this directory (`pytest tests/modules`); the
top-level `pytest` run skips them so that `make test` does not run them twice.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from modtest import (
    BASE_PORT,
    HERE,
    NEW_IP,
    NEW_KEYS,
    OLD_IP,
    OLD_KEYS,
    Inventory,
    show,
    store_dict,
    write_settings,
)

from blobshift.lab.seaweed import SeaweedServer, running

_ids = itertools.count()


def _explicitly_named(config) -> bool:
    for arg in config.args:
        path = Path(arg.split("::")[0]).resolve()
        if path == HERE or HERE in path.parents:
            return True
    return False


def pytest_collection_modifyitems(config, items):
    if os.environ.get("BLOBSHIFT_MODULE_TESTS") == "1" or _explicitly_named(config):
        return
    skip = pytest.mark.skip(reason="module/playbook tests: run with `make test-modules`")
    for item in items:
        if HERE in Path(item.path).resolve().parents:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def servers() -> Iterator[tuple[SeaweedServer, SeaweedServer]]:
    root = Path(tempfile.mkdtemp(prefix="blobshift-modtest-s3-"))
    old = SeaweedServer(OLD_IP, BASE_PORT, root / "old", *OLD_KEYS)
    new = SeaweedServer(NEW_IP, BASE_PORT + 20, root / "new", *NEW_KEYS)
    with running(old, new):
        yield old, new
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def buckets(servers) -> tuple[str, str]:
    old, new = servers
    n = next(_ids)
    names = (f"mold-{os.getpid()}-{n}", f"mnew-{os.getpid()}-{n}")
    old.create_bucket(names[0])
    new.create_bucket(names[1])
    return names


@pytest.fixture
def settings_file(tmp_path, servers, buckets) -> Path:
    old, new = servers
    (tmp_path / "app").mkdir()
    return write_settings(
        tmp_path / "app" / "localsettings.py",
        new=store_dict(new, buckets[1], sigv2=False),
        old=store_dict(old, buckets[0], sigv2=True),
    )


@pytest.fixture(scope="session")
def session_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="blobshift-modtest-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def engine(session_root) -> dict:
    """roles/blobshift_engine run twice into a fresh virtualenv: install, then no change."""
    inv = Inventory(
        root=session_root / "engine",
        settings=session_root / "unused-localsettings.py",
        engine_venv=session_root / "engine-venv" / "venv",
        async_dir=session_root / "async",
        extra={},
    )
    inv.write()
    first = inv.play(str(HERE / "install_engine.yml"), timeout=300)
    assert first.returncode == 0, show(first)
    second = inv.play(str(HERE / "install_engine.yml"))
    assert second.returncode == 0, show(second)
    return {"venv": inv.engine_venv, "first": first, "second": second}


@pytest.fixture
def inventory(tmp_path, session_root, engine, settings_file) -> Inventory:
    inv = Inventory(
        root=tmp_path,
        settings=settings_file,
        engine_venv=engine["venv"],
        async_dir=session_root / "async",
        extra={},
    )
    inv.write()
    return inv
