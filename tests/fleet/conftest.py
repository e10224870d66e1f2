"""The fleet lab for the tests of this directory: up once per session (the image built only
if its inputs changed), down at the end unless BLOBSHIFT_FLEET_KEEP=1."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator

import pytest

from blobshift.lab.fleet import Fleet


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if shutil.which("podman") is None:
        for item in items:
            item.add_marker(pytest.mark.skip(reason="podman not installed"))


@pytest.fixture(scope="session")
def fleet() -> Iterator[Fleet]:
    lab = Fleet()
    started = time.monotonic()
    lab.up()
    print(f"\nfleet up in {time.monotonic() - started:.0f}s", flush=True)
    try:
        yield lab
    finally:
        # BLOBSHIFT_FLEET_KEEP=1: leave it up for the next run (developing against it).
        if os.environ.get("BLOBSHIFT_FLEET_KEEP") != "1":
            lab.down()
