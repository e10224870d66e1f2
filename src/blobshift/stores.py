"""Open both stores of a settings file and check them before any work starts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from blobshift.s3.client import S3Client, S3Error, user_agent
from blobshift.s3.http import HTTPError
from blobshift.settings import BlobSettings, StoreSettings

# Listing prefetch and the skip-rule HEADs need a few connections beyond the workers'.
EXTRA_CONNECTIONS = 4


class StoreError(Exception):
    """A store failed its preflight: unreachable, credentials rejected, bucket missing."""


@asynccontextmanager
async def open_stores(
    settings: BlobSettings, workers: int, command: str
) -> AsyncIterator[tuple[S3Client, S3Client]]:
    """Both stores' clients; `command` goes into their User-Agent."""
    assert settings.old is not None
    size = workers + EXTRA_CONNECTIONS
    agent = user_agent(command)
    old = S3Client(settings.old, max_connections=size, user_agent=agent)
    new = S3Client(settings.new, max_connections=size, user_agent=agent)
    try:
        yield old, new
    finally:
        old.close()
        new.close()


def explain(store: StoreSettings, exc: BaseException, settings_path: object) -> str:
    """One line that names the store, the cause and where to fix it (never a secret)."""
    where = f"{store.name} in {settings_path}"
    if isinstance(exc, S3Error):
        if exc.code in ("SignatureDoesNotMatch", "InvalidAccessKeyId", "AccessDenied"):
            return (
                f"{store.url} rejected the credentials of {where} ({exc.code}): "
                "check access_key/secret_key and config.signature_version"
            )
        if exc.code == "NoSuchBucket":
            return (
                f"bucket {store.bucket!r} does not exist at {store.url}: check s3_bucket of {where}"
            )
        return f"{store.url} answered HTTP {exc.status} {exc.code} for {where}"
    if isinstance(exc, HTTPError | OSError | TimeoutError):
        return f"cannot reach {store.url} ({exc}): check url of {where} and the network"
    return f"{where}: {type(exc).__name__}"


async def preflight(*clients: S3Client, settings_path: object = "the settings file") -> None:
    """One signed listing request per store, concurrently; the first failure is raised."""
    results = await asyncio.gather(*(c.preflight() for c in clients), return_exceptions=True)
    for client, result in zip(clients, results, strict=True):
        if isinstance(result, BaseException):
            raise StoreError(explain(client.store, result, settings_path)) from None
