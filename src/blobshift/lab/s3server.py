"""What the lab and the tests need of an S3 server they start and stop themselves."""

from __future__ import annotations

from typing import Protocol


class S3Server(Protocol):
    """A server `running()` can start and stop: SeaweedServer, CephRGW and their gateways."""

    def start(self) -> None: ...

    def stop(self) -> None: ...
